//! The manager as Python holds it (wrapped by `dsm.Manager`): `get` waits on the calling thread
//! with the GIL released, `start_get` hands the answer to an asyncio future.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dsm::manager::{StatusFilter, SyncProgress, SyncRequest, Universe};
use dsm::report::SymbolEntry;
use dsm::{DataKind, DataSourceManager, Interval, ManagerConfig, Market, Request, SourcePolicy};
use dsm::{Symbol, TimeRange};
use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::bridge::{self, Pending};
use crate::errors;
use crate::response::Response;

/// How long closing a manager waits for its work to stop.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// A data source manager: one cache, one weight budget, one connection pool.
#[pyclass(module = "dsm._dsm", frozen, name = "RawManager")]
#[derive(Debug)]
pub(crate) struct Manager {
    inner: Mutex<Option<Arc<DataSourceManager>>>,
    /// Cancels everything this manager started (on close, or when the interpreter exits).
    token: CancellationToken,
}

fn parsed<T: std::str::FromStr<Err = dsm::InputError>>(py: Python<'_>, s: &str) -> PyResult<T> {
    s.parse::<T>().map_err(|e| errors::input(py, &e))
}

/// The market, kind and interval a query names, checked by the library's parsers.
fn dataset_words(
    py: Python<'_>,
    market: &str,
    kind: &str,
    interval: Option<&str>,
) -> PyResult<(Market, DataKind, Option<Interval>)> {
    let interval = interval.map(|i| parsed(py, i)).transpose()?;
    Ok((parsed(py, market)?, parsed(py, kind)?, interval))
}

/// The source policy a query names, if any.
fn source_word(py: Python<'_>, source: Option<&str>) -> PyResult<Option<SourcePolicy>> {
    source.map(|s| parsed::<SourcePolicy>(py, s)).transpose()
}

impl Manager {
    fn manager(&self, py: Python<'_>) -> PyResult<Arc<DataSourceManager>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clone().ok_or_else(|| {
            errors::input(
                py,
                &dsm::InputError::Invalid {
                    what: "manager",
                    reason: "it is closed; create a new dsm.Manager".into(),
                },
            )
        })
    }

    fn take(&self) -> Option<Arc<DataSourceManager>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A manager Python forgot to close stops its work when it is collected.
