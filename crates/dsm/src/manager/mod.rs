//! The DataSourceManager: plans a request against the cache, the Vision archive and the REST API,
//! runs the plan under one owner, and returns one sorted, de-duplicated, gap-reported answer.
//!
//! The manager owns one pooled HTTP client (shared by the Vision and REST clients), the cache
//! handle, a root cancellation token and a task tracker. Every request runs inside the caller's
//! future under a child token: dropping the future, cancelling, or `shutdown` stops it, and the
//! guards of the modules below (temporary files, blocking parsers) clean up synchronously.

mod exec;
mod merge;
mod plan;
mod republish;

pub use crate::rest::RestUrls;
pub use republish::{RepublishReport, Republished};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::CacheStore;
use crate::error::{Error, IncompleteError, InputError, Result};
use crate::http::LazyClient;
use crate::market::{DataKind, Interval, Market, Symbol};
use crate::rest::{RestClient, RestConfig};
use crate::time::TimeRange;
use crate::vision::{VisionClient, VisionConfig};

/// Which sources a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePolicy {
    /// Cache first, then Vision for what is old enough, then REST (the default).
    #[default]
    Auto,
    /// Offline: the cache only, no network call at all; missing data is reported, not fetched.
    Cache,
    /// The Vision archive only (plus the cache).
    Vision,
    /// The REST API only (plus the cache).
    Rest,
}

impl SourcePolicy {
    /// Whether the Vision archive may be asked (`auto`, `vision`).
    pub fn uses_vision(self) -> bool {
        matches!(self, SourcePolicy::Auto | SourcePolicy::Vision)
    }

    /// Whether the REST API may be asked (`auto`, `rest`).
    pub fn uses_rest(self) -> bool {
        matches!(self, SourcePolicy::Auto | SourcePolicy::Rest)
    }
}

impl std::str::FromStr for SourcePolicy {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        match s {
            "auto" => Ok(SourcePolicy::Auto),
            "cache" => Ok(SourcePolicy::Cache),
            "vision" => Ok(SourcePolicy::Vision),
            "rest" => Ok(SourcePolicy::Rest),
            _ => Err(InputError::Invalid {
                what: "source",
                reason: format!("{s:?}: use auto, cache, vision or rest"),
            }),
        }
    }
}

/// Fails unless `url` is an absolute http(s) URL (an empty or relative one would fail every
/// request with a message that names no URL).
fn check_url(what: &'static str, url: &str) -> std::result::Result<(), InputError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(InputError::Invalid {
            what,
            reason: format!(
                "{url:?} is not an http(s) URL; give a full one, e.g. https://data.binance.vision"
            ),
        }),
    }
}

/// The directory of the cache that keeps the REST weight budget, learnt limits and bans.
const REST_STATE_DIR: &str = "rest";

