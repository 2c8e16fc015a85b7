//! Parquet encoding of a partition's rows and range-pruned decoding.
//!
//! Files are written sorted on the key time with column-chunk statistics; the manifest records
//! each row group's byte range, CRC-32 and min/max key time, so a range read fetches the footer
//! and only the row groups that overlap, checks their CRCs, and decodes just those. This module
//! never returns bytes whose checksum did not match.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use sha2::Digest;

use super::manifest::{Chunk, DataFile, RowGroup};
use crate::market::DataKind;
use crate::schema::time_column;

/// Compression codec of data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CacheCompression {
    /// zstd level 1: ~20% smaller files than Snappy, but reads measured ~2x slower.
    Zstd1,
    /// Snappy (the default: see BENCHMARKS.md "Cache").
    #[default]
    Snappy,
    /// No compression.
    None,
}

/// How data files are written. The defaults were chosen by measurement (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Codec.
    pub compression: CacheCompression,
    /// Rows per row group, the unit a range read can skip.
    pub row_group_rows: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: CacheCompression::Snappy,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// Default rows per row group (5.7 days of 1m). Measured (BENCHMARKS.md "Cache"): 1,440 rows (a
/// day of 1m) made a full-year read 1.7x slower from per-group overhead; 65,536 made a one-day
/// read 7x slower; 8,192 keeps both fast (a one-day read decodes at most two groups).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 8192;

/// Multiplier from milliseconds to the key column's unit.
pub(crate) fn key_scale(kind: DataKind) -> i64 {
    match crate::schema::time_unit(kind) {
        TimeUnit::Microsecond => 1000,
        _ => 1,
    }
}

/// The key-time values of a batch (ms, or µs for trades), or why they cannot be had.
pub(crate) fn key_times(batch: &RecordBatch, kind: DataKind) -> Result<&[i64], String> {
    let name = time_column(kind);
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("no {name} column"))?;
    timestamps(col).ok_or_else(|| format!("{name} is not a timestamp column"))
}

/// The raw i64 values of a timestamp (or Int64) column.
pub(crate) fn timestamps(col: &ArrayRef) -> Option<&[i64]> {
    use arrow::array::{TimestampMicrosecondArray, TimestampMillisecondArray};
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => col
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .map(|a| a.values().as_ref()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => col
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .map(|a| a.values().as_ref()),
        DataType::Int64 => col
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.values().as_ref()),
        _ => None,
    }
}

fn properties(kind: DataKind, schema: &SchemaRef, opts: WriteOptions) -> WriterProperties {
    let compression = match opts.compression {
        CacheCompression::Zstd1 => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        CacheCompression::Snappy => Compression::SNAPPY,
        CacheCompression::None => Compression::UNCOMPRESSED,
    };
    let time_idx = schema.index_of(time_column(kind)).unwrap_or(0) as i32;
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: time_idx,
            descending: false,
            nulls_first: false,
        }]))
        .set_created_by(format!("dsm {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Encodes `batch` (sorted, output schema) as a Parquet file and describes it for the manifest.
pub(crate) fn encode(
    batch: &RecordBatch,
    kind: DataKind,
    name: String,
    opts: WriteOptions,
) -> Result<(Bytes, DataFile), ParquetError> {
    let schema = batch.schema();
    let props = properties(kind, &schema, opts);
    let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
    w.write(batch)?;
    let buf = Bytes::from(w.into_inner()?);
    let info = describe(&buf, kind, name)?;
    Ok((buf, info))
}

/// Builds the manifest entry of an encoded file: checksums, row-group ranges and statistics.
pub(crate) fn describe(
    buf: &Bytes,
    kind: DataKind,
    name: String,
) -> Result<DataFile, ParquetError> {
    let size = buf.len() as u64;
    let footer = footer_chunk(buf)?;
    let md = ParquetMetaDataReader::new().parse_and_finish(buf)?;
    let schema_descr = md.file_metadata().schema_descr();
    let time_name = time_column(kind);
    let time_idx = (0..schema_descr.num_columns())
        .find(|i| schema_descr.column(*i).name() == time_name)
        .ok_or_else(|| ParquetError::General(format!("no {time_name} column")))?;
    let mut row_groups = Vec::with_capacity(md.num_row_groups());
    for rg in md.row_groups() {
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for c in rg.columns() {
            let (s, l) = c.byte_range();
            lo = lo.min(s);
            hi = hi.max(s + l);
        }
        let (min, max) = match rg.column(time_idx).statistics() {
            Some(Statistics::Int64(s)) => (
                s.min_opt().copied().unwrap_or(i64::MIN),
                s.max_opt().copied().unwrap_or(i64::MAX),
            ),
            _ => (i64::MIN, i64::MAX),
        };
        let bytes = buf.slice(lo as usize..hi as usize);
        row_groups.push(RowGroup {
            chunk: Chunk {
                offset: lo,
                len: hi - lo,
                crc32: crc32fast::hash(&bytes),
            },
            rows: rg.num_rows() as u64,
            min,
            max,
        });
    }
    Ok(DataFile {
        name,
        bytes: size,
        sha256: hex::encode(sha2::Sha256::digest(buf)),
        rows: md.file_metadata().num_rows() as u64,
        footer,
        row_groups,
    })
}

fn footer_chunk(buf: &Bytes) -> Result<Chunk, ParquetError> {
    let n = buf.len();
    if n < 12 || &buf[n - 4..] != b"PAR1" {
        return Err(ParquetError::General("not a Parquet file".into()));
    }
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&buf[n - 8..n - 4]);
    let meta_len = u32::from_le_bytes(len4) as usize;
    let start = n
        .checked_sub(8 + meta_len)
        .ok_or_else(|| ParquetError::General("footer longer than the file".into()))?;
    Ok(Chunk {
        offset: start as u64,
        len: (n - start) as u64,
        crc32: crc32fast::hash(&buf[start..]),
    })
}

/// Byte ranges of a file that are present in memory; serves the Parquet reader after a ranged
/// fetch. Asking for bytes outside them is an error (it would mean the selection was wrong).
#[derive(Debug)]
pub(crate) struct SparseFile {
    len: u64,
    chunks: Vec<(u64, Bytes)>,
}

impl SparseFile {
    pub(crate) fn new(len: u64, mut chunks: Vec<(u64, Bytes)>) -> SparseFile {
        chunks.sort_by_key(|c| c.0);
        SparseFile { len, chunks }
    }

    fn find(&self, start: u64, len: u64) -> Result<Bytes, ParquetError> {
        let i = self.chunks.partition_point(|c| c.0 <= start);
        if i > 0 {
            let (off, b) = &self.chunks[i - 1];
            let rel = (start - off) as usize;
            if rel as u64 + len <= b.len() as u64 {
                return Ok(b.slice(rel..rel + len as usize));
            }
        }
        Err(ParquetError::General(format!(
            "bytes {start}..{} were not fetched",
            start + len
        )))
    }
}

impl Length for SparseFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SparseFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        use bytes::Buf;
        let i = self.chunks.partition_point(|c| c.0 <= start);
        if i > 0 {
            let (off, b) = &self.chunks[i - 1];
            let rel = (start - off) as usize;
            if rel <= b.len() {
                return Ok(b.slice(rel..).reader());
            }
        }
        Err(ParquetError::General(format!(
            "bytes from {start} were not fetched"
        )))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.find(start, length as u64)
    }
}

