//! Syncing a whole universe into the cache: every symbol of a set, each clipped to its life, cut
//! into (symbol, month) units that run under the manager's one download limit and weight budget.
//! A unit is an ordinary request whose answer is dropped once cached, so a rerun reads the cache
//! and downloads only what is missing, and [`Shard`] splits the units among machines with no
//! coordinator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::DataSourceManager;
use super::request::{Request, SourcePolicy};
use super::response::SourceStats;
use super::universe::{
    Directory, MarketSymbol, StatusFilter, SymbolStatus, Universe, check_market,
};
use crate::category::ErrorCategory;
use crate::error::{Error, InputError, Result};
use crate::market::{DataKind, Interval, Market, Symbol};
use crate::time::{TimeRange, now_ms};
use chrono::Datelike;

/// One of `count` shares of a sync's work: the (symbol, month) units whose stable hash falls in it.
/// `count` processes or machines given `1/count` .. `count/count` and one shared cache split a
/// universe between them, with no coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Share `index` (1-based) of `count`.
    pub fn new(index: u32, count: u32) -> std::result::Result<Shard, InputError> {
        if count == 0 || index == 0 || index > count {
            return Err(InputError::Invalid {
                what: "shard",
                reason: format!("{index}/{count}: give K/N with 1 <= K <= N, such as 1/4"),
            });
        }
        Ok(Shard { index, count })
    }

    /// Whether the unit of `symbol` for the month starting at `month` (ms) is in this share: a
    /// CRC-32 of `SYMBOL/YYYY-MM`, the same on every machine and every release.
    ///
    /// ```
    /// use dsm::manager::Shard;
    /// let shards = [Shard::new(1, 2)?, Shard::new(2, 2)?];
    /// let jan = 1_704_067_200_000; // 2024-01
    /// assert_eq!(shards.iter().filter(|s| s.takes("BTCUSDT", jan)).count(), 1);
    /// # Ok::<(), dsm::InputError>(())
    /// ```
    pub fn takes(&self, symbol: &str, month: i64) -> bool {
        let m = crate::time::to_datetime(month);
        let key = format!("{symbol}/{:04}-{:02}", m.year(), m.month());
        crc32fast::hash(key.as_bytes()) % self.count == self.index - 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = InputError;
    fn from_str(s: &str) -> std::result::Result<Self, InputError> {
        let bad = || InputError::Invalid {
            what: "shard",
            reason: format!("{s:?}: give K/N with 1 <= K <= N, such as 1/4"),
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k = k.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Shard::new(k, n)
    }
}

/// Progress of a sync, for progress bars.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SyncProgress {
    /// The work is known: each symbol with its units (months) in this shard.
    Planned {
        /// Symbols and their units, in the order they run.
        symbols: Vec<(Symbol, u64)>,
    },
    /// One unit (a symbol's month) is done: cached, or failed.
    UnitDone {
        /// The symbol.
        symbol: Symbol,
        /// Rows it holds.
        rows: u64,
        /// Bytes downloaded for it.
        bytes: u64,
        /// Whether all of it was obtained.
        complete: bool,
    },
}

/// A callback that receives [`SyncProgress`] events.
pub type SyncProgressFn = Arc<dyn Fn(&SyncProgress) + Send + Sync>;

/// What to sync: a market, a kind (and interval), a set of symbols and `[start, end)`.
#[derive(Clone)]
pub struct SyncRequest {
    /// The market.
    pub market: Market,
    /// The data kind.
    pub kind: DataKind,
    /// The interval, for kline-class kinds.
    pub interval: Option<Interval>,
    /// The symbols.
    pub universe: Universe,
    /// The range, clipped to each symbol's life and to now.
    pub range: TimeRange,
    /// Only this share of the units.
    pub shard: Option<Shard>,
    /// Overrides the manager's source policy.
    pub source: Option<SourcePolicy>,
    /// Receives progress events.
    pub progress: Option<SyncProgressFn>,
}

impl std::fmt::Debug for SyncRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncRequest")
            .field("market", &self.market)
            .field("kind", &self.kind)
            .field("interval", &self.interval)
            .field("universe", &self.universe)
            .field("range", &self.range)
            .field("shard", &self.shard)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SyncRequest {
    /// A sync of `universe` over `range`, every unit, with the manager's source policy.
    pub fn new(
        market: Market,
        kind: DataKind,
        interval: Option<Interval>,
        universe: Universe,
        range: TimeRange,
    ) -> SyncRequest {
        SyncRequest {
            market,
            kind,
            interval,
            universe,
            range,
            shard: None,
            source: None,
            progress: None,
        }
    }

    /// Checks the request before any network call.
    pub fn validate(&self) -> std::result::Result<(), InputError> {
        check_market(self.market)?;
        self.market.check(self.kind, self.interval)?;
        if let Universe::List(symbols) = &self.universe {
            for s in symbols {
                Symbol::for_market(s.as_str(), self.market, self.kind)?;
            }
        }
        Ok(())
    }
}

