//! An offline, deterministic Binance emulator — the Vision archive (`data.binance.vision`), its S3
//! listing, and the REST market-data endpoints of spot, USDⓈ-M and COIN-M — with fault injection.
//! Every `dsm` test talks to it instead of the internet.
//!
//! # What it serves (one HTTP/1.1 server, loopback only by default)
//!
//! | Path | What |
//! |---|---|
//! | `GET`/`HEAD /data/{spot,futures/um,futures/cm}/{daily,monthly}/{dataType}/{SYMBOL}/[{interval}/]{file}.zip[.CHECKSUM]` | Vision objects: `klines`, `markPriceKlines`, `indexPriceKlines` (CM: pair dir `BTCUSD`), `premiumIndexKlines`, `fundingRate` (monthly), `aggTrades`, `trades`. Headers `Content-Type`, `Content-Length`, `ETag` (quoted MD5), `Last-Modified`; single byte ranges; missing → 404 S3 `NoSuchKey` XML. |
//! | `GET /data.binance.vision?prefix=&delimiter=/&marker=&max-keys=` | S3 ListObjects v1 (sorted keys, `CommonPrefixes`, `max-keys` ≤ 1000, `IsTruncated`, `NextMarker` only with a delimiter). |
//! | `/api/v3/{klines,uiKlines,exchangeInfo,ping,time}` | Spot REST. |
//! | `/fapi/v1/…`, `/dapi/v1/{klines,markPriceKlines,indexPriceKlines,premiumIndexKlines,fundingRate,exchangeInfo,ping,time}` | Futures REST. |
//! | `GET /_emulator/stats`, `GET`/`DELETE /_emulator/log`, `GET`/`POST /_emulator/clock?now=…`, `GET`/`POST`/`DELETE /_emulator/faults` | Admin (not counted in stats or the log). |
//!
//! Data is synthesised from the seed (a stateless price path per series, so any candle can be made
//! on its own) and formatted exactly like Binance's files for the market and era: no header on spot,
//! a header on futures files dated from a cut-off (knobs), spot timestamps in microseconds for data
//! dated 2025-01-01 or later, 12 kline columns ending in `0`, `True/False` vs `true/false`, COIN-M
//! volume in contracts. Real files under [`EmulatorConfig::root`] (a folder holding `data/…`) take
//! precedence and are served byte-identical; their rows also feed REST and the monthly files.
//!
//! **One truth**: a closed candle has the same values in a Vision file, in a REST response and in
//! [`Emulator::klines`]. REST adds the still-open candle (the one containing [`Emulator::now`]) with
//! partial values; nothing after `now` exists. A daily file for day D appears at D+1 00:00 +
//! `daily_publish_delay`, a monthly file at the month's end + `monthly_publish_delay`.
//!
//! # Default universe
//!
//! Spot `BTCUSDT`, `ETHUSDT` (listed 2017-08-17), `BNBUSDT` (2017-11-06), `SYM01USDT`..`SYM20USDT`
//! (2019-01-01), `NEWCOINUSDT` (2024-03-15 06:00), `GONEUSDT` (2019-01-01, delisted 2024-05-20
//! 12:00 and gone from exchangeInfo: only the archive's listing shows it) and `HALTUSDT`
//! (2020-02-10, delisted 2024-09-03, still in exchangeInfo with status `BREAK`); USDⓈ-M `BTCUSDT` (2019-09-08), `ETHUSDT` (2019-11-27); COIN-M `BTCUSD_PERP`,
//! `ETHUSD_PERP` (2020-08-11) and the quarterly `BTCUSD_250627` (2024-12-27, delivered 2025-06-27
//! 08:00 UTC: no candle opens after that). Unknown symbols: Vision 404, REST `-1121`.
//!
//! # Fault syntax
//!
//! `KIND[=ARG][@GLOB][#N|%P|~N]` — `GLOB` matches the request path (`*` matches anything, `/` included;
//! default `*`), `#N` = first N matching requests, `~N` = every one after the first N, `%P` = probability P per request, default always.
//! Kinds: `hang`, `slow=BYTES_PER_SEC`, `reset`, `truncate`, `checksum-mismatch`, `corrupt-zip`,
//! `short-file[=FRACTION]` (a valid zip with a matching checksum that holds only the first part of
//! the rows), `no-newline[=BYTES]` (an entry that inflates to BYTES with no line break),
//! `republish[=FRACTION]` (the file re-published with some rows changed, matching checksum),
//! `missing-checksum`, `status500`, `status403`, `status429`, `status418`, `duplicate-rows`,
//! `gap=START..END[:SYMBOL]` (RFC 3339, `YYYY-MM-DD` or epoch ms). Checksum kinds also match a glob
//! written for the zip (`*.zip` hits `….zip.CHECKSUM`). Examples: `hang@/data/spot/*#2`,
//! `slow=2000@*.zip`, `status500@/api/v3/klines%0.5`,
//! `gap=2024-01-01T00:00:00Z..2024-01-01T02:00:00Z:BTCUSDT`.
//!
//! # Example
//!
//! ```no_run
//! use dsm_emulator::{Emulator, EmulatorConfig, Fault, KlineKind, Market};
//! use chrono::{TimeZone, Utc};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let now = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap();
//! let emu = Emulator::start(EmulatorConfig::default().with_now(now).with_seed(7)).await?;
//! emu.add_fault("status500@/api/v3/klines#1".parse::<Fault>()?);
//! let url = format!(
//!     "{}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-01.zip",
//!     emu.base_url()
//! );
//! let truth = emu.klines(Market::Spot, KlineKind::Klines, "BTCUSDT", "1m", 1_706_745_600_000, 1_706_832_000_000);
//! assert_eq!(truth.len(), 1440);
//! # let _ = url;
//! emu.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod fault;
mod limits;
mod lru;
mod market;
mod reply;
mod rest;
mod server;
mod store;
mod synth;
mod tables;
mod vision;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fault::{Fault, FaultKind, FaultLimit, FaultParseError};
pub use limits::RateLimits;
pub use market::{Interval, KlineKind, Market, SymbolSpec, default_symbols};
pub use tables::{TableKind, TableRow};

