//! The Binance Vision archive client (`data.binance.vision`): archive keys, planning a range into
//! the fewest files, verified downloads, and parsing the zipped CSV files into dsm's Arrow schemas.
//!
//! This module owns everything about the archive: key grammar ([`FileKey`]), which files exist
//! ([`plan`], [`fallback_days`]), the `.CHECKSUM` protocol, retries, concurrency, and the CSV
//! dialects of each market and era ([`parse_zip`]). It must never return data that failed
//! verification (a SHA-256 mismatch, a broken zip, a bad row): such a file is retried with a fresh
//! download and then reported as a typed [`VisionError`] naming the file. A `404` is not an error:
//! it means "not published (yet)" and is reported as [`FileOutcome::NotPublished`].
//!
//! It keeps no global state and spawns no detached task: every request runs inside the caller's
//! future (CPU work on a blocking thread the call owns and cancels), and cancelling the
//! [`CancellationToken`](tokio_util::sync::CancellationToken) or dropping the future stops
//! everything promptly and closes the connections in use.
//!
//! ```no_run
//! use dsm::{Dataset, Interval, Market, Symbol, TimeRange};
//! use dsm::vision::{VisionClient, VisionConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = VisionClient::new(VisionConfig::default())?;
//! let range = TimeRange::new(
//!     dsm::time::parse_instant("2024-01-15")?,
//!     dsm::time::parse_instant("2024-03-10")?,
//! )?;
//! let btc = Dataset::klines(Market::Spot, Symbol::new("BTCUSDT")?, Interval::M1);
//! let got = client.fetch_range(&btc, range, &CancellationToken::new()).await?;
//! let rows: usize = got.batches.iter().map(|b| b.num_rows()).sum();
//! println!("{rows} candles from {} requests; not published: {:?}", got.requests, got.not_published);
//! # Ok(())
//! # }
//! ```

mod client;
mod key;
mod parse;

use std::time::Duration;

pub use client::{FileData, FileOutcome, FileResult, Listing, VisionClient, VisionRange};
pub use key::{FileKey, Period, fallback_days, has_daily_files, plan};
pub use parse::{parse_checksum, parse_zip};

/// How the Vision client is set up. `Default` talks to the real archive.
#[derive(Debug, Clone)]
pub struct VisionConfig {
    /// Archive base URL, default `https://data.binance.vision`.
    pub base_url: String,
    /// S3 ListObjects endpoint (path-style bucket), default
    /// `https://s3-ap-northeast-1.amazonaws.com/data.binance.vision`.
    pub list_url: String,
    /// Most files downloaded and parsed at once (bounds memory too). Default 8.
    pub concurrency: usize,
    /// TCP connect timeout of every request. Default 10 s.
    pub connect_timeout: Duration,
    /// How slow a download may be: the longest wait for the headers or the next bytes (default
    /// 10 s), and the least progress over a window (default 4 KiB/s over 10 s). Each attempt is
    /// also bounded by [`crate::Pace::attempt_limit`] of its announced size. A stalled or trickling
    /// server fails the attempt; after the retries the file fails (and the manager takes the
    /// period from REST).
    pub pace: crate::Pace,
    /// Retries of a transient failure (403, 429, 5xx, timeout, reset, truncated body) per request,
    /// and of an integrity failure (checksum mismatch, broken zip) per file. Default 3.
    pub retries: usize,
    /// First backoff delay (doubling, jittered). Default 200 ms.
    pub backoff_min: Duration,
    /// Longest backoff delay. Default 5 s.
    pub backoff_max: Duration,
    /// Accept a file whose `.CHECKSUM` is missing (404), unverified. Default false: reject.
    pub accept_missing_checksum: bool,
    /// Deadline of a whole operation ([`VisionClient::fetch`], [`VisionClient::fetch_range`], or one
    /// [`VisionClient::fetch_files`] stream). Default none.
    pub deadline: Option<Duration>,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            base_url: "https://data.binance.vision".into(),
            list_url: "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision".into(),
            concurrency: 8,
            connect_timeout: Duration::from_secs(10),
            pace: crate::Pace::default(),
            retries: 3,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            accept_missing_checksum: false,
            deadline: None,
        }
    }
}

impl VisionConfig {
    /// A config for an archive (and its listing) served at `base` — e.g. an emulator — with the
    /// listing at `{base}/data.binance.vision`.
    pub fn for_base(base: &str) -> VisionConfig {
        let base = base.trim_end_matches('/');
        VisionConfig {
            base_url: base.to_owned(),
            list_url: format!("{base}/data.binance.vision"),
            ..VisionConfig::default()
        }
    }
}

