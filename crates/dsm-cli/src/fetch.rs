//! `dsm fetch`: turn arguments into a validated [`dsm::Request`], run it on a
//! [`dsm::DataSourceManager`], write one file per symbol, report.
//!
//! Order matters: every input (symbols, market/kind/interval, times, output path and format) is
//! checked before the manager is even built, so bad input costs no network request. A signal
//! while the request runs drops the request future and shuts the manager down; a signal while
//! files are written stops the writer, whose guards remove the temporaries. Either way the run
//! ends with [`Interrupted`] and no output file. The fetching itself belongs to the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dsm::manager::Summary;
use dsm::{DataSourceManager, ManagerConfig, Request, Response, SourcePolicy, Symbol};
use futures::StreamExt;

use crate::args::{ConnArgs, FetchArgs, parse_range};
use crate::exit::Interrupted;
use crate::output::{self, FileWriter, OutputPlan, Pending, WriteControl};
use crate::printer::Printer;
use crate::progress::ProgressUi;
use crate::signal::Signals;
use dsm::report::{FetchReport, SymbolTotals};

/// How long the manager gets to stop its work after the first signal.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(500);

/// Builds and validates the request from the arguments: no I/O. `now_ms` is the default end.
pub fn build_request(args: &FetchArgs, now_ms: i64) -> anyhow::Result<Request> {
    args.dataset
        .market
        .check(args.dataset.kind, args.dataset.interval)?;
    let symbols = args
        .symbols
        .iter()
        .map(|s| Symbol::for_market(s, args.dataset.market, args.dataset.kind))
        .collect::<Result<Vec<_>, _>>()?;
    let range = parse_range(&args.start, args.end.as_deref(), now_ms)?;
    let mut request = Request::new(
        args.dataset.market,
        args.dataset.kind,
        symbols,
        args.dataset.interval,
        range,
    );
    request.include_open = args.include_open;
    // The CLI takes every window the library can give and decides at the end (so the summary
    // lists everything that is missing, not only the first window's).
    request.allow_partial = true;
    request.source = Some(args.source);
    request.validate()?;
    Ok(request)
}

/// The manager configuration from the shared options, the source policy and whether to cache.
pub fn manager_config(
    conn: &ConnArgs,
    source: SourcePolicy,
    use_cache: bool,
) -> anyhow::Result<ManagerConfig> {
    let mut config = ManagerConfig {
        cache_dir: conn.cache_dir.clone(),
        cache_url: conn.cache_url.clone(),
        use_cache,
        source,
        weight_limit: conn.weight_limit,
        wait_on_ban: conn.wait_on_ban,
        ..ManagerConfig::default()
    };
    if let Some(url) = &conn.vision_url {
        config = config.with_vision_url(url);
    }
    if let Some(url) = &conn.rest_url {
        config = config.with_rest_url(url);
    }
    if let Some(n) = conn.concurrency {
        config = config.with_concurrency(usize::from(n));
    }
    if let Some(t) = conn.timeout {
        config = config.with_timeout(t);
    }
    config.check()?;
    Ok(config)
}

/// `BTCUSDT, ETHUSDT spot 1h klines [2024-01-01T00:00:00.000Z, 2024-01-02T00:00:00.000Z)`.
fn describe(r: &Request) -> String {
    let symbols: Vec<&str> = r.symbols.iter().map(Symbol::as_str).collect();
    let interval = r.interval.map(|i| format!("{i} ")).unwrap_or_default();
    format!(
        "{} {} {interval}{} {}",
        symbols.join(", "),
        r.market,
        r.kind,
        r.range
    )
}