use crate::fault::FaultSet;
use crate::limits::Limiter;
use crate::market::date_ms;
use crate::store::{GapRange, Store};
use crate::synth::fixed_f64;
use crate::vision::{FileCache, VisionRules};

/// Everything the emulator can be told at start.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Folder holding real files as `data/…` (same layout as Vision); they take precedence.
    pub root: Option<PathBuf>,
    /// Emulator clock start; `None` = real time. The clock runs forward in real time from it.
    pub now: Option<DateTime<Utc>>,
    /// Seed of all synthetic data and of probabilistic faults.
    pub seed: u64,
    /// The universe.
    pub symbols: Vec<SymbolSpec>,
    /// A daily file for day D is visible from D+1 00:00 + this (default 8 h).
    pub daily_publish_delay: Duration,
    /// A monthly file is visible from the month's end + this (default 2 days).
    pub monthly_publish_delay: Duration,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
    /// REST weight limits.
    pub rate_limits: RateLimits,
    /// Address to bind (default `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// [U] UM/CM kline-class files dated on or after this have a header row (default 2022-05-01).
    pub futures_klines_header_from: NaiveDate,
    /// [U] UM/CM `trades`/`aggTrades` files dated on or after this have a header (default 2022-08-11).
    pub futures_trades_header_from: NaiveDate,
    /// Spot files with data dated on or after this use microseconds (default 2025-01-01).
    pub spot_micros_from: NaiveDate,
    /// COIN-M kline window in days (default 200).
    pub cm_max_window_days: i64,
    /// [U] COIN-M: a span over the window is an error (`-1130`); else the start is moved up.
    pub cm_window_error: bool,
    /// Synthetic trades per day (and aggregate trades derived from them; default 1000).
    pub trades_per_day: u32,
    /// Whether synthetic `.CHECKSUM` files end with `\n` (Binance: no; default false).
    pub checksum_trailing_newline: bool,
    /// Bound of the in-memory zip cache in bytes (default 256 MiB).
    pub zip_cache_bytes: usize,
    /// Listing reports exact `Size`/`ETag` for files up to this many rows (or already cached);
    /// bigger ones get an estimated size and a multipart-style ETag (default 100: hourly and coarser
    /// daily files, daily-or-coarser monthly files, funding).
    pub listing_exact_max_rows: u64,
}

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            root: None,
            now: None,
            seed: 42,
            symbols: default_symbols(),
            daily_publish_delay: Duration::from_secs(8 * 3600),
            monthly_publish_delay: Duration::from_secs(2 * 86_400),
            faults: Vec::new(),
            rate_limits: RateLimits::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            futures_klines_header_from: ymd(2022, 5, 1),
            futures_trades_header_from: ymd(2022, 8, 11),
            spot_micros_from: ymd(2025, 1, 1),
            cm_max_window_days: 200,
            cm_window_error: true,
            trades_per_day: 1000,
            checksum_trailing_newline: false,
            zip_cache_bytes: 256 << 20,
            listing_exact_max_rows: 100,
        }
    }
}