/// What went wrong fetching or reading an archive file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VisionError {
    /// The downloaded zip does not hash to its `.CHECKSUM` (after retries).
    #[error(
        "checksum mismatch for {url}: .CHECKSUM says {expected}, the download hashes to {actual}; the file was rejected (Binance has served such files; try again later or use REST for this period)"
    )]
    ChecksumMismatch {
        /// The zip URL.
        url: String,
        /// SHA-256 from the `.CHECKSUM`.
        expected: String,
        /// SHA-256 of the bytes received.
        actual: String,
    },
    /// The `.CHECKSUM` sidecar is missing (404) and unverified files are not accepted.
    #[error(
        "{url} has no .CHECKSUM, so it cannot be verified; it was rejected (set accept_missing_checksum to take it unverified)"
    )]
    MissingChecksum {
        /// The zip URL.
        url: String,
    },
    /// The `.CHECKSUM` sidecar is not a sha256sum line.
    #[error("the .CHECKSUM of {url} is not a SHA-256 line: {content:?}")]
    BadChecksumFile {
        /// The zip URL.
        url: String,
        /// The start of what was received.
        content: String,
    },
    /// The zip cannot be read (after retries): not a zip, no CSV entry, inflate or CRC failure.
    #[error("{url} is a broken archive ({reason}); it was rejected")]
    CorruptArchive {
        /// The zip URL (or object key).
        url: String,
        /// What is broken.
        reason: String,
    },
    /// The file is larger than any real archive file of its kind and period (a hostile or broken
    /// file): refused before it is held in memory.
    #[error(
        "{url}: {what} {bytes} bytes, more than any real file of this kind can hold ({limit}); it was rejected"
    )]
    TooLarge {
        /// The zip URL (or object key).
        url: String,
        /// What was too large (`the server announces`, `its CSV entry declares`, ...).
        what: &'static str,
        /// The size seen.
        bytes: u64,
        /// The most a real file can hold.
        limit: u64,
    },
    /// A row of the CSV is invalid.
    #[error("{url} line {row}: {reason}; the file was rejected")]
    InvalidData {
        /// The zip URL (or object key).
        url: String,
        /// 1-based line number in the CSV (a header counts as line 1).
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// An HTTP status other than 200/404 (after retries when transient).
    #[error("{url} answered HTTP {status} ({attempts} attempt{}){}", crate::http::plural(*attempts), http_hint(*status))]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// Whether the status is one that is retried (403, 408, 429, 5xx).
        transient: bool,
        /// Attempts made.
        attempts: u32,
    },
    /// The body ended before its announced length (after retries).
    #[error("{url}: body truncated at {received} of {expected} bytes ({attempts} attempt{}); the archive or the network is unstable, try again later", crate::http::plural(*attempts))]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        received: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// A connection or protocol failure (after retries).
    #[error("network error on {url} ({attempts} attempt{}): {source}; check the network or the --vision-url", crate::http::plural(*attempts))]
    Network {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
        /// Attempts made.
        attempts: u32,
    },
    /// Connect or the wait for the headers timed out (after retries).
    #[error("{url} did not answer in time ({attempts} attempt{}); check the network, or raise --timeout", crate::http::plural(*attempts))]
    Timeout {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The body came too slowly (a stalled or trickling server), after retries.
    #[error("{url} was too slow: {reason} ({attempts} attempt{}); check the network, or raise --timeout", crate::http::plural(*attempts))]
    Slow {
        /// The URL.
        url: String,
        /// What was too slow.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A listing page could not be read.
    #[error("listing {url} returned an unreadable page: {reason}")]
    Listing {
        /// The listing URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad input (e.g. a kind or interval not offered on the market), rejected before any request.
    #[error(transparent)]
    Input(#[from] crate::market::InputError),
    /// The client could not be built (bad configuration).
    #[error("invalid Vision client configuration: {0}")]
    Config(String),
    /// Cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// The configured deadline passed.
    #[error("the Vision operation did not finish within its deadline of {0:?}")]
    DeadlineExceeded(Duration),
}

fn http_hint(status: u16) -> &'static str {
    match status {
        403 => {
            "; access denied: a firewall, a proxy or Binance's geo-block refuses this network (use another network, or --vision-url for a mirror)"
        }
        451 => {
            "; Binance refuses this location (geo-block): use another network, or --vision-url for a mirror"
        }
        500..=599 => "; the archive is failing, try again later",
        _ => "",
    }
}

/// A bad time is bad input, as for every dsm error.
impl From<crate::time::TimeError> for VisionError {
    fn from(e: crate::time::TimeError) -> VisionError {
        VisionError::Input(e.into())
    }
}

impl VisionError {
    /// The category of this error (see [`crate::ErrorCategory`]).
    pub fn category(&self) -> crate::ErrorCategory {
        use crate::ErrorCategory as C;
        match self {
            VisionError::Cancelled => C::Cancelled,
            VisionError::Config(_) | VisionError::Input(_) => C::Input,
            e if e.is_integrity() => C::Integrity,
            _ => C::Upstream,
        }
    }

    /// Records that this error is the last of `n` attempts.
    pub(crate) fn after(mut self, n: u32) -> VisionError {
        match &mut self {
            VisionError::Http { attempts, .. }
            | VisionError::Truncated { attempts, .. }
            | VisionError::Network { attempts, .. }
            | VisionError::Timeout { attempts, .. }
            | VisionError::Slow { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }

    /// Whether the data itself failed verification (checksum, archive, rows, missing checksum).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            VisionError::ChecksumMismatch { .. }
                | VisionError::MissingChecksum { .. }
                | VisionError::BadChecksumFile { .. }
                | VisionError::CorruptArchive { .. }
                | VisionError::InvalidData { .. }
                | VisionError::TooLarge { .. }
        )
    }

    /// Whether a new attempt may succeed: network trouble, timeouts, truncated bodies and
    /// 403/408/429/5xx statuses.
    pub fn is_transient(&self) -> bool {
        match self {
            VisionError::Http { transient, .. } => *transient,
            VisionError::Truncated { .. }
            | VisionError::Network { .. }
            | VisionError::Timeout { .. }
            | VisionError::Slow { .. }
            | VisionError::Listing { .. } => true,
            _ => false,
        }
    }

    /// Whether a fresh download of the file may fix it (checksum mismatch or broken archive).
    fn is_redownloadable(&self) -> bool {
        matches!(
            self,
            VisionError::ChecksumMismatch { .. }
                | VisionError::CorruptArchive { .. }
                | VisionError::BadChecksumFile { .. }
        )
    }
}
