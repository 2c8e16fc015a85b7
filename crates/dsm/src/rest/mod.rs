//! The Binance REST client: klines (trade, mark, index, premium) and funding-rate history for spot,
//! USD-M and COIN-M, as record batches in the same Arrow schema as the Vision client.
//!
//! This module owns everything about talking to `api`/`fapi`/`dapi.binance.com`: which endpoint and
//! parameter each kind needs, how a half-open range `[start, end)` is cut into pages so that
//! Binance's selection rules (spec §3.3, including COIN-M's "last `limit` candles of a window of at
//! most 200 days") return every candle exactly once, the client-side request-weight budget shared
//! by every clone of a [`RestClient`], the 429/418 regime, retries, timeouts and cancellation.
//!
//! It must never return a silently partial result (a page that fails after its retries fails the
//! whole call), never treat the still-open candle as final (it is returned apart, in
//! [`RestData::open_candle`]), never send a request to a market that answered 418 before the ban
//! ends, and never leave a task or a connection running after a call returns, is cancelled or is
//! dropped (pages run inside the call's own future, never on detached tasks).
//!
//! **The open candle.** Binance includes the still-open candle, with partial values, as the last
//! row. A klines call reads the server's clock once (`/time`, weight 1) *before* its first page, so
//! any candle still open when a page was served has `close_time >=` that time and is returned apart.
//! The local clock is never used for this (it may be skewed; the emulator's clock is synthetic), and
//! the `Date` header is not (second resolution, and it is taken *after* the page it came with, so a
//! candle that was open when served could look closed).
//!
//! ```no_run
//! use dsm::rest::{RestClient, RestConfig};
//! use dsm::{Dataset, Interval, Market, Symbol, TimeRange};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = RestClient::new(RestConfig::default())?;
//! let btc = Dataset::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1);
//! let range = TimeRange::new(1_704_067_200_000, 1_704_153_600_000)?; // 2024-01-01, one day
//! let data = client.klines(&btc, range, &CancellationToken::new()).await?;
//! assert_eq!(data.batch.num_rows(), 1440);
//! assert!(data.open_candle.is_none()); // the day is over
//! # Ok(())
//! # }
//! ```

mod client;
mod paging;
mod parse;
mod weight;

use std::time::Duration;

use arrow::record_batch::RecordBatch;

use crate::market::InputError;
use crate::market::{DataKind, Market};
use crate::schema::KlineRecord;

pub use client::RestClient;
pub use weight::{futures_klines_weight, klines_weight};

/// REST base URLs, one per market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestUrls {
    /// Spot, default `https://api.binance.com`.
    pub spot: String,
    /// USD-M futures, default `https://fapi.binance.com`.
    pub um: String,
    /// COIN-M futures, default `https://dapi.binance.com`.
    pub cm: String,
    /// Options, default `https://eapi.binance.com` (dsm asks it nothing yet: the option kinds
    /// come from the archive).
    pub option: String,
}

impl RestUrls {
    /// The same base URL for every market (an emulator serves all three path families).
    pub fn all(base: &str) -> RestUrls {
        let base = base.trim_end_matches('/').to_owned();
        RestUrls {
            spot: base.clone(),
            um: base.clone(),
            cm: base.clone(),
            option: base,
        }
    }

    /// The base URL for `market`.
    pub fn for_market(&self, market: Market) -> &str {
        match market {
            Market::Spot => &self.spot,
            Market::UsdM => &self.um,
            Market::CoinM => &self.cm,
            Market::Option => &self.option,
        }
    }
}

impl Default for RestUrls {
    fn default() -> Self {
        RestUrls {
            spot: "https://api.binance.com".into(),
            um: "https://fapi.binance.com".into(),
            cm: "https://dapi.binance.com".into(),
            option: "https://eapi.binance.com".into(),
        }
    }
}

