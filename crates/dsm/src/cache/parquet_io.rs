//! Parquet encoding of a partition's rows and range-pruned decoding.
//!
//! Files are written sorted on the key time with column-chunk statistics; the manifest records
//! each row group's byte range, CRC-32 and min/max key time, so a range read fetches the footer
//! and only the row groups that overlap, checks their CRCs, and decodes just those. This module
//! never returns bytes whose checksum did not match.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, DictionaryArray, Int8Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int8Type, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

use super::manifest::{Chunk, DataFile, RowGroup};
use crate::market::DataKind;
use crate::schema::{SOURCE_COLUMN, Source, source_column, time_column, times};

/// Compression codec of data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CacheCompression {
    /// zstd level 1: the smallest files, but reads measured ~3.5x slower than `None`.
    Zstd1,
    /// Snappy: about the size of `None` with [`CacheEncoding::DeltaIntegers`] and reads ~1.5x
    /// slower (BENCHMARKS.md "Cache").
    Snappy,
    /// No compression: the default. With [`CacheEncoding::DeltaIntegers`] the times, ids and
    /// counts pack to a few bits, which saves about what Snappy saves on the prices (~40% of
    /// them); the volumes Snappy cannot shrink at all.
    #[default]
    None,
}

/// How the columns of data files are encoded. Any of them reads back the same (it is all plain
/// Parquet); they differ in size and decoding speed (BENCHMARKS.md "Cache").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CacheEncoding {
    /// PLAIN for every column but `source` (dictionary-encoded: one distinct value per file or
    /// few): prices, volumes and times are nearly all distinct, so a dictionary only costs (it is
    /// built, overflows and falls back to PLAIN part-way through the file).
    Plain,
    /// The Parquet writer's defaults: dictionary encoding for every column, falling back to PLAIN
    /// when the dictionary grows too large (what dsm wrote first).
    Dictionary,
    /// Like `Plain`, with DELTA_BINARY_PACKED for the 64-bit integer and timestamp columns. The
    /// default: open and close times step by the interval and trade ids by one, so they pack to
    /// almost nothing and decode faster than a codec's pass over them.
    #[default]
    DeltaIntegers,
}

/// How data files are written. The defaults were chosen by measurement (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Codec.
    pub compression: CacheCompression,
    /// Rows per row group, the unit a range read can skip.
    pub row_group_rows: usize,
    /// Column encodings.
    pub encoding: CacheEncoding,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: CacheCompression::default(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            encoding: CacheEncoding::default(),
        }
    }
}

/// Default rows per row group (5.7 days of 1m). Measured (BENCHMARKS.md "Cache"): 1,440 rows (a
/// day of 1m) made a full-year read 1.7x slower from per-group overhead; 65,536 made a one-day
/// read 7x slower; 8,192 keeps both fast (a one-day read decodes at most two groups).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 8192;

/// Candle volume columns, stored uncompressed whatever the codec: their values are all distinct
/// and full of random low digits, so Snappy shrinks them by 0% (real BTCUSDT 1m of 2020) to 9%
/// (emulated 1s) and would only add a decompression pass to every read (BENCHMARKS.md "Cache").
const INCOMPRESSIBLE_COLUMNS: &[&str] = &[
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
];

