//! dsm's Arrow schemas, one per (market, kind), and validating builders that produce them.
//!
//! Every source (Vision files, REST pages, the cache) produces record batches through these builders,
//! so rows from different sources can be merged without conversion and every row is checked the same
//! way as it is added: OHLC invariants, strictly increasing open times on the interval grid, and
//! `close_time = next open − 1 ms`. A row that fails is an error, never silent data.
//!
//! Columns (all timestamps are UTC):
//! - klines and the mark/index/premium kinds: `open_time` Timestamp(ms), `open`, `high`, `low`,
//!   `close`, `volume` Float64, `close_time` Timestamp(ms), `quote_volume` Float64, `count` Int64,
//!   `taker_buy_volume`, `taker_buy_quote_volume` Float64. On COIN-M, `volume` and
//!   `taker_buy_volume` count **contracts** and `quote_volume` / `taker_buy_quote_volume` are in the
//!   **base asset** (Binance's own column meaning, kept as is). Mark/index/premium rows carry only
//!   prices; their volume columns are what Binance sends (zeros).
//! - funding: `funding_time` Timestamp(ms), `funding_rate` Float64, `funding_interval_hours` Int32
//!   (from Vision's files; on REST, from the spacing of consecutive funding times; null for a lone
//!   record), `mark_price` Float64 (REST on USD-M; null where the source does not carry it, as
//!   Vision's files and COIN-M do not).
//! - aggTrades: `agg_trade_id` Int64, `price`, `quantity` Float64, `first_trade_id`, `last_trade_id`
//!   Int64, `transact_time` Timestamp(µs), `is_buyer_maker` Boolean, `is_best_match` Boolean (spot
//!   only; null on futures). On COIN-M `quantity` is in contracts.
//! - trades: `id` Int64, `price`, `qty` Float64, `quote_qty` Float64 (spot, USD-M) or `base_qty`
//!   (COIN-M, where `qty` is in contracts), `time` Timestamp(µs), `is_buyer_maker` Boolean,
//!   `is_best_match` Boolean (spot only; null on futures).
//! - the archive tables (`metrics`, `book-depth`, `book-ticker`, `liquidations`, `bvol-index`,
//!   `eoh-summary`): the archive's own columns under its own names ([`table_columns`]), times as
//!   Timestamp(ms) (text times such as `2024-01-01 00:05:00` read as UTC; the EOH summary's `date`
//!   and `hour` become one `time`), numbers as Float64 (null where the archive leaves a cell
//!   empty), ids as Int64, words as Utf8.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int8Array, Int32Array, Int64Array,
    StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::market::{DataKind, Interval, Market};
use crate::time::TimeRange;

/// Time zone attached to every timestamp column.
pub const UTC: &str = "UTC";

/// The name of the column that holds each row's key time (open time, funding time or trade time).
pub fn time_column(kind: DataKind) -> &'static str {
    match kind {
        DataKind::FundingRate => "funding_time",
        DataKind::AggTrades => "transact_time",
        DataKind::Trades => "time",
        DataKind::Metrics => "create_time",
        DataKind::BookDepth => "timestamp",
        DataKind::BookTicker => "transaction_time",
        DataKind::Liquidations => "time",
        DataKind::BvolIndex => "calc_time",
        DataKind::EohSummary => "time",
        _ => "open_time",
    }
}

/// What one CSV column of an archive table holds, and so its Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// An instant: integer ms (or µs, scaled down) or UTC text `YYYY-MM-DD HH:MM:SS`;
    /// Timestamp(ms).
    Time,
    /// A UTC date `YYYY-MM-DD`: with the [`ColumnType::Hour`] column after it, the row's `time`.
    Date,
    /// The hour of the day (0–23) added to the [`ColumnType::Date`] before it.
    Hour,
    /// A decimal number; Float64, never empty.
    Float,
    /// A decimal number or an empty cell; nullable Float64.
    OptFloat,
    /// An integer; Int64.
    Int,
    /// Text; Utf8.
    Text,
}

/// One column of an archive table: its name in the file's header (and in dsm's schema) and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableColumn {
    /// The header's name for it.
    pub name: &'static str,
    /// What it holds.
    pub ty: ColumnType,
}

