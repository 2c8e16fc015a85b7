//! How a manager is set up: [`ManagerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use super::request::SourcePolicy;
use crate::error::InputError;
use crate::rest::RestUrls;

/// Fails unless `url` is an absolute http(s) URL (an empty or relative one would fail every
/// request with a message that names no URL).
fn check_url(what: &'static str, url: &str) -> std::result::Result<(), InputError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(InputError::Invalid {
            what,
            reason: format!(
                "{url:?} is not an http(s) URL; give a full one, e.g. https://data.binance.vision"
            ),
        }),
    }
}

/// The directory of the cache that keeps the REST weight budget, learnt limits and bans.
pub(super) const REST_STATE_DIR: &str = "rest";

/// How a manager is set up. `Default` talks to the real Binance with a cache in the default place.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Cache directory; `None` = `$DSM_CACHE_DIR`, else the platform cache dir (`~/.cache/dsm`).
    /// It also keeps this machine's REST state (weight used, learnt limits, bans) when the data
    /// cache is elsewhere.
    pub cache_dir: Option<PathBuf>,
    /// The data cache by URL (`s3://BUCKET/PREFIX`, see [`CacheStore::open_url`]) instead of the
    /// cache directory; `None` = `$DSM_CACHE_URL` if set.
    ///
    /// [`CacheStore::open_url`]: crate::cache::CacheStore::open_url
    pub cache_url: Option<String>,
    /// Whether to read and write the cache at all.
    pub use_cache: bool,
    /// Vision archive base URL (`https://data.binance.vision`).
    pub vision_url: String,
    /// REST base URLs.
    pub rest_urls: RestUrls,
    /// Source policy for requests that do not override it.
    pub source: SourcePolicy,
    /// Most Vision downloads in flight at once.
    pub vision_concurrency: usize,
    /// How long after a day ends its Vision daily file may still be missing (default 36 h). Days
    /// older than that are assumed published; the missing days inside it are probed in order, one
    /// `.CHECKSUM` request each, and come from Vision if it has them; from the first day it lacks
    /// (remembered for an hour), they come from REST.
    pub vision_publish_delay: Duration,
    /// TCP connect timeout for every request.
    pub connect_timeout: Duration,
    /// How slow an answer may be before an attempt fails: the longest silence (default 10 s) and
    /// the least progress over a window (default 4 KiB/s over 10 s). See [`crate::Pace`].
    pub pace: crate::Pace,
    /// Retries of a transient failure before it becomes an error (default 3). With the defaults a
    /// dead upstream costs at most about 45 s before dsm falls back to the other source or fails.
    pub retries: u32,
    /// Accept Vision files whose `.CHECKSUM` is missing (default: reject).
    pub accept_missing_checksum: bool,
    /// Spot's REST weight limit per minute until the server's is read from `exchangeInfo`
    /// (default 6000, Binance's).
    pub spot_weight_per_minute: u32,
    /// Each futures market's limit until the server's is read (default 2400, Binance's).
    pub futures_weight_per_minute: u32,
    /// The REST weight budget per window of every market, used as given instead of 90% of the
    /// server's limit; `None` (default) = follow the server.
    pub weight_limit: Option<u32>,
    /// Most REST pages of one symbol in flight at once (default 4; all share the weight budget).
    pub rest_concurrency: usize,
    /// When a market's REST API has banned this IP (HTTP 418, remembered across runs in the cache
    /// directory): wait for the ban to end instead of failing at once (default false).
    pub wait_on_ban: bool,
}

impl ManagerConfig {
    /// Every Vision download from the archive at `url` (a trailing `/` is dropped).
    pub fn with_vision_url(mut self, url: &str) -> ManagerConfig {
        self.vision_url = url.trim_end_matches('/').to_owned();
        self
    }

    /// Every market's REST requests to `url` (an emulator or a proxy serving all three).
    pub fn with_rest_url(mut self, url: &str) -> ManagerConfig {
        self.rest_urls = RestUrls::all(url);
        self
    }

    /// At most `n` Vision files and `n` REST pages of a symbol in flight at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> ManagerConfig {
        self.vision_concurrency = n.max(1);
        self.rest_concurrency = n.max(1);
        self
    }

    /// `timeout` both to connect and as the longest silence of a connection (the `--timeout` of
    /// the CLI).
    pub fn with_timeout(mut self, timeout: Duration) -> ManagerConfig {
        self.connect_timeout = timeout;
        self.pace.silence = timeout;
        self
    }

    /// Checks the settings that cannot work together, before any network call.
    pub fn check(&self) -> std::result::Result<(), InputError> {
        if !self.use_cache && self.source == SourcePolicy::Cache {
            return Err(InputError::Invalid {
                what: "source",
                reason: "source cache reads only the cache, so it cannot be combined with no cache (--no-cache, cache=False)".into(),
            });
        }
        if self.pace.silence.is_zero() {
            return Err(InputError::Invalid {
                what: "timeout",
                reason: "it must be more than zero seconds".into(),
            });
        }
        check_url("vision_url", &self.vision_url)?;
        for m in crate::Market::ALL {
            check_url("rest_urls", self.rest_urls.for_market(m))?;
        }
        Ok(())
    }
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            cache_dir: None,
            cache_url: None,
            use_cache: true,
            vision_url: "https://data.binance.vision".into(),
            rest_urls: RestUrls::default(),
            source: SourcePolicy::Auto,
            vision_concurrency: 8,
            vision_publish_delay: Duration::from_secs(36 * 3600),
            connect_timeout: Duration::from_secs(10),
            pace: crate::Pace::default(),
            retries: 3,
            accept_missing_checksum: false,
            spot_weight_per_minute: 6000,
            futures_weight_per_minute: 2400,
            weight_limit: None,
            rest_concurrency: 4,
            wait_on_ban: false,
        }
    }
}
