//! The archive tables (metrics, book depth and ticker, liquidations, BVOL, EOH summaries): rows
//! read by the header's column names, typed by [`table_columns`], then sorted by time with exact
//! repeats dropped (the archive lists liquidations twice and metrics out of order).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use arrow::compute::kernels::partition::partition;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;

use super::*;
use crate::schema::{ColumnType, TableColumn, UTC, schema, table_columns, time_column};
use crate::time::HOUR_MS;

/// More CSV fields than any archive table has (EOH summaries have 26).
const MAX_FIELDS: usize = 64;

/// One Arrow column being built.
enum Buf {
    Time(Vec<i64>),
    Float(Vec<f64>),
    OptFloat(Vec<Option<f64>>),
    Int(Vec<i64>),
    Text(StringBuilder),
}

/// One parsed cell, before the row is known to be good.
#[derive(Clone, Copy)]
enum Cell<'a> {
    Time(i64),
    Float(f64),
    OptFloat(Option<f64>),
    Int(i64),
    Text(&'a str),
    /// The hour, folded into the date's cell.
    None,
}

pub(super) struct TableBuilder {
    kind: DataKind,
    schema: SchemaRef,
    columns: &'static [TableColumn],
    /// For each of `columns`, the CSV field holding it (positional until a header says otherwise).
    field_of: Vec<usize>,
    /// How many fields a row has.
    fields: usize,
    /// The Arrow column of each of `columns` (`None` for the hour, folded into the date's).
    bufs: Vec<Option<Buf>>,
    /// The index in `columns` of the row's time (the date's for EOH summaries).
    time_col: usize,
    rows: usize,
}

fn buf(ty: ColumnType, cap: usize) -> Option<Buf> {
    Some(match ty {
        ColumnType::Time | ColumnType::Date => Buf::Time(Vec::with_capacity(cap)),
        ColumnType::Hour => return None,
        ColumnType::Float => Buf::Float(Vec::with_capacity(cap)),
        ColumnType::OptFloat => Buf::OptFloat(Vec::with_capacity(cap)),
        ColumnType::Int => Buf::Int(Vec::with_capacity(cap)),
        ColumnType::Text => Buf::Text(StringBuilder::with_capacity(cap, cap * 8)),
    })
}

/// A UTC instant: integer ms (µs scaled down) or text `YYYY-MM-DD HH:MM:SS[.fff]`.
fn instant(s: &[u8], what: &str) -> Result<i64, String> {
    if s.first().is_some_and(u8::is_ascii_digit) && s.iter().all(u8::is_ascii_digit) {
        return millis(s, what);
    }
    let text = std::str::from_utf8(s).map_err(|_| bad(s, what, "a time"))?;
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|_| bad(s, what, "a time like 2024-01-01 00:05:00 or milliseconds"))
}

fn date(s: &[u8], what: &str) -> Result<i64, String> {
    let text = std::str::from_utf8(s).map_err(|_| bad(s, what, "a date"))?;
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| bad(s, what, "a date like 2024-01-01"))
}

impl TableBuilder {
    pub(super) fn new(market: Market, kind: DataKind, capacity: usize) -> TableBuilder {
        let columns = table_columns(kind);
        let time_name = time_column(kind);
        let time_col = columns
            .iter()
            .position(|c| c.name == time_name || c.ty == ColumnType::Date)
            .unwrap_or(0);
        TableBuilder {
            kind,
            schema: schema(market, kind),
            columns,
            field_of: (0..columns.len()).collect(),
            fields: columns.len(),
            bufs: columns.iter().map(|c| buf(c.ty, capacity)).collect(),
            time_col,
            rows: 0,
        }
    }

    /// Reads the header: each column is found by its name, wherever it is; a column the archive
    /// added later is ignored, one it lacks fails the file.
    pub(super) fn header(&mut self, line: &[u8]) -> Result<(), String> {
        let names: Vec<String> = line
            .split(|b| *b == b',')
            .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
            .collect();
        if names.len() > MAX_FIELDS {
            return Err(format!("header has {} columns", names.len()));
        }
        for (i, c) in self.columns.iter().enumerate() {
            self.field_of[i] = names.iter().position(|n| n == c.name).ok_or_else(|| {
                format!(
                    "header lacks the {} column of {}: {}",
                    c.name,
                    self.kind,
                    String::from_utf8_lossy(line)
                )
            })?;
        }
        if names.len() > self.columns.len() {
            tracing::warn!(kind = %self.kind, header = %String::from_utf8_lossy(line), "the archive's header has columns dsm does not know; they are left out");
        }
        self.fields = names.len();
        Ok(())
    }

