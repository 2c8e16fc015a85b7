//! The pooled HTTP client of the Vision and REST clients, built on first use.
//!
//! Building a `reqwest::Client` loads the platform's root certificates (on Linux every file of
//! `/etc/ssl/certs`, tens of milliseconds), which a request answered from the cache alone never
//! needs. [`LazyClient`] defers that to the first request that goes to the network.

use std::fmt;
use std::sync::{Arc, OnceLock};

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
