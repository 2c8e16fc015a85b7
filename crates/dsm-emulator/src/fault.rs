//! Fault injection: what can go wrong, where (a path glob) and how often.
//!
//! Text syntax (shared by `--fault` and `POST /_emulator/faults`, one fault per line):
//!
//! ```text
//! KIND[=ARG][@GLOB][#N | %P | ~N]
//! ```
//! `GLOB` matches the request path (`*` = any run of characters, including `/`), default `*`;
//! `#N` = only the first N matching requests, `~N` = every matching request after the first N,
//! `%P` = each matching request with probability P
//! (0..1, drawn from the seeded generator); none = always.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Read the request, never answer (until shutdown closes the connection).
    Hang,
    /// Send the body at this many bytes per second.
    SlowBody {
        /// Throughput.
        bytes_per_sec: u64,
    },
    /// Send about half the body, then drop the connection.
    ResetMidBody,
    /// Announce the full `Content-Length`, send about half the body, then close.
    TruncatedBody,
    /// `.CHECKSUM` whose hash does not match the zip.
    ChecksumMismatch,
    /// A damaged zip; its `.CHECKSUM` (while the fault is active) matches the damaged bytes.
    CorruptZipMatchingChecksum,
    /// A valid zip, and a `.CHECKSUM` that matches it, holding only the first part of the file's
    /// rows (Binance has published such files): `fraction` of the data lines are kept.
    ShortFile {
        /// Share of the data lines kept (0..1).
        fraction: f64,
    },
    /// A small zip whose CSV entry inflates to `bytes` bytes with no line break (a hostile file),
    /// with a `.CHECKSUM` that matches it.
    NoNewline {
        /// The entry's inflated size (at most 4 GiB − 1: no zip64).
        bytes: u64,
    },
    /// The file was re-published with different rows (Binance does this): `fraction` of the data
    /// lines carry a changed quantity (candle volume; trade, aggTrade quantity; funding rate), and
    /// the `.CHECKSUM` matches the new bytes.
    Republish {
        /// Share of the data lines changed (0..1].
        fraction: f64,
    },
    /// `.CHECKSUM` answers 404.
    MissingChecksum,
    /// HTTP 500.
    Status500,
    /// S3 `403 AccessDenied` XML.
    AccessDenied403,
    /// HTTP 429 with `Retry-After` (REST: `-1003` body).
    TooManyRequests429,
    /// HTTP 418 with `Retry-After` (REST: `-1003` "IP banned until" body).
    Banned418,
    /// REST klines/funding responses repeat some rows.
    DuplicateRows,
    /// Exchange downtime: no candles (and no trades) opened in `[start, end)`, in every source.
    /// Not path-targeted.
    Gap {
        /// First missing instant.
        start: DateTime<Utc>,
        /// End of the downtime (exclusive).
        end: DateTime<Utc>,
        /// Only this symbol (or pair), else every series.
        symbol: Option<String>,
    },
}

/// How many matching requests a fault hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultLimit {
    /// The first `n` matching requests.
    First(u64),
    /// Each matching request with this probability.
    Probability(f64),
    /// Every matching request after the first `n` (a server that starts failing mid-run).
    After(u64),
    /// Every matching request.
    Always,
}

/// A fault: kind, target path glob, limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Glob on the request path, `*` wildcard (e.g. `/data/spot/*/klines/BTCUSDT/1m/*.zip`).
    pub target: String,
    /// How often.
    pub limit: FaultLimit,
}

impl Fault {
    /// A fault on `target` for every matching request.
    pub fn new(kind: FaultKind, target: &str) -> Fault {
        Fault {
            kind,
            target: target.to_string(),
            limit: FaultLimit::Always,
        }
    }

    /// Only the first `n` matching requests.
    pub fn first(mut self, n: u64) -> Fault {
        self.limit = FaultLimit::First(n);
        self
    }

    /// Each matching request with probability `p`.
    pub fn probability(mut self, p: f64) -> Fault {
        self.limit = FaultLimit::Probability(p);
        self
    }