/// The CSV columns of an archive table kind, in the archive's order (spec §2.4); empty for the
/// other kinds. The one list the parser, the schema and the emulator's tests agree on.
///
/// ```
/// use dsm::DataKind;
/// let cols = dsm::schema::table_columns(DataKind::Metrics);
/// assert_eq!(cols[0].name, "create_time");
/// assert_eq!(cols.len(), 8);
/// ```
pub fn table_columns(kind: DataKind) -> &'static [TableColumn] {
    use ColumnType::*;
    match kind {
        DataKind::Metrics => &[
            TableColumn {
                name: "create_time",
                ty: Time,
            },
            TableColumn {
                name: "symbol",
                ty: Text,
            },
            TableColumn {
                name: "sum_open_interest",
                ty: OptFloat,
            },
            TableColumn {
                name: "sum_open_interest_value",
                ty: OptFloat,
            },
            TableColumn {
                name: "count_toptrader_long_short_ratio",
                ty: OptFloat,
            },
            TableColumn {
                name: "sum_toptrader_long_short_ratio",
                ty: OptFloat,
            },
            TableColumn {
                name: "count_long_short_ratio",
                ty: OptFloat,
            },
            TableColumn {
                name: "sum_taker_long_short_vol_ratio",
                ty: OptFloat,
            },
        ],
        DataKind::BookDepth => &[
            TableColumn {
                name: "timestamp",
                ty: Time,
            },
            TableColumn {
                name: "percentage",
                ty: Float,
            },
            TableColumn {
                name: "depth",
                ty: Float,
            },
            TableColumn {
                name: "notional",
                ty: Float,
            },
        ],
        DataKind::BookTicker => &[
            TableColumn {
                name: "update_id",
                ty: Int,
            },
            TableColumn {
                name: "best_bid_price",
                ty: Float,
            },
            TableColumn {
                name: "best_bid_qty",
                ty: Float,
            },
            TableColumn {
                name: "best_ask_price",
                ty: Float,
            },
            TableColumn {
                name: "best_ask_qty",
                ty: Float,
            },
            TableColumn {
                name: "transaction_time",
                ty: Time,
            },
            TableColumn {
                name: "event_time",
                ty: Time,
            },
        ],
        DataKind::Liquidations => &[
            TableColumn {
                name: "time",
                ty: Time,
            },
            TableColumn {
                name: "side",
                ty: Text,
            },
            TableColumn {
                name: "order_type",
                ty: Text,
            },
            TableColumn {
                name: "time_in_force",
                ty: Text,
            },
            TableColumn {
                name: "original_quantity",
                ty: Float,
            },
            TableColumn {
                name: "price",
                ty: Float,
            },
            TableColumn {
                name: "average_price",
                ty: Float,
            },
            TableColumn {
                name: "order_status",
                ty: Text,
            },
            TableColumn {
                name: "last_fill_quantity",
                ty: Float,
            },
            TableColumn {
                name: "accumulated_fill_quantity",
                ty: Float,
            },
        ],
        DataKind::BvolIndex => &[
            TableColumn {
                name: "calc_time",
                ty: Time,
            },
            TableColumn {
                name: "symbol",
                ty: Text,
            },
            TableColumn {
                name: "base_asset",
                ty: Text,
            },
            TableColumn {
                name: "quote_asset",
                ty: Text,
            },
            TableColumn {
                name: "index_value",
                ty: Float,
            },
        ],
        DataKind::EohSummary => &[
            TableColumn {
                name: "date",
                ty: Date,
            },
            TableColumn {
                name: "hour",
                ty: Hour,
            },
            TableColumn {
                name: "symbol",
                ty: Text,
            },
            TableColumn {
                name: "underlying",
                ty: Text,
            },
            TableColumn {
                name: "type",
                ty: Text,
            },
            TableColumn {
                name: "strike",
                ty: Float,
            },
            TableColumn {
                name: "open",
                ty: OptFloat,
            },
            TableColumn {
                name: "high",
                ty: OptFloat,
            },
            TableColumn {
                name: "low",
                ty: OptFloat,
            },
            TableColumn {
                name: "close",
                ty: OptFloat,
            },
            TableColumn {
                name: "volume_contracts",
                ty: OptFloat,
            },
            TableColumn {
                name: "volume_usdt",
                ty: OptFloat,
            },
            TableColumn {
                name: "best_bid_price",
                ty: OptFloat,
            },
            TableColumn {
                name: "best_ask_price",
                ty: OptFloat,
            },
            TableColumn {
                name: "best_bid_qty",
                ty: OptFloat,
            },
            TableColumn {
                name: "best_ask_qty",
                ty: OptFloat,
            },
            TableColumn {
                name: "best_buy_iv",
                ty: OptFloat,
            },
            TableColumn {
                name: "best_sell_iv",
                ty: OptFloat,
            },
            TableColumn {
                name: "mark_price",
                ty: OptFloat,
            },
            TableColumn {
                name: "mark_iv",
                ty: OptFloat,
            },
            TableColumn {
                name: "delta",
                ty: OptFloat,
            },
            TableColumn {
                name: "gamma",
                ty: OptFloat,
            },
            TableColumn {
                name: "vega",
                ty: OptFloat,
            },
            TableColumn {
                name: "theta",
                ty: OptFloat,
            },
            TableColumn {
                name: "openinterest_contracts",
                ty: OptFloat,
            },
            TableColumn {
                name: "openinterest_usdt",
                ty: OptFloat,
            },
        ],
        _ => &[],
    }
}

