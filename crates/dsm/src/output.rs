//! Writing answers to Parquet files, the way the `dsm` CLI writes them.
//!
//! [`ParquetWriter`] takes record batches in order (a [`Response`](crate::Response)'s batches, or
//! the windows of [`DataSourceManager::get_windows`](crate::DataSourceManager::get_windows) one
//! after the other) and encodes the columns of each row group on several threads: the Parquet
//! encode (compression above all) is most of the cost of writing a file, and its columns are
//! independent. The file is the one a single-threaded `parquet::arrow::ArrowWriter` with the same
//! settings writes, byte for byte.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Float64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use dsm::output::ParquetWriter;
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("close", DataType::Float64, false)]));
//! let batch = RecordBatch::try_new(
//!     schema.clone(),
//!     vec![Arc::new(Float64Array::from(vec![42_000.5, 42_001.0]))],
//! )?;
//! let mut writer = ParquetWriter::try_new(Vec::new(), schema)?;
//! writer.write(&batch)?;
//! let bytes: Vec<u8> = writer.into_inner()?;
//! assert_eq!(&bytes[..4], b"PAR1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::{DEFAULT_MAX_ROW_GROUP_ROW_COUNT, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::schema::SOURCE_COLUMN;

/// Rows below which a batch is encoded on the calling thread alone (threads cost more than they
/// save on a few thousand rows).
const PARALLEL_MIN_ROWS: usize = 4096;

/// dsm's output settings for `schema`: zstd level 1, DELTA_BINARY_PACKED for the 64-bit integer
/// and timestamp columns (times step by the interval and ids by one, so they pack to a few bits
/// and leave zstd less to do), and no dictionaries but for `source` (candle prices, volumes and
/// times hardly repeat, so a dictionary only costs; `source` has a value or two per file).
/// Measured in BENCHMARKS.md ("End-to-end"): against the Parquet writer's defaults with zstd(3),
/// less than half the encode time and a file 15% smaller.
pub fn default_properties(schema: &Schema) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default())) // level 1
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(SOURCE_COLUMN), true);
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..)) {
            b = b.set_column_encoding(
                ColumnPath::from(f.name().as_str()),
                Encoding::DELTA_BINARY_PACKED,
            );
        }
    }
    b.build()
}

/// A Parquet file writer that encodes the columns of a row group in parallel.
///
/// Row groups hold up to the properties' `max_row_group_row_count` rows (1 Mi by default),
/// whatever the sizes of the batches written. Row groups reach `W` whole, and the footer only
/// from [`ParquetWriter::into_inner`]: an unfinished writer leaves an unreadable file, so write to
/// a temporary file and rename it once `into_inner` has returned.
pub struct ParquetWriter<W: Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The open row group's column writers (empty between row groups).
    columns: Vec<ArrowColumnWriter>,
    rows_in_group: usize,
    row_groups: usize,
    max_rows: usize,
    threads: usize,
}

impl<W: Write + Send> std::fmt::Debug for ParquetWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter")
            .field("row_groups", &self.row_groups)
            .field("rows_in_group", &self.rows_in_group)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> ParquetWriter<W> {
    /// A writer of `schema` into `out` with dsm's [`default_properties`], using every core.
    pub fn try_new(out: W, schema: SchemaRef) -> Result<ParquetWriter<W>> {
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let props = default_properties(&schema);
        ParquetWriter::with_properties(out, schema, props, threads)
    }

    /// A writer with `props`, encoding on at most `threads` threads (the caller's included).
    pub fn with_properties(
        out: W,
        schema: SchemaRef,
        props: WriterProperties,
        threads: usize,
    ) -> Result<ParquetWriter<W>> {
        let max_rows = props
            .max_row_group_row_count()
            .unwrap_or(DEFAULT_MAX_ROW_GROUP_ROW_COUNT)
            .max(1);
        // The ArrowWriter adds the Arrow schema to the file's metadata (time zones, units) and
        // derives the Parquet schema; the encoding itself is done here, column by column.
        let (file, factory) =
            ArrowWriter::try_new(out, schema.clone(), Some(props))?.into_serialized_writer()?;
        Ok(ParquetWriter {
            file,
            factory,
            threads: threads.clamp(1, schema.fields().len().max(1)),
            schema,
            columns: Vec::new(),
            rows_in_group: 0,
            row_groups: 0,
            max_rows,
        })
    }

    /// Appends `batch`, whose schema must be the writer's.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(ParquetError::General(format!(
                "the batch's columns {:?} are not the file's {:?}",
                batch.schema().fields(),
                self.schema.fields()
            )));
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.columns.is_empty() {
                self.columns = self.factory.create_column_writers(self.row_groups)?;
            }
            let take = (self.max_rows - self.rows_in_group).min(batch.num_rows() - offset);
            self.encode(&batch.slice(offset, take))?;
            self.rows_in_group += take;
            offset += take;
            if self.rows_in_group >= self.max_rows {
                self.close_row_group()?;
            }
        }
        Ok(())
    }

    /// Writes the last row group and the footer, and returns `out`.
    pub fn into_inner(mut self) -> Result<W> {
        self.close_row_group()?;
        self.file.into_inner()
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves: Vec<ArrowLeafColumn> = Vec::with_capacity(self.columns.len());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        if leaves.len() != self.columns.len() {
            return Err(ParquetError::General(format!(
                "{} leaf columns for {} column writers",
                leaves.len(),
                self.columns.len()
            )));
        }
        let threads = if batch.num_rows() < PARALLEL_MIN_ROWS {
            1
        } else {
            self.threads
        };
        let work = self.columns.iter_mut().zip(&leaves).collect();
        for_each_parallel(work, threads, |(writer, leaf)| writer.write(leaf))
            .into_iter()
            .collect()
    }

    fn close_row_group(&mut self) -> Result<()> {
        if self.columns.is_empty() {
            return Ok(());
        }
        let writers = std::mem::take(&mut self.columns);
        // Closing flushes each column's last page, so it is encoding work too.
        let chunks = for_each_parallel(writers, self.threads, ArrowColumnWriter::close);
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.row_groups += 1;
        self.rows_in_group = 0;
        Ok(())
    }
}