fn properties(kind: DataKind, schema: &SchemaRef, opts: WriteOptions) -> WriterProperties {
    let compression = match opts.compression {
        CacheCompression::Zstd1 => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        CacheCompression::Snappy => Compression::SNAPPY,
        CacheCompression::None => Compression::UNCOMPRESSED,
    };
    let time_idx = schema.index_of(time_column(kind)).unwrap_or(0) as i32;
    let mut b = WriterProperties::builder();
    match opts.encoding {
        CacheEncoding::Dictionary => {}
        CacheEncoding::Plain | CacheEncoding::DeltaIntegers => {
            b = b
                .set_dictionary_enabled(false)
                .set_column_dictionary_enabled(
                    ColumnPath::from(crate::schema::SOURCE_COLUMN),
                    true,
                );
            if opts.encoding == CacheEncoding::DeltaIntegers {
                for f in schema.fields() {
                    if matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..)) {
                        b = b.set_column_encoding(
                            ColumnPath::from(f.name().as_str()),
                            Encoding::DELTA_BINARY_PACKED,
                        );
                    }
                }
            }
        }
    }
    b = b.set_compression(compression);
    if compression != Compression::UNCOMPRESSED {
        for name in INCOMPRESSIBLE_COLUMNS {
            if schema.column_with_name(name).is_some() {
                b = b.set_column_compression(ColumnPath::from(*name), Compression::UNCOMPRESSED);
            }
        }
    }
    b.set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // The min and max of `source` prune nothing and cost a string comparison per row.
        .set_column_statistics_enabled(ColumnPath::from(SOURCE_COLUMN), EnabledStatistics::None)
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
    // The file is at most about the size of the arrays: reserving that up front saves growing
    // (and copying) the buffer a dozen times, and the page faults of each new copy.
    let out = Vec::with_capacity(batch.get_array_memory_size() + (64 << 10));
    let mut w = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
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
    let mut pieces: Vec<Chunk> = row_groups.iter().map(|g| g.chunk).collect();
    pieces.push(footer);
    Ok(DataFile {
        name,
        bytes: size,
        crc32: Some(whole_crc(buf, &pieces)),
        sha256: None,
        rows: md.file_metadata().num_rows() as u64,
        footer,
        row_groups,
    })
}