/// The Arrow fields of an archive table: one per column, but `date` + `hour`, which become one
/// `time`.
fn table_fields(kind: DataKind) -> Vec<Field> {
    table_columns(kind)
        .iter()
        .filter_map(|c| {
            let name = c.name;
            Some(match c.ty {
                ColumnType::Time => ts(name, TimeUnit::Millisecond),
                ColumnType::Date => ts(time_column(kind), TimeUnit::Millisecond),
                ColumnType::Hour => return None,
                ColumnType::Float => f64_field(name),
                ColumnType::OptFloat => Field::new(name, DataType::Float64, true),
                ColumnType::Int => i64_field(name),
                ColumnType::Text => Field::new(name, DataType::Utf8, false),
            })
        })
        .collect()
}

/// The unit of [`time_column`]: milliseconds for candles and funding, microseconds for trades.
pub fn time_unit(kind: DataKind) -> TimeUnit {
    match kind {
        DataKind::AggTrades | DataKind::Trades => TimeUnit::Microsecond,
        _ => TimeUnit::Millisecond,
    }
}

/// The multiplier from milliseconds to the unit of [`time_column`] (1000 for trades).
pub(crate) fn time_scale(kind: DataKind) -> i64 {
    match time_unit(kind) {
        TimeUnit::Microsecond => 1000,
        _ => 1,
    }
}

/// The values of `batch`'s [`time_column`] (ms, or µs for trades), borrowed, or why they cannot
/// be had.
pub(crate) fn times(batch: &RecordBatch, kind: DataKind) -> Result<&[i64], String> {
    let name = time_column(kind);
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("no {name} column"))?;
    i64_values(col).ok_or_else(|| format!("{name} is not a timestamp column"))
}

/// The stretches of `range` where a candle of `interval` is due but `batches` (consecutive candle
/// batches, sorted by open time) have none: the one gap rule of the cache and the manager. A
/// candle covers up to its close time, so the off-grid candles of early history (1h candles
/// opening at HH:28:15) leave no false gap. One pass over the times, borrowed.
pub(crate) fn kline_gaps(
    batches: &[RecordBatch],
    interval: Interval,
    range: TimeRange,
) -> Result<Vec<TimeRange>, String> {
    fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a [i64], String> {
        b.column_by_name(name)
            .and_then(i64_values)
            .ok_or_else(|| format!("no {name} timestamp column"))
    }
    let end = range.end();
    let mut gaps = Vec::new();
    let mut expected = interval.ceil(range.start());
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let (opens, closes) = (column(b, "open_time")?, column(b, "close_time")?);
        for (&open, &close) in opens.iter().zip(closes) {
            if open > expected
                && let Ok(g) = TimeRange::new(expected.max(range.start()), open.min(end))
            {
                gaps.push(g);
            }
            expected = expected.max(close + 1);
        }
    }
    if expected < end
        && let Ok(g) = TimeRange::new(expected.max(range.start()), end)
    {
        gaps.push(g);
    }
    Ok(gaps)
}

/// The raw i64 values of a timestamp (ms or µs) or Int64 column, borrowed (no cast, no copy).
pub(crate) fn i64_values(col: &ArrayRef) -> Option<&[i64]> {
    let any = col.as_any();
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => any
            .downcast_ref::<TimestampMillisecondArray>()
            .map(|a| a.values().as_ref()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => any
            .downcast_ref::<TimestampMicrosecondArray>()
            .map(|a| a.values().as_ref()),
        DataType::Int64 => any
            .downcast_ref::<Int64Array>()
            .map(|a| a.values().as_ref()),
        _ => None,
    }
}

fn ts(name: &str, unit: TimeUnit) -> Field {
    Field::new(name, DataType::Timestamp(unit, Some(UTC.into())), false)
}

fn f64_field(name: &str) -> Field {
    Field::new(name, DataType::Float64, false)
}

