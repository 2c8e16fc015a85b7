//! The DataSourceManager: plans a request against the cache, the Vision archive and the REST API,
//! runs the plan under one owner, and returns one sorted, de-duplicated, gap-reported answer.
//!
//! The manager owns one pooled HTTP client (shared by the Vision and REST clients), the cache
//! handle, a root cancellation token and a task tracker. Every request runs inside the caller's
//! future under a child token: dropping the future, cancelling, or `shutdown` stops it, and the
//! guards of the modules below (temporary files, blocking parsers) clean up synchronously.

mod config;
mod exec;
mod merge;
mod plan;
mod republish;
mod request;
mod response;
mod sync;
mod universe;

pub use crate::rest::RestUrls;
pub use config::ManagerConfig;
use config::REST_STATE_DIR;
pub use republish::{RepublishReport, Republished};
pub use request::{Progress, ProgressFn, Request, SourcePolicy};
pub use response::{Response, SourceStats, Summary, SymbolResult};
pub use sync::{
    Shard, SymbolSync, SyncFailure, SyncOutcome, SyncProgress, SyncProgressFn, SyncRequest,
};
pub use universe::{MarketSymbol, StatusFilter, SymbolStatus, Universe};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::CacheStore;
use crate::error::{Error, InputError, Result};
use crate::http::LazyClient;
use crate::rest::{RestClient, RestConfig};
use crate::time::TimeRange;
use crate::vision::{VisionClient, VisionConfig};

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
        config.check()?;
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
            let url = config.cache_url.clone().or_else(|| {
                std::env::var(crate::cache::CACHE_URL_ENV)
                    .ok()
                    .filter(|u| !u.is_empty())
            });
            let opened = match (&url, &cache_dir) {
                (Some(url), _) => CacheStore::open_url(url),
                (None, Some(dir)) => CacheStore::open(dir),
                (None, None) => CacheStore::open_default(),
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
    let key = request.dataset(first);
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
