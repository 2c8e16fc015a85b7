//! Reading: coverage from the manifests, and the rows of the covered ranges, every byte checked
//! against its manifest (a corrupt file is quarantined when the read repairs).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use sha2::Digest;

use crate::market::DataKind;
use crate::schema::{output_schema, time_scale, times};
use crate::time::{TimeRange, format_ms};

use super::layout::Partition;
use super::manifest::{DataFile, Manifest};
use super::parquet_io::check_crc;
use super::write::check_order;
use super::*;
use crate::market::Dataset;

impl CacheStore {
    pub(super) async fn load_manifest(
        &self,
        key: &Dataset,
        part: &Partition,
    ) -> Result<Option<(String, Manifest)>, CacheError> {
        Ok(self
            .load_manifest_versioned(key, part)
            .await?
            .map(|(path, m, _)| (path, m)))
    }

    /// The partition's manifest, checked against `key` and `part`, with the version a
    /// conditional publish must find to replace it.
    pub(super) async fn load_manifest_versioned(
        &self,
        key: &Dataset,
        part: &Partition,
    ) -> Result<Option<(String, Manifest, Option<object_store::UpdateVersion>)>, CacheError> {
        let Some(loaded) = self.blobs.load_manifest(part.dir.clone()).await? else {
            return Ok(None);
        };
        let path = loaded.path;
        let corrupt = |reason: String| CacheError::CorruptManifest {
            path: path.clone(),
            reason,
        };
        let m = Manifest::parse(&loaded.bytes).map_err(corrupt)?;
        if &m.dataset != key {
            return Err(corrupt(format!("it describes {}, not {key}", m.dataset)));
        }
        if m.partition_range() != Some(part.range) {
            return Err(corrupt(format!("its partition span is not {}", part.range)));
        }
        Ok(Some((path, m, loaded.version)))
    }

    /// Which parts of `range` are cached (complete), which of those are known exchange gaps, and
    /// what is missing. Reads manifests only. A corrupt manifest counts as missing (and is logged).
    pub async fn coverage(&self, key: &Dataset, range: TimeRange) -> Result<Coverage, CacheError> {
        Ok(self.snapshots(key, range, Mode::Coverage).await?.0)
    }

    /// [`CacheStore::coverage`] and the covered rows ([`CacheStore::read`]) in one pass. Each
    /// partition's manifest is read once and its rows are read with that same manifest, so a
    /// writer or a `prune` in between cannot leave a range reported as covered without its rows.
    /// Data files of partitions that cover nothing of `range` are not opened; a corrupt manifest
    /// counts as missing (and is logged), as for `coverage`.
    pub async fn read_covered(
        &self,
        key: &Dataset,
        range: TimeRange,
    ) -> Result<(Coverage, Vec<RecordBatch>), CacheError> {
        self.snapshots(key, range, Mode::Covered).await
    }

    /// [`CacheStore::read_covered`] that repairs instead of failing: a manifest or data file that
    /// fails its checksums is moved to `_quarantine/` (a data file with its manifest, as
    /// [`CacheStore::verify`] does), listed in [`Coverage::quarantined`], and its partition counts
    /// as missing.
    pub async fn read_covered_repairing(
        &self,
        key: &Dataset,
        range: TimeRange,
    ) -> Result<(Coverage, Vec<RecordBatch>), CacheError> {
        self.snapshots(key, range, Mode::Repair).await
    }

    /// Every partition of `range` in `mode`, concurrently, put together.
    async fn snapshots(
        &self,
        key: &Dataset,
        range: TimeRange,
        mode: Mode,
    ) -> Result<(Coverage, Vec<RecordBatch>), CacheError> {
        key.check()?;
        let parts = key.partitions(range);
        let snaps = parts.iter().map(|p| self.snapshot(key, p, range, mode));
        let mut covered = Vec::new();
        let mut gaps = Vec::new();
        let mut rows = Vec::new();
        let mut quarantined = Vec::new();
        for s in futures::future::try_join_all(snaps).await? {
            covered.extend(s.covered);
            gaps.extend(s.gaps);
            rows.extend(s.rows);
            quarantined.extend(s.quarantined);
        }
        let covered = TimeRange::merge_all(covered);
        let coverage = Coverage {
            missing: range.subtract(&covered),
            gaps: TimeRange::merge_all(gaps),
            covered,
            quarantined,
        };
        Ok((coverage, rows))
    }

    /// Reads and fully checks a data file (size, whole-file checksum, decode, row count).
    pub(super) async fn read_whole(
        &self,
        path: &str,
        f: &DataFile,
        kind: DataKind,
        out_schema: &SchemaRef,
    ) -> Result<RecordBatch, CacheError> {
        let corrupt = |reason: String| CacheError::CorruptData {
            path: path.to_owned(),
            reason,
        };
        let Some(buf) = self.blobs.get(path.to_owned()).await? else {
            return Err(corrupt("the data file is missing".into()));
        };
        let (out_schema, f2) = (out_schema.clone(), f.clone());
        let res = tokio::task::spawn_blocking(move || -> Result<RecordBatch, String> {
            if buf.len() as u64 != f2.bytes {
                return Err(format!("{} bytes, manifest says {}", buf.len(), f2.bytes));
            }
            check_whole_file(&buf, &f2)?;
            let batches = parquet_io::decode_all(buf, kind, &out_schema)?;
            let b =
                arrow::compute::concat_batches(&out_schema, &batches).map_err(|e| e.to_string())?;
            if b.num_rows() as u64 != f2.rows {
                return Err(format!("{} rows, manifest says {}", b.num_rows(), f2.rows));
            }
            Ok(b)
        })
        .await
        .map_err(|e| corrupt(format!("decoding task failed: {e}")))?;
        res.map_err(corrupt)
    }

