//! The per-partition manifest: a small JSON document that says what the partition's data file
//! holds and which time ranges are known to be complete, so coverage questions never open a data
//! file.
//!
//! A manifest is immutable once published; each change publishes a new one with the next
//! `generation`. It must never claim coverage for a range whose rows are not all in `file`.

use serde::{Deserialize, Serialize};

use crate::market::Dataset;
use crate::time::TimeRange;

/// The `format` value every manifest carries.
pub const MANIFEST_FORMAT: &str = "dsm-cache-manifest/1";

/// A half-open `[start, end)` range in milliseconds, as stored in manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Inclusive start (ms since the epoch, UTC).
    pub start: i64,
    /// Exclusive end (ms).
    pub end: i64,
}

impl Span {
    /// The range, or `None` if the span is empty or inverted (a corrupt manifest).
    pub fn range(&self) -> Option<TimeRange> {
        TimeRange::new(self.start, self.end).ok()
    }
}

impl From<TimeRange> for Span {
    fn from(r: TimeRange) -> Span {
        Span {
            start: r.start(),
            end: r.end(),
        }
    }
}

/// Where the rows of a covered range came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Provenance {
    /// A Binance Vision archive file, identified by its name and the SHA-256 of the zip.
    Vision {
        /// File name, e.g. `BTCUSDT-1m-2024-01.zip`.
        file: String,
        /// Hex SHA-256 of the zip (from its `.CHECKSUM`).
        sha256: String,
        /// The zip's `ETag` header when it was downloaded, if served.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag: Option<String>,
        /// The zip's `Last-Modified` header when it was downloaded, if served.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_modified: Option<String>,
    },
    /// The Binance REST API.
    Rest,
}

impl Provenance {
    /// The value of the `source` column for rows with this provenance.
    pub fn source(&self) -> crate::schema::Source {
        match self {
            Provenance::Vision { .. } => crate::schema::Source::Vision,
            Provenance::Rest => crate::schema::Source::Rest,
        }
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provenance::Vision { file, .. } => write!(f, "vision:{file}"),
            Provenance::Rest => f.write_str("rest"),
        }
    }
}

/// One covered (complete) range of a partition and where its rows came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Start (ms, inclusive).
    pub start: i64,
    /// End (ms, exclusive).
    pub end: i64,
    /// Rows with key time in the range.
    pub rows: u64,
    /// Where they came from.
    pub source: Provenance,
    /// When they were written (ms).
    pub written_at: i64,
}

impl Segment {
    /// The covered range, if well-formed.
    pub fn range(&self) -> Option<TimeRange> {
        TimeRange::new(self.start, self.end).ok()
    }
}

/// Byte range and CRC-32 of one part of the data file (a row group or the footer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub crc32: u32,
}

/// One row group of the data file, with the key-time statistics that select it for a range read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowGroup {
    /// Where its column chunks lie and their checksum.
    #[serde(flatten)]
    pub chunk: Chunk,
    /// Rows in the group.
    pub rows: u64,
    /// Smallest key time (in the key column's unit: ms, or µs for trades).
    pub min: i64,
    /// Largest key time.
    pub max: i64,
}

/// The partition's one data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// File name inside the partition directory (`part-<generation>-<random>.parquet`).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file, checked by `verify` and by reads of the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
    /// Hex SHA-256 of the whole file: what manifests written before `crc32` carry instead
    /// (still checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Total rows.
    pub rows: u64,
    /// The Parquet footer (file metadata) and its checksum.
    pub footer: Chunk,
    /// Row groups in file order.
    pub row_groups: Vec<RowGroup>,
}

/// A partition's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Increases by one with each publish.
    pub generation: u64,
    /// The dataset.
    pub dataset: Dataset,
    /// The partition's span.
    pub partition: Span,
    /// The data file, absent when the covered ranges hold no rows.
    pub file: Option<DataFile>,
    /// Covered (complete) ranges, sorted, not overlapping.
    pub covered: Vec<Segment>,
    /// Ranges inside `covered` verified to have no data (exchange downtime), sorted.
    pub no_data: Vec<Span>,
    /// When this generation was published (ms).
    pub updated_at: i64,
    /// Archive files of this partition found short: they verified against their `.CHECKSUM` but
    /// lacked rows the REST API had (those rows came from REST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_files: Vec<String>,
    /// CRC-32 of the manifest itself: of its compact JSON without this field. Set by
    /// [`Manifest::to_bytes`] and checked by [`Manifest::parse`], so a flipped bit anywhere in
    /// the document (a row count, a row group's min/max) rejects it instead of silently
    /// selecting no rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_crc32: Option<u32>,
}

