//! What a request produced, as a report for scripts: per-symbol and total rows, time bounds, gaps,
//! what is missing and what each source cost. The CLI prints it with `--json`; the Python
//! package's `Response.summary` is the same document.
//!
//! Everything here is derived from a [`crate::Response`]; this module never fetches, writes files
//! or prints.

use std::path::PathBuf;

use crate::manager::{MarketSymbol, SourceStats, Summary, SymbolResult, SymbolStatus, SyncOutcome};
use crate::market::{DataKind, Symbol};
use crate::schema::Source;
use crate::time::TimeRange;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use serde::Serialize;

/// The report of a request: the JSON document `dsm fetch --json` prints.
#[derive(Debug, Serialize)]
pub struct FetchReport {
    /// Name of the time column the bounds refer to (`open_time`, `funding_time`, ...).
    pub time_column: &'static str,
    /// One entry per symbol, in request order.
    pub symbols: Vec<SymbolReport>,
    /// Totals over all symbols.
    pub total: Totals,
}

/// One symbol's outcome.
#[derive(Debug, Serialize)]
pub struct SymbolReport {
    /// The symbol.
    pub symbol: String,
    /// The file the CLI wrote (`null` when nothing was written: an incomplete answer without
    /// `--allow-partial`, or an answer kept in memory).
    pub path: Option<PathBuf>,
    /// Whether the whole range was obtained (rows and confirmed gaps account for all of it).
    pub complete: bool,
    /// Rows written.
    pub rows: u64,
    /// Time of the first row (RFC 3339 UTC), if any.
    pub first: Option<String>,
    /// Time of the last row (RFC 3339 UTC), if any.
    pub last: Option<String>,
    /// Ranges the exchange has no data for.
    pub gaps: Vec<Gap>,
    /// Ranges that could not be obtained from the allowed sources.
    pub missing: Vec<Gap>,
    /// Ranges after a delivery contract's delivery (outside the symbol's life).
    pub outside_life: Vec<Gap>,
    /// Source costs.
    pub sources: Sources,
    /// Which source served which rows: consecutive rows from one source, in time order (rows
    /// read from the cache count for the source they were fetched from).
    pub served: Vec<Served>,
    /// Parts that could not be had.
    pub failures: Vec<String>,
    /// Vision files that verified but lacked rows REST had (those rows came from REST).
    pub short_files: Vec<String>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// Totals over all symbols.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Rows written.
    pub rows: u64,
    /// Earliest first row.
    pub first: Option<String>,
    /// Latest last row.
    pub last: Option<String>,
    /// Number of gaps.
    pub gaps: usize,
    /// Whether every symbol's answer is complete.
    pub complete: bool,
    /// Number of missing ranges.
    pub missing: usize,
    /// Source costs.
    pub sources: Sources,
    /// Parts that could not be had.
    pub failures: Vec<String>,
    /// Short Vision files, over all symbols.
    pub short_files: Vec<String>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// A stretch of the answer that one source served.
#[derive(Debug, Serialize)]
pub struct Served {
    /// `vision` or `rest`.
    pub source: &'static str,
    /// Time of its first row.
    pub first: String,
    /// Time of its last row.
    pub last: String,
    /// Its rows.
    pub rows: u64,
}

/// A `[start, end)` range (a gap with no data upstream, or a part that could not be obtained).
#[derive(Debug, Serialize)]
pub struct Gap {
    /// First missing instant.
    pub start: String,
    /// End (exclusive).
    pub end: String,
}

/// Where rows came from and what it cost.
#[derive(Debug, Serialize)]
pub struct Sources {
    /// Cache partitions read and rows served from them.
    pub cache: CacheStats,
    /// Vision archive requests, bytes, rows.
    pub vision: SourceStats,
    /// REST requests, bytes, rows.
    pub rest: SourceStats,
    /// REST weight used.
    pub rest_weight: u64,
}

/// Cache use.
#[derive(Debug, Serialize)]
pub struct CacheStats {
    /// Partitions read.
    pub hits: u64,
    /// Rows served.
    pub rows: u64,
}

impl From<&Summary> for Sources {
    fn from(s: &Summary) -> Sources {
        Sources {
            cache: CacheStats {
                hits: s.cache_hits,
                rows: s.cache_rows,
            },
            vision: s.vision.clone(),
            rest: s.rest.clone(),
            rest_weight: s.rest_weight,
        }
    }
}

/// The time column of `b`, read in place, and the factor that makes its values microseconds.
fn times_us<'a>(b: &'a RecordBatch, column: &str) -> Option<(&'a [i64], i64)> {
    let col = b.column_by_name(column)?;
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some((
            col.as_primitive::<TimestampMillisecondType>().values(),
            1000,
        )),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some((col.as_primitive::<TimestampMicrosecondType>().values(), 1))
        }
        _ => None,
    }
}

