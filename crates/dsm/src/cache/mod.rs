//! The local cache of validated market data: sorted Parquet files in a versioned Hive-style layout,
//! one manifest per partition that says which ranges are complete, where they came from and which
//! ranges the exchange has no data for.
//!
//! This module owns the on-disk (or object-store) format and its safety rules:
//! - **Never a partial range marked complete.** A write names the range the caller vouches for;
//!   rows outside it, unsorted rows and still-open candles are rejected.
//! - **Atomic and durable.** Every file is written under a temporary name, fsynced and renamed
//!   (local) or put atomically (object store); a partition changes by publishing a new data file
//!   and then a new manifest generation. A crash leaves the old state or the new one.
//! - **Safe across processes.** Writers hold a per-partition lock file around read-merge-publish
//!   (object stores use conditional manifest creation instead); readers never lock.
//! - **Never returns bad bytes as data.** Every fetched byte range is checked against the CRC-32
//!   recorded in the manifest; [`CacheStore::verify`] re-checks whole files (CRC-32 of the file).
//!
//! It must never fetch anything from the network: the manager decides what to fetch.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dsm::cache::CacheError> {
//! use dsm::cache::{CacheStore, DatasetKey};
//! use dsm::{Interval, Market, Symbol, TimeRange};
//!
//! let cache = CacheStore::open_default()?;
//! let key = DatasetKey::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1);
//! let range = TimeRange::new(1_704_067_200_000, 1_704_153_600_000)?;
//! // What is cached of the range, and its rows, from one reading of each manifest.
//! let (cov, batches) = cache.read_covered(&key, range).await?;
//! println!("{} batches cached; still to fetch: {:?}", batches.len(), cov.missing);
//! # Ok(()) }
//! ```

mod blobs;
mod error;
pub mod layout;
pub mod manifest;
mod parquet_io;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use sha2::Digest;

use crate::market::{DataKind, Market, Symbol};
use crate::schema::{output_schema, schema, with_source};
use crate::time::{TimeRange, format_ms, now_ms};

use crate::schema::{time_scale, times};
use blobs::{Blobs, LocalBlobs, StoreBlobs, file_name, is_manifest_name, parent};
pub use error::CacheError;
pub use layout::{DatasetKey, Granularity, Partition};
pub use manifest::{DataFile, Manifest, Provenance, Segment};
use manifest::{is_safe_file_name, splice_segments, splice_spans};
use parquet_io::check_crc;
pub use parquet_io::{CacheCompression, CacheEncoding, DEFAULT_ROW_GROUP_ROWS, WriteOptions};

/// Environment variable that overrides the default cache directory.
pub const CACHE_DIR_ENV: &str = "DSM_CACHE_DIR";

/// How long a writer waits for another writer's partition lock by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Rounds of read-merge-publish a writer tries when other writers keep winning (object stores).
const MAX_PUBLISH_ATTEMPTS: u32 = 16;

/// Times a reader re-reads the manifest when a writer replaced the file it was about to read.
const MAX_READ_ATTEMPTS: u32 = 6;

/// Partitions of one [`CacheStore::write_many`] encoded and published at the same time.
const PARALLEL_PARTITION_WRITES: usize = 4;

/// What the cache knows about a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Parts known complete (sorted, merged).
    pub covered: Vec<TimeRange>,
    /// Parts inside `covered` that the exchange has no data for (downtime), sorted, merged.
    pub gaps: Vec<TimeRange>,
    /// The range minus `covered`: what must be fetched.
    pub missing: Vec<TimeRange>,
    /// Corrupt manifests and data files found and quarantined by
    /// [`CacheStore::read_covered_repairing`] (their partitions count as missing), each with the
    /// reason.
    pub quarantined: Vec<Problem>,
}

/// What a partition read returns besides its manifest's coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Manifests only; a corrupt manifest counts as missing.
    Coverage,
    /// Coverage, and the rows of partitions that cover part of the range; a corrupt manifest
    /// counts as missing.
    Covered,
    /// The rows in the range whatever the coverage; a corrupt manifest is an error.
    Rows,
    /// As `Covered`, and a corrupt manifest or data file is quarantined (a data file with its
    /// manifest) and counts as missing, so the caller fetches it again.
    Repair,
}

/// One partition's part of a range, all from one manifest generation.
#[derive(Debug, Default)]
struct Snapshot {
    covered: Vec<TimeRange>,
    gaps: Vec<TimeRange>,
    rows: Vec<RecordBatch>,
    quarantined: Vec<Problem>,
}

