//! The one tokio runtime of the Python package, who owns its tasks, and how Python waits for them.
//!
//! Every piece of Rust work started from Python is a task on this runtime, owned by its
//! [`TaskTracker`] and cancelled through a token under one root. Python waits for it in one of two
//! ways:
//! - [`wait`]: the calling thread waits with the GIL released (so other threads run), waking every
//!   [`SIGNAL_POLL`] to let Python raise `KeyboardInterrupt`; on any exception the work is
//!   cancelled and given a bounded time to clean up before the exception propagates.
//! - [`spawn`]: the task hands its result to a Python callable (which schedules it on the asyncio
//!   loop); cancelling the asyncio side cancels the token.
//!
//! [`shutdown`] runs from the interpreter's exit hooks, before the interpreter finalises: it
//! cancels everything, waits (bounded) for the tasks and for the threads inside [`wait`] to leave
//! Rust, then shuts the runtime down. No task can touch Python after that, which is what makes
//! exiting in the middle of a download safe (a task delivering a result to a finalising
//! interpreter is what crashes other async bridges).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a waiting thread lets Python check for signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(20);

/// How long cancelled work may take to stop (closing its connections, removing temporary files)
/// before the waiting caller gets its exception anyway.
const CLEANUP_WAIT: Duration = Duration::from_secs(2);

/// The runtime and what it runs; `None` before the first use and after [`shutdown`].
struct State {
    runtime: Runtime,
    tracker: TaskTracker,
    root: CancellationToken,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Set by [`shutdown`]: nothing new starts after it.
static SHUT: AtomicBool = AtomicBool::new(false);
/// Threads inside [`wait`] (they hold no GIL while waiting).
static WAITING: AtomicUsize = AtomicUsize::new(0);

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error for work started (or still waiting) while the interpreter exits: a `SystemExit`, which
/// `threading` ends a thread with silently, and which `except Exception` does not swallow.
pub(crate) fn exiting() -> PyErr {
    PySystemExit::new_err("dsm: the interpreter is exiting; the request was cancelled")
}

/// Whether [`shutdown`] has run (the interpreter is exiting).
pub(crate) fn shutting_down() -> bool {
    SHUT.load(Ordering::SeqCst)
}

/// Where new work goes: the runtime's handle, its task owner and a token under the root.
pub(crate) struct Spawner {
    handle: Handle,
    tracker: TaskTracker,
    /// A child of the root: cancelled by [`shutdown`], or by the caller.
    pub(crate) token: CancellationToken,
}

/// A spawner for new work, starting the runtime on first use.
pub(crate) fn spawner(parent: Option<&CancellationToken>) -> PyResult<Spawner> {
    let mut guard = state();
    // Checked under the lock: `shutdown` sets the flag before it takes the runtime out, so no
    // runtime is started after it.
    if SHUT.load(Ordering::SeqCst) {
        return Err(exiting());
    }
    if guard.is_none() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("dsm")
            // Threads for blocking file work end after 100 ms idle, not tokio's ten seconds: a
            // burst of cache reads starts dozens, and each one left must be woken to stop.
            .thread_keep_alive(Duration::from_millis(100))
            .build()
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "dsm could not start its runtime: {e}"
                ))
            })?;
        *guard = Some(State {
            runtime,
            tracker: TaskTracker::new(),
            root: CancellationToken::new(),
        });
    }
    let Some(s) = guard.as_ref() else {
        return Err(exiting());
    };
    Ok(Spawner {
        handle: s.runtime.handle().clone(),
        tracker: s.tracker.clone(),
        token: parent.map_or_else(|| s.root.child_token(), CancellationToken::child_token),
    })
}

/// A token under the root (for a manager): cancelled by [`shutdown`].
pub(crate) fn root_child() -> PyResult<CancellationToken> {
    Ok(spawner(None)?.token)
}

/// Runs `work` inside the runtime's context (to build something that must be created there).
pub(crate) fn enter<T>(work: impl FnOnce() -> T) -> PyResult<T> {
    let s = spawner(None)?;
    let _entered = s.handle.enter();
    Ok(work())
}

/// Counts a thread inside [`wait`] for as long as it is there.
struct Waiting;

