//! What a caller gets back: a [`Response`] of one [`SymbolResult`] per symbol, each with its
//! [`Summary`] of what it cost.

use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::IncompleteError;
use crate::market::Symbol;
use crate::time::TimeRange;

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
    /// Vision files downloaded and verified.
    pub vision_files: u64,
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

impl SourceStats {
    /// Adds `other`'s requests, bytes and rows to these.
    pub fn add(&mut self, other: &SourceStats) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.rows += other.rows;
    }
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

/// The answer to a [`Request`](super::Request): one [`SymbolResult`] per symbol, in request order.
#[derive(Debug, Clone)]
pub struct Response {
    /// Per-symbol results.
    pub results: Vec<SymbolResult>,
    /// Totals over all symbols.
    pub summary: Summary,
}

impl Response {
    /// Whether every symbol's answer is complete ([`SymbolResult::is_complete`]). Always true for
    /// a request that did not set [`Request::allow_partial`](super::Request::allow_partial): an incomplete answer is an error.
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

impl Summary {
    /// Adds `other`'s counts and failures to these (not its elapsed time).
    pub fn add(&mut self, other: &Summary) {
        self.rows += other.rows;
        self.cache_rows += other.cache_rows;
        self.cache_hits += other.cache_hits;
        self.vision.add(&other.vision);
        self.vision_files += other.vision_files;
        self.rest.add(&other.rest);
        self.rest_weight += other.rest_weight;
        self.failures.extend(other.failures.iter().cloned());
        self.short_files.extend(other.short_files.iter().cloned());
    }
}
