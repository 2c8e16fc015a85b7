//! SIGINT and SIGTERM as awaitable events (tokio's Unix signal streams, no tasks of their own).
//!
//! Once [`Signals`] exists, the default "die at once" action is replaced: the fetch decides what a
//! signal means (cancel, clean up, exit 130/143; a second signal exits at once). This module never
//! exits the process itself.

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::Signal;

/// Listeners for SIGINT and SIGTERM.
#[derive(Debug)]
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening (must be called inside the tokio runtime).
    pub fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.term.recv() => Signal::Terminate,
        }
    }
}