/// How a [`RestClient`] is set up. `Default` talks to the real Binance with Binance's own limits.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Base URL per market.
    pub urls: RestUrls,
    /// TCP (and TLS) connect timeout of every request.
    pub connect_timeout: Duration,
    /// How slow an answer may be: the longest wait for the headers or the next bytes, and the least
    /// progress over a window (see [`crate::Pace`]). A stalled or trickling server fails the
    /// attempt; a slow but moving one does not.
    pub pace: crate::Pace,
    /// Retries of a transient failure (5xx, reset, timeout, truncated or malformed body, 429) per
    /// request before it becomes an error.
    pub retries: u32,
    /// First backoff delay; later ones grow exponentially (with jitter) up to `backoff_max`.
    pub backoff_min: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Longest `Retry-After` of a 429 the client waits out; a longer one fails with
    /// [`RestError::RateLimited`].
    pub max_retry_after: Duration,
    /// Spot's weight limit per window until the server's is known (Binance: 6000 per minute).
    /// The budget keeps a 10% margin below it, as below a learnt limit.
    pub spot_weight_per_minute: u32,
    /// Each futures market's limit until the server's is known (Binance: 2400 per minute).
    pub futures_weight_per_minute: u32,
    /// Length of a weight window until the server's is known (Binance: one minute, aligned to the
    /// wall-clock minute). Tests use short windows; the `*_weight_per_minute` budgets then apply
    /// per window.
    pub weight_window: Duration,
    /// The user's weight budget per window (every market), used as given instead of the server's
    /// limit; `None` = learn the server's.
    pub weight_limit: Option<u32>,
    /// Read each market's `REQUEST_WEIGHT` limit from its `exchangeInfo` before the first request
    /// (once a day when `state_dir` is set: it is remembered there). Default true.
    pub learn_limits: bool,
    /// Where the weight used, the learnt limits, 429 pauses and 418 bans are kept, shared by every
    /// dsm process using the directory (the manager uses `<cache dir>/rest`); `None` = in memory.
    pub state_dir: Option<std::path::PathBuf>,
    /// When a market is banned (HTTP 418, now or remembered from an earlier run): wait for the ban
    /// to end (within the call's deadline) instead of failing at once with [`RestError::Banned`].
    pub wait_on_ban: bool,
    /// Most pages of one call in flight at once (all calls share the weight budget anyway).
    pub max_concurrent_pages: usize,
    /// Longest span of one COIN-M klines request (Binance: 200 days).
    pub cm_max_window: Duration,
    /// Deadline of a whole call (`klines`, `funding`, ...); `None` = no deadline.
    pub deadline: Option<Duration>,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            urls: RestUrls::default(),
            connect_timeout: Duration::from_secs(10),
            pace: crate::Pace::default(),
            retries: 3,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
            spot_weight_per_minute: 6000,
            futures_weight_per_minute: 2400,
            weight_window: Duration::from_secs(60),
            weight_limit: None,
            learn_limits: true,
            state_dir: None,
            wait_on_ban: false,
            max_concurrent_pages: 4,
            cm_max_window: Duration::from_secs(200 * 86_400),
            deadline: None,
        }
    }
}

impl RestConfig {
    /// The defaults with every market on one base URL (the emulator serves all three path families).
    pub fn with_base_url(base: &str) -> RestConfig {
        RestConfig {
            urls: RestUrls::all(base),
            ..RestConfig::default()
        }
    }
}

/// The result of one REST call.
#[derive(Debug, Clone)]
pub struct RestData {
    /// Closed rows in `[start, end)`, sorted, de-duplicated, in [`crate::schema::schema`] of the
    /// market and kind.
    pub batch: RecordBatch,
    /// The still-open candle (close time at or after [`RestData::server_time`]) if it lies in the
    /// range. Its values are partial and change until it closes: never cache or treat it as final.
    pub open_candle: Option<KlineRecord>,
    /// The server's time (ms) taken before the first page was requested (klines only): every candle
    /// that was still open when a page was served has a close time at or after it.
    pub server_time: Option<i64>,
    /// HTTP requests sent (retries and the server-time request included).
    pub requests: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// Request weight spent.
    pub weight: u64,
}