impl Waiting {
    fn enter() -> Waiting {
        WAITING.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `work` on the runtime and waits for it on this thread with the GIL released, checking for
/// signals; see the module docs. `parent` is the caller's token (a manager's).
pub(crate) fn wait<T, F, Fut>(py: Python<'_>, parent: &CancellationToken, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let _waiting = Waiting::enter();
    let s = spawner(Some(parent))?;
    let (tx, rx) = sync_channel(1);
    let fut = work(s.token.clone());
    s.tracker.spawn_on(
        async move {
            // The receiver may be gone (the caller was interrupted): nothing to tell.
            let _ = tx.send(fut.await);
        },
        &s.handle,
    );
    // The receiver goes into each wait and comes back (it may not be shared between threads).
    let mut rx = rx;
    let recv = |py: Python<'_>, rx: std::sync::mpsc::Receiver<T>, wait: Duration| {
        py.detach(move || {
            let got = rx.recv_timeout(wait);
            (rx, got)
        })
    };
    loop {
        let (back, got) = recv(py, rx, SIGNAL_POLL);
        rx = back;
        match got {
            Ok(out) => return Ok(out),
            Err(RecvTimeoutError::Timeout) => {
                let stop = match py.check_signals() {
                    Err(e) => Some(e),
                    Ok(()) if SHUT.load(Ordering::SeqCst) => Some(exiting()),
                    Ok(()) => None,
                };
                if let Some(e) = stop {
                    // Give the cancelled work a bounded time to clean up what it started.
                    s.token.cancel();
                    let _ = recv(py, rx, CLEANUP_WAIT);
                    return Err(e);
                }
            }
            // The runtime was shut down under the task.
            Err(RecvTimeoutError::Disconnected) => return Err(exiting()),
        }
    }
}

/// A running asynchronous call, as Python holds it: `cancel()` stops the work.
#[pyclass(module = "dsm._dsm", frozen)]
#[derive(Debug)]
pub(crate) struct Pending {
    token: CancellationToken,
}

#[pymethods]
impl Pending {
    /// Cancels the work (idempotent). Its result, if it still comes, is dropped by the caller.
    fn cancel(&self) {
        self.token.cancel();
    }
}

/// Starts `work` on the runtime; when it ends, `convert`s its output with the GIL and calls
/// `deliver(ok, value)` (a Python callable that settles an asyncio future through
/// `loop.call_soon_threadsafe`). Nothing is delivered once the interpreter is finalising.
pub(crate) fn spawn<T, F, Fut, C>(
    parent: &CancellationToken,
    work: F,
    deliver: Py<PyAny>,
    convert: C,
) -> PyResult<Pending>
where
    T: Send + 'static,
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let s = spawner(Some(parent))?;
    let fut = work(s.token.clone());
    s.tracker.spawn_on(
        async move {
            let out = fut.await;
            let _ = Python::try_attach(|py| {
                let (ok, value) = match convert(py, out) {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                // A closed loop refuses the call: nobody is waiting any more.
                if let Err(e) = deliver.call1(py, (ok, value)) {
                    drop(e);
                }
            });
        },
        &s.handle,
    );
    Ok(Pending { token: s.token })
}

/// Stops everything before the interpreter finalises (registered by the package with `threading`'s
/// and `atexit`'s exit hooks): cancels all work, waits at most `timeout` seconds for the tasks and
/// for the threads waiting on them, and shuts the runtime down. Later calls raise `SystemExit`.
/// Idempotent.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>, timeout: f64) {
    SHUT.store(true, Ordering::SeqCst);
    let Some(s) = state().take() else {
        return;
    };
    let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::from_secs(2));
    s.root.cancel();
    s.tracker.close();
    py.detach(move || {
        let deadline = Instant::now() + timeout;
        let tracker = s.tracker.clone();
        let ended = s
            .runtime
            .block_on(async move { tokio::time::timeout(timeout, tracker.wait()).await.is_ok() });
        while WAITING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if ended && WAITING.load(Ordering::SeqCst) == 0 {
            // Every task has ended and no thread waits on one: nothing left can reach Python, and
            // a blocking job still running belongs to a dropped future (its result unwanted; the
            // cache's writes are crash-safe). The threads stop on their own: joining them one by
            // one costs a scheduler round each, which on a busy machine adds up to most of a second.
            s.runtime.shutdown_background();
        } else {
            s.runtime
                .shutdown_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    });
}