    /// Parses and adds one data row whose time must lie in `[start, end)`.
    pub(super) fn push(&mut self, line: &[u8], start: i64, end: i64) -> Result<(), String> {
        let mut fields = [&[][..]; MAX_FIELDS];
        let mut n = 0;
        for f in line.split(|b| *b == b',') {
            if n == MAX_FIELDS || n == self.fields {
                n += 1;
                break;
            }
            fields[n] = f;
            n += 1;
        }
        if n != self.fields {
            return Err(format!(
                "expected {} comma-separated fields, found {}",
                self.fields,
                line.iter().filter(|b| **b == b',').count() + 1
            ));
        }
        let mut cells = [Cell::None; MAX_FIELDS];
        for (i, c) in self.columns.iter().enumerate() {
            let s = fields[self.field_of[i]];
            cells[i] = match c.ty {
                ColumnType::Time => Cell::Time(instant(s, c.name)?),
                ColumnType::Date => Cell::Time(date(s, c.name)?),
                ColumnType::Hour => {
                    let h = int(s, c.name)?;
                    if !(0..24).contains(&h) {
                        return Err(bad(s, c.name, "an hour from 0 to 23"));
                    }
                    if let Cell::Time(d) = cells[self.time_col] {
                        cells[self.time_col] = Cell::Time(d + h * HOUR_MS);
                    }
                    Cell::None
                }
                ColumnType::Float => Cell::Float(float(s, c.name)?),
                ColumnType::OptFloat if s.is_empty() => Cell::OptFloat(None),
                ColumnType::OptFloat => Cell::OptFloat(Some(float(s, c.name)?)),
                ColumnType::Int => Cell::Int(int(s, c.name)?),
                ColumnType::Text => {
                    Cell::Text(std::str::from_utf8(s).map_err(|_| bad(s, c.name, "text"))?)
                }
            };
        }
        if let Cell::Time(t) = cells[self.time_col] {
            check_inside(start, end, t)?;
        }
        for (cell, b) in cells.iter().zip(self.bufs.iter_mut()) {
            match (b, *cell) {
                (Some(Buf::Time(v)), Cell::Time(x)) => v.push(x),
                (Some(Buf::Float(v)), Cell::Float(x)) => v.push(x),
                (Some(Buf::OptFloat(v)), Cell::OptFloat(x)) => v.push(x),
                (Some(Buf::Int(v)), Cell::Int(x)) => v.push(x),
                (Some(Buf::Text(v)), Cell::Text(x)) => v.append_value(x),
                _ => {}
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows sorted by time (then by every other column, so the order does not depend on the
    /// file's), exact repeats dropped; and how many were dropped.
    pub(super) fn finish(self) -> Result<(RecordBatch, usize), String> {
        let cols: Vec<ArrayRef> = self
            .bufs
            .into_iter()
            .flatten()
            .map(|b| -> ArrayRef {
                match b {
                    Buf::Time(v) => Arc::new(TimestampMillisecondArray::from(v).with_timezone(UTC)),
                    Buf::Float(v) => Arc::new(Float64Array::from(v)),
                    Buf::OptFloat(v) => Arc::new(Float64Array::from(v)),
                    Buf::Int(v) => Arc::new(Int64Array::from(v)),
                    Buf::Text(mut v) => Arc::new(v.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(|e| e.to_string())?;
        let rows = batch.num_rows();
        if rows < 2 {
            return Ok((batch, 0));
        }
        let time = self
            .schema
            .index_of(time_column(self.kind))
            .map_err(|e| e.to_string())?;
        let order = std::iter::once(time).chain((0..batch.num_columns()).filter(|c| *c != time));
        let sort: Vec<SortColumn> = order
            .map(|c| SortColumn {
                values: batch.column(c).clone(),
                options: None,
            })
            .collect();
        let indices = lexsort_to_indices(&sort, None).map_err(|e| e.to_string())?;
        let sorted = take_record_batch(&batch, &indices).map_err(|e| e.to_string())?;
        let runs = partition(sorted.columns()).map_err(|e| e.to_string())?;
        if runs.len() == rows {
            return Ok((sorted, 0));
        }
        let firsts: arrow::array::UInt32Array = runs
            .ranges()
            .into_iter()
            .map(|r| u32::try_from(r.start).unwrap_or(u32::MAX))
            .collect();
        let unique = take_record_batch(&sorted, &firsts).map_err(|e| e.to_string())?;
        Ok((unique, rows - runs.len()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;

    const DAY: i64 = 1_704_067_200_000; // 2024-01-01

    #[test]
    fn columns_are_found_by_header_name_wherever_they_are() {
        let mut b = TableBuilder::new(Market::UsdM, DataKind::BookDepth, 4);
        // Reordered, with a column the archive might add later.
        b.header(b"depth,timestamp,extra,notional,percentage")
            .unwrap();
        b.push(b"12.5,2024-01-01 00:00:08,x,99.0,-5", DAY, DAY + 86_400_000)
            .unwrap();
        let (batch, repeats) = b.finish().unwrap();
        assert_eq!(repeats, 0);
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0)
        };
        assert_eq!(
            (col("percentage"), col("depth"), col("notional")),
            (-5.0, 12.5, 99.0)
        );
        let time = batch
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(time.value(0), DAY + 8_000);
    }

    #[test]
    fn a_header_without_a_known_column_fails_naming_it() {
        let mut b = TableBuilder::new(Market::UsdM, DataKind::BookDepth, 4);
        let err = b.header(b"timestamp,percentage,depth").unwrap_err();
        assert!(err.contains("notional"), "{err}");
    }

    #[test]
    fn rows_outside_the_file_or_malformed_are_errors() {
        let mut b = TableBuilder::new(Market::UsdM, DataKind::BookDepth, 4);
        let end = DAY + 86_400_000;
        assert!(b.push(b"2024-01-02 00:00:00,-5,1,1", DAY, end).is_err());
        assert!(b.push(b"2024-01-01 25:00:00,-5,1,1", DAY, end).is_err());
        assert!(b.push(b"2024-01-01 00:00:00,-5,1", DAY, end).is_err());
        assert!(b.push(b"2024-01-01 00:00:00,-5,NaN,1", DAY, end).is_err());
        // A failed row leaves nothing behind.
        assert_eq!(b.finish().unwrap().0.num_rows(), 0);
        let mut eoh = TableBuilder::new(Market::Option, DataKind::EohSummary, 1);
        let mut row = b"2024-01-01,24,S,U,C,1".to_vec();
        row.extend(std::iter::repeat_n(&b","[..], 20).flatten());
        assert!(eoh.push(&row, DAY, end).unwrap_err().contains("hour"));
    }
}