/// Checks `bytes` against a recorded chunk checksum.
pub(crate) fn check_crc(chunk: &Chunk, bytes: &Bytes) -> Result<(), String> {
    if bytes.len() as u64 != chunk.len {
        return Err(format!(
            "bytes {}..{}: got {} bytes",
            chunk.offset,
            chunk.offset + chunk.len,
            bytes.len()
        ));
    }
    let crc = crc32fast::hash(bytes);
    if crc != chunk.crc32 {
        return Err(format!(
            "bytes {}..{}: CRC-32 {crc:08x}, manifest says {:08x}",
            chunk.offset,
            chunk.offset + chunk.len,
            chunk.crc32
        ));
    }
    Ok(())
}

/// Decodes the selected row groups of a file whose footer and those groups are in `file`, and
/// keeps the rows with key time in `[lo, hi)` (key-column units).
pub(crate) fn decode<R: ChunkReader + 'static>(
    file: R,
    footer: &[u8],
    row_groups: Vec<usize>,
    rows_hint: usize,
    kind: DataKind,
    out_schema: &SchemaRef,
    (lo, hi): (i64, i64),
) -> Result<Vec<RecordBatch>, String> {
    let meta_bytes = footer
        .get(..footer.len().saturating_sub(8))
        .ok_or_else(|| "footer too short".to_string())?;
    let md = ParquetMetaDataReader::decode_metadata(meta_bytes).map_err(|e| e.to_string())?;
    let meta = ArrowReaderMetadata::try_new(Arc::new(md), ArrowReaderOptions::new())
        .map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
        .with_row_groups(row_groups)
        .with_batch_size(rows_hint.max(1))
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut last: Option<i64> = None;
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        let b = RecordBatch::try_new(out_schema.clone(), b.columns().to_vec())
            .map_err(|e| format!("stored columns do not match the output schema: {e}"))?;
        let t = key_times(&b, kind)?;
        // The file claims to be sorted; a violation means the data cannot be trusted.
        if let (Some(prev), Some(first)) = (last, t.first())
            && *first < prev
        {
            return Err("rows are not sorted by time".into());
        }
        if t.windows(2).any(|w| w[1] < w[0]) {
            return Err("rows are not sorted by time".into());
        }
        last = t.last().copied().or(last);
        let a = t.partition_point(|x| *x < lo);
        let z = t.partition_point(|x| *x < hi);
        if z > a {
            out.push(b.slice(a, z - a));
        }
    }
    Ok(out)
}

/// Decodes a whole file held in memory (used to merge and to verify).
pub(crate) fn decode_all(
    buf: Bytes,
    kind: DataKind,
    out_schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, String> {
    let footer = footer_chunk(&buf).map_err(|e| e.to_string())?;
    let footer_bytes = buf.slice(footer.offset as usize..);
    let md = ParquetMetaDataReader::decode_metadata(
        &footer_bytes[..footer_bytes.len().saturating_sub(8)],
    )
    .map_err(|e| e.to_string())?;
    let n = md.num_row_groups();
    let rows = md.file_metadata().num_rows() as usize;
    decode(
        buf,
        &footer_bytes,
        (0..n).collect(),
        rows,
        kind,
        out_schema,
        (i64::MIN, i64::MAX),
    )
}