/// How a manager is set up. `Default` talks to the real Binance with a cache in the default place.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Cache directory; `None` = `$DSM_CACHE_DIR`, else the platform cache dir (`~/.cache/dsm`).
    pub cache_dir: Option<PathBuf>,
    /// Whether to read and write the cache at all.
    pub use_cache: bool,
    /// Vision archive base URL (`https://data.binance.vision`).
    pub vision_url: String,
    /// REST base URLs.
    pub rest_urls: RestUrls,
    /// Source policy for requests that do not override it.
    pub source: SourcePolicy,
    /// Most Vision downloads in flight at once.
    pub vision_concurrency: usize,
    /// How long after a day ends its Vision daily file may still be missing (default 36 h). Days
    /// older than that are assumed published; the missing days inside it are probed in order, one
    /// `.CHECKSUM` request each, and come from Vision if it has them; from the first day it lacks
    /// (remembered for an hour), they come from REST.
    pub vision_publish_delay: Duration,
    /// TCP connect timeout for every request.
    pub connect_timeout: Duration,
    /// How slow an answer may be before an attempt fails: the longest silence (default 10 s) and
    /// the least progress over a window (default 4 KiB/s over 10 s). See [`crate::Pace`].
    pub pace: crate::Pace,
    /// Retries of a transient failure before it becomes an error (default 3). With the defaults a
    /// dead upstream costs at most about 45 s before dsm falls back to the other source or fails.
    pub retries: u32,
    /// Accept Vision files whose `.CHECKSUM` is missing (default: reject).
    pub accept_missing_checksum: bool,
    /// Spot's REST weight limit per minute until the server's is read from `exchangeInfo`
    /// (default 6000, Binance's).
    pub spot_weight_per_minute: u32,
    /// Each futures market's limit until the server's is read (default 2400, Binance's).
    pub futures_weight_per_minute: u32,
    /// The REST weight budget per window of every market, used as given instead of 90% of the
    /// server's limit; `None` (default) = follow the server.
    pub weight_limit: Option<u32>,
    /// Most REST pages of one symbol in flight at once (default 4; all share the weight budget).
    pub rest_concurrency: usize,
    /// When a market's REST API has banned this IP (HTTP 418, remembered across runs in the cache
    /// directory): wait for the ban to end instead of failing at once (default false).
    pub wait_on_ban: bool,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            cache_dir: None,
            use_cache: true,
            vision_url: "https://data.binance.vision".into(),
            rest_urls: RestUrls::default(),
            source: SourcePolicy::Auto,
            vision_concurrency: 8,
            vision_publish_delay: Duration::from_secs(36 * 3600),
            connect_timeout: Duration::from_secs(10),
            pace: crate::Pace::default(),
            retries: 3,
            accept_missing_checksum: false,
            spot_weight_per_minute: 6000,
            futures_weight_per_minute: 2400,
            weight_limit: None,
            rest_concurrency: 4,
            wait_on_ban: false,
        }
    }
}

/// Progress of a running request, for progress bars.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// `files` Vision files and `pages` REST pages are planned.
    Planned {
        /// Vision files to download.
        files: u64,
        /// REST pages (estimated).
        pages: u64,
    },
    /// One Vision file or REST page is done.
    Fetched {
        /// Rows it held.
        rows: u64,
        /// Bytes downloaded.
        bytes: u64,
    },
}

/// A callback that receives [`Progress`] events.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// One request: a market, a kind, one or more symbols, an interval for candles, and `[start, end)`.
#[derive(Clone)]
pub struct Request {
    /// The market.
    pub market: Market,
    /// The data kind.
    pub kind: DataKind,
    /// One or more symbols (they share one budget and one cache).
    pub symbols: Vec<Symbol>,
    /// The interval, for kline-class kinds.
    pub interval: Option<Interval>,
    /// The half-open range on open time.
    pub range: TimeRange,
    /// Include the still-open candle (never cached).
    pub include_open: bool,
    /// Accept an answer that lacks part of the range (listed in [`SymbolResult::missing`]) instead
    /// of failing with [`Error::Incomplete`]. Off by default: an answer is complete or an error.
    pub allow_partial: bool,
    /// Overrides the manager's source policy.
    pub source: Option<SourcePolicy>,
    /// Receives progress events.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("market", &self.market)
            .field("kind", &self.kind)
            .field("symbols", &self.symbols)
            .field("interval", &self.interval)
            .field("range", &self.range)
            .field("include_open", &self.include_open)
            .field("allow_partial", &self.allow_partial)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A klines request for one symbol.
    pub fn klines(market: Market, symbol: Symbol, interval: Interval, range: TimeRange) -> Request {
        Request::new(
            market,
            DataKind::Klines,
            vec![symbol],
            Some(interval),
            range,
        )
    }

    /// A request for any kind.
    pub fn new(
        market: Market,
        kind: DataKind,
        symbols: Vec<Symbol>,
        interval: Option<Interval>,
        range: TimeRange,
    ) -> Request {
        Request {
            market,
            kind,
            symbols,
            interval,
            range,
            include_open: false,
            allow_partial: false,
            source: None,
            progress: None,
        }
    }

    /// The error for a delivery contract whose delivery is at or before the range's start
    /// (nothing of the range exists).
    fn delivered_before_start(&self) -> Option<crate::error::UnavailableError> {
        if !self.market.is_futures() {
            return None;
        }
        self.symbols.iter().find_map(|s| {
            let delivered = s.delivery_time()?;
            (delivered <= self.range.start()).then(|| crate::error::UnavailableError::Delivered {
                symbol: s.clone(),
                delivered,
            })
        })
    }