fn i64_field(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

/// The Arrow schema dsm uses for `kind` on `market`.
///
/// ```
/// use dsm::{DataKind, Market};
/// let s = dsm::schema::schema(Market::Spot, DataKind::Klines);
/// assert_eq!(s.field(0).name(), "open_time");
/// assert_eq!(s.fields().len(), 11);
/// ```
pub fn schema(market: Market, kind: DataKind) -> SchemaRef {
    let ms = TimeUnit::Millisecond;
    let us = TimeUnit::Microsecond;
    let fields = match kind {
        DataKind::Klines
        | DataKind::MarkPriceKlines
        | DataKind::IndexPriceKlines
        | DataKind::PremiumIndexKlines => vec![
            ts("open_time", ms),
            f64_field("open"),
            f64_field("high"),
            f64_field("low"),
            f64_field("close"),
            f64_field("volume"),
            ts("close_time", ms),
            f64_field("quote_volume"),
            i64_field("count"),
            f64_field("taker_buy_volume"),
            f64_field("taker_buy_quote_volume"),
        ],
        DataKind::FundingRate => vec![
            ts("funding_time", ms),
            f64_field("funding_rate"),
            Field::new("funding_interval_hours", DataType::Int32, true),
            Field::new("mark_price", DataType::Float64, true),
        ],
        DataKind::AggTrades => vec![
            i64_field("agg_trade_id"),
            f64_field("price"),
            f64_field("quantity"),
            i64_field("first_trade_id"),
            i64_field("last_trade_id"),
            ts("transact_time", us),
            Field::new("is_buyer_maker", DataType::Boolean, false),
            Field::new("is_best_match", DataType::Boolean, true),
        ],
        DataKind::Trades => vec![
            i64_field("id"),
            f64_field("price"),
            f64_field("qty"),
            f64_field(if market == Market::CoinM {
                "base_qty"
            } else {
                "quote_qty"
            }),
            ts("time", us),
            Field::new("is_buyer_maker", DataType::Boolean, false),
            Field::new("is_best_match", DataType::Boolean, true),
        ],
        DataKind::Metrics
        | DataKind::BookDepth
        | DataKind::BookTicker
        | DataKind::Liquidations
        | DataKind::BvolIndex
        | DataKind::EohSummary => table_fields(kind),
    };
    Arc::new(Schema::new(fields))
}

/// Where a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The Binance Vision archive.
    Vision,
    /// The Binance REST API.
    Rest,
}

impl Source {
    /// `vision` or `rest`, the value of the `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Vision => "vision",
            Source::Rest => "rest",
        }
    }

    /// This source's key in the `source` column's dictionary ([`source_values`]).
    pub fn key(self) -> i8 {
        match self {
            Source::Vision => 0,
            Source::Rest => 1,
        }
    }

    /// The source a `source` column value names.
    pub fn from_name(name: &str) -> Option<Source> {
        [Source::Vision, Source::Rest]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// Name of the column that says where each row came from.
pub const SOURCE_COLUMN: &str = "source";

/// The type of the `source` column: a dictionary of `vision` / `rest`.
pub fn source_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
}

/// The one dictionary every `source` column shares: `["vision", "rest"]`, keyed by
/// [`Source::key`]. Sharing the same array (not an equal copy) is what lets batches from different
/// sources be concatenated without merging dictionaries and written to one Arrow IPC file, whose
/// format forbids replacing a dictionary between batches.
pub fn source_values() -> ArrayRef {
    static VALUES: std::sync::OnceLock<ArrayRef> = std::sync::OnceLock::new();
    VALUES
        .get_or_init(|| {
            Arc::new(StringArray::from(vec![
                Source::Vision.as_str(),
                Source::Rest.as_str(),
            ]))
        })
        .clone()
}

/// A `source` column with the given [`Source::key`]s over the shared [`source_values`].
pub fn source_column(keys: Int8Array) -> Result<ArrayRef, arrow::error::ArrowError> {
    Ok(Arc::new(DictionaryArray::try_new(keys, source_values())?))
}

/// The schema of dsm's results: [`schema`] plus a trailing `source` column.
pub fn output_schema(market: Market, kind: DataKind) -> SchemaRef {
    let base = schema(market, kind);
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(SOURCE_COLUMN, source_type(), false));
    Arc::new(Schema::new(fields))
}

/// Appends a `source` column holding `source` on every row to a batch in the [`schema`] of
/// (`market`, `kind`).
pub fn with_source(
    batch: &RecordBatch,
    market: Market,
    kind: DataKind,
    source: Source,
) -> RecordBatch {
    let keys = Int8Array::from(vec![source.key(); batch.num_rows()]);
    let dict = match source_column(keys) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "building the source column (a dsm bug)");
            return RecordBatch::new_empty(output_schema(market, kind));
        }
    };
    let mut cols = batch.columns().to_vec();
    cols.push(dict);
    self::batch(output_schema(market, kind), cols)
}

