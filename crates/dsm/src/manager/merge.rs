//! Merging: one sorted, de-duplicated table for exactly `[start, end)`, and the gaps in it.

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::market::{DataKind, Interval};
use crate::schema::{time_column, time_unit};
use crate::time::TimeRange;

/// The column rows are unique on: the trade id for trades, the time for everything else.
fn key_column(kind: DataKind) -> &'static str {
    match kind {
        DataKind::AggTrades => "agg_trade_id",
        DataKind::Trades => "id",
        _ => time_column(kind),
    }
}

/// `range` in the unit of `kind`'s time column.
fn range_in_unit(kind: DataKind, range: TimeRange) -> (i64, i64) {
    match time_unit(kind) {
        TimeUnit::Microsecond => (range.start() * 1000, range.end() * 1000),
        _ => (range.start(), range.end()),
    }
}

/// The time column of `batch` as raw i64 values (ms or µs).
fn times(batch: &RecordBatch, kind: DataKind) -> Result<Vec<i64>, ArrowError> {
    let col = batch
        .column_by_name(time_column(kind))
        .ok_or_else(|| ArrowError::SchemaError(format!("no {} column", time_column(kind))))?;
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64)?;
    Ok(col.as_primitive::<Int64Type>().values().to_vec())
}

/// Concatenates `batches`, keeps rows whose time lies in `range`, sorts them by time (then key) and
/// drops repeated keys, keeping the first occurrence in input order (callers pass cached rows first).
pub(crate) fn merge(
    schema: &SchemaRef,
    kind: DataKind,
    batches: &[RecordBatch],
    range: TimeRange,
) -> Result<RecordBatch, ArrowError> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(all);
    }
    let (lo, hi) = range_in_unit(kind, range);
    let t = times(&all, kind)?;
    let keep: BooleanArray = t.iter().map(|v| Some(lo <= *v && *v < hi)).collect();
    let in_range = filter_record_batch(&all, &keep)?;
    if in_range.num_rows() == 0 {
        return Ok(in_range);
    }
    let key = in_range
        .column_by_name(key_column(kind))
        .ok_or_else(|| ArrowError::SchemaError(format!("no {} column", key_column(kind))))?;
    let key = arrow::compute::cast(key, &arrow::datatypes::DataType::Int64)?;
    let key_values = key.as_primitive::<Int64Type>();
    // Sorting on (key, input position) keeps the first occurrence of equal keys first.
    let mut order: Vec<(i64, u32)> = key_values
        .values()
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u32))
        .collect();
    order.sort_unstable();
    let mut unique = Vec::with_capacity(order.len());
    let mut last: Option<i64> = None;
    for (k, i) in order {
        if last != Some(k) {
            unique.push(i);
            last = Some(k);
        }
    }
    let idx = arrow::array::UInt32Array::from(unique);
    take_record_batch(&in_range, &idx)
}

/// The parts of `range` (within `[range.start, until)`) where candles of `interval` are expected but
/// `batch` has none, merged into ranges. `batch` must be sorted by open time.
pub(crate) fn kline_gaps(
    batch: &RecordBatch,
    interval: Interval,
    range: TimeRange,
    until: i64,
) -> Result<Vec<TimeRange>, ArrowError> {
    let end = range.end().min(until);
    let mut gaps = Vec::new();
    let mut expected = interval.ceil(range.start());
    let opens = if batch.num_rows() == 0 {
        Vec::new()
    } else {
        times(batch, DataKind::Klines)?
    };
    for open in opens {
        if open > expected
            && let Ok(g) = TimeRange::new(expected.max(range.start()), open.min(end))
        {
            gaps.push(g);
        }
        expected = interval.next(interval.floor(open));
    }
    if expected < end
        && let Ok(g) = TimeRange::new(expected.max(range.start()), end)
    {
        gaps.push(g);
    }
    Ok(gaps)
}

/// The first and last values of the time column, in milliseconds.
pub(crate) fn first_last_ms(batch: &RecordBatch, kind: DataKind) -> Option<(i64, i64)> {
    let t = times(batch, kind).ok()?;
    let scale = if time_unit(kind) == TimeUnit::Microsecond {
        1000
    } else {
        1
    };
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
        assert_eq!(
            times(&out, DataKind::Klines).expect("times"),
            vec![T0 + M, T0 + 2 * M, T0 + 3 * M]
        );
        let close = out
            .column_by_name("close")
            .expect("close")
            .as_primitive::<arrow::datatypes::Float64Type>();
        // The row at T0+2M came from both; the first given (cached, close 1.0) wins.
        assert_eq!(close.values().to_vec(), vec![2.0, 1.0, 1.0]);
        assert!(!has_nulls(&out, "source"));
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
}
