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
//! - **Safe across processes and machines.** Local writers hold a per-partition lock file around
//!   read-merge-publish; on an object store (S3, [`CacheStore::open_url`]) the manifest is
//!   replaced by compare-and-swap and the loser of a race merges and retries. Readers never lock.
//! - **Readable by other engines.** Hive-style directories; everything that is not current data
//!   (`_manifest.json`, temporaries, staged files, `_quarantine/`) starts with `_` or `.`.
//! - **Never returns bad bytes as data.** Every fetched byte range is checked against the CRC-32
//!   recorded in the manifest; [`CacheStore::verify`] re-checks whole files (CRC-32 of the file).
//!
//! It must never fetch anything from the network: the manager decides what to fetch.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dsm::cache::CacheError> {
//! use dsm::cache::{CacheStore, Dataset};
//! use dsm::{Interval, Market, Symbol, TimeRange};
//!
//! let cache = CacheStore::open_default()?;
//! let key = Dataset::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1);
//! let range = TimeRange::new(1_704_067_200_000, 1_704_153_600_000)?;
//! // What is cached of the range, and its rows, from one reading of each manifest.
//! let (cov, batches) = cache.read_covered(&key, range).await?;
//! println!("{} batches cached; still to fetch: {:?}", batches.len(), cov.missing);
//! # Ok(()) }
//! ```

mod blobs;
mod error;
pub mod layout;
mod maintain;
pub mod manifest;
mod parquet_io;
mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use object_store::ObjectStore;

use crate::market::{Market, Symbol};
use crate::time::TimeRange;

pub use crate::market::Dataset;
use blobs::{Blobs, LocalBlobs, StoreBlobs};
pub use error::CacheError;
pub use layout::{Granularity, Partition};
pub use manifest::{DataFile, Manifest, Provenance, Segment};
pub use parquet_io::{CacheCompression, CacheEncoding, DEFAULT_ROW_GROUP_ROWS, WriteOptions};

/// Environment variable that overrides the default cache directory.
pub const CACHE_DIR_ENV: &str = "DSM_CACHE_DIR";

/// Environment variable naming a cache by URL (`s3://BUCKET/PREFIX`); it takes the place of the
/// cache directory.
pub const CACHE_URL_ENV: &str = "DSM_CACHE_URL";

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
    pub dataset: Dataset,
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
    /// Files moved to `_quarantine/` (relative to the cache root, before the move).
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

/// One verified piece of data for [`CacheStore::write_many`]: rows (base [`schema`](crate::schema::schema), sorted by
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
        let url = store.to_string();
        CacheStore::from_blobs(Arc::new(StoreBlobs::new(store, &url)))
    }

    /// Opens the cache at `url`: `s3://BUCKET/PREFIX` for S3-compatible storage shared by many
    /// processes and machines, or a local directory (`file:///path` or a plain path, opened as by
    /// [`CacheStore::open`]).
    ///
    /// For S3, credentials, region and endpoint come from the standard variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for a plain-http endpoint), as `object_store`'s S3
    /// builder reads them. Nothing is requested here: a wrong credential or bucket shows in the
    /// first read or write, with the bucket and key in the message.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), dsm::cache::CacheError> {
    /// let shared = dsm::cache::CacheStore::open_url("s3://market-data/dsm")?;
    /// let local = dsm::cache::CacheStore::open_url("/var/cache/dsm")?;
    /// # Ok(()) }
    /// ```
    pub fn open_url(url: &str) -> Result<CacheStore, CacheError> {
        let bad = |reason: String| {
            CacheError::Input(crate::market::InputError::Invalid {
                what: "cache_url",
                reason,
            })
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() {
                return Err(bad(format!(
                    "{url:?} names no bucket; give s3://BUCKET or s3://BUCKET/PREFIX"
                )));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| CacheError::ObjectStore {
                    path: url.to_owned(),
                    source: Box::new(e),
                })?;
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                let p = object_store::path::Path::parse(prefix).map_err(|e| {
                    bad(format!(
                        "{url:?}: the prefix {prefix:?} is not a valid key: {e}"
                    ))
                })?;
                Arc::new(object_store::prefix::PrefixStore::new(s3, p))
            };
            let shown = if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            };
            return Ok(CacheStore::from_blobs(Arc::new(StoreBlobs::new(
                store, &shown,
            ))));
        }
        let dir = match url.split_once("://") {
            Some(("file", path)) => path,
            Some((scheme, _)) => {
                return Err(bad(format!(
                    "{url:?}: {scheme}:// is not supported; give s3://BUCKET/PREFIX or a local directory"
                )));
            }
            None => url,
        };
        if dir.is_empty() {
            return Err(bad("an empty cache location".into()));
        }
        CacheStore::open(dir)
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
}