/// First and last value of the time column, in microseconds, over sorted `batches`.
fn time_bounds(batches: &[RecordBatch], column: &str) -> Option<(i64, i64)> {
    let nonempty: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let (first, f) = times_us(nonempty.first()?, column)?;
    let (last, l) = times_us(nonempty.last()?, column)?;
    Some((
        first.first()?.saturating_mul(f),
        last.last()?.saturating_mul(l),
    ))
}

/// A run of rows from one source: (source key, first µs, last µs, rows).
type Run = (i8, i64, i64, u64);

/// Extends `runs` with the rows of `batches` (in time order), one run per stretch of one source.
fn extend_runs(runs: &mut Vec<Run>, batches: &[RecordBatch], column: &str) {
    use arrow::datatypes::Int8Type;
    for b in batches {
        let (Some((times, factor)), Some(src)) = (
            times_us(b, column),
            b.column_by_name(crate::schema::SOURCE_COLUMN)
                .and_then(|c| c.as_dictionary_opt::<Int8Type>()),
        ) else {
            continue;
        };
        for (t, key) in times.iter().zip(src.keys().values()) {
            let t = t.saturating_mul(factor);
            match runs.last_mut() {
                Some(run) if run.0 == *key => {
                    run.2 = t;
                    run.3 += 1;
                }
                _ => runs.push((*key, t, t, 1)),
            }
        }
    }
}

/// RFC 3339 UTC: milliseconds for candles and funding, microseconds for trades.
pub fn format_time(us: i64, kind: DataKind) -> String {
    let format = match crate::schema::time_unit(kind) {
        TimeUnit::Millisecond | TimeUnit::Second => chrono::SecondsFormat::Millis,
        _ => chrono::SecondsFormat::Micros,
    };
    chrono::DateTime::from_timestamp_micros(us)
        .map_or_else(|| format!("{us}µs"), |t| t.to_rfc3339_opts(format, true))
}

fn gap(r: &TimeRange) -> Gap {
    Gap {
        start: crate::time::format_ms(r.start()),
        end: crate::time::format_ms(r.end()),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One symbol's outcome, accumulated over the windows of a fetch as they are written out.
#[derive(Debug, Clone)]
pub struct SymbolTotals {
    /// The symbol.
    pub symbol: Symbol,
    /// Rows written.
    pub rows: u64,
    /// First and last time (µs).
    pub bounds: Option<(i64, i64)>,
    /// Gaps, merged across window boundaries.
    pub gaps: Vec<TimeRange>,
    /// Ranges not obtained, merged across window boundaries.
    pub missing: Vec<TimeRange>,
    /// Ranges after the symbol's delivery, merged across window boundaries.
    pub outside_life: Vec<TimeRange>,
    /// What the symbol cost.
    pub summary: Summary,
    /// Which source served which rows (runs), across windows.
    served: Vec<Run>,
}

impl SymbolTotals {
    /// Nothing yet for `symbol`.
    pub fn new(symbol: Symbol) -> SymbolTotals {
        SymbolTotals {
            symbol,
            rows: 0,
            bounds: None,
            gaps: Vec::new(),
            missing: Vec::new(),
            outside_life: Vec::new(),
            summary: Summary::default(),
            served: Vec::new(),
        }
    }

    /// The error for this symbol's answer if part of it could not be obtained.
    pub fn incomplete(&self) -> Option<crate::IncompleteError> {
        (!self.missing.is_empty()).then(|| {
            crate::IncompleteError::new(
                self.symbol.clone(),
                self.missing.clone(),
                &self.summary.failures,
            )
        })
    }

    /// Adds the next window's result (windows come in time order).
    pub fn add(&mut self, kind: DataKind, r: &SymbolResult) {
        self.rows += r.num_rows() as u64;
        extend_runs(
            &mut self.served,
            &r.batches,
            crate::schema::time_column(kind),
        );
        if let Some((f, l)) = time_bounds(&r.batches, crate::schema::time_column(kind)) {
            self.bounds = Some(self.bounds.map_or((f, l), |(f0, _)| (f0, l)));
        }
        self.gaps.extend(r.gaps.iter().copied());
        self.gaps = TimeRange::merge_all(std::mem::take(&mut self.gaps));
        self.missing.extend(r.missing.iter().copied());
        self.missing = TimeRange::merge_all(std::mem::take(&mut self.missing));
        self.outside_life.extend(r.outside_life.iter().copied());
        self.outside_life = TimeRange::merge_all(std::mem::take(&mut self.outside_life));
        self.summary.add(&r.summary);
    }
}

impl FetchReport {
    /// The report of `results` (kept in memory, no file written) with `total` as their summary.
    pub fn of(kind: DataKind, results: &[SymbolResult], total: &Summary) -> FetchReport {
        let totals: Vec<SymbolTotals> = results
            .iter()
            .map(|r| {
                let mut t = SymbolTotals::new(r.symbol.clone());
                t.add(kind, r);
                t
            })
            .collect();
        FetchReport::new(kind, &totals, &[], total)
    }

    /// The report for `results` written to `paths` (same order; empty when nothing was written),
    /// with `total` from the response.
    pub fn new(
        kind: DataKind,
        results: &[SymbolTotals],
        paths: &[PathBuf],
        total: &Summary,
    ) -> FetchReport {
        let mut first_all: Option<i64> = None;
        let mut last_all: Option<i64> = None;
        let symbols = results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let bounds = r.bounds;
                if let Some((f, l)) = bounds {
                    first_all = Some(first_all.map_or(f, |x| x.min(f)));
                    last_all = Some(last_all.map_or(l, |x| x.max(l)));
                }
                SymbolReport {
                    symbol: r.symbol.as_str().to_owned(),
                    path: paths.get(i).cloned(),
                    complete: r.missing.is_empty(),
                    rows: r.rows,
                    first: bounds.map(|(f, _)| format_time(f, kind)),
                    last: bounds.map(|(_, l)| format_time(l, kind)),
                    gaps: r.gaps.iter().map(gap).collect(),
                    missing: r.missing.iter().map(gap).collect(),
                    outside_life: r.outside_life.iter().map(gap).collect(),
                    sources: Sources::from(&r.summary),
                    served: r
                        .served
                        .iter()
                        .map(|&(key, first, last, rows)| Served {
                            source: if key == Source::Rest.key() {
                                Source::Rest.as_str()
                            } else {
                                Source::Vision.as_str()
                            },
                            first: format_time(first, kind),
                            last: format_time(last, kind),
                            rows,
                        })
                        .collect(),
                    failures: r.summary.failures.clone(),
                    short_files: r.summary.short_files.clone(),
                    elapsed_ms: millis(r.summary.elapsed),
                }
            })
            .collect::<Vec<_>>();
        let total = Totals {
            rows: symbols.iter().map(|s| s.rows).sum(),
            first: first_all.map(|f| format_time(f, kind)),
            last: last_all.map(|l| format_time(l, kind)),
            gaps: symbols.iter().map(|s| s.gaps.len()).sum(),
            complete: symbols.iter().all(|s| s.complete),
            missing: symbols.iter().map(|s| s.missing.len()).sum(),
            sources: Sources::from(total),
            failures: total.failures.clone(),
            short_files: total.short_files.clone(),
            elapsed_ms: millis(total.elapsed),
        };
        FetchReport {
            time_column: crate::schema::time_column(kind),
            symbols,
            total,
        }
    }
}

