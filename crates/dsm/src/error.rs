//! dsm's errors: one [`Error`] for callers to match on, wrapping each module's own typed error.
//!
//! The errors form a ladder like the modules: [`TimeError`] (in [`crate::time`]) at the bottom,
//! [`InputError`] beside the market vocabulary it names ([`crate::market`]), each source's and the
//! cache's own error above them, and [`Error`] on top, with the manager's [`UnavailableError`] and
//! [`IncompleteError`].
//!
//! Every variant carries the context a user needs (which symbol, which file, which digest) and its
//! message says what happened and, where it can, what to do. [`Error::category`] groups variants the
//! way the CLI maps them to exit codes.

pub use crate::category::ErrorCategory;
pub use crate::market::InputError;
use crate::market::Symbol;
pub use crate::time::TimeError;
use crate::time::{TimeRange, format_ms};

/// The data does not exist upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnavailableError {
    /// The range starts in the future.
    #[error("{symbol}: the range starts at {} which is in the future; nothing exists yet", format_ms(*start))]
    Future {
        /// The symbol asked for.
        symbol: Symbol,
        /// Start of the range (ms).
        start: i64,
    },
    /// The range starts at or after a delivery contract's delivery.
    #[error(
        "{symbol} was delivered at {}: nothing exists after it; end the range before then, or use the next contract",
        format_ms(*delivered)
    )]
    Delivered {
        /// The contract.
        symbol: Symbol,
        /// Its delivery instant (ms).
        delivered: i64,
    },
    /// The range lies wholly outside the time the archive publishes a discontinued or late-started
    /// series in (the book ticker ended in 2024; liquidation snapshots ran 2023-06-25..2024-10-14).
    #[error(
        "{dataset}: the archive publishes this series only {}; the range lies outside it: ask for a range inside it",
        life(*first, *end)
    )]
    OutsideArchive {
        /// What was asked for.
        dataset: crate::Dataset,
        /// The series' first instant, when it starts late (ms).
        first: Option<i64>,
        /// The series' end, when it was discontinued (ms, exclusive).
        end: Option<i64>,
    },
    /// Neither source has a single row in the range.
    #[error(
        "{symbol}: the exchange has no data in {range}; check the symbol's listing date (and delisting) and the market"
    )]
    NoData {
        /// The symbol asked for.
        symbol: Symbol,
        /// The range asked for.
        range: TimeRange,
    },
}

fn life(first: Option<i64>, end: Option<i64>) -> String {
    match (first, end) {
        (Some(f), Some(e)) => format!("from {} until {}", format_ms(f), format_ms(e)),
        (Some(f), None) => format!("from {}", format_ms(f)),
        (None, Some(e)) => format!("until {}", format_ms(e)),
        (None, None) => "always".into(),
    }
}

/// Part of the range could not be obtained, and it is neither a gap the exchange confirmed nor
/// outside the symbol's life: returned instead of a shorter answer unless the request allows a
/// partial one ([`crate::Request::allow_partial`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{symbol}: incomplete answer: {} could not be obtained from the allowed sources ({}); use another --source, try again later, or allow a partial answer (--allow-partial) to take what was obtained",
    ranges(.missing),
    why(.reasons)
)]
pub struct IncompleteError {
    /// The symbol.
    pub symbol: Symbol,
    /// What is missing, sorted and merged.
    pub missing: Vec<TimeRange>,
    /// What failed (a source that was down, a file that failed its checks), when something did.
    pub reasons: Vec<String>,
}

/// How the manager reports, among a symbol's failures, a range no allowed source could supply.
pub(crate) const NOT_AVAILABLE: &str = "not available from the allowed sources: ";

impl IncompleteError {
    /// The error for `symbol` missing `missing`, with the reasons among `failures` (the
    /// [`crate::manager::Summary::failures`] of its answer).
    pub fn new(symbol: Symbol, missing: Vec<TimeRange>, failures: &[String]) -> IncompleteError {
        IncompleteError {
            symbol,
            missing,
            reasons: failures
                .iter()
                .filter(|f| !f.starts_with(NOT_AVAILABLE))
                .cloned()
                .collect(),
        }
    }
}

fn why(reasons: &[String]) -> String {
    match reasons {
        [] => "not cached, not yet published, or no allowed source serves it".to_owned(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first}; and {} more problems", rest.len()),
    }
}

fn ranges(rs: &[TimeRange]) -> String {
    const SHOWN: usize = 3;
    let mut s: Vec<String> = rs.iter().take(SHOWN).map(ToString::to_string).collect();
    if rs.len() > SHOWN {
        s.push(format!("and {} more ranges", rs.len() - SHOWN));
    }
    s.join(", ")
}

/// The error type of every public dsm operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input, rejected before any network call.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The data does not exist upstream (unknown symbol, before listing, in the future).
    #[error(transparent)]
    Unavailable(#[from] UnavailableError),
    /// Part of the range could not be obtained (see [`IncompleteError`]).
    #[error(transparent)]
    Incomplete(#[from] IncompleteError),
    /// Building or merging Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The local cache failed (corruption found on read is an integrity error).
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// The operation was cancelled (token, shutdown, or Ctrl-C).
    #[error("cancelled")]
    Cancelled,
    /// The caller's deadline passed before the operation finished.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(std::time::Duration),
    /// The REST API failed (see [`crate::rest::RestError`]).
    #[error(transparent)]
    Rest(#[from] crate::rest::RestError),
    /// A Binance Vision archive failure (integrity, upstream, or cancellation).
    #[error(transparent)]
    Vision(#[from] crate::vision::VisionError),
}

impl Error {
    /// The category of this error, for exit codes and retry decisions.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Input(_) => ErrorCategory::Input,
            Error::Unavailable(_) => ErrorCategory::Unavailable,
            Error::Incomplete(_) => ErrorCategory::Incomplete,
            Error::Arrow(_) => ErrorCategory::Local,
            Error::Cache(e) => e.category(),
            Error::Cancelled => ErrorCategory::Cancelled,
            Error::DeadlineExceeded(_) => ErrorCategory::Upstream,
            Error::Rest(e) => e.category(),
            Error::Vision(e) => e.category(),
        }
    }
}

impl From<TimeError> for Error {
    fn from(e: TimeError) -> Error {
        Error::Input(e.into())
    }
}

/// Result with dsm's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
