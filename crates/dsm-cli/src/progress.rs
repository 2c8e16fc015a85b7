//! Progress bars for long fetches, fed by the library's [`dsm::manager::Progress`] events.
//!
//! One bar counts Vision files and REST pages (planned vs done) and shows rows, bytes and the
//! download rate. It is drawn only when stderr is a terminal and `-q` was not given; otherwise the
//! callback is not installed at all. This module must never print anything else.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use dsm::manager::{Progress, ProgressFn, SyncProgress, SyncProgressFn};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress display of one run; cleared when dropped.
#[derive(Debug)]
pub struct ProgressUi {
    bar: ProgressBar,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Counters {
    planned: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
}

impl ProgressUi {
    /// A progress display, or `None` when stderr is not a terminal or `quiet` is set.
    pub fn new(quiet: bool) -> Option<ProgressUi> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let ui = ProgressUi::with_target(ProgressDrawTarget::stderr());
        ui.bar.enable_steady_tick(Duration::from_millis(120));
        Some(ui)
    }

    fn with_target(target: ProgressDrawTarget) -> ProgressUi {
        // A spinner until the plan is known, then a bar.
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] planning  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        ProgressUi {
            bar,
            counters: Arc::new(Counters {
                planned: AtomicU64::new(0),
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                started: Instant::now(),
            }),
        }
    }

    /// The callback to put in [`dsm::Request::progress`].
    pub fn callback(&self) -> ProgressFn {
        let bar = self.bar.clone();
        let counters = self.counters.clone();
        Arc::new(move |event: &Progress| match event {
            Progress::Planned { files, pages } => {
                let planned = counters.planned.fetch_add(files + pages, Ordering::Relaxed);
                if planned == 0 {
                    bar.set_style(bar_style());
                }
                bar.set_length(planned + files + pages);
            }
            Progress::Fetched { rows, bytes } => {
                let rows = counters.rows.fetch_add(*rows, Ordering::Relaxed) + rows;
                let bytes = counters.bytes.fetch_add(*bytes, Ordering::Relaxed) + bytes;
                bar.inc(1);
                bar.set_message(message(rows, bytes, counters.started.elapsed()));
            }
            _ => {}
        })
    }
}

impl Drop for ProgressUi {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files+pages  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `rows, bytes, rate` as shown beside the bar.
fn message(rows: u64, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = (bytes as f64 / secs) as u64;
    format!("{rows} rows  {}  {}/s", HumanBytes(bytes), HumanBytes(rate))
}

/// The progress display of a sync: one bar over every unit (a symbol's month), and one bar per
/// symbol while its units run; cleared when dropped.
#[derive(Debug)]
pub struct SyncUi {
    bars: MultiProgress,
    overall: ProgressBar,
    counters: Arc<Counters>,
}

impl SyncUi {
    /// A sync display, or `None` when stderr is not a terminal or `quiet` is set.
    pub fn new(quiet: bool) -> Option<SyncUi> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = bars.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} symbol-months  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.enable_steady_tick(Duration::from_millis(120));
        Some(SyncUi {
            bars,
            overall,
            counters: Arc::new(Counters {
                planned: AtomicU64::new(0),
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                started: Instant::now(),
            }),
        })
    }

    /// The callback to put in [`dsm::manager::SyncRequest::progress`].
    pub fn callback(&self) -> SyncProgressFn {
        let (bars, overall, counters) = (
            self.bars.clone(),
            self.overall.clone(),
            self.counters.clone(),
        );
        let symbols: Mutex<HashMap<String, (ProgressBar, u64)>> = Mutex::default();
        Arc::new(move |event: &SyncProgress| match event {
            SyncProgress::Planned { symbols: planned } => {
                let total: u64 = planned.iter().map(|(_, n)| n).sum();
                overall.set_length(total);
                if let Ok(mut map) = symbols.lock() {
                    for (s, n) in planned {
                        map.insert(s.to_string(), (ProgressBar::hidden(), *n));
                    }
                }
            }
            SyncProgress::UnitDone {
                symbol,
                rows,
                bytes,
                ..
            } => {
                let rows = counters.rows.fetch_add(*rows, Ordering::Relaxed) + rows;
                let bytes = counters.bytes.fetch_add(*bytes, Ordering::Relaxed) + bytes;
                overall.inc(1);
                overall.set_message(message(rows, bytes, counters.started.elapsed()));
                let Ok(mut map) = symbols.lock() else { return };
                let Some((bar, units)) = map.get_mut(symbol.as_str()) else {
                    return;
                };
                if bar.is_hidden() {
                    *bar = bars.add(ProgressBar::new(*units));
                    bar.set_style(
                        ProgressStyle::with_template("  {prefix:<16} {bar:30} {pos}/{len} months")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_prefix(symbol.to_string());
                }
                bar.inc(1);
                if bar.position() >= *units {
                    bar.finish_and_clear();
                    bars.remove(bar);
                }
            }
            _ => {}
        })
    }
}

impl Drop for SyncUi {
    fn drop(&mut self) {
        self.overall.finish_and_clear();
        let _ = self.bars.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_shows_rows_bytes_and_rate() {
        let m = message(1440, 2 * 1024 * 1024, Duration::from_secs(2));
        assert_eq!(m, "1440 rows  2.00 MiB  1.00 MiB/s");
    }

    #[test]
    fn events_move_the_bar() {
        let ui = ProgressUi::with_target(ProgressDrawTarget::hidden());
        let cb = ui.callback();
        assert_eq!(ui.bar.length(), None, "unknown until planned");
        cb(&Progress::Planned { files: 3, pages: 2 });
        cb(&Progress::Planned { files: 1, pages: 0 });
        assert_eq!(ui.bar.length(), Some(6));
        cb(&Progress::Fetched {
            rows: 1440,
            bytes: 1024,
        });
        cb(&Progress::Fetched {
            rows: 60,
            bytes: 1024,
        });
        assert_eq!(ui.bar.position(), 2);
        assert!(
            ui.bar.message().starts_with("1500 rows  2.00 KiB  "),
            "{}",
            ui.bar.message()
        );
    }

    #[test]
    fn no_bar_when_quiet() {
        assert!(ProgressUi::new(true).is_none());
    }
}