/// The report of a sync: the JSON document `dsm sync --json` prints, and Python's `sync` returns.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    /// The share run (`K/N`), if any.
    pub shard: Option<String>,
    /// Whether every symbol is complete.
    pub complete: bool,
    /// One entry per symbol, sorted by name.
    pub symbols: Vec<SymbolSyncReport>,
    /// Totals over all symbols.
    pub total: SyncTotals,
}

/// What a sync (or one symbol of it) did and cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncCounts {
    /// Units (symbol-months) run.
    pub units: u64,
    /// Rows the units hold (from the cache or downloaded).
    pub rows: u64,
    /// Of those, rows already cached.
    pub cache_rows: u64,
    /// Vision files downloaded.
    pub files: u64,
    /// Bytes downloaded (Vision and REST).
    pub bytes: u64,
    /// Vision requests, bytes, rows.
    pub vision: SourceStats,
    /// REST requests, bytes, rows.
    pub rest: SourceStats,
    /// REST weight used.
    pub rest_weight: u64,
}

impl SyncCounts {
    fn add(&mut self, other: &SyncCounts) {
        self.units += other.units;
        self.rows += other.rows;
        self.cache_rows += other.cache_rows;
        self.files += other.files;
        self.bytes += other.bytes;
        self.vision.add(&other.vision);
        self.rest.add(&other.rest);
        self.rest_weight += other.rest_weight;
    }
}

/// One symbol's sync.
#[derive(Debug, Serialize)]
pub struct SymbolSyncReport {
    /// The symbol.
    pub symbol: String,
    /// `trading`, `pending` or `delisted`.
    pub status: SymbolStatus,
    /// The part of the request inside the symbol's life (`null`: none of it).
    pub range: Option<Gap>,
    /// Whether all of it (in this shard) is cached or a confirmed gap.
    pub complete: bool,
    /// What it did and cost.
    #[serde(flatten)]
    pub counts: SyncCounts,
    /// Ranges the exchange confirmed have no data.
    pub gaps: Vec<Gap>,
    /// Ranges no allowed source could supply.
    pub missing: Vec<Gap>,
    /// Units that failed.
    pub failures: Vec<SyncFailureReport>,
}