/// Why a row was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("row {row}: {reason}")]
pub struct RowError {
    /// Zero-based index of the row among those pushed.
    pub row: usize,
    /// What was wrong.
    pub reason: String,
}

/// What happened to a pushed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The row was added.
    Added,
    /// The row repeated the previous row exactly and was dropped (Binance has served such files).
    Duplicate,
}

/// Before this instant Binance's candles are not reliably on the interval grid (after the
/// 2018-02-08 maintenance, BTCUSDT 1h candles opened at HH:28:15): grid and close-time checks start
/// here. 2018-03-01T00:00:00Z.
pub const GRID_ENFORCED_FROM: i64 = 1_519_862_400_000;

/// One candle, times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlineRecord {
    /// When the candle opens.
    pub open_time: i64,
    /// First price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price.
    pub close: f64,
    /// Base-asset volume (contracts on COIN-M).
    pub volume: f64,
    /// When the candle closes (the last millisecond of its span).
    pub close_time: i64,
    /// Quote-asset volume (base asset on COIN-M).
    pub quote_volume: f64,
    /// Number of trades.
    pub count: i64,
    /// Volume bought by takers.
    pub taker_buy_volume: f64,
    /// Quote volume bought by takers.
    pub taker_buy_quote_volume: f64,
}

/// Builds a klines [`RecordBatch`], validating each row.
#[derive(Debug)]
pub struct KlineBuilder {
    interval: Interval,
    schema: SchemaRef,
    rows: usize,
    last: Option<KlineRecord>,
    open_time: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    close_time: Vec<i64>,
    quote_volume: Vec<f64>,
    count: Vec<i64>,
    taker_buy_volume: Vec<f64>,
    taker_buy_quote_volume: Vec<f64>,
}

impl KlineBuilder {
    /// A builder for candles of `interval` in `market`'s klines schema, with room for `capacity` rows.
    pub fn new(
        market: Market,
        kind: DataKind,
        interval: Interval,
        capacity: usize,
    ) -> KlineBuilder {
        KlineBuilder {
            interval,
            schema: schema(market, kind),
            rows: 0,
            last: None,
            open_time: Vec::with_capacity(capacity),
            open: Vec::with_capacity(capacity),
            high: Vec::with_capacity(capacity),
            low: Vec::with_capacity(capacity),
            close: Vec::with_capacity(capacity),
            volume: Vec::with_capacity(capacity),
            close_time: Vec::with_capacity(capacity),
            quote_volume: Vec::with_capacity(capacity),
            count: Vec::with_capacity(capacity),
            taker_buy_volume: Vec::with_capacity(capacity),
            taker_buy_quote_volume: Vec::with_capacity(capacity),
        }
    }

    /// Validates and adds one candle. An exact repeat of the previous row is dropped.
    pub fn push(&mut self, r: &KlineRecord) -> Result<Pushed, RowError> {
        let row = self.rows;
        self.rows += 1;
        let err = |reason: String| Err(RowError { row, reason });
        if let Some(last) = &self.last
            && r.open_time <= last.open_time
        {
            if r == last {
                return Ok(Pushed::Duplicate);
            }
            return err(format!(
                "open time {} is not after the previous row's {}",
                r.open_time, last.open_time
            ));
        }
        let prices = [r.open, r.high, r.low, r.close];
        if prices.iter().any(|p| !p.is_finite()) {
            return err("a price is not a finite number".into());
        }
        if !(r.low <= r.open.min(r.close) && r.high >= r.open.max(r.close) && r.low <= r.high) {
            return err(format!(
                "OHLC invariant broken: open {} high {} low {} close {}",
                r.open, r.high, r.low, r.close
            ));
        }
        let volumes = [
            r.volume,
            r.quote_volume,
            r.taker_buy_volume,
            r.taker_buy_quote_volume,
        ];
        if volumes.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || r.count < 0 {
            return err("a volume or the trade count is negative or not a number".into());
        }
        if r.open_time >= GRID_ENFORCED_FROM {
            if !self.interval.is_aligned(r.open_time) {
                return err(format!(
                    "open time {} is not on the {} grid",
                    r.open_time, self.interval
                ));
            }
            let expected = self.interval.close_time(r.open_time);
            if r.close_time != expected {
                return err(format!("close time {} should be {expected}", r.close_time));
            }
        } else if r.close_time < r.open_time {
            return err(format!(
                "close time {} is before open time {}",
                r.close_time, r.open_time
            ));
        }
        self.open_time.push(r.open_time);
        self.open.push(r.open);
        self.high.push(r.high);
        self.low.push(r.low);
        self.close.push(r.close);
        self.volume.push(r.volume);
        self.close_time.push(r.close_time);
        self.quote_volume.push(r.quote_volume);
        self.count.push(r.count);
        self.taker_buy_volume.push(r.taker_buy_volume);
        self.taker_buy_quote_volume.push(r.taker_buy_quote_volume);
        self.last = Some(*r);
        Ok(Pushed::Added)
    }