/// One partition, as listed by [`CacheStore::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    /// The dataset.
    pub dataset: DatasetKey,
    /// Partition directory relative to the cache root.
    pub path: String,
    /// The partition's span.
    pub partition: TimeRange,
    /// Manifest generation.
    pub generation: u64,
    /// Covered ranges (merged).
    pub covered: Vec<TimeRange>,
    /// Known no-data ranges.
    pub gaps: Vec<TimeRange>,
    /// Rows stored.
    pub rows: u64,
    /// Bytes of the data file and manifest.
    pub bytes: u64,
    /// The data file, relative to the cache root, if any.
    pub data_file: Option<String>,
    /// Distinct sources of the covered ranges.
    pub sources: Vec<Provenance>,
    /// Archive files found short (they verified but lacked rows REST had).
    pub short_files: Vec<String>,
}

/// One problem found by [`CacheStore::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (relative to the cache root).
    pub path: String,
    /// What was wrong.
    pub reason: String,
}

/// What [`CacheStore::verify`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Partitions checked.
    pub partitions: usize,
    /// Data files re-read.
    pub files: usize,
    /// Rows re-read.
    pub rows: u64,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// Files moved to `quarantine/` (relative to the cache root, before the move).
    pub quarantined: Vec<String>,
    /// Unreferenced data files and stray temporaries removed.
    pub removed: usize,
}

impl VerifyReport {
    /// Whether nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Which partitions [`CacheStore::prune`] removes. Criteria combine with AND; `all` removes
/// everything. A filter with no criterion removes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneFilter {
    /// Only this symbol.
    pub symbol: Option<Symbol>,
    /// Only this market.
    pub market: Option<Market>,
    /// Only partitions whose data ends at or before this instant (ms).
    pub older_than: Option<i64>,
    /// Everything, including quarantined files.
    pub all: bool,
}

/// What [`CacheStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Files removed.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// One verified piece of data for [`CacheStore::write_many`]: rows (base [`schema`], sorted by
/// time) that are complete for `complete`, and where they came from.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The range the rows are complete for.
    pub complete: TimeRange,
    /// The rows.
    pub batch: RecordBatch,
    /// Where they came from.
    pub provenance: Provenance,
}

/// A piece cut to one partition, rows tagged with their source.
struct PartPiece {
    sub: TimeRange,
    rows: RecordBatch,
    provenance: Provenance,
}

/// The cache store. Cheap to clone; safe to share between tasks, threads and processes.
#[derive(Debug, Clone)]
pub struct CacheStore {
    blobs: Arc<dyn Blobs>,
    options: WriteOptions,
    lock_wait: Duration,
    /// Stray temporaries [`CacheStore::open`] removed, not yet counted in a [`VerifyReport`] (so
    /// `verify` right after a crash reports the leftovers it found, even though `open` removed
    /// them first).
    removed_at_open: Arc<std::sync::atomic::AtomicUsize>,
}