    /// A data gap (downtime) for all symbols or one.
    pub fn gap(start: DateTime<Utc>, end: DateTime<Utc>, symbol: Option<&str>) -> Fault {
        Fault::new(
            FaultKind::Gap {
                start,
                end,
                symbol: symbol.map(str::to_string),
            },
            "*",
        )
    }

    /// Whether the glob matches `path`.
    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.target.as_bytes(), path.as_bytes())
    }
}

/// `*` matches any run (including `/`); everything else literally.
pub(crate) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// A parse error of the fault syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault {spec:?}: {reason}")]
pub struct FaultParseError {
    /// The text given.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms);
    }
    None
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(spec: &str) -> Result<Fault, FaultParseError> {
        let err = |reason: &str| FaultParseError {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let s = spec.trim();
        // Limit suffix.
        let (s, limit) = if let Some((a, n)) = s.rsplit_once('#') {
            let n = n.parse().map_err(|_| err("`#N` needs a whole number"))?;
            (a, FaultLimit::First(n))
        } else if let Some((a, n)) = s.rsplit_once('~') {
            let n = n.parse().map_err(|_| err("`~N` needs a whole number"))?;
            (a, FaultLimit::After(n))
        } else if let Some((a, p)) = s.rsplit_once('%') {
            let p: f64 = p.parse().map_err(|_| err("`%P` needs a probability"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(err("probability must be within 0..1"));
            }
            (a, FaultLimit::Probability(p))
        } else {
            (s, FaultLimit::Always)
        };
        let (head, target) = match s.split_once('@') {
            Some((h, t)) if !t.is_empty() => (h, t.to_string()),
            Some(_) => return Err(err("empty target after `@`")),
            None => (s, "*".to_string()),
        };
        let (name, arg) = match head.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (head.trim(), None),
        };
        let no_arg = |k: FaultKind| match arg {
            Some(_) => Err(err("this fault takes no `=ARG`")),
            None => Ok(k),
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "hang" => no_arg(FaultKind::Hang)?,
            "slow" => FaultKind::SlowBody {
                bytes_per_sec: arg
                    .ok_or_else(|| err("slow needs `=BYTES_PER_SEC`"))?
                    .parse()
                    .map_err(|_| err("slow needs a whole number of bytes per second"))?,
            },
            "reset" => no_arg(FaultKind::ResetMidBody)?,
            "truncate" => no_arg(FaultKind::TruncatedBody)?,
            "checksum-mismatch" => no_arg(FaultKind::ChecksumMismatch)?,
            "corrupt-zip" => no_arg(FaultKind::CorruptZipMatchingChecksum)?,
            "short-file" => {
                let fraction = match arg {
                    Some(a) => a
                        .parse::<f64>()
                        .ok()
                        .filter(|f| (0.0..1.0).contains(f))
                        .ok_or_else(|| err("short-file takes a fraction within 0..1"))?,
                    None => 0.57,
                };
                FaultKind::ShortFile { fraction }
            }
            "no-newline" => {
                let bytes = match arg {
                    Some(a) => a
                        .parse::<u64>()
                        .ok()
                        .filter(|b| *b > 0 && *b < 1 << 32)
                        .ok_or_else(|| err("no-newline takes a size in bytes below 4 GiB"))?,
                    None => 1 << 30,
                };
                FaultKind::NoNewline { bytes }
            }
            "republish" => {
                let fraction = match arg {
                    Some(a) => a
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 0.0 && *f <= 1.0)
                        .ok_or_else(|| err("republish takes a fraction within (0, 1]"))?,
                    None => 0.1,
                };
                FaultKind::Republish { fraction }
            }
            "missing-checksum" => no_arg(FaultKind::MissingChecksum)?,
            "status500" | "500" => no_arg(FaultKind::Status500)?,
            "status403" | "403" => no_arg(FaultKind::AccessDenied403)?,
            "status429" | "429" => no_arg(FaultKind::TooManyRequests429)?,
            "status418" | "418" => no_arg(FaultKind::Banned418)?,
            "duplicate-rows" => no_arg(FaultKind::DuplicateRows)?,
            "gap" => {
                let a = arg.ok_or_else(|| err("gap needs `=START..END[:SYMBOL]`"))?;
                let (start, rest) = a
                    .split_once("..")
                    .ok_or_else(|| err("gap needs `START..END`"))?;
                let (end, symbol) = match rest.rsplit_once(':') {
                    Some((e, sym))
                        if parse_time(e).is_some()
                            && !sym.is_empty()
                            && sym.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                    {
                        (e, Some(sym.to_string()))
                    }
                    _ => (rest, None),
                };
                let start = parse_time(start).ok_or_else(|| err("bad gap start time"))?;
                let end = parse_time(end).ok_or_else(|| err("bad gap end time"))?;
                if end <= start {
                    return Err(err("gap end must be after its start"));
                }
                FaultKind::Gap { start, end, symbol }
            }
            _ => return Err(err("unknown fault kind")),
        };
        Ok(Fault {
            kind,
            target,
            limit,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FaultKind::Hang => f.write_str("hang")?,
            FaultKind::SlowBody { bytes_per_sec } => write!(f, "slow={bytes_per_sec}")?,
            FaultKind::ResetMidBody => f.write_str("reset")?,
            FaultKind::TruncatedBody => f.write_str("truncate")?,
            FaultKind::ChecksumMismatch => f.write_str("checksum-mismatch")?,
            FaultKind::CorruptZipMatchingChecksum => f.write_str("corrupt-zip")?,
            FaultKind::ShortFile { fraction } => write!(f, "short-file={fraction}")?,
            FaultKind::NoNewline { bytes } => write!(f, "no-newline={bytes}")?,
            FaultKind::Republish { fraction } => write!(f, "republish={fraction}")?,
            FaultKind::MissingChecksum => f.write_str("missing-checksum")?,
            FaultKind::Status500 => f.write_str("status500")?,
            FaultKind::AccessDenied403 => f.write_str("status403")?,
            FaultKind::TooManyRequests429 => f.write_str("status429")?,
            FaultKind::Banned418 => f.write_str("status418")?,
            FaultKind::DuplicateRows => f.write_str("duplicate-rows")?,
            FaultKind::Gap { start, end, symbol } => {
                write!(f, "gap={}..{}", fmt_time(*start), fmt_time(*end))?;
                if let Some(s) = symbol {
                    write!(f, ":{s}")?;
                }
            }
        }
        if self.target != "*" {
            write!(f, "@{}", self.target)?;
        }
        match self.limit {
            FaultLimit::First(n) => write!(f, "#{n}"),
            FaultLimit::Probability(p) => write!(f, "%{p}"),
            FaultLimit::After(n) => write!(f, "~{n}"),
            FaultLimit::Always => Ok(()),
        }
    }
}