/// A part of a symbol's range that could not be had, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncFailure {
    /// The unit's range.
    pub range: TimeRange,
    /// How to treat it.
    pub category: ErrorCategory,
    /// The error, naming its URL or path.
    pub message: String,
}

/// One symbol's sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSync {
    /// The symbol.
    pub symbol: Symbol,
    /// Whether it trades.
    pub status: SymbolStatus,
    /// The part of the request inside the symbol's life (`None`: none of it).
    pub range: Option<TimeRange>,
    /// Units (months) this shard ran for it.
    pub units: u64,
    /// Rows the units hold (from the cache or downloaded).
    pub rows: u64,
    /// Of those, rows that were already cached.
    pub cache_rows: u64,
    /// Vision files downloaded.
    pub files: u64,
    /// Vision archive cost.
    pub vision: SourceStats,
    /// REST API cost.
    pub rest: SourceStats,
    /// REST weight used.
    pub rest_weight: u64,
    /// Ranges the exchange confirmed have no data.
    pub gaps: Vec<TimeRange>,
    /// Ranges no allowed source could supply.
    pub missing: Vec<TimeRange>,
    /// Units that failed.
    pub failures: Vec<SyncFailure>,
}

impl SymbolSync {
    fn new(s: &MarketSymbol, range: Option<TimeRange>) -> SymbolSync {
        SymbolSync {
            symbol: s.symbol.clone(),
            status: s.status,
            range,
            units: 0,
            rows: 0,
            cache_rows: 0,
            files: 0,
            vision: SourceStats::default(),
            rest: SourceStats::default(),
            rest_weight: 0,
            gaps: Vec::new(),
            missing: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Whether all of the symbol's range in this shard is cached or a confirmed gap.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.failures.is_empty()
    }
}

/// What a sync did, per symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    /// The symbols, sorted by name.
    pub symbols: Vec<SymbolSync>,
    /// The share run, if any.
    pub shard: Option<Shard>,
    /// Wall time.
    pub elapsed: Duration,
}

impl SyncOutcome {
    /// Whether every symbol is complete.
    pub fn is_complete(&self) -> bool {
        self.symbols.iter().all(SymbolSync::is_complete)
    }

    /// The most serious failure's category: [`ErrorCategory::Upstream`] if any unit failed
    /// upstream, else the first failure's, else [`ErrorCategory::Incomplete`] if a symbol lacks
    /// a range; `None` when complete.
    pub fn failure_category(&self) -> Option<ErrorCategory> {
        let failures = || self.symbols.iter().flat_map(|s| &s.failures);
        if failures().any(|f| f.category == ErrorCategory::Upstream) {
            return Some(ErrorCategory::Upstream);
        }
        if let Some(f) = failures().next() {
            return Some(f.category);
        }
        (!self.is_complete()).then_some(ErrorCategory::Incomplete)
    }
}

/// One unit: a symbol's month (clipped to its range).
struct Unit {
    at: usize,
    symbol: Symbol,
    range: TimeRange,
}