/// A unit that failed.
#[derive(Debug, Serialize)]
pub struct SyncFailureReport {
    /// Start of the unit.
    pub start: String,
    /// End of the unit (exclusive).
    pub end: String,
    /// `upstream`, `integrity`, `local`, ...
    pub category: &'static str,
    /// The error.
    pub message: String,
}

/// Totals of a sync.
#[derive(Debug, Serialize)]
pub struct SyncTotals {
    /// Symbols in the set.
    pub symbols: usize,
    /// Symbols not complete.
    pub incomplete: Vec<String>,
    /// What the sync did and cost.
    #[serde(flatten)]
    pub counts: SyncCounts,
    /// Gaps.
    pub gaps: usize,
    /// Missing ranges.
    pub missing: usize,
    /// Failed units.
    pub failures: usize,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

impl SyncReport {
    /// The report of `outcome`.
    pub fn new(outcome: &SyncOutcome) -> SyncReport {
        let symbols: Vec<SymbolSyncReport> = outcome
            .symbols
            .iter()
            .map(|s| SymbolSyncReport {
                symbol: s.symbol.to_string(),
                status: s.status,
                range: s.range.as_ref().map(gap),
                complete: s.is_complete(),
                counts: SyncCounts {
                    units: s.units,
                    rows: s.rows,
                    cache_rows: s.cache_rows,
                    files: s.files,
                    bytes: s.vision.bytes + s.rest.bytes,
                    vision: s.vision.clone(),
                    rest: s.rest.clone(),
                    rest_weight: s.rest_weight,
                },
                gaps: s.gaps.iter().map(gap).collect(),
                missing: s.missing.iter().map(gap).collect(),
                failures: s
                    .failures
                    .iter()
                    .map(|f| SyncFailureReport {
                        start: crate::time::format_ms(f.range.start()),
                        end: crate::time::format_ms(f.range.end()),
                        category: f.category.as_str(),
                        message: f.message.clone(),
                    })
                    .collect(),
            })
            .collect();
        let mut total = SyncTotals {
            symbols: symbols.len(),
            incomplete: Vec::new(),
            counts: SyncCounts::default(),
            gaps: 0,
            missing: 0,
            failures: 0,
            elapsed_ms: millis(outcome.elapsed),
        };
        for s in &symbols {
            if !s.complete {
                total.incomplete.push(s.symbol.clone());
            }
            total.counts.add(&s.counts);
            total.gaps += s.gaps.len();
            total.missing += s.missing.len();
            total.failures += s.failures.len();
        }
        SyncReport {
            shard: outcome.shard.map(|s| s.to_string()),
            complete: total.incomplete.is_empty(),
            symbols,
            total,
        }
    }
}

/// One symbol of `dsm symbols --json` (and Python's `dsm.symbols`).
#[derive(Debug, Serialize)]
pub struct SymbolEntry {
    /// The symbol.
    pub symbol: String,
    /// `trading`, `pending` or `delisted`.
    pub status: SymbolStatus,
    /// The exchange's status word, `null` when `exchangeInfo` no longer lists it.
    pub exchange_status: Option<String>,
    /// Listing time (RFC 3339), where known.
    pub listed: Option<String>,
    /// Delisting or delivery time (RFC 3339, exclusive), where known.
    pub ended: Option<String>,
}

impl SymbolEntry {
    /// The entry of `s`.
    pub fn new(s: &MarketSymbol) -> SymbolEntry {
        SymbolEntry {
            symbol: s.symbol.to_string(),
            status: s.status,
            exchange_status: s.exchange_status.clone(),
            listed: s.listed.map(crate::time::format_ms),
            ended: s.ended.map(crate::time::format_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::TimestampMillisecondArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "open_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        )]));
        let col = TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC");
        RecordBatch::try_new(schema, vec![Arc::new(col)]).unwrap()
    }

    #[test]
    fn bounds_span_all_batches() {
        let b = [
            batch(&[]),
            batch(&[1_704_067_200_000, 1]),
            batch(&[2, 1_704_067_260_000]),
        ];
        let (f, l) = time_bounds(&b, "open_time").unwrap();
        assert_eq!(format_time(f, DataKind::Klines), "2024-01-01T00:00:00.000Z");
        assert_eq!(format_time(l, DataKind::Klines), "2024-01-01T00:01:00.000Z");
        assert!(time_bounds(&[batch(&[])], "open_time").is_none());
    }

    #[test]
    fn trade_times_keep_microseconds() {
        assert_eq!(
            format_time(1_704_067_200_000_001, DataKind::Trades),
            "2024-01-01T00:00:00.000001Z"
        );
    }
}