/// Which group of behaviour a fault kind belongs to: one fault per group applies to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// Replaces the response (hang, statuses, missing checksum).
    Response,
    /// Changes the content (checksum mismatch, corrupt zip, duplicate rows).
    Content,
    /// Changes the delivery of the body (slow, reset, truncate).
    Delivery,
    /// Data gaps (not request-bound).
    Data,
}

pub(crate) fn group(k: &FaultKind) -> Group {
    match k {
        FaultKind::Hang
        | FaultKind::Status500
        | FaultKind::AccessDenied403
        | FaultKind::TooManyRequests429
        | FaultKind::Banned418
        | FaultKind::MissingChecksum => Group::Response,
        FaultKind::ChecksumMismatch
        | FaultKind::CorruptZipMatchingChecksum
        | FaultKind::ShortFile { .. }
        | FaultKind::NoNewline { .. }
        | FaultKind::Republish { .. }
        | FaultKind::DuplicateRows => Group::Content,
        FaultKind::SlowBody { .. } | FaultKind::ResetMidBody | FaultKind::TruncatedBody => {
            Group::Delivery
        }
        FaultKind::Gap { .. } => Group::Data,
    }
}

/// The active faults with their hit counters and the seeded draw for probabilities.
#[derive(Debug)]
pub(crate) struct FaultSet {
    faults: Vec<(Fault, u64)>,
    rng: u64,
}