    /// Number of rows added so far.
    pub fn len(&self) -> usize {
        self.open_time.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.open_time.is_empty()
    }

    /// Open time of the last row added.
    pub fn last_open_time(&self) -> Option<i64> {
        self.open_time.last().copied()
    }

    /// The batch of all rows added.
    pub fn finish(self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(self.open_time).with_timezone(UTC)),
            Arc::new(Float64Array::from(self.open)),
            Arc::new(Float64Array::from(self.high)),
            Arc::new(Float64Array::from(self.low)),
            Arc::new(Float64Array::from(self.close)),
            Arc::new(Float64Array::from(self.volume)),
            Arc::new(TimestampMillisecondArray::from(self.close_time).with_timezone(UTC)),
            Arc::new(Float64Array::from(self.quote_volume)),
            Arc::new(Int64Array::from(self.count)),
            Arc::new(Float64Array::from(self.taker_buy_volume)),
            Arc::new(Float64Array::from(self.taker_buy_quote_volume)),
        ];
        batch(self.schema, cols)
    }
}

fn batch(schema: SchemaRef, cols: Vec<ArrayRef>) -> RecordBatch {
    // The columns are built to match the schema field by field, so this cannot fail; fall back to
    // an empty batch rather than panic if that invariant is ever broken.
    RecordBatch::try_new(schema.clone(), cols).unwrap_or_else(|e| {
        tracing::error!(error = %e, "schema mismatch building a batch (a dsm bug)");
        RecordBatch::new_empty(schema)
    })
}

/// One funding event, time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FundingRecord {
    /// When the funding was settled.
    pub funding_time: i64,
    /// The funding rate.
    pub funding_rate: f64,
    /// Hours since the previous funding, where known.
    pub funding_interval_hours: Option<i32>,
    /// The mark price at the funding time (REST on USD-M; Vision's files do not carry it).
    pub mark_price: Option<f64>,
}

/// Builds a funding-rate [`RecordBatch`], validating each row.
#[derive(Debug)]
pub struct FundingBuilder {
    rows: usize,
    last: Option<FundingRecord>,
    time: Vec<i64>,
    rate: Vec<f64>,
    hours: Vec<Option<i32>>,
    mark: Vec<Option<f64>>,
}

impl FundingBuilder {
    /// An empty builder.
    pub fn new(capacity: usize) -> FundingBuilder {
        FundingBuilder {
            rows: 0,
            last: None,
            time: Vec::with_capacity(capacity),
            rate: Vec::with_capacity(capacity),
            hours: Vec::with_capacity(capacity),
            mark: Vec::with_capacity(capacity),
        }
    }

    /// Validates and adds one funding event.
    pub fn push(&mut self, r: &FundingRecord) -> Result<Pushed, RowError> {
        let row = self.rows;
        self.rows += 1;
        if let Some(last) = &self.last
            && r.funding_time <= last.funding_time
        {
            if r == last {
                return Ok(Pushed::Duplicate);
            }
            return Err(RowError {
                row,
                reason: format!(
                    "funding time {} is not after {}",
                    r.funding_time, last.funding_time
                ),
            });
        }
        if !r.funding_rate.is_finite()
            || r.funding_interval_hours.is_some_and(|h| h <= 0)
            || r.mark_price.is_some_and(|p| !p.is_finite() || p <= 0.0)
        {
            return Err(RowError {
                row,
                reason: "invalid funding rate, interval or mark price".into(),
            });
        }
        self.time.push(r.funding_time);
        self.rate.push(r.funding_rate);
        self.hours.push(r.funding_interval_hours);
        self.mark.push(r.mark_price);
        self.last = Some(*r);
        Ok(Pushed::Added)
    }

    /// Number of rows added so far.
    pub fn len(&self) -> usize {
        self.time.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    /// The batch of all rows added.
    pub fn finish(self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(self.time).with_timezone(UTC)),
            Arc::new(Float64Array::from(self.rate)),
            Arc::new(Int32Array::from(self.hours)),
            Arc::new(Float64Array::from(self.mark)),
        ];
        batch(schema(Market::UsdM, DataKind::FundingRate), cols)
    }
}

