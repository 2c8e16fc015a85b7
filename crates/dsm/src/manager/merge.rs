//! Merging: one sorted, de-duplicated table for exactly `[start, end)`, and the gaps in it.
//!
//! The common case, cache partitions (and a REST top-up) that are each sorted, unique and
//! disjoint, is recognised in one O(n) pass over the key column and answered by slicing and one
//! concatenation; anything else (overlaps, unsorted input, duplicates) takes the general path:
//! concatenate, filter, sort, de-duplicate. Both give the same rows in the same order.

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use crate::market::{DataKind, Interval};
use crate::schema::{i64_values, time_column, time_scale};
use crate::time::TimeRange;

/// The column rows are unique on: the trade id for trades, the time for everything else but the
/// archive tables, whose rows may share a time and are ordered by it (never de-duplicated here:
/// their files were, and each period comes from one file).
fn key_column(kind: DataKind) -> &'static str {
    match kind {
        DataKind::AggTrades => "agg_trade_id",
        DataKind::Trades => "id",
        _ => time_column(kind),
    }
}

/// `range` in the unit of `kind`'s time column.
fn range_in_unit(kind: DataKind, range: TimeRange) -> (i64, i64) {
    let scale = time_scale(kind);
    (range.start() * scale, range.end() * scale)
}

/// Column `name` of `batch` as raw i64 values (ms or µs for times).
fn column_i64<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a [i64], ArrowError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("no {name} column")))?;
    if col.null_count() > 0 {
        return Err(ArrowError::InvalidArgumentError(format!(
            "column {name} has nulls"
        )));
    }
    i64_values(col).ok_or_else(|| {
        ArrowError::SchemaError(format!(
            "column {name} is {}, not a timestamp or Int64",
            col.data_type()
        ))
    })
}

/// The time column of `batch` as raw i64 values (ms or µs), borrowed.
fn times(batch: &RecordBatch, kind: DataKind) -> Result<&[i64], ArrowError> {
    column_i64(batch, time_column(kind))
}

/// Whether `v` is strictly increasing.
fn strictly_increasing(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Concatenates `batches`, keeps rows whose time lies in `range`, sorts them by key (the time, or
/// the trade id for trades) and drops repeated keys, keeping the first occurrence in input order
/// (callers pass cached rows first). The manager uses [`merge_parts`]; this single-batch form is
/// what the tests compare against.
#[cfg(test)]
pub(crate) fn merge(
    schema: &SchemaRef,
    kind: DataKind,
    batches: &[RecordBatch],
    range: TimeRange,
) -> Result<RecordBatch, ArrowError> {
    let parts = merge_parts(schema, kind, batches, range)?;
    match parts.as_slice() {
        [] => Ok(RecordBatch::new_empty(schema.clone())),
        [one] => RecordBatch::try_new(schema.clone(), one.columns().to_vec()),
        _ => concat_batches(schema, &parts),
    }
}

/// `merge` (the single-batch form the tests use) without the final concatenation: the answer as
/// consecutive batches (no empty ones), sharing the input's buffers where the input was already
/// sorted, unique and in range.
pub(crate) fn merge_parts(
    schema: &SchemaRef,
    kind: DataKind,
    batches: &[RecordBatch],
    range: TimeRange,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let (lo, hi) = range_in_unit(kind, range);
    let key_name = key_column(kind);
    // Fast path: every batch strictly increasing on the key (non-decreasing for the archive
    // tables) and the batches disjoint, so that, ordered by their first key, the whole sequence
    // is in order. Then no row repeats a key, and sorting is reordering whole batches.
    let table = kind.is_table();
    let mut parts: Vec<(i64, &RecordBatch)> = Vec::with_capacity(batches.len());
    let mut sorted_unique = true;
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let k = column_i64(b, key_name)?;
        let in_order = if table {
            k.windows(2).all(|w| w[0] <= w[1])
        } else {
            strictly_increasing(k)
        };
        if !in_order {
            sorted_unique = false;
            break;
        }
        parts.push((k[0], b));
    }
    if sorted_unique {
        parts.sort_by_key(|p| p.0);
        for w in parts.windows(2) {
            let prev = column_i64(w[0].1, key_name)?;
            if prev[prev.len() - 1] >= w[1].0 {
                sorted_unique = false;
                break;
            }
        }
    }
    if !sorted_unique {
        return merge_general(schema, kind, batches, (lo, hi), key_name, !table);
    }
    let mut out = Vec::with_capacity(parts.len());
    for (_, b) in parts {
        let t = times(b, kind)?;
        let in_range = |v: &i64| lo <= *v && *v < hi;
        let piece = if t.iter().all(in_range) {
            b.clone()
        } else if t.windows(2).all(|w| w[0] <= w[1]) {
            let a = t.partition_point(|v| *v < lo);
            let z = t.partition_point(|v| *v < hi);
            b.slice(a, z.saturating_sub(a))
        } else {
            let keep: BooleanArray = t.iter().map(|v| Some(in_range(v))).collect();
            filter_record_batch(b, &keep)?
        };
        if piece.num_rows() > 0 {
            out.push(piece);
        }
    }
    Ok(out)
}

/// The general merge: concatenate, filter to `[lo, hi)`, sort on (key, input position), keep the
/// first row of each key when `unique_keys`.
fn merge_general(
    schema: &SchemaRef,
    kind: DataKind,
    batches: &[RecordBatch],
    (lo, hi): (i64, i64),
    key_name: &str,
    unique_keys: bool,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let keep: BooleanArray = times(&all, kind)?
        .iter()
        .map(|v| Some(lo <= *v && *v < hi))
        .collect();
    let in_range = filter_record_batch(&all, &keep)?;
    drop(all);
    if in_range.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let key_values = column_i64(&in_range, key_name)?;
    // Sorting on (key, input position) keeps the first occurrence of equal keys first.
    let mut order: Vec<(i64, u32)> = key_values
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u32))
        .collect();
    order.sort_unstable();
    let mut unique = Vec::with_capacity(order.len());
    let mut last: Option<i64> = None;
    for (k, i) in order {
        if !unique_keys || last != Some(k) {
            unique.push(i);
            last = Some(k);
        }
    }
    let idx = arrow::array::UInt32Array::from(unique);
    Ok(vec![take_record_batch(&in_range, &idx)?])
}

