//! The pooled HTTP client of the Vision and REST clients, built on first use.
//!
//! Building a `reqwest::Client` loads the platform's root certificates (on Linux every file of
//! `/etc/ssl/certs`, tens of milliseconds), which a request answered from the cache alone never
//! needs. [`LazyClient`] defers that to the first request that goes to the network.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

type Make = dyn Fn() -> reqwest::Result<reqwest::Client> + Send + Sync;

/// A `reqwest::Client` built by its first [`LazyClient::client`] call and shared by every clone.
#[derive(Clone)]
pub(crate) struct LazyClient {
    cell: Arc<OnceLock<reqwest::Client>>,
    make: Arc<Make>,
}

impl LazyClient {
    /// A client that `make` builds when it is first needed.
    pub(crate) fn new(
        make: impl Fn() -> reqwest::Result<reqwest::Client> + Send + Sync + 'static,
    ) -> LazyClient {
        LazyClient {
            cell: Arc::new(OnceLock::new()),
            make: Arc::new(make),
        }
    }

    /// A client that is already built.
    pub(crate) fn ready(client: reqwest::Client) -> LazyClient {
        let cell = OnceLock::new();
        let _ = cell.set(client.clone());
        LazyClient {
            cell: Arc::new(cell),
            make: Arc::new(move || Ok(client.clone())),
        }
    }

    /// The client, built now if this is the first call. A failed build is returned and tried
    /// again by the next call.
    pub(crate) fn client(&self) -> reqwest::Result<&reqwest::Client> {
        if let Some(client) = self.cell.get() {
            return Ok(client);
        }
        let built = (self.make)()?;
        // Two first calls racing both build; one client wins and both use it.
        Ok(self.cell.get_or_init(|| built))
    }
}

impl fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.cell.get().is_some())
            .finish()
    }
}

/// How slow a download may be before an attempt is given up: the longest silence, and the least
/// progress over a window. A stalled or trickling server then fails the attempt (and, after the
/// retries, the file or page) instead of holding the fetch for minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The longest wait for the response headers or for the next bytes of a body.
    pub silence: Duration,
    /// The fewest bytes per second a body must average over each `window`.
    pub min_bytes_per_sec: u64,
    /// The window the average is taken over.
    pub window: Duration,
}

impl Default for Pace {
    /// 10 s of silence, or less than 4 KiB/s over 10 s, fails an attempt.
    fn default() -> Self {
        Pace {
            silence: Duration::from_secs(10),
            min_bytes_per_sec: 4096,
            window: Duration::from_secs(10),
        }
    }
}

impl Pace {
    /// The longest one attempt at a body of `bytes` may take at the slowest pace accepted, the
    /// wait for its headers included.
    pub fn attempt_limit(&self, bytes: u64) -> Duration {
        let secs = bytes / self.min_bytes_per_sec.max(1);
        2 * self.silence + Duration::from_secs(secs)
    }
}

/// Why [`Watch::check`] gave up on an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slow {
    /// Nothing arrived for [`Pace::silence`].
    Silent(Duration),
    /// Less than the minimum arrived over a window: `bytes` in `window`.
    Stalled { bytes: u64, window: Duration },
}

impl fmt::Display for Slow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slow::Silent(d) => write!(f, "nothing received for {d:?}"),
            Slow::Stalled { bytes, window } => {
                write!(f, "only {bytes} bytes received in {window:?} (stalled)")
            }
        }
    }
}

/// Why [`read_body`] stopped.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the limit: announced by `Content-Length` (`announced`), or received.
    TooLarge { bytes: u64, announced: bool },
    /// Too slow for the pace, or not done within the attempt's time.
    Slow(Slow),
    /// The connection failed.
    Net(reqwest::Error),
}

/// Reads `resp`'s body: at most `limit` bytes (a larger `Content-Length` is refused before any
/// byte is read), at `pace`, and within `attempt` from now. `chunk` sees each piece as it arrives
/// (to hash or count it).
pub(crate) async fn read_body(
    resp: reqwest::Response,
    pace: Pace,
    limit: u64,
    attempt: Duration,
    mut chunk: impl FnMut(&[u8]),
) -> Result<Vec<u8>, BodyError> {
    let announced = resp.content_length();
    if let Some(n) = announced
        && n > limit
    {
        return Err(BodyError::TooLarge {
            bytes: n,
            announced: true,
        });
    }
    let cap = announced.map_or(64 * 1024, |n| usize::try_from(n).unwrap_or(0).min(1 << 30));
    let mut buf = Vec::with_capacity(cap);
    let end = Instant::now() + attempt;
    let mut watch = Watch::new(pace);
    let mut body = resp.bytes_stream();
    loop {
        match tokio::time::timeout_at(watch.next_check().min(end), body.next()).await {
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => return Err(BodyError::Net(e)),
            Ok(Some(Ok(c))) => {
                let received = (buf.len() + c.len()) as u64;
                // (A body longer than its announced length is an error of the HTTP layer.)
                if received > limit {
                    return Err(BodyError::TooLarge {
                        bytes: received,
                        announced: false,
                    });
                }
                chunk(&c);
                buf.extend_from_slice(&c);
                watch.received(c.len());
                watch.check().map_err(BodyError::Slow)?;
            }
            Err(_) if Instant::now() >= end => {
                return Err(BodyError::Slow(Slow::Stalled {
                    bytes: buf.len() as u64,
                    window: attempt,
                }));
            }
            Err(_) => watch.check().map_err(BodyError::Slow)?,
        }
    }
}

/// Watches one body download against a [`Pace`].
#[derive(Debug)]
struct Watch {
    pace: Pace,
    last_bytes: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl Watch {
    /// Starts watching now (when the headers have arrived).
    fn new(pace: Pace) -> Watch {
        let now = Instant::now();
        Watch {
            pace,
            last_bytes: now,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// When the next chunk must have arrived by, or the pace be checked.
    fn next_check(&self) -> Instant {
        (self.last_bytes + self.pace.silence).min(self.window_start + self.pace.window)
    }

    /// Records `n` bytes received.
    fn received(&mut self, n: usize) {
        self.last_bytes = Instant::now();
        self.window_bytes += n as u64;
    }

    /// Whether the attempt may go on: fails after a silence, or a window with too little.
    fn check(&mut self) -> Result<(), Slow> {
        let now = Instant::now();
        if now >= self.last_bytes + self.pace.silence {
            return Err(Slow::Silent(self.pace.silence));
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= self.pace.window {
            let wanted = self.pace.min_bytes_per_sec * self.pace.window.as_secs().max(1);
            if self.window_bytes < wanted {
                return Err(Slow::Stalled {
                    bytes: self.window_bytes,
                    window: elapsed,
                });
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

/// `"s"` unless `n` is 1: `"{n} attempt{}"` in the network errors of the sources.
pub(crate) fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_client_is_built_once_on_first_use_and_shared_by_clones() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&builds);
        let lazy = LazyClient::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            reqwest::Client::builder().build()
        });
        let clone = lazy.clone();
        assert_eq!(builds.load(Ordering::SeqCst), 0, "built before first use");
        assert!(format!("{lazy:?}").contains("built: false"));
        lazy.client().expect("client");
        clone.client().expect("client");
        lazy.client().expect("client");
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(format!("{clone:?}").contains("built: true"));
    }
}
