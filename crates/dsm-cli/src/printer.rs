//! All of dsm's own output goes through here: results on stdout, status and errors on stderr.
//!
//! The workspace lints forbid `print!`/`eprint!` elsewhere so that there is exactly one place that
//! decides what `-q` silences, how errors look, and what a closed stdout means (a quiet stop, never
//! a panic). Logs go through `tracing`; progress bars through `indicatif` (both to stderr).

use std::io::{self, Write};

use crate::exit::StdoutClosed;

/// Prints results and messages.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    quiet: bool,
    verbose: bool,
}

impl Printer {
    /// A printer; `quiet` silences status messages, `verbose` adds error causes.
    pub fn new(quiet: bool, verbose: bool) -> Printer {
        Printer { quiet, verbose }
    }

    /// Whether status output (summaries, progress) is silenced.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Whether `-v` was given.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Writes `text` and a newline to stdout. A closed stdout becomes [`StdoutClosed`].
    pub fn out(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = io::stdout().lock();
        let written = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
            Err(e) => Err(anyhow::Error::from(e).context("writing to stdout")),
        }
    }

    /// A status line on stderr, unless quiet.
    pub fn status(&self, text: &str) {
        if !self.quiet {
            // Allowed here only: this module is the CLI's single output point.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{text}");
            }
        }
    }

    /// A warning on stderr (even when quiet: it is about the data the user got).
    pub fn warn(&self, text: &str) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("warning: {text}");
        }
    }

    /// Reports a failure: one line; with `-v`, one more line per cause.
    pub fn error(&self, err: &anyhow::Error) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: {}", render_error(err, self.verbose));
        }
    }
}

/// An error as text: the outermost message, then each cause whose text it does not already hold
/// (one line: a library error names its path or URL and what to do, and embeds its own source);
/// with `verbose` every cause on its own indented line.
pub fn render_error(err: &anyhow::Error, verbose: bool) -> String {
    let top = err.to_string();
    if verbose {
        let mut s = top;
        for cause in err.chain().skip(1) {
            s.push_str("\n  caused by: ");
            s.push_str(&cause.to_string());
        }
        return s;
    }
    let mut line = top;
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// Reports a panic as one line instead of a backtrace (installed as the panic hook).
pub fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let msg = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    #[allow(clippy::print_stderr)]
    {
        eprintln!("error: internal error (a dsm bug, please report it): {msg}{at}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn errors_are_one_line_with_their_root_cause() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "permission denied");
        let err = Err::<(), _>(io)
            .context("creating /x/.out.parquet.tmp")
            .context("writing BTCUSDT to /x/out.parquet")
            .expect_err("an error");
        let line = render_error(&err, false);
        assert_eq!(
            line,
            "writing BTCUSDT to /x/out.parquet: creating /x/.out.parquet.tmp: permission denied",
            "one line: what failed, where, and why"
        );
        let verbose = render_error(&err, true);
        assert_eq!(verbose.lines().count(), 3);
        assert!(verbose.contains("caused by: creating /x/.out.parquet.tmp"));
        // A library error that names its path and embeds its source is shown whole, once.
        let cache = dsm::cache::CacheError::Io {
            path: "/c/klines-v1".into(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "Not a directory"),
        };
        let err = Err::<(), _>(dsm::Error::from(cache))
            .context("fetching BTCUSDT")
            .expect_err("an error");
        let line = render_error(&err, false);
        assert!(
            line.starts_with("fetching BTCUSDT: cache I/O error at /c/klines-v1: Not a directory;"),
            "{line}"
        );
        assert_eq!(line.matches("Not a directory").count(), 1, "{line}");
    }
}