impl DataSourceManager {
    /// The symbols of `market` (spot, um or cm) that pass `status`, sorted, with their lives:
    /// `exchangeInfo` for the listed ones, the Vision archive's listing for the rest (Binance
    /// drops long-delisted symbols from `exchangeInfo`; the archive keeps their history).
    ///
    /// ```no_run
    /// use dsm::manager::{StatusFilter, SymbolStatus};
    /// use dsm::{DataSourceManager, ManagerConfig, Market};
    ///
    /// # async fn run() -> dsm::Result<()> {
    /// let manager = DataSourceManager::new(ManagerConfig::default())?;
    /// let all = manager.symbols(Market::UsdM, StatusFilter::All).await?;
    /// let gone = all.iter().filter(|s| s.status == SymbolStatus::Delisted).count();
    /// println!("{} symbols, {gone} delisted", all.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn symbols(&self, market: Market, status: StatusFilter) -> Result<Vec<MarketSymbol>> {
        let cancel = self.root.child_token();
        let _guard = cancel.clone().drop_guard();
        self.directory(&cancel)
            .symbols(market, status, &Universe::All)
            .await
    }

    fn directory<'a>(&'a self, cancel: &'a CancellationToken) -> Directory<'a> {
        Directory {
            vision: &self.vision,
            rest: &self.rest,
            cancel,
            concurrency: self.config.vision_concurrency,
        }
    }

    /// Fills the cache with `request`'s symbols over its range and returns what each cost, what
    /// is missing and what failed; the rows themselves are not returned.
    ///
    /// Each symbol's range is clipped to its life (listing to delisting or delivery) and cut
    /// into calendar months, the units of the work: a whole month is one monthly file, the rest
    /// daily files, the recent edge REST, all under the manager's download limit and weight
    /// budget, units of several symbols at once. A unit that fails is reported and the others go
    /// on. A rerun reads what is cached and downloads only the rest, so it resumes a sync that
    /// was stopped or failed, and makes no download after one that completed.
    ///
    /// Bad input fails before any network call; a listed symbol that neither `exchangeInfo` nor
    /// the archive knows fails before any download. Cancelling `token` (or dropping the future)
    /// stops it with [`Error::Cancelled`], keeping every unit already cached.
    ///
    /// ```no_run
    /// use dsm::manager::{Shard, SyncRequest, Universe};
    /// use dsm::{DataKind, DataSourceManager, Interval, ManagerConfig, Market, TimeRange};
    ///
    /// # async fn run() -> dsm::Result<()> {
    /// let manager = DataSourceManager::new(ManagerConfig::default())?;
    /// let universe = Universe::parse("*USDT", Market::UsdM, DataKind::Klines)?;
    /// let range = TimeRange::new(1_704_067_200_000, 1_735_689_600_000)?;
    /// let mut request =
    ///     SyncRequest::new(Market::UsdM, DataKind::Klines, Some(Interval::H1), universe, range);
    /// request.shard = Some("1/4".parse()?); // this machine's quarter
    /// let token = tokio_util::sync::CancellationToken::new();
    /// let outcome = manager.sync(request, &token).await?;
    /// for s in outcome.symbols.iter().filter(|s| !s.is_complete()) {
    ///     println!("{}: missing {:?}, failed {:?}", s.symbol, s.missing, s.failures);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sync(
        &self,
        request: SyncRequest,
        token: &CancellationToken,
    ) -> Result<SyncOutcome> {
        request.validate()?;
        if self.cache.is_none() {
            return Err(InputError::Invalid {
                what: "cache",
                reason: "sync fills the cache, and this manager has none: the cache is off, or could not be opened (see the warning logged); give a writable cache directory or a cache URL".into(),
            }
            .into());
        }
        if self.root.is_cancelled() || token.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let cancel = self.root.child_token();
        let _guard = cancel.clone().drop_guard();
        let relay = {
            let (caller, mine) = (token.clone(), cancel.clone());
            async move {
                tokio::select! { _ = caller.cancelled() => mine.cancel(), _ = mine.cancelled() => {} }
            }
        };
        tokio::select! {
            biased;
            () = relay => Err(Error::Cancelled),
            r = self.sync_inner(&request, &cancel) => r,
        }
    }

    async fn sync_inner(
        &self,
        req: &SyncRequest,
        cancel: &CancellationToken,
    ) -> Result<SyncOutcome> {
        let started = Instant::now();
        let symbols = self.resolve(req, cancel).await?;
        let end = req.range.end().min(now_ms());
        let mut out = Vec::with_capacity(symbols.len());
        let mut units = Vec::new();
        for s in &symbols {
            let life = TimeRange::new(
                req.range.start().max(s.listed.unwrap_or(i64::MIN)),
                end.min(s.ended.unwrap_or(i64::MAX)),
            )
            .ok();
            let at = out.len();
            let mut sync = SymbolSync::new(s, life);
            if let Some(life) = life {
                for month in life.months() {
                    let in_shard = req
                        .shard
                        .is_none_or(|sh| sh.takes(s.symbol.as_str(), month.start()));
                    if let (true, Some(range)) = (in_shard, month.intersect(&life)) {
                        units.push(Unit {
                            at,
                            symbol: s.symbol.clone(),
                            range,
                        });
                        sync.units += 1;
                    }
                }
            }
            out.push(sync);
        }
        let report = |p: SyncProgress| {
            if let Some(f) = &req.progress {
                f(&p);
            }
        };
        report(SyncProgress::Planned {
            symbols: out.iter().map(|s| (s.symbol.clone(), s.units)).collect(),
        });
        let clock = tokio::sync::OnceCell::new();
        let clock = &clock;
        let mut results = futures::stream::iter(units)
            .map(|unit| async move {
                let symbols = vec![unit.symbol.clone()];
                let mut r = Request::new(req.market, req.kind, symbols, req.interval, unit.range);
                r.allow_partial = true;
                r.source = req.source;
                let answer = self.run(&r, cancel, clock, true).await;
                (unit, answer)
            })
            .buffer_unordered(self.config.vision_concurrency.max(1));
        while let Some((unit, answer)) = results.next().await {
            let s = &mut out[unit.at];
            let (rows, bytes, complete) = match answer {
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    tracing::warn!(symbol = %s.symbol, range = %unit.range, error = %e, "sync unit failed");
                    s.failures.push(SyncFailure {
                        range: unit.range,
                        category: e.category(),
                        message: e.to_string(),
                    });
                    (0, 0, false)
                }
                Ok(response) => {
                    let complete = response.is_complete();
                    let summary = &response.summary;
                    s.rows += summary.rows;
                    s.cache_rows += summary.cache_rows;
                    s.files += summary.vision_files;
                    s.vision.add(&summary.vision);
                    s.rest.add(&summary.rest);
                    s.rest_weight += summary.rest_weight;
                    let (rows, bytes) = (summary.rows, summary.vision.bytes + summary.rest.bytes);
                    for r in response.results {
                        s.gaps.extend(r.gaps);
                        s.missing.extend(r.missing);
                    }
                    (rows, bytes, complete)
                }
            };
            report(SyncProgress::UnitDone {
                symbol: s.symbol.clone(),
                rows,
                bytes,
                complete,
            });
            // A cache that can no longer be written ends the sync: what follows would be
            // downloaded for nothing, and "complete" would be untrue.
            if self.cache_off.load(std::sync::atomic::Ordering::Relaxed) {
                let place = self
                    .cache
                    .as_ref()
                    .map(|c| c.location())
                    .unwrap_or_default();
                return Err(crate::cache::CacheError::Io {
                    path: place.into(),
                    source: std::io::Error::other(
                        "the cache failed during the sync (the first failure is logged above), so the sync stopped",
                    ),
                }
                .into());
            }
        }
        drop(results);
        for s in &mut out {
            s.gaps = TimeRange::merge_all(std::mem::take(&mut s.gaps));
            s.missing = TimeRange::merge_all(std::mem::take(&mut s.missing));
            s.failures.sort_by_key(|f| f.range.start());
        }
        Ok(SyncOutcome {
            symbols: out,
            shard: req.shard,
            elapsed: started.elapsed(),
        })
    }

    /// The request's symbols with their lives. A listed symbol that neither `exchangeInfo` nor
    /// the archive knows is bad input.
    async fn resolve(
        &self,
        req: &SyncRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<MarketSymbol>> {
        let dir = self.directory(cancel);
        let mut symbols = match &req.universe {
            Universe::List(list) => {
                let listed = self.rest.exchange_symbols(req.market, cancel).await?;
                let mut out: Vec<MarketSymbol> = list
                    .iter()
                    .map(|s| match listed.iter().find(|i| i.symbol == s.as_str()) {
                        Some(info) => MarketSymbol::from_exchange(s.clone(), info),
                        None => MarketSymbol::archived(s.clone()),
                    })
                    .collect();
                dir.fill_lives(req.market, &mut out, true).await?;
                if let Some(unknown) = out
                    .iter()
                    .find(|s| s.exchange_status.is_none() && s.listed.is_none())
                {
                    return Err(InputError::Invalid {
                        what: "symbols",
                        reason: format!(
                            "{} is neither in {}'s exchangeInfo nor in the archive (data/{}/daily/klines/{}/): check the spelling and the market",
                            unknown.symbol,
                            req.market,
                            req.market.vision_path(),
                            unknown.symbol
                        ),
                    }
                    .into());
                }
                out
            }
            universe => {
                let mut all = dir.symbols(req.market, StatusFilter::All, universe).await?;
                // Each glob must match something: one that does not is a typo, not an empty set.
                if let Universe::Globs(globs) = universe
                    && let Some(p) = globs
                        .iter()
                        .find(|p| !all.iter().any(|s| p.matches(s.symbol.as_str())))
                {
                    return Err(InputError::Invalid {
                        what: "symbols",
                        reason: format!(
                            "no {} symbol matches {:?} (neither in exchangeInfo nor in the archive); `dsm symbols --market {}` lists them",
                            req.market,
                            p.as_str(),
                            req.market
                        ),
                    }
                    .into());
                }
                dir.fill_lives(req.market, &mut all, true).await?;
                all
            }
        };
        // A kind whose symbols are pairs (index klines) or that exists only on perpetuals
        // (funding) is synced for the symbols that have it.
        symbols.retain(|s| Symbol::for_market(s.symbol.as_str(), req.market, req.kind).is_ok());
        Ok(symbols)
    }
}
