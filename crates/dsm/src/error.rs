//! dsm's errors: one [`Error`] for callers to match on, wrapping each module's own typed error.
//!
//! Every variant carries the context a user needs (which symbol, which file, which digest) and its
//! message says what happened and, where it can, what to do. [`Error::category`] groups variants the
//! way the CLI maps them to exit codes.

use crate::market::{DataKind, Interval, Market, Symbol};
use crate::time::{TimeRange, format_ms};

/// Bad input: rejected before any network call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Unknown market name.
    #[error("unknown market {0:?}: use spot, um (USD-M futures) or cm (COIN-M futures)")]
    UnknownMarket(String),
    /// Unknown data kind.
    #[error(
        "unknown data kind {0:?}: use klines, mark-klines, index-klines, premium-klines, funding, aggtrades or trades"
    )]
    UnknownKind(String),
    /// Unknown interval name.
    #[error(
        "unknown interval {0:?}: use 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M (1mo) — names are case-sensitive"
    )]
    UnknownInterval(String),
    /// The interval exists but not on this market.
    #[error("interval {interval} is not offered on {market}: 1s klines exist on spot only")]
    IntervalNotOnMarket {
        /// The interval asked for.
        interval: Interval,
        /// The market asked for.
        market: Market,
    },
    /// The kind exists but not on this market.
    #[error(
        "{kind} data is not offered on {market}: funding and mark/index/premium klines are futures only (um, cm)"
    )]
    KindNotOnMarket {
        /// The kind asked for.
        kind: DataKind,
        /// The market asked for.
        market: Market,
    },
    /// A kline-class kind was asked for without an interval.
    #[error("{kind} needs an interval, e.g. 1m or 1h")]
    MissingInterval {
        /// The kind asked for.
        kind: DataKind,
    },
    /// An interval was given for a kind that has none.
    #[error("{kind} has no interval (got {interval}); leave the interval out")]
    UnexpectedInterval {
        /// The kind asked for.
        kind: DataKind,
        /// The interval given.
        interval: Interval,
    },
    /// The symbol is not a valid symbol at all.
    #[error(
        "invalid symbol {symbol:?}: {reason}; symbols are upper-case A-Z, 0-9 and _, like BTCUSDT"
    )]
    InvalidSymbol {
        /// The text given.
        symbol: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A lower-case symbol.
    #[error("invalid symbol {symbol:?}: symbols are upper-case; did you mean {suggestion}?")]
    LowercaseSymbol {
        /// The text given.
        symbol: String,
        /// The upper-case form.
        suggestion: String,
    },
    /// The symbol does not have the form used on that market.
    #[error("symbol {symbol} does not look like a {market} symbol: expected {expected}")]
    SymbolNotOnMarket {
        /// The text given.
        symbol: String,
        /// The market asked for.
        market: Market,
        /// The expected form.
        expected: &'static str,
    },
    /// `start >= end`.
    #[error("empty time range: start {} must be before end {}", format_ms(*start), format_ms(*end))]
    EmptyRange {
        /// Start (ms).
        start: i64,
        /// End (ms).
        end: i64,
    },
    /// Unparseable time.
    #[error("invalid time {input:?}: {reason}")]
    InvalidTime {
        /// The text given.
        input: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Some other invalid setting.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

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

/// `"s"` unless `n` is 1: `"{n} attempt{}"` in the network errors of the sources.
pub(crate) fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
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

/// How an error should be treated by a caller (the CLI maps these to exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// Bad input or usage (exit 2).
    Input,
    /// The data does not exist upstream: unknown symbol, range before listing or in the future (exit 3).
    Unavailable,
    /// Network or upstream failure after retries, including a rate-limit ban (exit 4).
    Upstream,
    /// Data failed an integrity check (exit 5).
    Integrity,
    /// Part of the range could not be obtained and a partial answer was not allowed (exit 6).
    Incomplete,
    /// Cancelled by the caller or by shutdown (exit 130).
    Cancelled,
    /// A local failure: the cache directory, the output file (exit 1).
    Local,
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

/// Result with dsm's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