    /// Checks the request before any network call.
    pub fn validate(&self) -> Result<(), InputError> {
        self.market.check(self.kind, self.interval)?;
        if self.symbols.is_empty() {
            return Err(InputError::Invalid {
                what: "request",
                reason: "no symbol given".into(),
            });
        }
        for s in &self.symbols {
            Symbol::for_market(s.as_str(), self.market, self.kind)?;
        }
        Ok(())
    }
}

/// Requests and bytes one source cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceStats {
    /// HTTP requests made.
    pub requests: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Rows obtained.
    pub rows: u64,
}

/// What a request cost and where its rows came from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Rows returned.
    pub rows: u64,
    /// Rows served from the cache.
    pub cache_rows: u64,
    /// Cache partitions read.
    pub cache_hits: u64,
    /// Vision archive cost.
    pub vision: SourceStats,
    /// REST API cost.
    pub rest: SourceStats,
    /// REST weight used.
    pub rest_weight: u64,
    /// Parts that could not be had (each a one-line description).
    pub failures: Vec<String>,
    /// Vision files that verified but lack rows the REST API has (Binance has published such
    /// files): their missing windows were taken from REST, never remembered as exchange gaps.
    pub short_files: Vec<String>,
    /// Wall time (serialised as milliseconds, `elapsed_ms`).
    #[serde(rename = "elapsed_ms", serialize_with = "serialize_ms")]
    pub elapsed: Duration,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The answer for one symbol.
#[derive(Debug, Clone)]
pub struct SymbolResult {
    /// The symbol.
    pub symbol: Symbol,
    /// The schema of `batches` ([`crate::schema::output_schema`]).
    pub schema: SchemaRef,
    /// Rows sorted by time, de-duplicated, exactly `[start, end)`.
    pub batches: Vec<RecordBatch>,
    /// Ranges the exchange has no data for (downtime, before listing): reported, never padded.
    pub gaps: Vec<TimeRange>,
    /// Ranges no allowed source could supply (e.g. not in the cache with `--source cache`, not yet
    /// on Vision with `--source vision`): reported so a partial answer never looks complete.
    pub missing: Vec<TimeRange>,
    /// Parts of the range after a delivery contract's delivery: outside the symbol's life, so
    /// neither gaps nor missing.
    pub outside_life: Vec<TimeRange>,
    /// Time (ms) of the first row, if any.
    pub first_time: Option<i64>,
    /// Time (ms) of the last row, if any.
    pub last_time: Option<i64>,
    /// What this symbol cost.
    pub summary: Summary,
}

impl SymbolResult {
    /// No rows for `symbol`: nothing missing, no gaps.
    pub(crate) fn empty(symbol: Symbol, schema: SchemaRef) -> SymbolResult {
        SymbolResult {
            symbol,
            schema,
            batches: Vec::new(),
            gaps: Vec::new(),
            missing: Vec::new(),
            outside_life: Vec::new(),
            first_time: None,
            last_time: None,
            summary: Summary::default(),
        }
    }

    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether every part of the range was obtained (`missing` is empty): rows and confirmed gaps
    /// account for all of it.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// `Ok` if complete, else the [`IncompleteError`] that names what is missing.
    pub fn check_complete(&self) -> Result<(), IncompleteError> {
        if self.is_complete() {
            return Ok(());
        }
        Err(IncompleteError::new(
            self.symbol.clone(),
            self.missing.clone(),
            &self.summary.failures,
        ))
    }
}

/// The answer to a [`Request`]: one [`SymbolResult`] per symbol, in request order.
#[derive(Debug, Clone)]
pub struct Response {
    /// Per-symbol results.
    pub results: Vec<SymbolResult>,
    /// Totals over all symbols.
    pub summary: Summary,
}