impl CacheStore {
    /// Opens (creating if needed) a cache in a local directory and removes stray temporaries left
    /// by crashed writers.
    ///
    /// Synchronous file-system calls; call it before entering, or via `spawn_blocking` from,
    /// latency-sensitive async code.
    pub fn open(dir: impl AsRef<Path>) -> Result<CacheStore, CacheError> {
        let dir = dir.as_ref().to_owned();
        let local = LocalBlobs::new(dir.clone())?;
        let tag = dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = std::fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# dsm cache: safe to delete, re-fetched on demand.\n",
            );
        }
        let removed = local.clean_temporaries_sync()?;
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed stray cache temporaries");
        }
        let store = CacheStore::from_blobs(Arc::new(local));
        store
            .removed_at_open
            .store(removed, std::sync::atomic::Ordering::Relaxed);
        Ok(store)
    }

    /// Opens the cache in [`CacheStore::default_dir`].
    pub fn open_default() -> Result<CacheStore, CacheError> {
        CacheStore::open(CacheStore::default_dir()?)
    }

    /// `$DSM_CACHE_DIR`, else the platform cache directory + `dsm` (`~/.cache/dsm` on Linux).
    pub fn default_dir() -> Result<PathBuf, CacheError> {
        match std::env::var_os(CACHE_DIR_ENV) {
            Some(d) if !d.is_empty() => Ok(PathBuf::from(d)),
            _ => dirs::cache_dir()
                .map(|d| d.join("dsm"))
                .ok_or(CacheError::NoCacheDir),
        }
    }

    /// A cache on an object store (S3-compatible storage, or `InMemory` in tests), at its root.
    pub fn with_object_store(store: Arc<dyn ObjectStore>) -> CacheStore {
        CacheStore::from_blobs(Arc::new(StoreBlobs::new(store)))
    }

    fn from_blobs(blobs: Arc<dyn Blobs>) -> CacheStore {
        CacheStore {
            blobs,
            options: WriteOptions::default(),
            lock_wait: DEFAULT_LOCK_WAIT,
            removed_at_open: Arc::default(),
        }
    }

    /// Sets how data files are written (compression, row-group size).
    pub fn with_write_options(mut self, options: WriteOptions) -> CacheStore {
        self.options = options;
        self
    }

    /// Sets how long a writer waits for another writer's partition lock.
    pub fn with_lock_wait(mut self, wait: Duration) -> CacheStore {
        self.lock_wait = wait;
        self
    }

    /// Where the cache lives (for messages).
    pub fn location(&self) -> String {
        self.blobs.describe()
    }

    async fn load_manifest(
        &self,
        key: &DatasetKey,
        part: &Partition,
    ) -> Result<Option<(String, Manifest)>, CacheError> {
        let Some((path, bytes)) = self.blobs.load_manifest(part.dir.clone()).await? else {
            return Ok(None);
        };
        let corrupt = |reason: String| CacheError::CorruptManifest {
            path: path.clone(),
            reason,
        };
        let m = Manifest::parse(&bytes).map_err(corrupt)?;
        if &m.dataset != key {
            return Err(corrupt(format!("it describes {}, not {key}", m.dataset)));
        }
        if m.partition_range() != Some(part.range) {
            return Err(corrupt(format!("its partition span is not {}", part.range)));
        }
        Ok(Some((path, m)))
    }

    /// Which parts of `range` are cached (complete), which of those are known exchange gaps, and
    /// what is missing. Reads manifests only. A corrupt manifest counts as missing (and is logged).
    pub async fn coverage(
        &self,
        key: &DatasetKey,
        range: TimeRange,
    ) -> Result<Coverage, CacheError> {
        Ok(self.snapshots(key, range, Mode::Coverage).await?.0)
    }

    /// [`CacheStore::coverage`] and the covered rows ([`CacheStore::read`]) in one pass. Each
    /// partition's manifest is read once and its rows are read with that same manifest, so a
    /// writer or a `prune` in between cannot leave a range reported as covered without its rows.
    /// Data files of partitions that cover nothing of `range` are not opened; a corrupt manifest
    /// counts as missing (and is logged), as for `coverage`.
    pub async fn read_covered(
        &self,
        key: &DatasetKey,
        range: TimeRange,
    ) -> Result<(Coverage, Vec<RecordBatch>), CacheError> {
        self.snapshots(key, range, Mode::Covered).await
    }

    /// [`CacheStore::read_covered`] that repairs instead of failing: a manifest or data file that
    /// fails its checksums is moved to `quarantine/` (a data file with its manifest, as
    /// [`CacheStore::verify`] does), listed in [`Coverage::quarantined`], and its partition counts
    /// as missing.
    pub async fn read_covered_repairing(
        &self,
        key: &DatasetKey,
        range: TimeRange,
    ) -> Result<(Coverage, Vec<RecordBatch>), CacheError> {
        self.snapshots(key, range, Mode::Repair).await
    }

    /// Every partition of `range` in `mode`, concurrently, put together.
    async fn snapshots(
        &self,
        key: &DatasetKey,
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

    /// Stores `batch` (rows in the dataset's base [`schema`], sorted by time) as complete for
    /// `complete`: every row with time in `complete` is in the batch.
    ///
    /// Rejects rows outside `complete`, unsorted or duplicate rows, candles that have not closed and
    /// ranges reaching into the future. Rows are tagged with `provenance`'s source, merged with
    /// what the partitions already hold (new rows replace cached ones inside `complete`), and
    /// published atomically per partition. For candles, slots inside `complete` without a row are
    /// recorded as known no-data ranges.
    pub async fn write(
        &self,
        key: &DatasetKey,
        complete: TimeRange,
        batch: &RecordBatch,
        provenance: Provenance,
    ) -> Result<(), CacheError> {
        self.write_many(
            key,
            vec![Piece {
                complete,
                batch: batch.clone(),
                provenance,
            }],
        )
        .await
    }

    /// Stores several pieces at once, each checked as by [`CacheStore::write`]; their ranges must
    /// not overlap. Every partition they touch is rewritten **once**, with one covered segment (and
    /// its provenance) per piece, so storing the thirty daily files of a month costs one partition
    /// write instead of thirty ever larger ones. Partitions are published independently and
    /// concurrently; if one fails, the ones already published stay (each is complete on its own).
    ///
    /// ```no_run
    /// # async fn demo(cache: dsm::cache::CacheStore, key: dsm::cache::DatasetKey,
    /// #     days: Vec<(dsm::TimeRange, arrow::record_batch::RecordBatch, String, String)>)
    /// #     -> Result<(), dsm::cache::CacheError> {
    /// use dsm::cache::{Piece, Provenance};
    /// let pieces = days
    ///     .into_iter()
    ///     .map(|(complete, batch, file, sha256)| Piece {
    ///         complete,
    ///         batch,
    ///         provenance: Provenance::Vision { file, sha256, etag: None, last_modified: None },
    ///     })
    ///     .collect();
    /// cache.write_many(&key, pieces).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_many(
        &self,
        key: &DatasetKey,
        mut pieces: Vec<Piece>,
    ) -> Result<(), CacheError> {
        key.check()?;
        pieces.sort_by_key(|p| p.complete.start());
        for w in pieces.windows(2) {
            if w[1].complete.start() < w[0].complete.end() {
                return Err(CacheError::Overlap {
                    first: w[0].complete,
                    second: w[1].complete,
                });
            }
        }
        let scale = time_scale(key.kind);
        let now = now_ms();
        // Every piece is checked (and cut at partition boundaries) before anything is published.
        let mut per_part: BTreeMap<i64, (Partition, Vec<PartPiece>)> = BTreeMap::new();
        for p in pieces {
            check_schema(key, &p.batch)?;
            let times = times(&p.batch, key.kind)
                .map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
            check_rows(key, &p.batch, times, p.complete, scale)?;
            check_closed(key, &p.batch, times, p.complete, now)?;
            let tagged = with_source(&p.batch, key.market, key.kind, p.provenance.source());
            for part in key.partitions(p.complete) {
                let Some(sub) = p.complete.intersect(&part.range) else {
                    continue;
                };
                let a = times.partition_point(|t| *t < sub.start() * scale);
                let z = times.partition_point(|t| *t < sub.end() * scale);
                let piece = PartPiece {
                    sub,
                    rows: tagged.slice(a, z - a),
                    provenance: p.provenance.clone(),
                };
                per_part
                    .entry(part.range.start())
                    .or_insert_with(|| (part, Vec::new()))
                    .1
                    .push(piece);
            }
        }
        let writes = per_part
            .into_values()
            .map(|(part, pieces)| async move { self.write_partition(key, &part, pieces).await });
        futures::stream::iter(writes)
            .buffer_unordered(PARALLEL_PARTITION_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn write_partition(
        &self,
        key: &DatasetKey,
        part: &Partition,
        pieces: Vec<PartPiece>,
    ) -> Result<(), CacheError> {
        let mut gaps = Vec::new();
        if let Some(interval) = key.interval {
            for p in &pieces {
                let found =
                    crate::schema::kline_gaps(std::slice::from_ref(&p.rows), interval, p.sub)
                        .map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
                gaps.extend(found);
            }
        }
        let subs: Vec<TimeRange> = pieces.iter().map(|p| p.sub).collect();
        let out_schema = output_schema(key.market, key.kind);
        let scale = time_scale(key.kind);
        for _attempt in 0..MAX_PUBLISH_ATTEMPTS {
            let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
            let mut old = match self.load_manifest(key, part).await {
                Ok(Some((_, m))) => m,
                Ok(None) => Manifest::empty(key.clone(), part.range),
                Err(CacheError::CorruptManifest { path, reason }) => {
                    tracing::warn!(%path, %reason, "quarantining a corrupt cache manifest before rewriting the partition");
                    self.blobs.quarantine(path).await?;
                    Manifest::empty(key.clone(), part.range)
                }
                Err(e) => return Err(e),
            };
            // Old rows are only needed if some of the old coverage lies outside this write.
            let keeps_old = old
                .covered_ranges()
                .iter()
                .any(|r| !r.subtract(&subs).is_empty());
            let mut old_rows = RecordBatch::new_empty(out_schema.clone());
            if keeps_old && let Some(f) = old.file.clone() {
                let path = format!("{}/{}", part.dir, f.name);
                match self.read_whole(&path, &f, key.kind, &out_schema).await {
                    Ok(b) => old_rows = b,
                    Err(e @ CacheError::CorruptData { .. }) => {
                        tracing::warn!(error = %e, "dropping a corrupt cache file; its coverage will be re-fetched");
                        self.blobs.quarantine(path).await?;
                        let generation = old.generation;
                        old = Manifest::empty(key.clone(), part.range);
                        old.generation = generation;
                    }
                    Err(e) => return Err(e),
                }
            }
            let merged =
                merge_rows(&out_schema, &old_rows, &pieces, key.kind, scale).map_err(|source| {
                    CacheError::Arrow {
                        path: part.dir.clone(),
                        source,
                    }
                })?;
            check_unique(key.kind, &merged)?;
            let now = now_ms();
            let mut covered = old.covered.clone();
            let mut no_data = old.no_data.clone();
            for p in &pieces {
                covered = splice_segments(
                    &covered,
                    p.sub,
                    Segment {
                        start: p.sub.start(),
                        end: p.sub.end(),
                        rows: 0,
                        source: p.provenance.clone(),
                        written_at: now,
                    },
                );
                no_data = splice_spans(&no_data, p.sub, &gaps);
            }
            let merged_times = times(&merged, key.kind)
                .map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
            let mut counted = 0u64;
            for s in &mut covered {
                let a = merged_times.partition_point(|t| *t < s.start * scale);
                let z = merged_times.partition_point(|t| *t < s.end * scale);
                s.rows = (z - a) as u64;
                counted += s.rows;
            }
            if counted != merged.num_rows() as u64 {
                return Err(CacheError::CorruptData {
                    path: part.dir.clone(),
                    reason: format!(
                        "{} cached rows lie outside every covered range",
                        merged.num_rows() as u64 - counted
                    ),
                });
            }
            let generation = old.generation + 1;
            let file = if merged.num_rows() > 0 {
                let name = format!(
                    "part-{generation:08}-{:016x}.parquet",
                    rand::random::<u64>()
                );
                let path = format!("{}/{name}", part.dir);
                let (kind, opts) = (key.kind, self.options);
                let (bytes, info) = tokio::task::spawn_blocking(move || {
                    parquet_io::encode(&merged, kind, name, opts)
                })
                .await
                .map_err(|e| CacheError::Io {
                    path: PathBuf::from(&path),
                    source: std::io::Error::other(format!("encoding task failed: {e}")),
                })?
                .map_err(|source| CacheError::Parquet {
                    path: path.clone(),
                    source,
                })?;
                self.blobs.put(path, bytes).await?;
                Some(info)
            } else {
                None
            };
            let manifest = Manifest {
                generation,
                file: file.clone(),
                covered,
                no_data,
                updated_at: now,
                ..old.clone()
            };
            let published = self
                .blobs
                .publish_manifest(
                    part.dir.clone(),
                    generation,
                    Bytes::from(manifest.to_bytes()),
                )
                .await?;
            let new_name = file.as_ref().map(|f| f.name.clone());
            if !published {
                // Another writer published this generation first: drop our file and redo the
                // merge on top of theirs.
                if let Some(n) = new_name {
                    self.blobs.delete(format!("{}/{n}", part.dir)).await?;
                }
                continue;
            }
            if let Some(f) = &old.file
                && Some(&f.name) != new_name.as_ref()
            {
                self.blobs
                    .delete(format!("{}/{}", part.dir, f.name))
                    .await?;
            }
            if self.blobs.orphans_removable_under_lock() {
                for e in self.blobs.list(part.dir.clone()).await? {
                    let n = file_name(&e.path);
                    if parent(&e.path) == part.dir
                        && is_safe_file_name(n)
                        && Some(n) != new_name.as_deref()
                    {
                        self.blobs.delete(e.path.clone()).await?;
                    }
                }
            }
            return Ok(());
        }
        Err(CacheError::Conflict {
            path: part.dir.clone(),
            attempts: MAX_PUBLISH_ATTEMPTS,
        })
    }

    /// Reads and fully checks a data file (size, whole-file checksum, decode, row count).
    async fn read_whole(
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
        key: &DatasetKey,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>, CacheError> {
        Ok(self.snapshots(key, range, Mode::Rows).await?.1)
    }

    /// What one generation of a partition's manifest says of `range` (coverage and known gaps)
    /// and, as `mode` asks, the rows of its data file in `range`, read with that same manifest.
    async fn snapshot(
        &self,
        key: &DatasetKey,
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

    /// Quarantines a partition's bad data file found by a read (`generation` is the manifest it
    /// was read with), under the partition's lock: the partition then counts as missing. If a
    /// writer published a new generation meanwhile, that one is left alone (and also not used by
    /// this read, which then fetches the partition again).
    async fn quarantine_bad(
        &self,
        part: &Partition,
        generation: u64,
        mpath: String,
        problem: Problem,
    ) -> Result<Snapshot, CacheError> {
        let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
        let current = self.load_manifest_at(&part.dir).await.ok().flatten();
        if current.is_some_and(|(_, m)| m.generation == generation) {
            tracing::warn!(path = %problem.path, reason = %problem.reason,
                "corrupt cache file quarantined; fetching its partition again");
            self.quarantine_partition(&part.dir, mpath, problem.path.clone())
                .await?;
        }
        Ok(Snapshot {
            quarantined: vec![problem],
            ..Snapshot::default()
        })
    }

    /// Quarantines a partition's manifest that failed its checks on a read, under the partition's
    /// lock (unless a writer replaced it meanwhile): the partition then counts as missing, and its
    /// data file, no longer referenced, is left for `verify` or the next write to remove.
    async fn quarantine_manifest(
        &self,
        part: &Partition,
        problem: Problem,
    ) -> Result<Snapshot, CacheError> {
        let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
        if let Err(CacheError::CorruptManifest { path, .. }) =
            self.load_manifest_at(&part.dir).await
            && path == problem.path
        {
            tracing::warn!(path = %problem.path, reason = %problem.reason,
                "corrupt cache manifest quarantined; fetching its partition again");
            self.blobs.quarantine(path).await?;
            self.blobs.remove_manifests(part.dir.clone()).await?;
        }
        Ok(Snapshot {
            quarantined: vec![problem],
            ..Snapshot::default()
        })
    }

    /// Moves a partition's manifest and data file to `quarantine/` (the manifest first, so no
    /// reader sees a manifest without its file). The caller holds the partition's lock.
    async fn quarantine_partition(
        &self,
        dir: &str,
        manifest: String,
        data: String,
    ) -> Result<(), CacheError> {
        self.blobs.quarantine(manifest).await?;
        self.blobs.remove_manifests(dir.to_owned()).await?;
        self.blobs.quarantine(data).await
    }

    /// The rows of data file `f` (as its manifest describes it) with time in `window`. `None`:
    /// the file is gone (replaced by a writer since the manifest was read).
    async fn read_rows(
        &self,
        key: &DatasetKey,
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

    /// Directories that hold a manifest, and every stored object (quarantine excluded).
    async fn scan(&self) -> Result<(Vec<String>, Vec<blobs::Entry>), CacheError> {
        let entries: Vec<blobs::Entry> = self
            .blobs
            .list(String::new())
            .await?
            .into_iter()
            .filter(|e| !e.path.starts_with(&format!("{}/", blobs::QUARANTINE_DIR)))
            .collect();
        let mut dirs: Vec<String> = entries
            .iter()
            .filter(|e| is_manifest_name(file_name(&e.path)))
            .map(|e| parent(&e.path).to_owned())
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok((dirs, entries))
    }

    async fn load_manifest_at(&self, dir: &str) -> Result<Option<(String, Manifest)>, CacheError> {
        let Some((path, bytes)) = self.blobs.load_manifest(dir.to_owned()).await? else {
            return Ok(None);
        };
        let m = Manifest::parse(&bytes).map_err(|reason| CacheError::CorruptManifest {
            path: path.clone(),
            reason,
        })?;
        let expected = m
            .dataset
            .partitions(m.partition_range().unwrap_or(TimeRange::new(0, 1)?))
            .into_iter()
            .next()
            .map(|p| p.dir);
        if expected.as_deref() != Some(dir) {
            return Err(CacheError::CorruptManifest {
                path,
                reason: format!("it describes another partition ({})", m.dataset),
            });
        }
        Ok(Some((path, m)))
    }

    /// Every cached partition, with its coverage, size and sources. Reads manifests only;
    /// partitions with a corrupt manifest are skipped (and logged): `verify` reports them.
    pub async fn list(&self) -> Result<Vec<PartitionInfo>, CacheError> {
        let (dirs, entries) = self.scan().await?;
        let sizes: BTreeMap<&str, u64> =
            entries.iter().map(|e| (e.path.as_str(), e.size)).collect();
        let mut out = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let (mpath, m) = match self.load_manifest_at(&dir).await {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a cache partition");
                    continue;
                }
            };
            let data_file = m.file.as_ref().map(|f| format!("{dir}/{}", f.name));
            let mut sources: Vec<Provenance> = Vec::new();
            for s in &m.covered {
                if !sources.contains(&s.source) {
                    sources.push(s.source.clone());
                }
            }
            let bytes = sizes.get(mpath.as_str()).copied().unwrap_or(0)
                + m.file.as_ref().map_or(0, |f| f.bytes);
            out.push(PartitionInfo {
                partition: m.partition_range().unwrap_or(TimeRange::new(0, 1)?),
                generation: m.generation,
                covered: TimeRange::merge_all(m.covered_ranges()),
                gaps: m.no_data_ranges(),
                rows: m.file.as_ref().map_or(0, |f| f.rows),
                dataset: m.dataset,
                path: dir,
                bytes,
                data_file,
                sources,
                short_files: m.short_files,
            });
        }
        Ok(out)
    }

    /// Records in the manifests of the partitions `range` touches that archive file `file` was
    /// found short (it verified against its `.CHECKSUM` but lacked rows REST had). Partitions with
    /// nothing cached are left alone.
    pub async fn record_short_file(
        &self,
        key: &DatasetKey,
        range: TimeRange,
        file: &str,
    ) -> Result<(), CacheError> {
        key.check()?;
        for part in key.partitions(range) {
            for attempt in 0..=MAX_PUBLISH_ATTEMPTS {
                if attempt == MAX_PUBLISH_ATTEMPTS {
                    return Err(CacheError::Conflict {
                        path: part.dir.clone(),
                        attempts: MAX_PUBLISH_ATTEMPTS,
                    });
                }
                let _guard = self.blobs.lock(part.dir.clone(), self.lock_wait).await?;
                let Some((_, mut m)) = self.load_manifest(key, &part).await? else {
                    break;
                };
                if m.short_files.iter().any(|f| f == file) {
                    break;
                }
                m.short_files.push(file.to_owned());
                m.generation += 1;
                m.updated_at = now_ms();
                let bytes = Bytes::from(m.to_bytes());
                if self
                    .blobs
                    .publish_manifest(part.dir.clone(), m.generation, bytes)
                    .await?
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Re-reads every data file and checks it against its manifest (size, checksum, rows, order,
    /// ranges). Anything bad is moved to `quarantine/` and its partition's coverage dropped, so it
    /// is fetched again. Unreferenced data files and stray temporaries are removed.
    pub async fn verify(&self) -> Result<VerifyReport, CacheError> {
        let at_open = self
            .removed_at_open
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        let mut report = VerifyReport {
            removed: at_open + self.blobs.clean_temporaries().await?,
            ..VerifyReport::default()
        };
        let (dirs, entries) = self.scan().await?;
        let mut data_dirs: Vec<String> = entries
            .iter()
            .filter(|e| is_safe_file_name(file_name(&e.path)))
            .map(|e| parent(&e.path).to_owned())
            .chain(dirs.iter().cloned())
            .collect();
        data_dirs.sort();
        data_dirs.dedup();
        let now = now_ms();
        for dir in data_dirs {
            let _guard = self.blobs.lock(dir.clone(), self.lock_wait).await?;
            report.partitions += 1;
            let mut referenced: Option<String> = None;
            match self.load_manifest_at(&dir).await {
                Ok(None) => {}
                Err(CacheError::CorruptManifest { path, reason }) => {
                    report.problems.push(Problem {
                        path: path.clone(),
                        reason,
                    });
                    self.blobs.quarantine(path.clone()).await?;
                    report.quarantined.push(path);
                    self.blobs.remove_manifests(dir.clone()).await?;
                }
                Err(e) => return Err(e),
                Ok(Some((mpath, m))) => {
                    if let Some(f) = &m.file {
                        let path = format!("{dir}/{}", f.name);
                        report.files += 1;
                        let out_schema = output_schema(m.dataset.market, m.dataset.kind);
                        let checked =
                            match self.read_whole(&path, f, m.dataset.kind, &out_schema).await {
                                Ok(b) => check_against_manifest(&m, &b).map_err(|reason| {
                                    CacheError::CorruptData {
                                        path: path.clone(),
                                        reason,
                                    }
                                }),
                                Err(e) => Err(e),
                            };
                        match checked {
                            Ok(rows) => {
                                report.rows += rows;
                                referenced = Some(f.name.clone());
                            }
                            Err(CacheError::CorruptData { path, reason }) => {
                                report.problems.push(Problem {
                                    path: path.clone(),
                                    reason,
                                });
                                self.quarantine_partition(&dir, mpath.clone(), path.clone())
                                    .await?;
                                report.quarantined.push(mpath);
                                report.quarantined.push(path);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            // Unreferenced data files: leftovers of crashed or superseded writes.
            for e in entries.iter().filter(|e| parent(&e.path) == dir) {
                let n = file_name(&e.path);
                if !is_safe_file_name(n) || Some(n) == referenced.as_deref() {
                    continue;
                }
                let old_enough = now - e.modified_ms > 3_600_000;
                if self.blobs.orphans_removable_under_lock() || old_enough {
                    self.blobs.delete(e.path.clone()).await?;
                    report.removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Removes the partitions `filter` selects (manifest first, then data). See [`PruneFilter`].
    pub async fn prune(&self, filter: &PruneFilter) -> Result<PruneReport, CacheError> {
        let mut report = PruneReport::default();
        let (dirs, entries) = if filter.all {
            let all = self.blobs.list(String::new()).await?;
            let dirs: Vec<String> = Vec::new();
            (dirs, all)
        } else {
            self.scan().await?
        };
        if filter.all {
            for e in entries {
                if file_name(&e.path) == blobs::LOCK_FILE || e.path == "CACHEDIR.TAG" {
                    continue;
                }
                self.blobs.delete(e.path.clone()).await?;
                report.files += 1;
                report.bytes += e.size;
            }
            return Ok(report);
        }
        if filter.symbol.is_none() && filter.market.is_none() && filter.older_than.is_none() {
            return Ok(report);
        }
        for dir in dirs {
            let m = match self.load_manifest_at(&dir).await {
                Ok(Some((_, m))) => m,
                Ok(None) | Err(CacheError::CorruptManifest { .. }) => continue,
                Err(e) => return Err(e),
            };
            let d = &m.dataset;
            let end = m
                .covered
                .iter()
                .map(|s| s.end)
                .max()
                .unwrap_or(m.partition.end);
            let hit = filter.market.is_none_or(|x| x == d.market)
                && filter.symbol.as_ref().is_none_or(|x| x == &d.symbol)
                && filter.older_than.is_none_or(|t| end <= t);
            if !hit {
                continue;
            }
            let _guard = self.blobs.lock(dir.clone(), self.lock_wait).await?;
            let files: Vec<&blobs::Entry> = entries
                .iter()
                .filter(|e| parent(&e.path) == dir && file_name(&e.path) != blobs::LOCK_FILE)
                .collect();
            self.blobs.remove_manifests(dir.clone()).await?;
            for e in files {
                self.blobs.delete(e.path.clone()).await?;
                report.files += 1;
                report.bytes += e.size;
            }
        }
        Ok(report)
    }

    /// Total bytes stored (data, manifests, quarantine).
    pub async fn size(&self) -> Result<u64, CacheError> {
        Ok(self
            .blobs
            .list(String::new())
            .await?
            .iter()
            .map(|e| e.size)
            .sum())
    }
}

fn check_schema(key: &DatasetKey, batch: &RecordBatch) -> Result<(), CacheError> {
    let expected = schema(key.market, key.kind);
    let actual = batch.schema();
    let same = expected.fields().len() == actual.fields().len()
        && expected
            .fields()
            .iter()
            .zip(actual.fields())
            .all(|(e, a)| e.name() == a.name() && e.data_type() == a.data_type());
    if same {
        return Ok(());
    }
    let show = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(CacheError::SchemaMismatch {
        dataset: key.to_string(),
        expected: show(&expected),
        actual: show(&actual),
    })
}

/// Rows inside `complete`, sorted and unique on their key.
fn check_rows(
    key: &DatasetKey,
    batch: &RecordBatch,
    times: &[i64],
    complete: TimeRange,
    scale: i64,
) -> Result<(), CacheError> {
    let (lo, hi) = (complete.start() * scale, complete.end() * scale);
    if let Some(row) = times.iter().position(|t| *t < lo || *t >= hi) {
        return Err(CacheError::OutOfRange {
            row,
            time: times[row].div_euclid(scale),
            range: complete,
        });
    }
    check_order(key.kind, batch, times, 0)
}

fn check_order(
    kind: DataKind,
    batch: &RecordBatch,
    times: &[i64],
    from: usize,
) -> Result<(), CacheError> {
    let trades = matches!(kind, DataKind::Trades | DataKind::AggTrades);
    if trades {
        if let Some(i) = times.windows(2).skip(from).position(|w| w[1] < w[0]) {
            return Err(CacheError::NotSorted {
                row: from + i + 1,
                reason: "time goes backwards".into(),
            });
        }
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.values().as_ref())
            .unwrap_or(&[]);
        if let Some(i) = ids.windows(2).skip(from).position(|w| w[1] <= w[0]) {
            return Err(CacheError::NotSorted {
                row: from + i + 1,
                reason: format!("trade id {} does not increase", ids[from + i + 1]),
            });
        }
    } else if let Some(i) = times.windows(2).skip(from).position(|w| w[1] <= w[0]) {
        return Err(CacheError::NotSorted {
            row: from + i + 1,
            reason: "time does not increase strictly".into(),
        });
    }
    Ok(())
}

fn check_unique(kind: DataKind, merged: &RecordBatch) -> Result<(), CacheError> {
    let times = times(merged, kind).map_err(|reason| CacheError::NotSorted { row: 0, reason })?;
    check_order(kind, merged, times, 0).map_err(|e| match e {
        CacheError::NotSorted { row, reason } => CacheError::NotSorted {
            row,
            reason: format!("{reason} where new rows meet cached rows"),
        },
        other => other,
    })
}

/// Old rows outside the pieces' ranges, with each piece's rows in its place. `pieces` are sorted
/// by start and do not overlap.
fn merge_rows(
    schema: &SchemaRef,
    old: &RecordBatch,
    pieces: &[PartPiece],
    kind: DataKind,
    scale: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if old.num_rows() == 0 && pieces.len() == 1 {
        return Ok(pieces[0].rows.clone());
    }
    let t = times(old, kind).map_err(arrow::error::ArrowError::InvalidArgumentError)?;
    let mut parts = Vec::with_capacity(2 * pieces.len() + 1);
    let mut from = 0;
    for p in pieces {
        let a = t.partition_point(|x| *x < p.sub.start() * scale).max(from);
        let z = t.partition_point(|x| *x < p.sub.end() * scale).max(a);
        parts.push(old.slice(from, a - from));
        parts.push(p.rows.clone());
        from = z;
    }
    parts.push(old.slice(from, old.num_rows() - from));
    arrow::compute::concat_batches(schema, &parts)
}

/// Rejects candles that have not closed yet (and, for other kinds, ranges that end in the future).
fn check_closed(
    key: &DatasetKey,
    batch: &RecordBatch,
    times: &[i64],
    complete: TimeRange,
    now: i64,
) -> Result<(), CacheError> {
    if let Some(interval) = key.interval {
        if let Some(closes) = batch
            .column_by_name("close_time")
            .and_then(crate::schema::i64_values)
            && let Some(i) = closes.iter().position(|c| *c >= now)
        {
            return Err(CacheError::OpenCandle {
                open_time: times[i],
            });
        }
        let last_open = interval.floor(complete.end() - 1);
        if interval.close_time(last_open) >= now {
            return Err(CacheError::OpenCandle {
                open_time: last_open,
            });
        }
    } else if complete.end() > now {
        return Err(CacheError::NotYetComplete {
            end: complete.end(),
            now,
        });
    }
    Ok(())
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
fn check_against_manifest(m: &Manifest, b: &RecordBatch) -> Result<u64, String> {
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