impl Drop for Manager {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// What `dsm.Manager.get` was asked, as the Python wrapper passes it (a dict, times already in
/// epoch ms).
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Query {
    symbols: Vec<String>,
    start: i64,
    end: i64,
    market: String,
    kind: String,
    interval: Option<String>,
    source: Option<String>,
    include_open: bool,
    allow_partial: bool,
}

impl Query {
    /// The library's request, checked before any network call.
    fn request(&self, py: Python<'_>) -> PyResult<Request> {
        let (market, kind, interval) =
            dataset_words(py, &self.market, &self.kind, self.interval.as_deref())?;
        let symbols = self
            .symbols
            .iter()
            .map(|s| Symbol::for_market(s, market, kind).map_err(|e| errors::input(py, &e)))
            .collect::<PyResult<Vec<Symbol>>>()?;
        let range = TimeRange::new(self.start, self.end).map_err(|e| errors::input(py, &e))?;
        let mut request = Request::new(market, kind, symbols, interval, range);
        request.source = source_word(py, self.source.as_deref())?;
        request.include_open = self.include_open;
        request.allow_partial = self.allow_partial;
        request.validate().map_err(|e| errors::input(py, &e))?;
        Ok(request)
    }
}

/// How `dsm.Manager(...)` was configured (a dict; `None` keeps dsm's default).
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Settings {
    cache_dir: Option<std::path::PathBuf>,
    cache_url: Option<String>,
    cache: bool,
    vision_url: Option<String>,
    rest_url: Option<String>,
    source: String,
    concurrency: Option<usize>,
    weight_limit: Option<u32>,
    timeout: Option<f64>,
    wait_on_ban: bool,
}

impl Settings {
    /// The library's configuration, with the CLI's rules for each setting (`ManagerConfig`'s
    /// builders and its check).
    fn config(self, py: Python<'_>) -> PyResult<ManagerConfig> {
        let mut config = ManagerConfig {
            cache_dir: self.cache_dir,
            cache_url: self.cache_url,
            use_cache: self.cache,
            source: parsed(py, &self.source)?,
            weight_limit: self.weight_limit,
            wait_on_ban: self.wait_on_ban,
            ..ManagerConfig::default()
        };
        if let Some(url) = &self.vision_url {
            config = config.with_vision_url(url);
        }
        if let Some(url) = &self.rest_url {
            config = config.with_rest_url(url);
        }
        if let Some(n) = self.concurrency {
            config = config.with_concurrency(n);
        }
        if let Some(t) = self.timeout {
            let t = Duration::try_from_secs_f64(t).map_err(|_| {
                errors::input(
                    py,
                    &dsm::InputError::Invalid {
                        what: "timeout",
                        reason: format!("{t} is not a number of seconds"),
                    },
                )
            })?;
            config = config.with_timeout(t);
        }
        config.check().map_err(|e| errors::input(py, &e))?;
        Ok(config)
    }
}

fn responses(kind: DataKind, response: dsm::Response) -> Vec<Response> {
    response
        .results
        .into_iter()
        .map(|r| Response::new(kind, r))
        .collect()
}

/// What `dsm.Manager.sync` was asked (a dict, times already in epoch ms).
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct SyncQuery {
    symbols: String,
    start: i64,
    end: i64,
    market: String,
    kind: String,
    interval: Option<String>,
    source: Option<String>,
    shard: Option<String>,
}

impl SyncQuery {
    /// The library's sync request, checked before any network call; `progress` (a Python
    /// callable) gets `("planned", {symbol: units})` and `("unit", symbol, rows, bytes, complete)`
    /// on a dsm thread.
    fn request(&self, py: Python<'_>, progress: Option<Py<PyAny>>) -> PyResult<SyncRequest> {
        let (market, kind, interval) =
            dataset_words(py, &self.market, &self.kind, self.interval.as_deref())?;
        let universe =
            Universe::parse(&self.symbols, market, kind).map_err(|e| errors::input(py, &e))?;
        let range = TimeRange::new(self.start, self.end).map_err(|e| errors::input(py, &e))?;
        let mut request = SyncRequest::new(market, kind, interval, universe, range);
        request.source = source_word(py, self.source.as_deref())?;
        request.shard = self.shard.as_deref().map(|s| parsed(py, s)).transpose()?;
        request.validate().map_err(|e| errors::input(py, &e))?;
        request.progress = progress.map(|f| -> dsm::manager::SyncProgressFn {
            Arc::new(move |event: &SyncProgress| {
                // Never into an interpreter that is finalising (its exit cancels the sync).
                if bridge::shutting_down() {
                    return;
                }
                Python::attach(|py| {
                    let called = match event {
                        SyncProgress::Planned { symbols } => {
                            let units: std::collections::BTreeMap<String, u64> =
                                symbols.iter().map(|(s, n)| (s.to_string(), *n)).collect();
                            f.call1(py, ("planned", units))
                        }
                        SyncProgress::UnitDone {
                            symbol,
                            rows,
                            bytes,
                            complete,
                        } => f.call1(py, ("unit", symbol.as_str(), *rows, *bytes, *complete)),
                        _ => return,
                    };
                    // A failing callback does not stop the sync; Python reports it as unraisable.
                    if let Err(e) = called {
                        e.write_unraisable(py, None);
                    }
                });
            })
        });
        Ok(request)
    }
}

fn sync_json(outcome: &dsm::manager::SyncOutcome) -> String {
    serde_json::to_string(&dsm::report::SyncReport::new(outcome)).unwrap_or_default()
}

#[pymethods]
impl Manager {
    #[new]
    fn new(py: Python<'_>, settings: Settings) -> PyResult<Manager> {
        let config = settings.config(py)?;
        let manager =
            bridge::enter(|| DataSourceManager::new(config))?.map_err(|e| errors::to_py(py, &e))?;
        Ok(Manager {
            inner: Mutex::new(Some(Arc::new(manager))),
            token: bridge::root_child()?,
        })
    }

    /// Answers a request, waiting on this thread (the GIL released; Ctrl-C cancels it).
    fn get(&self, py: Python<'_>, query: Query) -> PyResult<Vec<Response>> {
        let req = query.request(py)?;
        let kind = req.kind;
        let m = self.manager(py)?;
        let out = bridge::wait(py, &self.token, move |token| async move {
            m.get_with_cancel(req, &token).await
        })?;
        match out {
            Ok(r) => Ok(py.detach(|| responses(kind, r))),
            // Cancelled because the interpreter is exiting: end the thread quietly.
            Err(dsm::Error::Cancelled) if bridge::shutting_down() => Err(bridge::exiting()),
            Err(e) => Err(errors::to_py(py, &e)),
        }
    }