impl EmulatorConfig {
    /// Serve real files from `root` (a folder holding `data/…`).
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }
    /// Start the clock at `now`.
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }
    /// Set the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Add a fault active from the start.
    pub fn with_fault(mut self, f: Fault) -> Self {
        self.faults.push(f);
        self
    }
    /// Replace the rate limits.
    pub fn with_rate_limits(mut self, r: RateLimits) -> Self {
        self.rate_limits = r;
        self
    }
    /// Replace the universe.
    pub fn with_symbols(mut self, s: Vec<SymbolSpec>) -> Self {
        self.symbols = s;
        self
    }
    /// Set both publication delays.
    pub fn with_publish_delays(mut self, daily: Duration, monthly: Duration) -> Self {
        self.daily_publish_delay = daily;
        self.monthly_publish_delay = monthly;
        self
    }
}

/// A closed (or, in REST, open) candle as `f64`s equal to what the CSV/JSON text parses to.
#[derive(Debug, Clone, PartialEq)]
pub struct KlineRow {
    /// Open time, ms.
    pub open_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Base volume (COIN-M: contracts).
    pub volume: f64,
    /// `open_time + interval − 1`, ms.
    pub close_time: i64,
    /// Quote volume (COIN-M: base asset volume).
    pub quote_volume: f64,
    pub count: i64,
    pub taker_buy_volume: f64,
    pub taker_buy_quote_volume: f64,
}

/// A funding record.
#[derive(Debug, Clone, PartialEq)]
pub struct FundingRow {
    /// Funding (calc) time in ms, with Binance's 0–13 ms jitter.
    pub funding_time: i64,
    pub funding_interval_hours: i32,
    pub funding_rate: f64,
    /// The mark price REST's fundingRate sends with the record (USD-M only; Vision's files and
    /// COIN-M do not carry one).
    pub mark_price: Option<f64>,
}

/// A trade (`time` in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct TradeRow {
    pub id: i64,
    pub price: f64,
    /// Quantity (COIN-M: contracts).
    pub qty: f64,
    /// Quote quantity (COIN-M: base quantity).
    pub quote_qty: f64,
    pub time: i64,
    pub is_buyer_maker: bool,
}

/// An aggregate trade (`time` in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct AggTradeRow {
    pub agg_id: i64,
    pub price: f64,
    pub qty: f64,
    pub first_trade_id: i64,
    pub last_trade_id: i64,
    pub time: i64,
    pub is_buyer_maker: bool,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Requests answered or hung (admin requests excluded).
    pub total_requests: u64,
    /// By path (no query).
    pub requests_by_path: BTreeMap<String, u64>,
    /// By status (0 = hung, never answered).
    pub requests_by_status: BTreeMap<u16, u64>,
    /// TCP connections open now.
    pub open_connections: u64,
    /// TCP connections accepted since start.
    pub total_connections: u64,
}

/// One request in the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// 0 when the request was hung.
    pub status: u16,
    /// Body bytes the server meant to send (the partial length under reset/truncate faults).
    pub bytes: u64,
}

/// The emulator clock: a start instant that runs on in real (tokio) time.
#[derive(Debug)]
pub(crate) struct Clock {
    inner: Mutex<Option<(DateTime<Utc>, tokio::time::Instant)>>,
}

impl Clock {
    fn new(now: Option<DateTime<Utc>>) -> Clock {
        Clock {
            inner: Mutex::new(now.map(|t| (t, tokio::time::Instant::now()))),
        }
    }
    pub(crate) fn now(&self) -> DateTime<Utc> {
        match *self.inner.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((t, at)) => t + TimeDelta::from_std(at.elapsed()).unwrap_or_default(),
            None => Utc::now(),
        }
    }
    pub(crate) fn set(&self, t: DateTime<Utc>) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((t, tokio::time::Instant::now()));
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub stats: Stats,
    pub log: Vec<LoggedRequest>,
}

/// State shared by the server tasks and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Store,
    pub rules: VisionRules,
    pub files: FileCache,
    pub clock: Clock,
    pub faults: Mutex<FaultSet>,
    pub limiter: Mutex<Limiter>,
    pub rate_limits: RateLimits,
    pub stats: Mutex<StatsInner>,
    pub open_conns: AtomicU64,
    pub total_conns: AtomicU64,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    pub cm_max_window_days: i64,
    pub cm_window_error: bool,
}

