//! [`CacheError`]: what went wrong in the cache, with the path involved and what to do.

use crate::category::ErrorCategory;
use crate::market::InputError;
use std::path::PathBuf;
use std::time::Duration;

use crate::time::{TimeRange, format_ms};

use super::CACHE_DIR_ENV;

/// What went wrong in the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The dataset key or a range is invalid.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A local file-system operation failed.
    #[error("cache I/O error at {}: {source}; check that the cache directory is writable and the disk not full, choose another with --cache-dir, or run without the cache (--no-cache)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An object-store operation failed.
    #[error("cache storage error at {path}: {source}; {}", store_hint(source))]
    ObjectStore {
        /// The object's URL (`s3://bucket/key`), or its path in the store.
        path: String,
        /// The error.
        source: Box<object_store::Error>,
    },
    /// Encoding a Parquet file failed.
    #[error("cannot encode cache file {path}: {source}")]
    Parquet {
        /// The data file.
        path: String,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// Merging rows failed.
    #[error("cannot merge rows for {path}: {source}")]
    Arrow {
        /// The partition.
        path: String,
        /// The error.
        source: arrow::error::ArrowError,
    },
    /// A manifest cannot be parsed or contradicts itself.
    #[error("corrupt cache manifest {path}: {reason}; run `dsm cache verify` to quarantine it")]
    CorruptManifest {
        /// The manifest.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A data file does not match its manifest (checksum, size, rows) or cannot be decoded.
    #[error("corrupt cache data file {path}: {reason}; run `dsm cache verify` to quarantine it")]
    CorruptData {
        /// The data file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A kline that has not closed yet was offered for caching.
    #[error(
        "the candle opening at {} has not closed yet: open candles are never cached; end the complete range at the last closed candle",
        format_ms(*open_time)
    )]
    OpenCandle {
        /// Its open time (ms).
        open_time: i64,
    },
    /// The complete range reaches into the future.
    #[error(
        "the range claimed complete ends at {}, after now ({}): only past data can be complete",
        format_ms(*end),
        format_ms(*now)
    )]
    NotYetComplete {
        /// The claimed end (ms).
        end: i64,
        /// The time of the check (ms).
        now: i64,
    },
    /// A row lies outside the range the write vouches for.
    #[error("row {row} has time {} outside the complete range {range}: every row must lie in it", format_ms(*time))]
    OutOfRange {
        /// Row index in the batch.
        row: usize,
        /// The row's key time (ms).
        time: i64,
        /// The complete range of the write.
        range: TimeRange,
    },
    /// Two pieces of one [`CacheStore::write_many`](super::CacheStore::write_many) claim the same time.
    #[error(
        "pieces {first} and {second} of one cache write overlap: each time may come from one piece only"
    )]
    Overlap {
        /// The earlier piece's range.
        first: TimeRange,
        /// The later piece's range.
        second: TimeRange,
    },
    /// Rows are not sorted or not unique on their key.
    #[error("row {row}: {reason}; rows must be sorted by time and unique")]
    NotSorted {
        /// Row index in the batch.
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// The batch does not have the base schema of its dataset.
    #[error(
        "the batch for {dataset} does not have the expected schema: expected {expected}, got {actual}"
    )]
    SchemaMismatch {
        /// The dataset.
        dataset: String,
        /// Expected columns.
        expected: String,
        /// Actual columns.
        actual: String,
    },
    /// Another writer held the partition lock for too long.
    #[error("cache partition lock {} is held by another dsm process (waited {waited:?}); try again later", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long this writer waited.
        waited: Duration,
    },
    /// Concurrent writers kept replacing the partition.
    #[error(
        "cache partition {path} kept changing under concurrent writers ({attempts} attempts); try again"
    )]
    Conflict {
        /// The partition.
        path: String,
        /// Attempts made.
        attempts: u32,
    },
    /// No cache directory could be determined.
    #[error("no cache directory: set {CACHE_DIR_ENV} or pass a directory")]
    NoCacheDir,
}

/// What to check when an object-store operation failed.
fn store_hint(e: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    // A listing's failure comes as `Generic` with the status and S3's error code only in its
    // text.
    let text = e.to_string();
    let says = |codes: &[&str]| codes.iter().any(|c| text.contains(c));
    if says(&[
        "403 Forbidden",
        "401 Unauthorized",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
    ]) {
        return "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), and that they may read and write this bucket";
    }
    if says(&["NoSuchBucket"]) {
        return "check that the bucket exists and the cache URL names it";
    }
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), and that they may read and write this bucket"
        }
        E::NotFound { .. } => "check that the bucket exists and the cache URL names it",
        E::NotImplemented { .. } => {
            "this store lacks conditional writes (If-None-Match, If-Match), which a shared cache needs"
        }
        E::InvalidPath { .. } => "check the cache URL",
        _ => {
            "check AWS_ENDPOINT_URL and AWS_REGION, that the server is reachable and, for an http:// endpoint, AWS_ALLOW_HTTP=true"
        }
    }
}

/// A bad time is bad input, as for every dsm error.
impl From<crate::time::TimeError> for CacheError {
    fn from(e: crate::time::TimeError) -> CacheError {
        CacheError::Input(e.into())
    }
}

impl CacheError {
    /// The category of this error: corruption found on read is [`ErrorCategory::Integrity`], bad
    /// input [`ErrorCategory::Input`], everything else [`ErrorCategory::Local`].
    pub fn category(&self) -> ErrorCategory {
        match self {
            CacheError::Input(_) => ErrorCategory::Input,
            CacheError::CorruptData { .. } | CacheError::CorruptManifest { .. } => {
                ErrorCategory::Integrity
            }
            _ => ErrorCategory::Local,
        }
    }
}