/// One aggregate trade or one trade, time in microseconds.
///
/// For aggTrades `id` is the aggregate id and `first_id`/`last_id` the trade-id span; `quote_qty`
/// is unused. For trades `first_id`/`last_id` are unused and `quote_qty` holds the quote (spot,
/// USD-M) or base (COIN-M) quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeRecord {
    /// Trade id, or aggregate id.
    pub id: i64,
    /// Price.
    pub price: f64,
    /// Base quantity (contracts on COIN-M).
    pub qty: f64,
    /// Quote quantity (trades; see above).
    pub quote_qty: f64,
    /// First trade id of an aggregate.
    pub first_id: i64,
    /// Last trade id of an aggregate.
    pub last_id: i64,
    /// Trade time, microseconds since the epoch.
    pub time_us: i64,
    /// Whether the buyer was the maker.
    pub is_buyer_maker: bool,
    /// Whether the trade was the best price match (spot; absent elsewhere).
    pub is_best_match: Option<bool>,
}

/// Builds an aggTrades or trades [`RecordBatch`], validating each row (ids strictly increasing,
/// times non-decreasing, finite non-negative prices and quantities).
#[derive(Debug)]
pub struct TradeBuilder {
    market: Market,
    kind: DataKind,
    rows: usize,
    last: Option<TradeRecord>,
    id: Vec<i64>,
    price: Vec<f64>,
    qty: Vec<f64>,
    quote_qty: Vec<f64>,
    first_id: Vec<i64>,
    last_id: Vec<i64>,
    time: Vec<i64>,
    maker: Vec<bool>,
    best: Vec<Option<bool>>,
}

impl TradeBuilder {
    /// A builder for `kind` (`AggTrades` or `Trades`) on `market`.
    pub fn new(market: Market, kind: DataKind, capacity: usize) -> TradeBuilder {
        let agg = kind == DataKind::AggTrades;
        TradeBuilder {
            market,
            kind,
            rows: 0,
            last: None,
            id: Vec::with_capacity(capacity),
            price: Vec::with_capacity(capacity),
            qty: Vec::with_capacity(capacity),
            quote_qty: Vec::with_capacity(if agg { 0 } else { capacity }),
            first_id: Vec::with_capacity(if agg { capacity } else { 0 }),
            last_id: Vec::with_capacity(if agg { capacity } else { 0 }),
            time: Vec::with_capacity(capacity),
            maker: Vec::with_capacity(capacity),
            best: Vec::with_capacity(capacity),
        }
    }

    /// Validates and adds one trade.
    pub fn push(&mut self, r: &TradeRecord) -> Result<Pushed, RowError> {
        let row = self.rows;
        self.rows += 1;
        let err = |reason: String| Err(RowError { row, reason });
        if let Some(last) = &self.last {
            if r.id <= last.id {
                if r == last {
                    return Ok(Pushed::Duplicate);
                }
                return err(format!(
                    "id {} is not after the previous row's {}",
                    r.id, last.id
                ));
            }
            if r.time_us < last.time_us {
                return err(format!(
                    "time {} goes back before {}",
                    r.time_us, last.time_us
                ));
            }
        }
        // Binance marks invalidated spot aggTrades with p=0, q=0, f=-1, l=-1; those are kept as sent.
        if !(r.price.is_finite() && r.price >= 0.0 && r.qty.is_finite() && r.qty >= 0.0) {
            return err("price or quantity is negative or not a number".into());
        }
        self.id.push(r.id);
        self.price.push(r.price);
        self.qty.push(r.qty);
        if self.kind == DataKind::Trades {
            self.quote_qty.push(r.quote_qty);
        } else {
            self.first_id.push(r.first_id);
            self.last_id.push(r.last_id);
        }
        self.time.push(r.time_us);
        self.maker.push(r.is_buyer_maker);
        self.best.push(r.is_best_match);
        self.last = Some(*r);
        Ok(Pushed::Added)
    }