    /// Starts a request; `deliver(ok, value)` gets the list of responses or the exception.
    fn start_get(&self, py: Python<'_>, deliver: Py<PyAny>, query: Query) -> PyResult<Pending> {
        let req = query.request(py)?;
        let kind = req.kind;
        let m = self.manager(py)?;
        bridge::spawn(
            &self.token,
            move |token| async move {
                let out = m.get_with_cancel(req, &token).await;
                out.map(|r| responses(kind, r))
            },
            deliver,
            |py, out| match out {
                Ok(rs) => Ok(rs.into_pyobject(py)?.into_any().unbind()),
                Err(e) => Err(errors::to_py(py, &e)),
            },
        )
    }

    /// Syncs a universe into the cache, waiting on this thread; returns the report as JSON.
    #[pyo3(signature = (query, progress=None))]
    fn sync(
        &self,
        py: Python<'_>,
        query: SyncQuery,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let req = query.request(py, progress)?;
        let m = self.manager(py)?;
        let out = bridge::wait(py, &self.token, move |token| async move {
            m.sync(req, &token).await
        })?;
        match out {
            Ok(outcome) => Ok(sync_json(&outcome)),
            Err(dsm::Error::Cancelled) if bridge::shutting_down() => Err(bridge::exiting()),
            Err(e) => Err(errors::to_py(py, &e)),
        }
    }

    /// Starts a sync; `deliver(ok, value)` gets the report as JSON or the exception.
    #[pyo3(signature = (deliver, query, progress=None))]
    fn start_sync(
        &self,
        py: Python<'_>,
        deliver: Py<PyAny>,
        query: SyncQuery,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Pending> {
        let req = query.request(py, progress)?;
        let m = self.manager(py)?;
        bridge::spawn(
            &self.token,
            move |token| async move { m.sync(req, &token).await.map(|o| sync_json(&o)) },
            deliver,
            |py, out| match out {
                Ok(json) => Ok(json.into_pyobject(py)?.into_any().unbind()),
                Err(e) => Err(errors::to_py(py, &e)),
            },
        )
    }

    /// A market's symbols (`status`: trading, delisted or all), as JSON.
    fn symbols(&self, py: Python<'_>, market: &str, status: &str) -> PyResult<String> {
        let market: Market = parsed(py, market)?;
        let status: StatusFilter = parsed(py, status)?;
        let m = self.manager(py)?;
        let out = bridge::wait(py, &self.token, move |_| async move {
            m.symbols(market, status).await
        })?;
        match out {
            Ok(list) => {
                let entries: Vec<SymbolEntry> = list.iter().map(SymbolEntry::new).collect();
                Ok(serde_json::to_string(&entries).unwrap_or_default())
            }
            Err(dsm::Error::Cancelled) if bridge::shutting_down() => Err(bridge::exiting()),
            Err(e) => Err(errors::to_py(py, &e)),
        }
    }

    /// Cancels this manager's work and waits (at most 2 s) for it to stop. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(m) = self.take() else {
            return Ok(());
        };
        let closed = bridge::wait(py, &self.token, move |_| async move {
            m.shutdown(CLOSE_DEADLINE).await;
        });
        self.token.cancel();
        match closed {
            // The interpreter is exiting: its own shutdown stops everything.
            Err(e) if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) => Ok(()),
            other => other,
        }
    }

    /// Like `close`, handing completion to `deliver(ok, value)`. Idempotent.
    fn start_close(&self, deliver: Py<PyAny>) -> PyResult<Option<Pending>> {
        let Some(m) = self.take() else {
            return Ok(None);
        };
        let token = self.token.clone();
        bridge::spawn(
            &CancellationToken::new(),
            move |_| async move {
                m.shutdown(CLOSE_DEADLINE).await;
                token.cancel();
            },
            deliver,
            |py, ()| Ok(py.None()),
        )
        .map(Some)
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

/// Parses a time as the CLI does: RFC 3339, a date, or epoch milliseconds; returns epoch ms.
#[pyfunction]
pub(crate) fn parse_instant(py: Python<'_>, text: &str) -> PyResult<i64> {
    dsm::time::parse_instant(text).map_err(|e| errors::input(py, &e))
}