impl Response {
    /// Whether every symbol's answer is complete ([`SymbolResult::is_complete`]). Always true for
    /// a request that did not set [`Request::allow_partial`]: an incomplete answer is an error.
    ///
    /// ```no_run
    /// use dsm::{DataSourceManager, Interval, ManagerConfig, Market, Request, SourcePolicy, Symbol};
    ///
    /// # async fn run() -> dsm::Result<()> {
    /// let manager = DataSourceManager::new(ManagerConfig::default())?;
    /// let range = dsm::TimeRange::new(1_704_067_200_000, 1_706_745_600_000)?;
    /// let mut request = Request::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1, range);
    /// request.source = Some(SourcePolicy::Cache); // offline: whatever is cached
    /// match manager.get(request.clone()).await {
    ///     Err(dsm::Error::Incomplete(e)) => println!("not all cached: {:?}", e.missing),
    ///     other => println!("{:?}", other.map(|r| r.summary.rows)),
    /// }
    /// request.allow_partial = true; // take what there is
    /// let response = manager.get(request).await?;
    /// if !response.is_complete() {
    ///     println!("missing: {:?}", response.results[0].missing);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_complete(&self) -> bool {
        self.results.iter().all(SymbolResult::is_complete)
    }
}

/// The Data Source Manager. Owns its HTTP client, cache handle and every task it starts.
///
/// ```no_run
/// use dsm::{DataSourceManager, Interval, ManagerConfig, Market, Request, Symbol, TimeRange};
/// use dsm::time::parse_instant;
///
/// # async fn run() -> dsm::Result<()> {
/// let manager = DataSourceManager::new(ManagerConfig::default())?;
/// let range = TimeRange::new(parse_instant("2024-01-01")?, parse_instant("2024-02-01")?)?;
/// let request = Request::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1, range);
/// let response = manager.get(request).await?;
/// let btc = &response.results[0];
/// println!("{} candles, gaps: {:?}", btc.num_rows(), btc.gaps);
/// manager.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DataSourceManager {
    config: ManagerConfig,
    vision: VisionClient,
    rest: RestClient,
    cache: Option<CacheStore>,
    frontier: exec::Frontier,
    /// Set when a cache write failed for want of space or permission (see `exec::Ctx::stored`).
    cache_off: std::sync::atomic::AtomicBool,
    root: CancellationToken,
    tracker: TaskTracker,
}