/// Runs `dsm fetch`.
pub async fn run(args: &FetchArgs, printer: Printer, signals: &mut Signals) -> anyhow::Result<()> {
    let mut request = build_request(args, dsm::time::now_ms())?;
    let plan = output::plan(&args.output, args.format, &request.symbols)?;
    let config = manager_config(&args.conn, args.source, !args.no_cache)?;
    tracing::debug!(?request, ?plan, "fetch");

    let what = describe(&request);
    // Log lines would tear a progress bar apart, so -v turns it off.
    let progress = ProgressUi::new(printer.quiet() || printer.verbose());
    if let Some(p) = &progress {
        request.progress = Some(p.callback());
    }
    let manager = DataSourceManager::new(config).context("starting the data source manager")?;

    // Windows of the range are fetched a few at a time and written as they come, so memory does
    // not grow with the range; files are committed only after the last window.
    let started = std::time::Instant::now();
    let control = Arc::new(WriteControl::default());
    let (tx, rx) = tokio::sync::mpsc::channel::<Window>(1);
    let writer = {
        let (plan, control) = (plan.clone(), control.clone());
        let schema = dsm::schema::output_schema(request.market, request.kind);
        tokio::task::spawn_blocking(move || write_windows(&plan, &schema, rx, &control))
    };
    tokio::pin!(writer);
    let token = tokio_util::sync::CancellationToken::new();
    let kind = args.dataset.kind;
    let mut totals: Vec<SymbolTotals> = request
        .symbols
        .iter()
        .cloned()
        .map(SymbolTotals::new)
        .collect();
    let allow_partial = args.allow_partial;
    let feed = async {
        // Owned by the fetch: dropping it (a signal) closes the channel, and the writer then
        // discards its temporaries instead of committing.
        let tx = tx;
        let mut windows = std::pin::pin!(manager.get_windows(request, &token));
        while let Some(window) = windows.next().await {
            let window = window.with_context(|| format!("fetching {what}"))?;
            for (t, r) in totals.iter_mut().zip(&window.results) {
                t.add(kind, r);
            }
            if tx.send(Window::Data(window)).await.is_err() {
                // The writer stopped; its error is reported below.
                return Ok(None);
            }
        }
        // An incomplete answer is not committed unless asked for: dropping the sender without
        // `End` makes the writer discard its temporaries.
        if !allow_partial && let Some(e) = totals.iter().find_map(SymbolTotals::incomplete) {
            return Ok(Some(e));
        }
        // Only now may the writer commit: everything arrived.
        let _ = tx.send(Window::End).await;
        Ok::<_, anyhow::Error>(None)
    };
    let outcome = tokio::select! {
        r = async {
            let fed = feed.await;
            let written = (&mut writer).await;
            (fed, written)
        } => Ok(r),
        sig = signals.recv() => Err(sig),
    };
    drop(progress);
    let mut incomplete = None;
    let paths = match outcome {
        Ok((fed, written)) => {
            let written = written.context("the output writer stopped unexpectedly");
            manager.shutdown(SHUTDOWN_DEADLINE).await;
            incomplete = fed?;
            if incomplete.is_some() {
                // The writer saw the channel close without `End`: nothing was written.
                Vec::new()
            } else {
                written??
            }
        }
        Err(sig) => {
            // The fetch is dropped (which cancels it); stop the writer, which removes its
            // temporaries, and let the manager stop its work. A second signal stops waiting.
            control.cancel();
            token.cancel();
            let stopped = async {
                let written = (&mut writer).await;
                manager.shutdown(SHUTDOWN_DEADLINE).await;
                written
            };
            tokio::select! {
                written = stopped => {
                    // Every file was committed before the signal took effect: the work is done.
                    if let Ok(Ok(paths)) = written {
                        paths
                    } else {
                        return Err(Interrupted(sig).into());
                    }
                }
                _ = signals.recv() => {
                    control.remove_temporaries();
                    return Err(Interrupted(sig).into());
                }
            }
        }
    };

    let mut total = Summary::default();
    for t in &mut totals {
        t.summary.elapsed = started.elapsed();
        total.add(&t.summary);
    }
    total.elapsed = started.elapsed();
    let report = FetchReport::new(args.dataset.kind, &totals, &paths, &total);
    for failure in &total.failures {
        printer.warn(failure);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the summary")?;
        printer.out(&json)?;
    } else {
        for line in crate::summary::text_lines(&report) {
            printer.status(&line);
        }
    }
    match incomplete {
        Some(e) => Err(anyhow::Error::from(dsm::Error::from(e))
            .context(format!("fetching {what}: nothing was written"))),
        None => Ok(()),
    }
}

/// What the fetch sends the writer thread.
enum Window {
    /// The next window of every symbol.
    Data(Response),
    /// Every window arrived: finish and commit.
    End,
}