    /// The rows with time in `[start, end)`, in the output schema ([`output_schema`]), sorted.
    ///
    /// Only the partitions and row groups that overlap the range are fetched, each checked
    /// against its manifest checksum; partitions are read concurrently. Returns what is cached:
    /// ask [`CacheStore::coverage`] first to know whether that is complete. Bytes that fail their
    /// checksum are a [`CacheError::CorruptData`], never data.
    pub async fn read(
        &self,
        key: &Dataset,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>, CacheError> {
        Ok(self.snapshots(key, range, Mode::Rows).await?.1)
    }

    /// What one generation of a partition's manifest says of `range` (coverage and known gaps)
    /// and, as `mode` asks, the rows of its data file in `range`, read with that same manifest.
    async fn snapshot(
        &self,
        key: &Dataset,
        part: &Partition,
        range: TimeRange,
        mode: Mode,
    ) -> Result<Snapshot, CacheError> {
        let Some(window) = range.intersect(&part.range) else {
            return Ok(Snapshot::default());
        };
        let mut last_generation = None;
        for _ in 0..MAX_READ_ATTEMPTS {
            let (mpath, m) = match self.load_manifest(key, part).await {
                Ok(Some(found)) => found,
                Ok(None) => return Ok(Snapshot::default()),
                Err(CacheError::CorruptManifest { path, reason }) if mode == Mode::Repair => {
                    return self
                        .quarantine_manifest(part, Problem { path, reason })
                        .await;
                }
                Err(e @ CacheError::CorruptManifest { .. }) if mode != Mode::Rows => {
                    tracing::warn!(error = %e, "treating a corrupt cache partition as missing");
                    return Ok(Snapshot::default());
                }
                Err(e) => return Err(e),
            };
            let within = |rs: Vec<TimeRange>| -> Vec<TimeRange> {
                rs.iter().filter_map(|r| r.intersect(&range)).collect()
            };
            let covered = within(m.covered_ranges());
            let gaps = within(m.no_data_ranges());
            let wanted = match mode {
                Mode::Coverage => false,
                Mode::Covered | Mode::Repair => !covered.is_empty(),
                Mode::Rows => true,
            };
            let rows = match m.file {
                Some(f) if wanted => {
                    let name = f.name.clone();
                    let read = match self.read_rows(key, part, f, window).await {
                        Err(CacheError::CorruptData { path, reason }) if mode == Mode::Repair => {
                            return self
                                .quarantine_bad(part, m.generation, mpath, Problem { path, reason })
                                .await;
                        }
                        read => read?,
                    };
                    match read {
                        Some(rows) => rows,
                        None => {
                            // A writer replaced the file after we read the manifest: read the
                            // new manifest (and take its coverage with it).
                            if last_generation == Some(m.generation) {
                                return Err(CacheError::CorruptData {
                                    path: format!("{}/{name}", part.dir),
                                    reason: "the data file is missing".into(),
                                });
                            }
                            last_generation = Some(m.generation);
                            continue;
                        }
                    }
                }
                _ => Vec::new(),
            };
            return Ok(Snapshot {
                covered,
                gaps,
                rows,
                quarantined: Vec::new(),
            });
        }
        Err(CacheError::Conflict {
            path: part.dir.clone(),
            attempts: MAX_READ_ATTEMPTS,
        })
    }

    /// The rows of data file `f` (as its manifest describes it) with time in `window`. `None`:
    /// the file is gone (replaced by a writer since the manifest was read).
    async fn read_rows(
        &self,
        key: &Dataset,
        part: &Partition,
        f: DataFile,
        window: TimeRange,
    ) -> Result<Option<Vec<RecordBatch>>, CacheError> {
        let scale = time_scale(key.kind);
        let (lo, hi) = (window.start() * scale, window.end() * scale);
        let path = format!("{}/{}", part.dir, f.name);
        let corrupt = |reason: String| CacheError::CorruptData {
            path: path.clone(),
            reason,
        };
        let sel: Vec<usize> = f
            .row_groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.max >= lo && g.min < hi)
            .map(|(i, _)| i)
            .collect();
        if sel.is_empty() {
            return Ok(Some(Vec::new()));
        }
        // One ranged fetch: contiguous row groups coalesced, plus the footer.
        let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
        for i in &sel {
            let c = f.row_groups[*i].chunk;
            match ranges.last_mut() {
                Some(r) if r.end == c.offset => r.end = c.offset + c.len,
                _ => ranges.push(c.offset..c.offset + c.len),
            }
        }
        ranges.push(f.footer.offset..f.footer.offset + f.footer.len);
        let fetched = match self.blobs.get_ranges(path.clone(), ranges.clone()).await {
            Ok(v) => v,
            Err(CacheError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                return Err(corrupt("the file is shorter than its manifest says".into()));
            }
            Err(CacheError::ObjectStore { source, .. })
                if matches!(*source, object_store::Error::Generic { .. }) =>
            {
                return Err(corrupt(format!("ranged read failed: {source}")));
            }
            Err(e) => return Err(e),
        };
        let Some(mut fetched) = fetched else {
            return Ok(None);
        };
        if fetched.len() != ranges.len() {
            return Err(corrupt("short ranged read".into()));
        }
        let footer = fetched.pop().unwrap_or_default();
        let (kind, out_schema) = (key.kind, output_schema(key.market, key.kind));
        // Checksums and decoding run on a blocking thread, one per partition, so a year's
        // partitions spread over the cores and the async workers stay free.
        let decoded = tokio::task::spawn_blocking(move || -> Result<_, String> {
            check_crc(&f.footer, &footer).map_err(|r| format!("footer: {r}"))?;
            let mut chunks = Vec::with_capacity(fetched.len());
            let mut rows_hint = 0usize;
            for (r, bytes) in ranges.iter().zip(fetched) {
                for i in &sel {
                    let g = &f.row_groups[*i];
                    if g.chunk.offset >= r.start && g.chunk.offset + g.chunk.len <= r.end {
                        let s = (g.chunk.offset - r.start) as usize;
                        let piece = bytes
                            .get(s..s + g.chunk.len as usize)
                            .map(|b| bytes.slice_ref(b))
                            .unwrap_or_default();
                        check_crc(&g.chunk, &piece).map_err(|r| format!("row group {i}: {r}"))?;
                        rows_hint += g.rows as usize;
                    }
                }
                chunks.push((r.start, bytes));
            }
            let sparse = parquet_io::SparseFile::new(f.bytes, chunks);
            parquet_io::decode(sparse, &footer, sel, rows_hint, kind, &out_schema, (lo, hi))
        })
        .await
        .map_err(|e| corrupt(format!("decoding task failed: {e}")))?;
        decoded.map(Some).map_err(corrupt)
    }
}