/// How far back the REST API keeps the 5-minute statistics behind the archive's `metrics`
/// (Binance: "only the data of the latest 30 days is available").
pub const STATS_HISTORY_MS: i64 = 30 * crate::time::DAY_MS;

/// Checks that the REST API serves `kind` on `market` without an API key, which dsm never uses:
/// candles, funding and aggTrades everywhere; trades on spot only (the futures' trade history needs
/// a key); of the archive's tables, the USD-M metrics only (from the statistics endpoints).
/// Otherwise an [`InputError`] says where the data comes from. The one rule for REST's use: the
/// manager's plan asks it, and [`RestClient`]'s calls enforce it.
pub(crate) fn serves(market: Market, kind: DataKind) -> Result<(), InputError> {
    match kind {
        DataKind::Trades if market != Market::Spot => Err(InputError::Invalid {
            what: "source",
            reason: format!(
                "{market} trades come from the Vision archive only (Binance's REST history of \
                 futures trades needs an API key); use aggtrades for recent days"
            ),
        }),
        DataKind::Metrics if market != Market::UsdM => Err(InputError::Invalid {
            what: "market",
            reason: format!("the REST API has the metrics of um only, not of {market}"),
        }),
        DataKind::Metrics | DataKind::Trades => Ok(()),
        k if k.is_table() => Err(InputError::Invalid {
            what: "source",
            reason: format!(
                "{k} comes from the Vision archive only; the REST API has no such data"
            ),
        }),
        _ => Ok(()),
    }
}

/// What one REST call cost, for calls that return no rows (e.g. the server's time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCost {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// Request weight spent.
    pub weight: u64,
}

/// One symbol of a market's `exchangeInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolInfo {
    /// The symbol (`BTCUSDT`, `BTCUSD_PERP`).
    pub symbol: String,
    /// Trading status (`TRADING`, `BREAK`, ...; COIN-M's `contractStatus`).
    pub status: String,
    /// The pair (futures), e.g. `BTCUSD` for `BTCUSD_PERP`.
    pub pair: Option<String>,
    /// Contract type (futures), e.g. `PERPETUAL`, `CURRENT_QUARTER`.
    pub contract_type: Option<String>,
    /// Listing time (ms), where the market gives one (futures `onboardDate`).
    pub onboard_date: Option<i64>,
    /// Delivery time (ms) of a dated contract (perpetuals carry Binance's 2100 placeholder).
    pub delivery_date: Option<i64>,
}