/// The writer thread: one [`FileWriter`] per symbol, fed window by window; commits every file
/// only after [`Window::End`]. If the channel closes without it (error, signal), the writers are
/// dropped and their temporaries removed.
fn write_windows(
    plan: &OutputPlan,
    schema: &arrow::datatypes::SchemaRef,
    mut rx: tokio::sync::mpsc::Receiver<Window>,
    control: &Arc<WriteControl>,
) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(dir) = &plan.create_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let mut writers = plan
        .targets
        .iter()
        .map(|(symbol, path)| {
            FileWriter::create(path, plan.format, schema, control)
                .with_context(|| format!("writing {symbol}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    loop {
        match rx.blocking_recv() {
            Some(Window::Data(window)) => {
                if window.results.len() != writers.len() {
                    anyhow::bail!(
                        "the manager returned {} results for {} symbols (a dsm bug)",
                        window.results.len(),
                        writers.len()
                    );
                }
                for ((w, r), (symbol, _)) in
                    writers.iter_mut().zip(&window.results).zip(&plan.targets)
                {
                    for b in &r.batches {
                        w.write(b).with_context(|| format!("writing {symbol}"))?;
                    }
                }
            }
            Some(Window::End) => break,
            None => anyhow::bail!("cancelled"),
        }
    }
    let pending = writers
        .into_iter()
        .zip(&plan.targets)
        .map(|(w, (symbol, _))| w.finish().with_context(|| format!("writing {symbol}")))
        .collect::<anyhow::Result<Vec<Pending>>>()?;
    pending.into_iter().map(Pending::commit).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};

    const NOW: i64 = 1_735_689_600_000; // 2025-01-01

    fn fetch(args: &[&str]) -> FetchArgs {
        let mut v = vec!["dsm", "fetch"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Fetch(f) => *f,
            other => panic!("not a fetch: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        build_request(&fetch(args), NOW).unwrap_err().to_string()
    }

    #[test]
    fn a_good_request() {
        let r = build_request(
            &fetch(&[
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02",
                "-o",
                "x.parquet",
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(r.range.start(), 1_704_067_200_000);
        assert_eq!(r.range.end(), 1_704_153_600_000);
        assert_eq!(r.source, Some(dsm::SourcePolicy::Auto));
        assert!(!r.include_open);
    }

    #[test]
    fn end_defaults_to_now() {
        let r = build_request(
            &fetch(&[
                "BTCUSDT",
                "--market",
                "um",
                "--kind",
                "funding",
                "--start",
                "2024-01-01",
                "-o",
                "x.csv",
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(r.range.end(), NOW);
    }

    #[test]
    fn bad_inputs_say_what_is_valid() {
        let base = [
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
            "-o",
            "x.csv",
        ];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = extra.to_vec();
            v.extend_from_slice(&base);
            err(&v)
        };
        assert!(
            with(&["btcusdt", "--market", "spot", "--interval", "1m"])
                .contains("did you mean BTCUSDT")
        );
        assert!(with(&["BTCUSDT", "--market", "um", "--interval", "1s"]).contains("spot only"));
        assert!(with(&["BTCUSDT", "--market", "spot"]).contains("needs an interval"));
        assert!(
            with(&["BTCUSDT", "--market", "spot", "--kind", "funding"])
                .contains("it exists on um, cm")
        );
        assert!(
            with(&[
                "BTCUSDT",
                "--market",
                "um",
                "--kind",
                "funding",
                "--interval",
                "1h"
            ])
            .contains("leave the interval out")
        );
        assert!(with(&["BTCUSDT", "--market", "cm", "--interval", "1m"]).contains("BTCUSD_PERP"));
    }

    #[test]
    fn source_cache_without_a_cache_is_a_usage_error() {
        let a = fetch(&[
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1m",
            "--start",
            "2024-01-01",
            "-o",
            "x.csv",
            "--source",
            "cache",
            "--no-cache",
        ]);
        let e = manager_config(&a.conn, a.source, !a.no_cache).unwrap_err();
        assert_eq!(crate::exit::for_error(&e).code(), 2, "{e}");
        assert!(e.to_string().contains("--no-cache"), "{e}");
    }

    #[test]
    fn rest_url_sets_every_market() {
        let a = fetch(&[
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1m",
            "--start",
            "2024-01-01",
            "-o",
            "x.csv",
            "--rest-url",
            "http://127.0.0.1:9/",
            "--vision-url",
            "http://127.0.0.1:8/",
        ]);
        let c = manager_config(&a.conn, a.source, !a.no_cache).unwrap();
        assert_eq!(
            c.rest_urls,
            dsm::manager::RestUrls::all("http://127.0.0.1:9")
        );
        assert_eq!(c.vision_url, "http://127.0.0.1:8");
    }
}