/// The parts of `range` (within `[range.start, until)`) where candles of `interval` are expected but
/// `batch` has none, merged into ranges. `batch` must be sorted by open time.
#[cfg(test)]
pub(crate) fn kline_gaps(
    batch: &RecordBatch,
    interval: Interval,
    range: TimeRange,
    until: i64,
) -> Result<Vec<TimeRange>, ArrowError> {
    kline_gaps_parts(std::slice::from_ref(batch), interval, range, until)
}

/// The gaps of consecutive candle batches (as returned by [`merge_parts`]) in `range`, up to
/// `until` (nothing is due after it: the open candle, the future). See
/// [`crate::schema::kline_gaps`].
pub(crate) fn kline_gaps_parts(
    batches: &[RecordBatch],
    interval: Interval,
    range: TimeRange,
    until: i64,
) -> Result<Vec<TimeRange>, ArrowError> {
    let Ok(due) = TimeRange::new(range.start(), range.end().min(until)) else {
        return Ok(Vec::new());
    };
    crate::schema::kline_gaps(batches, interval, due).map_err(ArrowError::SchemaError)
}

/// The stretches of `range` (a Vision funding file's month) where a funding record is due but
/// `batch` has none: records fall due from 00:00 UTC every `funding_interval_hours` (8 where a
/// row does not say), so a hole is a start later than the range's, a spacing longer than the
/// intervals on either side, or an end that leaves a whole interval unrecorded. Calc times carry
/// a few ms of jitter, hence a minute of slack.
pub(crate) fn funding_holes(
    batch: &RecordBatch,
    range: TimeRange,
) -> Result<Vec<TimeRange>, ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;
    const SLACK_MS: i64 = 60_000;
    const DEFAULT_HOURS: i64 = 8;
    let t = times(batch, DataKind::FundingRate)?;
    let hours = batch
        .column_by_name("funding_interval_hours")
        .ok_or_else(|| ArrowError::SchemaError("no funding_interval_hours column".into()))?
        .as_primitive::<Int32Type>();
    let due = |i: usize| {
        let h = if hours.is_valid(i) {
            i64::from(hours.value(i))
        } else {
            DEFAULT_HOURS
        };
        h * crate::time::HOUR_MS
    };
    let (Some(&first), Some(&last)) = (t.first(), t.last()) else {
        return Ok(vec![range]);
    };
    let mut holes = Vec::new();
    let mut hole = |a: i64, b: i64| {
        if let Ok(h) = TimeRange::new(a.max(range.start()), b.min(range.end())) {
            holes.push(h);
        }
    };
    if first > range.start() + SLACK_MS {
        hole(range.start(), first);
    }
    for i in 1..t.len() {
        if t[i] - t[i - 1] > due(i - 1).max(due(i)) + SLACK_MS {
            hole(t[i - 1] + 1, t[i]);
        }
    }
    if range.end() - last > due(t.len() - 1) + SLACK_MS {
        hole(last + 1, range.end());
    }
    Ok(holes)
}

