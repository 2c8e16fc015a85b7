//! Exit codes: the one place that decides how a failure maps to the process's exit status.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (gaps in the data are reported, not failures) |
//! | 1 | local failure: cache directory, output file, or an internal error |
//! | 2 | bad input or usage (also clap's usage errors) |
//! | 3 | data not available: unknown symbol, range entirely before listing or in the future |
//! | 4 | upstream or network failure after retries, including a rate-limit ban |
//! | 5 | integrity failure (checksum, corrupt archive, invalid rows) |
//! | 6 | incomplete: part of the range could not be obtained (and `--allow-partial` was not given) |
//! | 130 | interrupted by SIGINT (Ctrl-C), or cancelled |
//! | 143 | terminated by SIGTERM |
//!
//! Library errors map through [`dsm::ErrorCategory`]; the CLI's own failures are typed here
//! ([`UsageError`], [`Interrupted`], [`StdoutClosed`]) so the mapping never depends on message text.
//! This module must never print anything.

use std::process::ExitCode;

use dsm::ErrorCategory;

/// Why the process ends, and with which status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Success,
    /// 1: a local failure (cache directory, output file) or an internal error.
    Local,
    /// 2: bad input or usage.
    Usage,
    /// 3: the data does not exist upstream.
    Unavailable,
    /// 4: upstream or network failure after retries.
    Upstream,
    /// 5: integrity failure.
    Integrity,
    /// 6: part of the range could not be obtained.
    Incomplete,
    /// 130: SIGINT or cancellation.
    Interrupted,
    /// 143: SIGTERM.
    Terminated,
    /// 0, printing nothing: stdout was closed by the reader (`dsm ... --json | head -c1`).
    StdoutClosed,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success | Exit::StdoutClosed => 0,
            Exit::Local => 1,
            Exit::Usage => 2,
            Exit::Unavailable => 3,
            Exit::Upstream => 4,
            Exit::Integrity => 5,
            Exit::Incomplete => 6,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// Whether the error should be reported on stderr.
    pub fn reports_error(self) -> bool {
        !matches!(self, Exit::Success | Exit::StdoutClosed)
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// The exit for a library error category.
pub fn for_category(category: ErrorCategory) -> Exit {
    match category {
        ErrorCategory::Input => Exit::Usage,
        ErrorCategory::Unavailable => Exit::Unavailable,
        ErrorCategory::Upstream => Exit::Upstream,
        ErrorCategory::Integrity => Exit::Integrity,
        ErrorCategory::Incomplete => Exit::Incomplete,
        ErrorCategory::Cancelled => Exit::Interrupted,
        ErrorCategory::Local => Exit::Local,
    }
}

/// A usage error found by the CLI itself (not by clap or the library), e.g. an unknown output
/// extension.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Which signal interrupted the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

/// The run was interrupted by a signal; partial output has been removed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}; no output was written", match .0 { Signal::Interrupt => "SIGINT", Signal::Terminate => "SIGTERM" })]
pub struct Interrupted(pub Signal);

/// `dsm cache verify` found (and quarantined) bad cache files: an integrity failure (exit 5).
#[derive(Debug, thiserror::Error)]
#[error("the cache had {0} problem(s); the bad files were quarantined and will be fetched again")]
pub struct CacheProblems(pub usize);

/// A sync left symbols incomplete: the category of its worst failure decides the exit (4 for
/// an upstream failure, 6 for what is only missing).
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub struct SyncIncomplete(pub ErrorCategory, pub String);

/// Stdout was closed by its reader: stop quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// The exit for an error: the first error in its chain that says what it is decides; anything
/// unrecognised is a local failure (1).
pub fn for_error(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<dsm::Error>() {
            return for_category(e.category());
        }
        if cause.is::<dsm::InputError>()
            || cause.is::<dsm::time::TimeError>()
            || cause.is::<UsageError>()
        {
            return Exit::Usage;
        }
        if let Some(Interrupted(sig)) = cause.downcast_ref::<Interrupted>() {
            return match sig {
                Signal::Interrupt => Exit::Interrupted,
                Signal::Terminate => Exit::Terminated,
            };
        }
        if cause.is::<StdoutClosed>() {
            return Exit::StdoutClosed;
        }
        if let Some(SyncIncomplete(category, _)) = cause.downcast_ref::<SyncIncomplete>() {
            return for_category(*category);
        }
        if cause.is::<CacheProblems>() {
            return Exit::Integrity;
        }
    }
    Exit::Local
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn input_is_2() {
        assert_eq!(for_category(ErrorCategory::Input).code(), 2);
    }

    #[test]
    fn unavailable_is_3() {
        assert_eq!(for_category(ErrorCategory::Unavailable).code(), 3);
    }

    #[test]
    fn upstream_is_4() {
        assert_eq!(for_category(ErrorCategory::Upstream).code(), 4);
    }

    #[test]
    fn integrity_is_5() {
        assert_eq!(for_category(ErrorCategory::Integrity).code(), 5);
    }

    #[test]
    fn incomplete_is_6() {
        assert_eq!(for_category(ErrorCategory::Incomplete).code(), 6);
    }

    #[test]
    fn cancelled_is_130() {
        assert_eq!(for_category(ErrorCategory::Cancelled).code(), 130);
    }

    #[test]
    fn local_is_1() {
        assert_eq!(for_category(ErrorCategory::Local).code(), 1);
    }

    #[test]
    fn library_errors_are_found_under_context() {
        let err = anyhow::Error::from(dsm::Error::Cancelled).context("fetching BTCUSDT");
        assert_eq!(for_error(&err), Exit::Interrupted);
        let input = dsm::InputError::UnknownMarket("x".into());
        let err = Err::<(), _>(input)
            .context("parsing")
            .expect_err("an error");
        assert_eq!(for_error(&err), Exit::Usage);
        let time = dsm::TimeRange::new(2, 1).expect_err("an empty range");
        let err = anyhow::Error::from(time).context("parsing --end");
        assert_eq!(for_error(&err), Exit::Usage);
    }

    #[test]
    fn cli_errors_have_their_own_codes() {
        let usage = anyhow::Error::from(UsageError("bad extension".into()));
        assert_eq!(for_error(&usage).code(), 2);
        let int = anyhow::Error::from(Interrupted(Signal::Interrupt));
        assert_eq!(for_error(&int).code(), 130);
        let term = anyhow::Error::from(Interrupted(Signal::Terminate));
        assert_eq!(for_error(&term).code(), 143);
        let bad_cache = anyhow::Error::from(CacheProblems(2));
        assert_eq!(for_error(&bad_cache).code(), 5);
        let pipe = anyhow::Error::from(StdoutClosed);
        assert_eq!(for_error(&pipe).code(), 0);
        assert!(!for_error(&pipe).reports_error());
    }

    #[test]
    fn unknown_errors_are_local_failures() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = anyhow::Error::from(io).context("creating out.parquet");
        assert_eq!(for_error(&err).code(), 1);
    }
}