/// What went wrong talking to the REST API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// The request is invalid before any network call (kind or interval not on the market).
    #[error(transparent)]
    Input(#[from] InputError),
    /// Binance does not know the symbol on this market (code -1121).
    #[error(
        "{market} does not know symbol {symbol} (Binance -1121 \"Invalid symbol.\"): check the spelling and the market (um symbols look like BTCUSDT, cm like BTCUSD_PERP)"
    )]
    InvalidSymbol {
        /// The market asked.
        market: Market,
        /// The symbol (or pair) sent.
        symbol: String,
    },
    /// Binance rejected the interval on this market (code -1120).
    #[error(
        "{market} rejected interval {interval} (Binance -1120 \"Invalid interval.\"): 1s exists on spot only"
    )]
    InvalidInterval {
        /// The market asked.
        market: Market,
        /// The interval sent.
        interval: String,
    },
    /// Another Binance error (a JSON `{code, msg}` body).
    #[error("Binance answered {status} to {url} ({attempts} attempt{}): code {code}: {msg}{}", crate::http::plural(*attempts), http_hint(*status))]
    Api {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// Binance's error code.
        code: i64,
        /// Binance's message.
        msg: String,
        /// Attempts made.
        attempts: u32,
    },
    /// An HTTP error status without a Binance error body (after retries when transient).
    #[error("HTTP {status} from {url} ({attempts} attempt{}){}", crate::http::plural(*attempts), http_hint(*status))]
    Http {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// The server kept answering 429 or asked to wait longer than allowed.
    #[error(
        "{market} rate limit hit at {url}: the server asks to wait {retry_after:?}; lower --weight-limit or --concurrency, or try again later"
    )]
    RateLimited {
        /// The market.
        market: Market,
        /// The URL requested.
        url: String,
        /// The wait the server asked for.
        retry_after: Duration,
    },
    /// Binance banned this IP on the market (HTTP 418); no request is sent to it until the ban ends.
    #[error(
        "{market} REST API banned this IP until {} (HTTP 418): nothing is sent to {market} before then (the ban is remembered in the cache directory); try again after it, pass --wait-on-ban to wait, or use --source vision",
        crate::time::format_ms(*until_ms)
    )]
    Banned {
        /// The market.
        market: Market,
        /// End of the ban (ms since the epoch, local clock).
        until_ms: i64,
    },
    /// The server did not answer in time (after retries).
    #[error("{url} did not answer in time ({attempts} attempt{}): the server is stalled or unreachable; check the network, or raise --timeout", crate::http::plural(*attempts))]
    Timeout {
        /// The URL requested.
        url: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The answer came too slowly (a stalled or trickling server), after retries.
    #[error("{url} was too slow: {reason} ({attempts} attempt{}); check the network, or raise --timeout", crate::http::plural(*attempts))]
    Slow {
        /// The URL requested.
        url: String,
        /// What was too slow.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A network failure (after retries).
    #[error("network error on {url} ({attempts} attempt{}): {source}; check the network or the REST base URL", crate::http::plural(*attempts))]
    Network {
        /// The URL requested.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
        /// Attempts made.
        attempts: u32,
    },
    /// The body is not what Binance sends (after retries).
    #[error("malformed response from {url} ({attempts} attempt{}): {reason}", crate::http::plural(*attempts))]
    Malformed {
        /// The URL requested.
        url: String,
        /// What was wrong.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The caller cancelled the call.
    #[error("cancelled")]
    Cancelled,
    /// The call's deadline passed.
    #[error("REST call did not finish within its deadline of {deadline:?}")]
    DeadlineExceeded {
        /// The configured deadline.
        deadline: Duration,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

fn http_hint(status: u16) -> &'static str {
    match status {
        451 => {
            "; Binance refuses this location (geo-block): use another network, or --source vision"
        }
        403 => {
            "; blocked by Binance's web application firewall or a proxy: slow down, check the network, or use --source vision"
        }
        404 => "; unknown endpoint: check the REST base URL",
        500..=599 => "; the API is failing, try again later",
        _ => "",
    }
}

/// A bad time is bad input, as for every dsm error.
impl From<crate::time::TimeError> for RestError {
    fn from(e: crate::time::TimeError) -> RestError {
        RestError::Input(e.into())
    }
}

impl RestError {
    /// Records that this error is the last of `n` attempts.
    pub(crate) fn after(mut self, n: u32) -> RestError {
        match &mut self {
            RestError::Http { attempts, .. }
            | RestError::Api { attempts, .. }
            | RestError::Timeout { attempts, .. }
            | RestError::Slow { attempts, .. }
            | RestError::Network { attempts, .. }
            | RestError::Malformed { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }

    /// The category of this error (see [`crate::ErrorCategory`]).
    pub fn category(&self) -> crate::ErrorCategory {
        use crate::ErrorCategory as C;
        match self {
            RestError::Input(_) | RestError::InvalidInterval { .. } => C::Input,
            RestError::InvalidSymbol { .. } => C::Unavailable,
            RestError::Cancelled => C::Cancelled,
            RestError::Client(_) => C::Local,
            RestError::Api { .. }
            | RestError::Http { .. }
            | RestError::RateLimited { .. }
            | RestError::Banned { .. }
            | RestError::Timeout { .. }
            | RestError::Slow { .. }
            | RestError::Network { .. }
            | RestError::Malformed { .. }
            | RestError::DeadlineExceeded { .. } => C::Upstream,
        }
    }
}
