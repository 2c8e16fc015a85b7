//! How a caller should treat an error: the categories every dsm error falls in, and that the CLI
//! maps to exit codes.

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

impl ErrorCategory {
    /// The category's name in reports: `input`, `unavailable`, `upstream`, `integrity`,
    /// `incomplete`, `cancelled` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Input => "input",
            ErrorCategory::Unavailable => "unavailable",
            ErrorCategory::Upstream => "upstream",
            ErrorCategory::Integrity => "integrity",
            ErrorCategory::Incomplete => "incomplete",
            ErrorCategory::Cancelled => "cancelled",
            ErrorCategory::Local => "local",
        }
    }
}