impl DataSourceManager {
    /// A manager with `config`: one pooled HTTP client shared by the Vision and REST clients (built
    /// when the first request goes to the network, so an answer from the cache alone never loads
    /// the platform's root certificates), and the cache (unless `use_cache` is off). No network
    /// call happens here.
    pub fn new(config: ManagerConfig) -> Result<DataSourceManager> {
        check_url("vision_url", &config.vision_url)?;
        for m in [Market::Spot, Market::UsdM, Market::CoinM] {
            check_url("rest_urls", config.rest_urls.for_market(m))?;
        }
        let (connect_timeout, read_timeout) = (config.connect_timeout, config.pace.silence);
        let http = LazyClient::new(move || {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .read_timeout(read_timeout)
                .pool_idle_timeout(Duration::from_secs(30))
                .user_agent(concat!("dsm/", env!("CARGO_PKG_VERSION")))
                .build()
        });
        let vision_cfg = VisionConfig {
            concurrency: config.vision_concurrency.max(1),
            connect_timeout: config.connect_timeout,
            pace: config.pace,
            retries: config.retries as usize,
            accept_missing_checksum: config.accept_missing_checksum,
            ..VisionConfig::for_base(&config.vision_url)
        };
        let cache_dir = match &config.cache_dir {
            Some(dir) => Some(dir.clone()),
            None => CacheStore::default_dir().ok(),
        };
        let rest_cfg = RestConfig {
            urls: config.rest_urls.clone(),
            connect_timeout: config.connect_timeout,
            pace: config.pace,
            retries: config.retries,
            spot_weight_per_minute: config.spot_weight_per_minute,
            futures_weight_per_minute: config.futures_weight_per_minute,
            weight_limit: config.weight_limit,
            max_concurrent_pages: config.rest_concurrency.max(1),
            wait_on_ban: config.wait_on_ban,
            // Bans and the weight used are shared by every process on the machine, with or
            // without the data cache.
            state_dir: cache_dir.as_ref().map(|d| d.join(REST_STATE_DIR)),
            ..RestConfig::default()
        };
        let cache = if config.use_cache {
            let opened = match &cache_dir {
                Some(dir) => CacheStore::open(dir),
                None => CacheStore::open_default(),
            };
            match opened {
                Ok(cache) => Some(cache),
                // A cache that cannot be created (a read-only place, a full disk) does not stop a
                // fetch: it runs without one.
                Err(e @ crate::cache::CacheError::Io { .. }) => {
                    tracing::warn!(error = %e, "cannot open the cache; fetching without it");
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        Ok(DataSourceManager {
            vision: VisionClient::with_lazy_client(vision_cfg, http.clone()),
            rest: RestClient::with_lazy_client(rest_cfg, http),
            cache,
            frontier: exec::Frontier::default(),
            cache_off: Default::default(),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The cache store, unless the cache is off.
    pub fn cache(&self) -> Option<&CacheStore> {
        self.cache.as_ref()
    }

    /// Answers `request`: every row in `[start, end)` for each symbol, from the cheapest correct
    /// source, with gaps and what it cost.
    ///
    /// Bad input fails before any network call. The symbols run concurrently and share one weight
    /// budget and one cache; the first failure fails the request (no partial answer is returned as
    /// if complete). Dropping the future cancels everything it started; verified pieces already
    /// written to the cache stay there, so a rerun resumes.
    pub async fn get(&self, request: Request) -> Result<Response> {
        self.get_with_cancel(request, &CancellationToken::new())
            .await
    }

    /// [`DataSourceManager::get`], also cancelled when `token` is: it then returns
    /// [`Error::Cancelled`] promptly, with nothing left running.
    pub async fn get_with_cancel(
        &self,
        request: Request,
        token: &CancellationToken,
    ) -> Result<Response> {
        request.validate()?;
        self.run(&request, token, &tokio::sync::OnceCell::new(), false)
            .await
    }

    /// Answers `request` window by window, in time order, so a caller that writes each window out
    /// (to a file, a database) holds a few windows in memory whatever the range's length.
    ///
    /// Windows are the cache's partitions (a day of 1s candles or trades, a month of other
    /// intervals under 1h, a year of longer ones); each item is the [`Response`] for one window,
    /// with the same guarantees as [`DataSourceManager::get`] inside it (rows sorted, de-duplicated,
    /// exactly the window; gaps and missing ranges reported). Concatenating the windows gives the
    /// rows of one `get`; a gap that crosses a window boundary comes in two pieces
    /// ([`TimeRange::merge_all`] joins them). At most [`WINDOW_LOOKAHEAD`] windows run at once.
    /// The exchange's clock is read once for the whole request. A symbol with no data in the whole
    /// range ends the stream with the same error `get` returns. Bad input is the first item, before
    /// any network call; dropping the stream, or cancelling `token`, cancels what it started.
    ///
    /// ```no_run
    /// use dsm::{DataSourceManager, Interval, ManagerConfig, Market, Request, Symbol, TimeRange};
    /// use futures::TryStreamExt;
    ///
    /// # async fn run() -> dsm::Result<()> {
    /// let manager = DataSourceManager::new(ManagerConfig::default())?;
    /// let range = TimeRange::new(1_704_067_200_000, 1_706_745_600_000)?;
    /// let request = Request::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::S1, range);
    /// let token = tokio_util::sync::CancellationToken::new();
    /// let mut windows = std::pin::pin!(manager.get_windows(request, &token));
    /// while let Some(window) = windows.try_next().await? {
    ///     let rows: usize = window.results.iter().map(|r| r.num_rows()).sum();
    ///     println!("{rows} rows"); // write them out here
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_windows(
        &self,
        request: Request,
        token: &CancellationToken,
    ) -> impl futures::Stream<Item = Result<Response>> + Send + '_ {
        use futures::StreamExt;
        let token = token.clone();
        let clock = Arc::new(tokio::sync::OnceCell::new());
        let invalid = request
            .validate()
            .err()
            .map(Error::from)
            .or_else(|| request.delivered_before_start().map(Error::from));
        let windows = match invalid {
            None => window_requests(&request),
            Some(_) => Vec::new(),
        };
        let runs = futures::stream::iter(windows)
            .map(move |w| {
                let (token, clock) = (token.clone(), clock.clone());
                async move { self.run(&w, &token, &clock, true).await }
            })
            .buffered(WINDOW_LOOKAHEAD);
        let n = request.symbols.len();
        let state = Windows {
            runs: Box::pin(runs),
            invalid,
            answered: false,
            seen: vec![false; n],
            policy: request.source.unwrap_or(self.config.source),
            request,
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            if let Some(e) = st.invalid.take() {
                st.done = true;
                return Some((Err(e), st));
            }
            let next = st.runs.next().await;
            match next {
                Some(Ok(resp)) => {
                    st.answered = true;
                    for (seen, r) in st.seen.iter_mut().zip(&resp.results) {
                        *seen |= r.num_rows() > 0 || !r.missing.is_empty();
                    }
                    Some((Ok(resp), st))
                }
                // A later window that starts after the exchange's clock: the data ends before it
                // (as `get` ends its answer at the last closed candle), and so do the windows after.
                Some(Err(Error::Unavailable(crate::error::UnavailableError::Future {
                    ..
                }))) if st.answered => {
                    st.done = true;
                    st.finish()
                }
                Some(Err(e)) => {
                    st.done = true;
                    Some((Err(e), st))
                }
                None => {
                    st.done = true;
                    st.finish()
                }
            }
        })
    }

    /// Runs one (validated) request or window under a child token of the manager's root, also
    /// cancelled by `token`.
    async fn run(
        &self,
        request: &Request,
        token: &CancellationToken,
        clock: &tokio::sync::OnceCell<i64>,
        windowed: bool,
    ) -> Result<Response> {
        if self.root.is_cancelled() || token.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let cancel = self.root.child_token();
        // The caller's token cancels this request's own token (and only it).
        let relay = {
            let (caller, mine) = (token.clone(), cancel.clone());
            async move {
                tokio::select! { _ = caller.cancelled() => mine.cancel(), _ = mine.cancelled() => {} }
            }
        };
        // Dropping this future (or returning early) cancels the work it started.
        let _guard = cancel.clone().drop_guard();
        let started = std::time::Instant::now();
        let policy = request.source.unwrap_or(self.config.source);
        let ctx = exec::Ctx {
            vision: &self.vision,
            rest: &self.rest,
            cache: self.cache.as_ref(),
            frontier: &self.frontier,
            publish_delay_ms: self.config.vision_publish_delay.as_millis() as i64,
            policy,
            cancel: &cancel,
            server_now: clock,
            windowed,
            cache_off: &self.cache_off,
        };
        let work = futures::future::try_join_all(
            request
                .symbols
                .iter()
                .map(|s| exec::fetch_symbol(&ctx, request, s)),
        );
        let results = self
            .tracker
            .track_future(async {
                let relayed = async {
                    relay.await;
                    Err(Error::Cancelled)
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(Error::Cancelled),
                    r = relayed => r,
                    r = work => r,
                }
            })
            .await?;
        if !request.allow_partial {
            for r in &results {
                r.check_complete()?;
            }
        }
        let mut summary = Summary::default();
        for r in &results {
            summary.add(&r.summary);
        }
        summary.elapsed = started.elapsed();
        Ok(Response { results, summary })
    }

    /// Cancels in-flight work and waits for it to stop, at most `deadline`. Later requests fail
    /// with [`Error::Cancelled`].
    pub async fn shutdown(&self, deadline: Duration) {
        self.root.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "shutdown deadline passed with work still stopping"
            );
        }
    }
}

/// Windows of a [`DataSourceManager::get_windows`] request running at once.
pub const WINDOW_LOOKAHEAD: usize = 4;

/// The state of a [`DataSourceManager::get_windows`] stream.
struct Windows<S> {
    runs: std::pin::Pin<Box<S>>,
    /// Bad input, reported as the first item.
    invalid: Option<Error>,
    /// A window was answered.
    answered: bool,
    /// Per symbol: some rows (or a missing range) seen so far.
    seen: Vec<bool>,
    policy: SourcePolicy,
    request: Request,
    done: bool,
}

impl<S> Windows<S> {
    /// The end of the stream: the error `get` would return for a symbol with no data at all.
    fn finish(self) -> Option<(Result<Response>, Self)> {
        let empty = self.seen.iter().position(|seen| !seen)?;
        if self.policy == SourcePolicy::Cache {
            return None;
        }
        let e = crate::error::UnavailableError::NoData {
            symbol: self.request.symbols[empty].clone(),
            range: self.request.range,
        };
        Some((Err(e.into()), self))
    }
}

/// `request` cut at its dataset's cache partition boundaries: one request per window, in time
/// order. Windows starting after the local clock join the last one before it (they can only hold
/// the open candle), and only the last window asks for the open candle.
fn window_requests(request: &Request) -> Vec<Request> {
    let Some(first) = request.symbols.first() else {
        return Vec::new();
    };
    let key = crate::cache::DatasetKey {
        market: request.market,
        kind: request.kind,
        symbol: first.clone(),
        interval: request.interval,
    };
    let now = crate::time::now_ms();
    let mut ranges: Vec<TimeRange> = key
        .partitions(request.range)
        .iter()
        .filter_map(|p| p.range.intersect(&request.range))
        .collect();
    while ranges.len() > 1 && ranges.last().is_some_and(|r| r.start() > now) {
        if let (Some(tail), Some(prev)) = (ranges.pop(), ranges.last_mut())
            && let Ok(joined) = TimeRange::new(prev.start(), tail.end())
        {
            *prev = joined;
        }
    }
    let n = ranges.len();
    ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| Request {
            range,
            include_open: request.include_open && i + 1 == n,
            ..request.clone()
        })
        .collect()
}

impl Drop for DataSourceManager {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

impl Summary {
    /// Adds `other`'s counts and failures to these (not its elapsed time).
    pub fn add(&mut self, other: &Summary) {
        self.rows += other.rows;
        self.cache_rows += other.cache_rows;
        self.cache_hits += other.cache_hits;
        self.vision.requests += other.vision.requests;
        self.vision.bytes += other.vision.bytes;
        self.vision.rows += other.vision.rows;
        self.rest.requests += other.rest.requests;
        self.rest.bytes += other.rest.bytes;
        self.rest.rows += other.rest.rows;
        self.rest_weight += other.rest_weight;
        self.failures.extend(other.failures.iter().cloned());
        self.short_files.extend(other.short_files.iter().cloned());
    }
}

/// A blocking front for callers without an async runtime: owns a small runtime and a manager.
///
/// ```no_run
/// use dsm::{BlockingManager, Interval, ManagerConfig, Market, Request, Symbol, TimeRange};
/// let manager = BlockingManager::new(ManagerConfig::default())?;
/// let range = TimeRange::new(1_704_067_200_000, 1_704_153_600_000)?;
/// let request = Request::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::H1, range);
/// let response = manager.get(request)?;
/// assert_eq!(response.results.len(), 1);
/// # Ok::<(), dsm::Error>(())
/// ```
#[derive(Debug)]
pub struct BlockingManager {
    runtime: tokio::runtime::Runtime,
    inner: Option<DataSourceManager>,
}

impl BlockingManager {
    /// A manager and a runtime to drive it. Must not be called from inside an async runtime.
    pub fn new(config: ManagerConfig) -> Result<BlockingManager> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("dsm")
            .build()
            .map_err(|e| {
                Error::Input(InputError::Invalid {
                    what: "runtime",
                    reason: e.to_string(),
                })
            })?;
        let inner = {
            let _enter = runtime.enter();
            DataSourceManager::new(config)?
        };
        Ok(BlockingManager {
            runtime,
            inner: Some(inner),
        })
    }

    /// Answers `request`, blocking the calling thread.
    pub fn get(&self, request: Request) -> Result<Response> {
        match &self.inner {
            Some(m) => self.runtime.block_on(m.get(request)),
            None => Err(Error::Cancelled),
        }
    }
}

impl Drop for BlockingManager {
    fn drop(&mut self) {
        if let Some(m) = self.inner.take() {
            self.runtime.block_on(m.shutdown(Duration::from_secs(2)));
        }
    }
}