impl FaultSet {
    pub(crate) fn new(seed: u64, faults: Vec<Fault>) -> FaultSet {
        FaultSet {
            faults: faults.into_iter().map(|f| (f, 0)).collect(),
            rng: seed ^ 0xFA17,
        }
    }

    pub(crate) fn add(&mut self, f: Fault) {
        self.faults.push((f, 0));
    }

    pub(crate) fn clear(&mut self) {
        self.faults.clear();
    }

    pub(crate) fn list(&self) -> Vec<Fault> {
        self.faults.iter().map(|(f, _)| f.clone()).collect()
    }

    /// The first fault of `group` applicable to the request (per `applies`), consuming its budget.
    pub(crate) fn take(&mut self, g: Group, applies: impl Fn(&Fault) -> bool) -> Option<FaultKind> {
        for i in 0..self.faults.len() {
            let (f, used) = &self.faults[i];
            if group(&f.kind) != g || !applies(f) {
                continue;
            }
            let hit = match f.limit {
                FaultLimit::Always => true,
                FaultLimit::First(n) => *used < n,
                FaultLimit::Probability(p) => {
                    self.rng = crate::synth::splitmix(self.rng);
                    crate::synth::unit(self.rng) < p
                }
                // `used` counts every matching request here, hit or not.
                FaultLimit::After(n) => {
                    let seen = *used;
                    self.faults[i].1 += 1;
                    if seen < n {
                        continue;
                    }
                    return Some(self.faults[i].0.kind.clone());
                }
            };
            if hit {
                self.faults[i].1 += 1;
                return Some(self.faults[i].0.kind.clone());
            }
        }
        None
    }

    /// The first fault applicable per `applies` that still has budget (consumes nothing).
    pub(crate) fn first_active(&self, applies: impl Fn(&Fault) -> bool) -> Option<FaultKind> {
        self.faults
            .iter()
            .find(|(f, used)| {
                applies(f)
                    && match f.limit {
                        FaultLimit::First(n) => *used < n,
                        FaultLimit::Probability(p) => p > 0.0,
                        FaultLimit::After(n) => *used >= n,
                        FaultLimit::Always => true,
                    }
            })
            .map(|(f, _)| f.kind.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b"/a/b"));
        assert!(glob_match(
            b"/data/spot/*/klines/BTCUSDT/1m/*.zip",
            b"/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip"
        ));
        assert!(!glob_match(b"*.zip", b"/x.zip.CHECKSUM"));
        assert!(glob_match(b"/api/v3/klines", b"/api/v3/klines"));
        assert!(!glob_match(b"/api/v3/klines", b"/api/v3/klinesX"));
    }

    #[test]
    fn after_n_spares_the_first_n_matching_requests_then_hits_every_one() {
        let mut set = FaultSet::new(1, vec!["status500@/api/*~2".parse().expect("valid fault")]);
        let hits: Vec<bool> = (0..5)
            .map(|_| set.take(Group::Response, |_| true).is_some())
            .collect();
        assert_eq!(hits, [false, false, true, true, true]);
    }

    #[test]
    fn parse_and_display_roundtrip() {
        for s in [
            "hang@/data/spot/*#2",
            "slow=2000@*.zip",
            "status500@/api/v3/klines%0.5",
            "gap=2024-01-01T00:00:00Z..2024-01-01T02:00:00Z:BTCUSDT",
            "gap=2024-01-01T00:00:00Z..2024-01-01T02:00:00Z",
            "corrupt-zip@*1m-2024-01-01.zip#1",
            "duplicate-rows@/fapi/v1/klines",
            "status500@/api/v3/klines~30",
        ] {
            let f: Fault = s.parse().expect("valid fault");
            assert_eq!(f.to_string(), s);
        }
        let g: Fault = "gap=2024-01-01..2024-01-02:ETHUSDT"
            .parse()
            .expect("valid gap");
        assert!(matches!(g.kind, FaultKind::Gap { symbol: Some(ref s), .. } if s == "ETHUSDT"));
        assert!("nope".parse::<Fault>().is_err());
        assert!("slow@*".parse::<Fault>().is_err());
        assert!("hang#x".parse::<Fault>().is_err());
    }
}