/// Checks a whole data file against its manifest's checksum: CRC-32 in manifests written now,
/// SHA-256 in older ones.
fn check_whole_file(buf: &[u8], f: &DataFile) -> Result<(), String> {
    if f.crc32.is_none() && f.sha256.is_none() {
        return Err("the manifest records no checksum for it".into());
    }
    if let Some(want) = f.crc32 {
        let got = crc32fast::hash(buf);
        if got != want {
            return Err(format!("CRC-32 {got:08x}, manifest says {want:08x}"));
        }
    }
    if let Some(want) = &f.sha256 {
        let got = hex::encode(sha2::Sha256::digest(buf));
        if &got != want {
            return Err(format!("SHA-256 {got}, manifest says {want}"));
        }
    }
    Ok(())
}

/// Checks decoded rows against the manifest's ranges and counts; returns the row count.
pub(super) fn check_against_manifest(m: &Manifest, b: &RecordBatch) -> Result<u64, String> {
    let kind = m.dataset.kind;
    let scale = time_scale(kind);
    let t = times(b, kind)?;
    check_order(kind, b, t, 0).map_err(|e| e.to_string())?;
    for s in &m.covered {
        let a = t.partition_point(|x| *x < s.start * scale);
        let z = t.partition_point(|x| *x < s.end * scale);
        if (z - a) as u64 != s.rows {
            return Err(format!(
                "covered range {}..{} holds {} rows, manifest says {}",
                format_ms(s.start),
                format_ms(s.end),
                z - a,
                s.rows
            ));
        }
    }
    let in_covered: u64 = m.covered.iter().map(|s| s.rows).sum();
    if in_covered != b.num_rows() as u64 {
        return Err("rows outside the covered ranges".into());
    }
    for g in m.no_data_ranges() {
        let a = t.partition_point(|x| *x < g.start() * scale);
        let z = t.partition_point(|x| *x < g.end() * scale);
        if z > a {
            return Err(format!("{} rows inside the no-data range {g}", z - a));
        }
    }
    // Each row group's count and key-time bounds: what range reads select row groups by.
    let mut at = 0usize;
    for (i, g) in m.file.iter().flat_map(|f| f.row_groups.iter()).enumerate() {
        let rows = usize::try_from(g.rows).unwrap_or(usize::MAX);
        let Some(times) = at.checked_add(rows).and_then(|end| t.get(at..end)) else {
            return Err(format!("row group {i} claims rows past the file's end"));
        };
        let (min, max) = (times.first().copied(), times.last().copied());
        if rows > 0 && (min, max) != (Some(g.min), Some(g.max)) {
            return Err(format!(
                "row group {i} holds times {min:?}..{max:?}, manifest says {}..{}",
                g.min, g.max
            ));
        }
        at += rows;
    }
    Ok(b.num_rows() as u64)
}