impl Shared {
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn refresh_gaps(&self) {
        let gaps = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list()
            .into_iter()
            .filter_map(|f| match f.kind {
                FaultKind::Gap { start, end, symbol } => Some(GapRange {
                    start: start.timestamp_millis(),
                    end: end.timestamp_millis(),
                    symbol,
                }),
                _ => None,
            })
            .collect();
        self.store.set_gaps(gaps);
    }

    pub(crate) fn add_fault(&self, f: Fault) {
        let gap = matches!(f.kind, FaultKind::Gap { .. });
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).add(f);
        if gap {
            self.refresh_gaps();
        }
    }

    pub(crate) fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.refresh_gaps();
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .clone();
        s.open_connections = self.open_conns.load(Ordering::SeqCst);
        s.total_connections = self.total_conns.load(Ordering::SeqCst);
        s
    }
}

/// A running emulator. Dropping it stops the server and closes every connection.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `config.bind` (default `127.0.0.1:0`) and starts serving.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let to_delta = |d: Duration| TimeDelta::from_std(d).unwrap_or_default();
        let store = Store::new(
            config.seed,
            config.symbols.clone(),
            config.root.as_deref(),
            config.trades_per_day,
        );
        let shared = Arc::new(Shared {
            store,
            rules: VisionRules {
                daily_delay: to_delta(config.daily_publish_delay),
                monthly_delay: to_delta(config.monthly_publish_delay),
                futures_klines_header_from: config.futures_klines_header_from,
                futures_trades_header_from: config.futures_trades_header_from,
                spot_micros_from: config.spot_micros_from,
                checksum_trailing_newline: config.checksum_trailing_newline,
                listing_exact_max_rows: config.listing_exact_max_rows,
            },
            files: FileCache::new(config.zip_cache_bytes),
            clock: Clock::new(config.now),
            faults: Mutex::new(FaultSet::new(config.seed, config.faults.clone())),
            limiter: Mutex::new(Limiter::new(config.rate_limits.clone())),
            rate_limits: config.rate_limits.clone(),
            stats: Mutex::new(StatsInner::default()),
            open_conns: AtomicU64::new(0),
            total_conns: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            cm_max_window_days: config.cm_max_window_days,
            cm_window_error: config.cm_window_error,
        });
        shared.refresh_gaps();
        let s = shared.clone();
        shared.tracker.spawn(server::accept_loop(listener, s));
        tracing::info!(%addr, "dsm-emulator listening");
        Ok(Emulator { shared, addr })
    }

    /// `http://127.0.0.1:PORT`: Vision at `{base}/data/…`, REST at `{base}/api/v3/…`, `/fapi/v1/…`,
    /// `/dapi/v1/…`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `{base}/data.binance.vision`: the S3 ListObjects v1 endpoint (path-style bucket).
    pub fn list_url(&self) -> String {
        format!("{}/data.binance.vision", self.base_url())
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The emulator clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Sets the clock; it then runs on from `t`.
    pub fn set_now(&self, t: DateTime<Utc>) {
        self.shared.clock.set(t);
    }

    /// Adds a fault.
    pub fn add_fault(&self, f: Fault) {
        self.shared.add_fault(f);
    }

    /// Removes every fault (gaps included).
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// The active faults.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Requests so far (admin requests excluded).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clone()
    }

    /// Clears the request log (counters are kept).
    pub fn clear_log(&self) {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clear();
    }

    /// REST weight used in the current window of `market`.
    pub fn used_weight(&self, market: Market) -> u32 {
        self.shared
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .used(market)
    }

    /// The truth for closed candles of a kline-class kind: what both Vision and REST serve, rows with
    /// `open_time` in `[start_ms, end_ms)`, ascending. `interval` is a REST (`1M`) or Vision (`1mo`)
    /// name; `symbol` is the pair for [`KlineKind::IndexPrice`]. Unknown ⇒ empty.
    pub fn klines(
        &self,
        market: Market,
        kind: KlineKind,
        symbol: &str,
        interval: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<KlineRow> {
        let Some(iv) = Interval::from_rest(interval).or_else(|| Interval::from_vision(interval))
        else {
            return Vec::new();
        };
        let Some(s) = self.shared.store.series(market, kind, symbol) else {
            return Vec::new();
        };
        let f = s.fmt;
        self.shared
            .store
            .closed(&s, iv, start_ms, end_ms, self.shared.now_ms())
            .iter()
            .map(|c| KlineRow {
                open_time: c.open_time,
                open: fixed_f64(c.open, f.price_dp),
                high: fixed_f64(c.high, f.price_dp),
                low: fixed_f64(c.low, f.price_dp),
                close: fixed_f64(c.close, f.price_dp),
                volume: fixed_f64(c.volume, f.vol_dp),
                close_time: c.open_time + iv.len_at(c.open_time) - 1,
                quote_volume: fixed_f64(c.quote_volume, f.quote_dp),
                count: c.count,
                taker_buy_volume: fixed_f64(c.taker_buy_volume, f.vol_dp),
                taker_buy_quote_volume: fixed_f64(c.taker_buy_quote_volume, f.quote_dp),
            })
            .collect()
    }

    /// Funding records with `funding_time` in `[start_ms, end_ms)` and not after now.
    pub fn funding(
        &self,
        market: Market,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<FundingRow> {
        let end = end_ms.min(self.shared.now_ms() + 1);
        self.shared
            .store
            .funding(market, symbol, start_ms, end)
            .iter()
            .map(|f| FundingRow {
                funding_time: f.time,
                funding_interval_hours: f.interval_hours,
                funding_rate: fixed_f64(f.rate, synth::FUNDING_DP),
                mark_price: (market == Market::Um).then(|| fixed_f64(f.mark, 8)),
            })
            .collect()
    }

    fn days(start_ms: i64, end_ms: i64) -> Vec<NaiveDate> {
        let mut v = Vec::new();
        if start_ms >= end_ms {
            return v;
        }
        let mut d = market::ms_to_date(start_ms);
        while date_ms(d) < end_ms {
            v.push(d);
            match d.succ_opt() {
                Some(n) => d = n,
                None => break,
            }
        }
        v
    }

    /// Trades with `time` in `[start_ms, end_ms)` and not after now (day-granular generation).
    pub fn trades(
        &self,
        market: Market,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<TradeRow> {
        let Some((s, tf)) = self.shared.store.trade_fmt(market, symbol) else {
            return Vec::new();
        };
        let end = end_ms.min(self.shared.now_ms() + 1);
        let mut out = Vec::new();
        for d in Self::days(start_ms.max(s.listed_ms), end) {
            for t in self.shared.store.trades_day(market, symbol, d) {
                if t.time >= start_ms && t.time < end {
                    out.push(TradeRow {
                        id: t.id,
                        price: fixed_f64(t.price, s.fmt.price_dp),
                        qty: fixed_f64(t.qty, tf.qty_dp),
                        quote_qty: fixed_f64(t.quote_qty, tf.quote_dp),
                        time: t.time,
                        is_buyer_maker: t.is_buyer_maker,
                    });
                }
            }
        }
        out
    }

    /// Aggregate trades with `time` in `[start_ms, end_ms)` and not after now.
    pub fn agg_trades(
        &self,
        market: Market,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<AggTradeRow> {
        let Some((s, tf)) = self.shared.store.trade_fmt(market, symbol) else {
            return Vec::new();
        };
        let end = end_ms.min(self.shared.now_ms() + 1);
        let mut out = Vec::new();
        for d in Self::days(start_ms.max(s.listed_ms), end) {
            for t in self.shared.store.agg_trades_day(market, symbol, d) {
                if t.time >= start_ms && t.time < end {
                    out.push(AggTradeRow {
                        agg_id: t.agg_id,
                        price: fixed_f64(t.price, s.fmt.price_dp),
                        qty: fixed_f64(t.qty, tf.qty_dp),
                        first_trade_id: t.first_id,
                        last_trade_id: t.last_id,
                        time: t.time,
                        is_buyer_maker: t.is_buyer_maker,
                    });
                }
            }
        }
        out
    }

    /// The truth for an archive table: the rows of `symbol`'s `kind` on `market` with time in
    /// `[start_ms, end_ms)` inside the series' life, each once, by time (the files list them out
    /// of order and repeated where the archive does). Unknown ⇒ empty.
    pub fn table(
        &self,
        market: Market,
        kind: TableKind,
        symbol: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<TableRow> {
        let store = &self.shared.store;
        let Some((first, end)) = kind.life(store, market, symbol) else {
            return Vec::new();
        };
        let (a, z) = (start_ms.max(first), end_ms.min(end));
        Self::days(a, z)
            .into_iter()
            .flat_map(|d| kind.rows(store.seed, symbol, d))
            .filter(|r| r.time >= a && r.time < z)
            .collect()
    }

    /// Stops accepting, closes every connection (hung ones included) and waits for the server tasks.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.tracker.wait()).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
    }
}