/// The CRC-32 of `buf`, from the CRC-32s of its `pieces` (in order, not overlapping) and of
/// the bytes between them, so the file is not read a second time.
fn whole_crc(buf: &[u8], pieces: &[Chunk]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut pos = 0usize;
    for c in pieces {
        let (Ok(start), Ok(len)) = (usize::try_from(c.offset), usize::try_from(c.len)) else {
            return crc32fast::hash(buf);
        };
        let Some(gap) = buf.get(pos..start) else {
            return crc32fast::hash(buf);
        };
        h.update(gap);
        h.combine(&crc32fast::Hasher::new_with_initial_len(c.crc32, c.len));
        pos = start.saturating_add(len);
    }
    match buf.get(pos..) {
        Some(rest) => {
            h.update(rest);
            h.finalize()
        }
        None => crc32fast::hash(buf),
    }
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
#[derive(Debug, Clone)]
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
pub(crate) fn decode<R: ChunkReader + Clone + 'static>(
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
    let batches = read_columns(file, &meta, row_groups, rows_hint, out_schema)?;
    let mut out = Vec::new();
    let mut last: Option<i64> = None;
    for b in batches {
        let t = times(&b, kind)?;
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

/// Decodes `row_groups` of `file` into batches of the output schema.
///
/// The `source` column (dictionary-encoded, a dictionary per row group) is decoded one row group
/// at a time and its keys remapped to the shared [`crate::schema::source_values`]: decoding it across row groups in
/// one batch makes the Parquet reader materialise and re-hash every string (measured ~11% of a
/// year's read). Every other column is decoded in one batch per call.
fn read_columns<R: ChunkReader + Clone + 'static>(
    file: R,
    meta: &ArrowReaderMetadata,
    row_groups: Vec<usize>,
    rows_hint: usize,
    out_schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, String> {
    let err = |e: ParquetError| e.to_string();
    let sd = meta.metadata().file_metadata().schema_descr_ptr();
    let src_leaf = (0..sd.num_columns()).find(|i| sd.column(*i).name() == SOURCE_COLUMN);
    let src_out = out_schema.index_of(SOURCE_COLUMN).ok();
    let to_out = |b: RecordBatch| {
        RecordBatch::try_new(out_schema.clone(), b.columns().to_vec())
            .map_err(|e| format!("stored columns do not match the output schema: {e}"))
    };
    let (Some(src_leaf), Some(src_out)) = (src_leaf, src_out) else {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
            .with_row_groups(row_groups)
            .with_batch_size(rows_hint.max(1))
            .build()
            .map_err(err)?;
        return reader
            .map(|b| to_out(b.map_err(|e| e.to_string())?))
            .collect();
    };
    // The `source` column, row group by row group, remapped to the shared dictionary.
    let mut keys: Vec<i8> = Vec::with_capacity(rows_hint);
    let rg_meta = meta.metadata().row_groups();
    for &g in &row_groups {
        let rows = rg_meta.get(g).map_or(0, |m| m.num_rows()) as usize;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), meta.clone())
            .with_row_groups(vec![g])
            .with_projection(ProjectionMask::leaves(&sd, [src_leaf]))
            .with_batch_size(rows.max(1))
            .build()
            .map_err(err)?;
        for b in reader {
            let b = b.map_err(|e| e.to_string())?;
            let col = b.column(0);
            let dict = col
                .as_any()
                .downcast_ref::<DictionaryArray<Int8Type>>()
                .ok_or_else(|| format!("stored source column is {}", col.data_type()))?;
            let local = dict
                .values()
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| "stored source values are not strings".to_string())?;
            if dict.null_count() > 0 {
                return Err("stored source column has nulls".into());
            }
            let map = local
                .iter()
                .map(|v| {
                    let v = v.unwrap_or_default();
                    Source::from_name(v)
                        .map(Source::key)
                        .ok_or_else(|| format!("unknown source {v:?}"))
                })
                .collect::<Result<Vec<i8>, String>>()?;
            for k in dict.keys().values().iter() {
                let m = usize::try_from(*k)
                    .ok()
                    .and_then(|k| map.get(k))
                    .ok_or_else(|| format!("source key {k} out of range"))?;
                keys.push(*m);
            }
        }
    }
    let source: ArrayRef = source_column(Int8Array::from(keys)).map_err(|e| e.to_string())?;
    // Every other column in one pass.
    let others: Vec<usize> = (0..sd.num_columns()).filter(|i| *i != src_leaf).collect();
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
        .with_row_groups(row_groups)
        .with_projection(ProjectionMask::leaves(&sd, others))
        .with_batch_size(rows_hint.max(1))
        .build()
        .map_err(err)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        let n = b.num_rows();
        if at + n > source.len() {
            return Err("the source column has fewer rows than the others".into());
        }
        let mut cols = b.columns().to_vec();
        cols.insert(src_out.min(cols.len()), source.slice(at, n));
        at += n;
        out.push(
            RecordBatch::try_new(out_schema.clone(), cols)
                .map_err(|e| format!("stored columns do not match the output schema: {e}"))?,
        );
    }
    if at != source.len() {
        return Err("the source column has more rows than the others".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{Interval, Market};
    use crate::schema::{KlineBuilder, KlineRecord, Source, output_schema, with_source};
    use arrow::array::AsArray;

    const T0: i64 = 1_704_067_200_000; // 2024-01-01
    const M: i64 = 60_000;

    fn candles(from: i64, n: i64, source: Source) -> RecordBatch {
        let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::M1, n as usize);
        for i in from..from + n {
            let p = 100.0 + i as f64 * 0.01;
            b.push(&KlineRecord {
                open_time: T0 + i * M,
                open: p,
                high: p + 1.0,
                low: p - 1.0,
                close: p + 0.5,
                volume: i as f64,
                close_time: T0 + i * M + M - 1,
                quote_volume: 2.0 * i as f64,
                count: i,
                taker_buy_volume: 0.5,
                taker_buy_quote_volume: 0.25,
            })
            .expect("valid candle");
        }
        with_source(&b.finish(), Market::Spot, DataKind::Klines, source)
    }

    fn sources(b: &RecordBatch) -> Vec<String> {
        let col = b.column_by_name(SOURCE_COLUMN).expect("source column");
        let col = arrow::compute::cast(col, &DataType::Utf8).expect("cast");
        col.as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned())
            .collect()
    }

    /// Every encoding (the old writer's dictionary default included) reads back the same rows,
    /// with sources that change between and inside row groups.
    #[test]
    fn every_encoding_reads_back_the_same_rows() {
        let schema = output_schema(Market::Spot, DataKind::Klines);
        // 25 Vision rows then 15 REST rows, in row groups of 10: group 2 holds both.
        let input = arrow::compute::concat_batches(
            &schema,
            &[
                candles(0, 25, Source::Vision),
                candles(25, 15, Source::Rest),
            ],
        )
        .expect("concat");
        let want_sources: Vec<String> = (0..40)
            .map(|i| if i < 25 { "vision" } else { "rest" }.to_owned())
            .collect();
        for encoding in [
            CacheEncoding::Plain,
            CacheEncoding::Dictionary,
            CacheEncoding::DeltaIntegers,
        ] {
            for compression in [CacheCompression::Snappy, CacheCompression::None] {
                let opts = WriteOptions {
                    compression,
                    row_group_rows: 10,
                    encoding,
                };
                let (buf, info) =
                    encode(&input, DataKind::Klines, "x.parquet".into(), opts).expect("encode");
                assert_eq!(info.row_groups.len(), 4);
                // The file's CRC-32, put together from its pieces', is the whole file's.
                assert_eq!(info.crc32, Some(crc32fast::hash(&buf)));
                assert_eq!(info.bytes, buf.len() as u64);
                // The plain `parquet` reader opens the file.
                let plain = ParquetRecordBatchReaderBuilder::try_new(buf.clone())
                    .expect("plain reader")
                    .build()
                    .expect("reader");
                assert_eq!(
                    plain.map(|b| b.expect("batch").num_rows()).sum::<usize>(),
                    40
                );
                // Volumes are stored uncompressed whatever the codec; prices use the codec.
                let meta = ParquetRecordBatchReaderBuilder::try_new(buf.clone())
                    .expect("plain reader")
                    .metadata()
                    .clone();
                let codec = |name: &str| {
                    let group = meta.row_group(0);
                    let i = (0..group.num_columns())
                        .find(|i| group.column(*i).column_path().string() == name)
                        .expect("column");
                    group.column(i).compression()
                };
                let want = if compression == CacheCompression::Snappy {
                    Compression::SNAPPY
                } else {
                    Compression::UNCOMPRESSED
                };
                assert_eq!(codec("close"), want);
                assert_eq!(codec("open_time"), want);
                for name in INCOMPRESSIBLE_COLUMNS {
                    assert_eq!(codec(name), Compression::UNCOMPRESSED, "{name}");
                }
                let got = decode_all(buf.clone(), DataKind::Klines, &schema).expect("decode");
                let got = arrow::compute::concat_batches(&schema, &got).expect("concat");
                assert_eq!(got.num_rows(), 40, "{encoding:?} {compression:?}");
                for (name, col) in schema.fields().iter().zip(got.columns()) {
                    if name.name() != SOURCE_COLUMN {
                        let want = input.column_by_name(name.name()).expect("column");
                        assert_eq!(col.as_ref(), want.as_ref(), "{}", name.name());
                    }
                }
                assert_eq!(sources(&got), want_sources, "{encoding:?} {compression:?}");
                // A range read of groups 1..=2 trimmed to rows 12..28.
                let footer = footer_chunk(&buf).expect("footer");
                let part = decode(
                    buf.clone(),
                    &buf[footer.offset as usize..],
                    vec![1, 2],
                    20,
                    DataKind::Klines,
                    &schema,
                    (T0 + 12 * M, T0 + 28 * M),
                )
                .expect("decode range");
                let part = arrow::compute::concat_batches(&schema, &part).expect("concat");
                let opens = times(&part, DataKind::Klines).expect("times");
                assert_eq!(opens, (12..28).map(|i| T0 + i * M).collect::<Vec<_>>());
                assert_eq!(sources(&part), want_sources[12..28]);
            }
        }
    }

    /// The default stores numbers PLAIN (no dictionary) and `source` with a dictionary.
    #[test]
    fn the_default_encoding_is_plain_except_source() {
        let input = candles(0, 50, Source::Vision);
        let (buf, _) = encode(
            &input,
            DataKind::Klines,
            "x".into(),
            WriteOptions::default(),
        )
        .expect("encode");
        let md = ParquetMetaDataReader::new()
            .parse_and_finish(&buf)
            .expect("metadata");
        for c in md.row_group(0).columns() {
            let dict = c.dictionary_page_offset().is_some();
            assert_eq!(
                dict,
                c.column_path().string() == SOURCE_COLUMN,
                "{}",
                c.column_path()
            );
        }
    }
}