impl Manifest {
    /// An empty manifest (generation 0, nothing covered) for a partition.
    pub fn empty(dataset: Dataset, partition: TimeRange) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            generation: 0,
            dataset,
            partition: partition.into(),
            file: None,
            covered: Vec::new(),
            no_data: Vec::new(),
            updated_at: 0,
            short_files: Vec::new(),
            manifest_crc32: None,
        }
    }

    /// The CRC-32 of this manifest's compact JSON without its own checksum.
    fn own_crc32(&self) -> u32 {
        let unsealed = Manifest {
            manifest_crc32: None,
            ..self.clone()
        };
        // Serialising plain data to a Vec cannot fail.
        crc32fast::hash(&serde_json::to_vec(&unsealed).unwrap_or_default())
    }

    /// Parses and checks a manifest: format, well-formed sorted ranges inside the partition,
    /// row counts that add up.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!("unknown format {:?}", m.format));
        }
        match m.manifest_crc32 {
            None => return Err("it carries no checksum of its own".into()),
            Some(stored) if stored != m.own_crc32() => {
                return Err(format!(
                    "its checksum does not match its content (stored {stored:08x}, computed {:08x})",
                    m.own_crc32()
                ));
            }
            Some(_) => {}
        }
        let part = m
            .partition
            .range()
            .ok_or_else(|| "empty partition span".to_string())?;
        let mut prev_end = i64::MIN;
        for s in &m.covered {
            let r = s
                .range()
                .ok_or_else(|| format!("empty covered range {}..{}", s.start, s.end))?;
            if !part.covers(&r) || r.start() < prev_end {
                return Err(format!(
                    "covered range {r} is outside the partition or out of order"
                ));
            }
            prev_end = r.end();
        }
        let merged = TimeRange::merge_all(m.covered_ranges());
        for g in &m.no_data {
            let r = g.range().ok_or_else(|| "empty no-data range".to_string())?;
            if !merged.iter().any(|c| c.covers(&r)) {
                return Err(format!("no-data range {r} is not inside a covered range"));
            }
        }
        let seg_rows: u64 = m.covered.iter().map(|s| s.rows).sum();
        let file_rows = m.file.as_ref().map_or(0, |f| f.rows);
        if seg_rows != file_rows {
            return Err(format!(
                "covered ranges count {seg_rows} rows but the data file has {file_rows}"
            ));
        }
        if let Some(f) = &m.file {
            let rg_rows: u64 = f.row_groups.iter().map(|g| g.rows).sum();
            if rg_rows != f.rows || !is_safe_file_name(&f.name) {
                return Err(format!(
                    "data file entry {:?} is inconsistent (row groups hold {rg_rows} rows, file {})",
                    f.name, f.rows
                ));
            }
        }
        Ok(m)
    }

    /// The covered ranges.
    pub fn covered_ranges(&self) -> Vec<TimeRange> {
        self.covered.iter().filter_map(Segment::range).collect()
    }

    /// The known no-data ranges.
    pub fn no_data_ranges(&self) -> Vec<TimeRange> {
        self.no_data.iter().filter_map(Span::range).collect()
    }

    /// The partition span.
    pub fn partition_range(&self) -> Option<TimeRange> {
        self.partition.range()
    }

    /// JSON bytes (pretty, so a person can read it), sealed with [`Manifest::manifest_crc32`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let sealed = Manifest {
            manifest_crc32: Some(self.own_crc32()),
            ..self.clone()
        };
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec_pretty(&sealed).unwrap_or_default()
    }
}

/// Whether `name` is a plain data-file name (no path separators, no traversal).
pub fn is_safe_file_name(name: &str) -> bool {
    name.starts_with("part-")
        && name.ends_with(".parquet")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !name.contains("..")
}

/// Replaces what `segments` say about `range` by `new` (if any): old segments are trimmed around
/// `range`, keeping their provenance. Row counts are left for the caller to recompute.
pub fn splice_segments(old: &[Segment], range: TimeRange, new: Segment) -> Vec<Segment> {
    let mut out = Vec::with_capacity(old.len() + 2);
    for s in old {
        let Some(r) = s.range() else { continue };
        for piece in r.subtract(&[range]) {
            out.push(Segment {
                start: piece.start(),
                end: piece.end(),
                ..s.clone()
            });
        }
    }
    out.push(new);
    out.sort_by_key(|s| s.start);
    // Merge touching segments of the same source so manifests stay small.
    let mut merged: Vec<Segment> = Vec::with_capacity(out.len());
    for s in out {
        match merged.last_mut() {
            Some(last) if last.end == s.start && last.source == s.source => {
                last.end = s.end;
                last.written_at = last.written_at.max(s.written_at);
            }
            _ => merged.push(s),
        }
    }
    merged
}

/// Replaces the no-data ranges inside `range` by `new`.
pub fn splice_spans(old: &[Span], range: TimeRange, new: &[TimeRange]) -> Vec<Span> {
    let mut out: Vec<TimeRange> = old
        .iter()
        .filter_map(Span::range)
        .flat_map(|r| r.subtract(&[range]))
        .collect();
    out.extend(new.iter().filter_map(|r| r.intersect(&range)));
    TimeRange::merge_all(out)
        .into_iter()
        .map(Span::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: i64, end: i64, source: Provenance) -> Segment {
        Segment {
            start,
            end,
            rows: 0,
            source,
            written_at: 0,
        }
    }

    fn r(a: i64, b: i64) -> TimeRange {
        TimeRange::new(a, b).expect("range")
    }

    #[test]
    fn splicing_trims_old_segments_and_keeps_their_source() {
        let v = Provenance::Vision {
            file: "a.zip".into(),
            sha256: "00".into(),
            etag: None,
            last_modified: None,
        };
        let old = vec![seg(0, 100, v.clone())];
        let out = splice_segments(&old, r(40, 60), seg(40, 60, Provenance::Rest));
        assert_eq!(
            out,
            vec![
                seg(0, 40, v.clone()),
                seg(40, 60, Provenance::Rest),
                seg(60, 100, v)
            ]
        );
        let out = splice_segments(&out, r(30, 70), seg(30, 70, Provenance::Rest));
        assert_eq!(out.len(), 3);
        let out = splice_segments(
            &[seg(0, 10, Provenance::Rest)],
            r(10, 20),
            seg(10, 20, Provenance::Rest),
        );
        assert_eq!(out, vec![seg(0, 20, Provenance::Rest)]);
    }

    #[test]
    fn no_data_spans_are_replaced_inside_the_range() {
        let old = vec![Span { start: 0, end: 10 }, Span { start: 50, end: 60 }];
        let out = splice_spans(&old, r(5, 55), &[r(20, 30)]);
        assert_eq!(
            out,
            vec![
                Span { start: 0, end: 5 },
                Span { start: 20, end: 30 },
                Span { start: 55, end: 60 }
            ]
        );
    }
}