/// `f` applied to every item, on up to `threads` threads (the calling one included), each thread
/// taking the next item as it frees up; the results come back in the items' order.
fn for_each_parallel<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results: Vec<Mutex<Option<R>>> = slots.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { break };
            let item = slot.lock().map_or(None, |mut s| s.take());
            if let Some(item) = item {
                let r = f(item);
                if let Ok(mut out) = results[i].lock() {
                    *out = Some(r);
                }
            }
        }
    };
    // A panic in `f` (a bug) resurfaces here when the scope joins its threads.
    std::thread::scope(|s| {
        for _ in 1..threads.min(slots.len()) {
            s.spawn(work);
        }
        work();
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| unreachable!("every item is taken once and its result stored"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "open_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("close", DataType::Float64, false),
            Field::new("count", DataType::Int64, true),
            Field::new(SOURCE_COLUMN, DataType::Utf8, false),
        ]))
    }

    /// `rows` rows starting at row `from`, with a null every 7th `count`.
    fn batch(from: i64, rows: i64) -> RecordBatch {
        let idx = from..from + rows;
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(idx.clone().map(|i| i * 60_000))
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from_iter_values(
                    idx.clone().map(|i| 40_000.0 + (i % 997) as f64 * 0.01),
                )),
                Arc::new(Int64Array::from_iter(
                    idx.clone().map(|i| (i % 7 != 0).then_some(i * 3)),
                )),
                Arc::new(StringArray::from_iter_values(
                    idx.map(|i| if i < 10_000 { "vision" } else { "rest" }),
                )),
            ],
        )
        .unwrap()
    }

    fn props(max_rows: usize) -> WriterProperties {
        default_properties(&schema())
            .into_builder()
            .set_max_row_group_row_count(Some(max_rows))
            .build()
    }

    fn write(batches: &[RecordBatch], max_rows: usize, threads: usize) -> Vec<u8> {
        let mut w =
            ParquetWriter::with_properties(Vec::new(), schema(), props(max_rows), threads).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn input() -> Vec<RecordBatch> {
        // Batch sizes that straddle the 6,000-row groups, one under the parallel threshold, and
        // an empty one.
        vec![
            batch(0, 5_000),
            batch(5_000, 100),
            batch(5_100, 0),
            batch(5_100, 9_000),
            batch(14_100, 3_900),
        ]
    }

    #[test]
    fn the_file_reads_back_as_written_with_row_groups_at_the_limit() {
        let bytes = write(&input(), 6_000, 4);
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
        let sizes: Vec<i64> = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(sizes, vec![6_000, 6_000, 6_000]);
        // Times and integers are delta-packed, floats plain, `source` a dictionary.
        let group = &builder.metadata().row_groups()[0];
        let encodings = |i: usize| group.column(i).encodings().collect::<Vec<_>>();
        assert!(encodings(0).contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(encodings(2).contains(&Encoding::DELTA_BINARY_PACKED));
        assert_eq!(encodings(1), vec![Encoding::PLAIN, Encoding::RLE]);
        assert!(encodings(3).contains(&Encoding::RLE_DICTIONARY));
        // The Arrow schema (time zone included) comes back from the file's metadata.
        assert_eq!(builder.schema().fields(), schema().fields());
        let read: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
        let read = arrow::compute::concat_batches(&schema(), &read).unwrap();
        let expected = arrow::compute::concat_batches(&schema(), &input()).unwrap();
        assert_eq!(read, expected);
        assert_eq!(read.column(2).null_count(), 18_000 / 7 + 1);
    }

    #[test]
    fn parallel_encoding_writes_the_same_bytes_as_one_thread_and_as_arrow_writer() {
        let parallel = write(&input(), 6_000, 3);
        assert_eq!(parallel, write(&input(), 6_000, 1));
        let mut reference = ArrowWriter::try_new(Vec::new(), schema(), Some(props(6_000))).unwrap();
        for b in &input() {
            reference.write(b).unwrap();
        }
        assert_eq!(parallel, reference.into_inner().unwrap());
    }

    #[test]
    fn a_batch_of_another_schema_is_refused() {
        let mut w = ParquetWriter::try_new(Vec::new(), schema()).unwrap();
        let other = RecordBatch::try_from_iter([(
            "close",
            Arc::new(Float64Array::from(vec![1.0])) as Arc<dyn Array>,
        )])
        .unwrap();
        let err = w.write(&other).unwrap_err().to_string();
        assert!(err.contains("not the file's"), "{err}");
    }

    #[test]
    fn for_each_parallel_keeps_the_order_and_applies_once() {
        let calls = AtomicUsize::new(0);
        let out = for_each_parallel((0..100).collect(), 3, |i: usize| {
            calls.fetch_add(1, Ordering::Relaxed);
            i * 2
        });
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(calls.load(Ordering::Relaxed), 100);
    }
}