/// The rows of `batch` (sorted by time) whose time lies in `range`, as `(offset, len)`.
pub(crate) fn rows_in(
    batch: &RecordBatch,
    kind: DataKind,
    range: TimeRange,
) -> Result<(usize, usize), ArrowError> {
    let t = times(batch, kind)?;
    let (lo, hi) = range_in_unit(kind, range);
    let a = t.partition_point(|v| *v < lo);
    let b = t.partition_point(|v| *v < hi);
    Ok((a, b.saturating_sub(a)))
}

/// The first and last values of the time column, in milliseconds.
pub(crate) fn first_last_ms(batch: &RecordBatch, kind: DataKind) -> Option<(i64, i64)> {
    let t = times(batch, kind).ok()?;
    let scale = time_scale(kind);
    Some((*t.first()? / scale, *t.last()? / scale))
}

/// Whether the batch's column `name` has nulls (a cheap sanity check used by tests).
#[cfg(test)]
fn has_nulls(batch: &RecordBatch, name: &str) -> bool {
    use arrow::array::Array;
    batch
        .column_by_name(name)
        .is_some_and(|c| c.null_count() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Market;
    use crate::schema::{KlineBuilder, KlineRecord, Source, output_schema, with_source};
    use arrow::array::AsArray;

    const T0: i64 = 1_704_067_200_000; // 2024-01-01
    const M: i64 = 60_000;

    fn candles(opens: &[i64], close: f64, source: Source) -> RecordBatch {
        let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, opens.len());
        for &o in opens {
            b.push(&KlineRecord {
                open_time: o,
                open: close,
                high: close,
                low: close,
                close,
                volume: 1.0,
                close_time: o + M - 1,
                quote_volume: 1.0,
                count: 1,
                taker_buy_volume: 0.0,
                taker_buy_quote_volume: 0.0,
            })
            .expect("valid candle");
        }
        with_source(&b.finish(), Market::Spot, DataKind::Klines, source)
    }

    #[test]
    fn merge_sorts_trims_and_keeps_the_first_duplicate() {
        let schema = output_schema(Market::Spot, DataKind::Klines);
        let cached = candles(&[T0 + 2 * M, T0 + 3 * M], 1.0, Source::Vision);
        let fresh = candles(&[T0, T0 + M, T0 + 2 * M, T0 + 5 * M], 2.0, Source::Rest);
        let range = TimeRange::new(T0 + M, T0 + 5 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, &[cached, fresh], range).expect("merge");
        assert_eq!(opens_of(&out), vec![T0 + M, T0 + 2 * M, T0 + 3 * M]);
        let close = out
            .column_by_name("close")
            .expect("close")
            .as_primitive::<arrow::datatypes::Float64Type>();
        // The row at T0+2M came from both; the first given (cached, close 1.0) wins.
        assert_eq!(close.values().to_vec(), vec![2.0, 1.0, 1.0]);
        assert!(!has_nulls(&out, "source"));
    }

    fn opens_of(out: &RecordBatch) -> Vec<i64> {
        times(out, DataKind::Klines).expect("times").to_vec()
    }

    fn closes_of(out: &RecordBatch) -> Vec<f64> {
        out.column_by_name("close")
            .expect("close")
            .as_primitive::<arrow::datatypes::Float64Type>()
            .values()
            .to_vec()
    }

    fn sources_of(out: &RecordBatch) -> Vec<String> {
        let col = out.column_by_name("source").expect("source");
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("cast");
        col.as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned())
            .collect()
    }

    fn minutes(from: i64, to: i64) -> Vec<i64> {
        (from..to).map(|i| T0 + i * M).collect()
    }

    /// Cache partitions in order, each sorted and unique: the answer is their rows, trimmed to
    /// the range, sharing the input's buffers when one batch covers it.
    #[test]
    fn sorted_disjoint_parts_are_trimmed_without_sorting() {
        let schema = output_schema(Market::Spot, DataKind::Klines);
        let jan = candles(&minutes(0, 10), 1.0, Source::Vision);
        let feb = candles(&minutes(10, 20), 2.0, Source::Vision);
        let range = TimeRange::new(T0 + 3 * M, T0 + 15 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, &[jan.clone(), feb], range).expect("merge");
        assert_eq!(opens_of(&out), minutes(3, 15));
        assert_eq!(closes_of(&out)[..7], [1.0; 7]);
        assert_eq!(closes_of(&out)[7..], [2.0; 5]);
        // The whole of one in-range batch comes back as is (no copy).
        let all = TimeRange::new(T0, T0 + 10 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, std::slice::from_ref(&jan), all).expect("merge");
        assert_eq!(opens_of(&out), minutes(0, 10));
        let (a, b) = (out.column(1).to_data(), jan.column(1).to_data());
        assert_eq!(a.buffers()[0].as_ptr(), b.buffers()[0].as_ptr());
        // Nothing in range: an empty answer with the output schema.
        let none = TimeRange::new(T0 + 30 * M, T0 + 40 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, &[jan], none).expect("merge");
        assert_eq!(out.num_rows(), 0);
        assert_eq!(out.schema(), schema);
    }

    /// A REST batch filling a hole between two cache partitions, given last: rows come back in
    /// time order with their own sources.
    #[test]
    fn a_disjoint_top_up_given_last_is_put_in_time_order() {
        let schema = output_schema(Market::Spot, DataKind::Klines);
        let a = candles(&minutes(0, 3), 1.0, Source::Vision);
        let c = candles(&minutes(6, 8), 1.0, Source::Vision);
        let b = candles(&minutes(3, 6), 2.0, Source::Rest);
        let range = TimeRange::new(T0, T0 + 8 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, &[a, c, b], range).expect("merge");
        assert_eq!(opens_of(&out), minutes(0, 8));
        assert_eq!(closes_of(&out), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0]);
        assert_eq!(
            sources_of(&out),
            [
                "vision", "vision", "vision", "rest", "rest", "rest", "vision", "vision"
            ]
        );
    }

    /// REST rows overlapping the cache: the cached row (given first) wins on every shared time.
    #[test]
    fn duplicates_across_cache_and_rest_keep_the_cached_row() {
        let schema = output_schema(Market::Spot, DataKind::Klines);
        let cached = candles(&minutes(0, 5), 1.0, Source::Vision);
        let fresh = candles(&minutes(3, 8), 2.0, Source::Rest);
        let range = TimeRange::new(T0, T0 + 8 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, &[cached, fresh], range).expect("merge");
        assert_eq!(opens_of(&out), minutes(0, 8));
        assert_eq!(closes_of(&out), [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(sources_of(&out)[4..6], ["vision", "rest"]);
    }

    /// Unsorted rows and a key repeated inside one batch take the general path.
    #[test]
    fn unsorted_and_repeated_rows_are_sorted_and_deduplicated() {
        let schema = output_schema(Market::Spot, DataKind::Klines);
        // Built row by row out of order (the builder accepts it; a bad source could send it).
        let mut rows = candles(&[T0 + 4 * M], 4.0, Source::Rest);
        for (o, c) in [
            (T0 + M, 1.0),
            (T0 + 4 * M, 9.0),
            (T0, 0.0),
            (T0 + 9 * M, 5.0),
        ] {
            let one = candles(&[o], c, Source::Rest);
            rows = concat_batches(&schema, [&rows, &one]).expect("concat");
        }
        let range = TimeRange::new(T0, T0 + 5 * M).expect("range");
        let out = merge(&schema, DataKind::Klines, &[rows], range).expect("merge");
        assert_eq!(opens_of(&out), [T0, T0 + M, T0 + 4 * M]);
        // The first of the two rows at T0+4M (close 4.0) is kept.
        assert_eq!(closes_of(&out), [0.0, 1.0, 4.0]);
    }

    /// Trades are unique on their id, not on their time: equal times with different ids are all
    /// kept, repeated ids are dropped, and the range applies to the time.
    #[test]
    fn trades_are_keyed_on_the_id() {
        use crate::schema::{TradeBuilder, TradeRecord};
        let trades = |ids: &[(i64, i64)], source| {
            let mut b = TradeBuilder::new(Market::Spot, DataKind::Trades, ids.len());
            for &(id, t_ms) in ids {
                b.push(&TradeRecord {
                    id,
                    price: 1.0,
                    qty: 1.0,
                    quote_qty: 1.0,
                    first_id: id,
                    last_id: id,
                    time_us: t_ms * 1000,
                    is_buyer_maker: false,
                    is_best_match: None,
                })
                .expect("valid trade");
            }
            with_source(&b.finish(), Market::Spot, DataKind::Trades, source)
        };
        let schema = output_schema(Market::Spot, DataKind::Trades);
        let ids = |out: &RecordBatch| column_i64(out, "id").expect("ids").to_vec();
        let range = TimeRange::new(T0 + 1, T0 + 10).expect("range");
        // Disjoint and sorted: the fast path, trimmed on time.
        let a = trades(&[(1, T0), (2, T0 + 1), (3, T0 + 1)], Source::Vision);
        let b = trades(&[(4, T0 + 5), (5, T0 + 10)], Source::Rest);
        let out = merge(&schema, DataKind::Trades, &[a.clone(), b], range).expect("merge");
        assert_eq!(ids(&out), [2, 3, 4]);
        // Overlapping ids: the general path, first occurrence kept.
        let c = trades(&[(3, T0 + 1), (4, T0 + 5), (6, T0 + 6)], Source::Rest);
        let out = merge(&schema, DataKind::Trades, &[a, c], range).expect("merge");
        assert_eq!(ids(&out), [2, 3, 4, 6]);
        assert_eq!(sources_of(&out), ["vision", "vision", "rest", "rest"]);
    }

    proptest::proptest! {
        /// Whatever the input, the answer is the in-range rows, sorted, one per time, the first
        /// given winning: checked against a model built with a map.
        #[test]
        fn merge_matches_a_model(
            parts in proptest::collection::vec(
                (proptest::collection::btree_set(0i64..40, 0..12), proptest::bool::ANY),
                0..5,
            ),
            lo in 0i64..40,
            len in 1i64..40,
        ) {
            let schema = output_schema(Market::Spot, DataKind::Klines);
            let mut batches = Vec::new();
            let mut model = std::collections::BTreeMap::new();
            for (i, (slots, reversed)) in parts.iter().enumerate() {
                let mut opens: Vec<i64> = slots.iter().map(|s| T0 + s * M).collect();
                if *reversed {
                    opens.reverse();
                }
                // Close = batch number: identifies which input a row came from.
                let mut b = candles(&[], 0.0, Source::Rest);
                for o in &opens {
                    let one = candles(&[*o], i as f64, Source::Rest);
                    b = concat_batches(&schema, [&b, &one]).expect("concat");
                    model.entry(*o).or_insert(i as f64);
                }
                batches.push(b);
            }
            let range = TimeRange::new(T0 + lo * M, T0 + (lo + len) * M).expect("range");
            let out = merge(&schema, DataKind::Klines, &batches, range).expect("merge");
            let want: Vec<(i64, f64)> = model
                .into_iter()
                .filter(|(o, _)| range.contains(*o))
                .collect();
            let got: Vec<(i64, f64)> =
                opens_of(&out).into_iter().zip(closes_of(&out)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn gaps_are_the_missing_grid_slots() {
        let b = candles(&[T0 + M, T0 + 2 * M, T0 + 6 * M], 1.0, Source::Vision);
        let range = TimeRange::new(T0, T0 + 10 * M).expect("range");
        let gaps = kline_gaps(&b, Interval::M1, range, i64::MAX).expect("gaps");
        let expect = vec![
            TimeRange::new(T0, T0 + M).expect("g"),
            TimeRange::new(T0 + 3 * M, T0 + 6 * M).expect("g"),
            TimeRange::new(T0 + 7 * M, T0 + 10 * M).expect("g"),
        ];
        assert_eq!(gaps, expect);
        // Nothing is expected after `until` (e.g. the open candle or the future).
        let gaps = kline_gaps(&b, Interval::M1, range, T0 + 7 * M).expect("gaps");
        assert_eq!(gaps.len(), 2);
        let empty = candles(&[], 1.0, Source::Rest);
        assert_eq!(
            kline_gaps(&empty, Interval::M1, range, i64::MAX).expect("gaps"),
            vec![range]
        );
    }

    #[test]
    fn off_grid_candles_of_early_history_leave_no_false_gap() {
        // 2018-01-04: after a maintenance, 1m candles opened 15 s past the minute (spec §4).
        const EARLY: i64 = 1_515_024_000_000;
        let opens: Vec<i64> = (0..5).map(|i| EARLY + 15_000 + i * M).collect();
        let b = candles(&opens, 1.0, Source::Vision);
        let range = TimeRange::new(EARLY + M, EARLY + 5 * M).expect("range");
        assert_eq!(
            kline_gaps(&b, Interval::M1, range, i64::MAX).expect("gaps"),
            Vec::<TimeRange>::new()
        );
        // A missing off-grid candle is a gap from where the one before it closed.
        let holed = candles(
            &[opens[0], opens[1], opens[3], opens[4]],
            1.0,
            Source::Vision,
        );
        assert_eq!(
            kline_gaps(&holed, Interval::M1, range, i64::MAX).expect("gaps"),
            vec![TimeRange::new(opens[2], opens[3]).expect("gap")]
        );
    }
}