    /// Number of rows added so far.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// The batch of all rows added.
    pub fn finish(self) -> RecordBatch {
        let time: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(self.time).with_timezone(UTC));
        let maker: ArrayRef = Arc::new(BooleanArray::from(self.maker));
        let best: ArrayRef = Arc::new(BooleanArray::from(self.best));
        let cols: Vec<ArrayRef> = if self.kind == DataKind::AggTrades {
            vec![
                Arc::new(Int64Array::from(self.id)),
                Arc::new(Float64Array::from(self.price)),
                Arc::new(Float64Array::from(self.qty)),
                Arc::new(Int64Array::from(self.first_id)),
                Arc::new(Int64Array::from(self.last_id)),
                time,
                maker,
                best,
            ]
        } else {
            vec![
                Arc::new(Int64Array::from(self.id)),
                Arc::new(Float64Array::from(self.price)),
                Arc::new(Float64Array::from(self.qty)),
                Arc::new(Float64Array::from(self.quote_qty)),
                time,
                maker,
                best,
            ]
        };
        batch(schema(self.market, self.kind), cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(open_time: i64) -> KlineRecord {
        KlineRecord {
            open_time,
            open: 10.0,
            high: 12.0,
            low: 9.0,
            close: 11.0,
            volume: 1.0,
            close_time: open_time + 59_999,
            quote_volume: 10.0,
            count: 3,
            taker_buy_volume: 0.5,
            taker_buy_quote_volume: 5.0,
        }
    }

    const T0: i64 = 1_704_067_200_000; // 2024-01-01

    #[test]
    fn kline_builder_accepts_valid_rows_and_drops_exact_duplicates() {
        let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, 4);
        assert_eq!(b.push(&candle(T0)), Ok(Pushed::Added));
        assert_eq!(b.push(&candle(T0)), Ok(Pushed::Duplicate));
        assert_eq!(b.push(&candle(T0 + 60_000)), Ok(Pushed::Added));
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema(Market::Spot, DataKind::Klines));
    }

    #[test]
    fn kline_builder_rejects_broken_rows() {
        let cases: Vec<(&str, KlineRecord)> = vec![
            ("off grid", candle(T0 + 1)),
            (
                "bad close",
                KlineRecord {
                    close_time: T0 + 60_000,
                    ..candle(T0)
                },
            ),
            (
                "high below close",
                KlineRecord {
                    high: 10.5,
                    ..candle(T0)
                },
            ),
            (
                "low above open",
                KlineRecord {
                    low: 10.5,
                    ..candle(T0)
                },
            ),
            (
                "negative volume",
                KlineRecord {
                    volume: -1.0,
                    ..candle(T0)
                },
            ),
            (
                "nan price",
                KlineRecord {
                    open: f64::NAN,
                    ..candle(T0)
                },
            ),
        ];
        for (what, r) in cases {
            let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, 1);
            assert!(b.push(&r).is_err(), "{what} was accepted");
        }
        let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, 2);
        b.push(&candle(T0 + 60_000)).expect("valid row");
        let e = b
            .push(&candle(T0))
            .expect_err("going back in time must fail");
        assert_eq!(e.row, 1);
        let changed = KlineRecord {
            close: 11.5,
            ..candle(T0 + 60_000)
        };
        assert!(
            b.push(&changed).is_err(),
            "same open time with other values must fail"
        );
    }

    #[test]
    fn early_candles_off_the_grid_are_tolerated() {
        // BTCUSDT 1h after the 2018-02-08 maintenance opened at HH:28:15.
        let open = 1_518_183_000_000 + 28 * 60_000 + 15_000;
        let r = KlineRecord {
            close_time: open + 3_599_999,
            ..candle(open)
        };
        let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::H1, 1);
        assert_eq!(b.push(&r), Ok(Pushed::Added));
    }

    #[test]
    fn trade_and_funding_builders_enforce_order() {
        let t = TradeRecord {
            id: 5,
            price: 1.0,
            qty: 2.0,
            quote_qty: 2.0,
            first_id: 0,
            last_id: 0,
            time_us: 10,
            is_buyer_maker: true,
            is_best_match: None,
        };
        let b_clone_for_source = || {
            let mut b = TradeBuilder::new(Market::UsdM, DataKind::Trades, 1);
            b.push(&t).expect("valid");
            b.finish()
        };
        let mut b = TradeBuilder::new(Market::UsdM, DataKind::Trades, 2);
        b.push(&t).expect("valid");
        assert!(
            b.push(&TradeRecord {
                id: 6,
                time_us: 9,
                ..t
            })
            .is_err()
        );
        assert!(
            b.push(&TradeRecord {
                id: 4,
                time_us: 11,
                ..t
            })
            .is_err()
        );
        assert_eq!(b.finish().schema(), schema(Market::UsdM, DataKind::Trades));
        assert_eq!(
            schema(Market::CoinM, DataKind::Trades).field(3).name(),
            "base_qty"
        );
        let tagged = with_source(
            &b_clone_for_source(),
            Market::UsdM,
            DataKind::Trades,
            Source::Rest,
        );
        assert_eq!(
            tagged.schema(),
            output_schema(Market::UsdM, DataKind::Trades)
        );

        let f = FundingRecord {
            funding_time: 100,
            funding_rate: 0.0001,
            funding_interval_hours: Some(8),
            mark_price: None,
        };
        let mut fb = FundingBuilder::new(2);
        fb.push(&f).expect("valid");
        assert!(
            fb.push(&FundingRecord {
                funding_time: 50,
                ..f
            })
            .is_err()
        );
        assert_eq!(fb.finish().num_rows(), 1);
    }
}
