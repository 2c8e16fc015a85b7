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
use dsm::manager::RestUrls;
use dsm::{DataSourceManager, ManagerConfig, Request, Response, SourcePolicy, Symbol, TimeRange};

use crate::args::FetchArgs;
use crate::exit::{Interrupted, Signal, UsageError};
use crate::output::{self, OutputPlan, Pending, WriteControl};
use crate::printer::Printer;
use crate::progress::ProgressUi;
use crate::signal::Signals;
use crate::summary::FetchReport;

/// How long the manager gets to stop its work after the first signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(500);

/// Builds and validates the request from the arguments: no I/O. `now_ms` is the default end.
pub fn build_request(args: &FetchArgs, now_ms: i64) -> anyhow::Result<Request> {
    args.market.check(args.kind, args.interval)?;
    let symbols = args
        .symbols
        .iter()
        .map(|s| Symbol::for_market(s, args.market, args.kind))
        .collect::<Result<Vec<_>, _>>()?;
    let start = dsm::time::parse_instant(&args.start)?;
    let end = match &args.end {
        Some(e) => dsm::time::parse_instant(e)?,
        None => now_ms,
    };
    let range = TimeRange::new(start, end)?;
    let mut request = Request::new(args.market, args.kind, symbols, args.interval, range);
    request.include_open = args.include_open;
    request.source = Some(args.source);
    request.validate()?;
    Ok(request)
}

/// The manager configuration from the arguments.
pub fn manager_config(args: &FetchArgs) -> anyhow::Result<ManagerConfig> {
    if args.no_cache && args.source == SourcePolicy::Cache {
        return Err(UsageError(
            "--source cache reads only the cache, so it cannot be combined with --no-cache".into(),
        )
        .into());
    }
    let mut config = ManagerConfig {
        cache_dir: args.cache_dir.clone(),
        use_cache: !args.no_cache,
        source: args.source,
        ..ManagerConfig::default()
    };
    if let Some(url) = &args.vision_url {
        config.vision_url = url.trim_end_matches('/').to_owned();
    }
    if let Some(url) = &args.rest_url {
        config.rest_urls = RestUrls::all(url);
    }
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
    let config = manager_config(args)?;
    tracing::debug!(?request, ?plan, "fetch");

    let what = describe(&request);
    // Log lines would tear a progress bar apart, so -v turns it off.
    let progress = ProgressUi::new(printer.quiet() || printer.verbose());
    if let Some(p) = &progress {
        request.progress = Some(p.callback());
    }
    let manager = DataSourceManager::new(config).context("starting the data source manager")?;

    let response = tokio::select! {
        r = manager.get(request) => r.with_context(|| format!("fetching {what}"))?,
        sig = signals.recv() => {
            // The request future is dropped here, which cancels it; let the manager stop its work.
            drop(progress);
            tokio::select! {
                () = manager.shutdown(SHUTDOWN_DEADLINE) => {}
                _ = signals.recv() => {}
            }
            return Err(Interrupted(sig).into());
        }
    };
    drop(progress);

    let written = write_all(&plan, &response, signals).await;
    manager.shutdown(SHUTDOWN_DEADLINE).await;
    let paths = written?;

    let report = FetchReport::new(args.kind, &response.results, &paths, &response.summary);
    for failure in &response.summary.failures {
        printer.warn(failure);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the summary")?;
        printer.out(&json)?;
    } else {
        for line in report.text_lines() {
            printer.status(&line);
        }
    }
    Ok(())
}

/// Writes every symbol's file (off the async threads), then commits them all; a signal cancels
/// the writer and nothing more is committed (a file is only ever renamed into place whole).
async fn write_all(
    plan: &OutputPlan,
    response: &Response,
    signals: &mut Signals,
) -> anyhow::Result<Vec<PathBuf>> {
    if response.results.len() != plan.targets.len() {
        anyhow::bail!(
            "the manager returned {} results for {} symbols (a dsm bug)",
            response.results.len(),
            plan.targets.len()
        );
    }
    let control = Arc::new(WriteControl::default());
    let job = {
        let plan = plan.clone();
        let results = response.results.clone();
        let control = control.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PathBuf>> {
            if let Some(dir) = &plan.create_dir {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating directory {}", dir.display()))?;
            }
            let mut pending: Vec<Pending> = Vec::with_capacity(results.len());
            for ((symbol, path), result) in plan.targets.iter().zip(&results) {
                let p = output::write(path, plan.format, &result.schema, &result.batches, &control)
                    .with_context(|| format!("writing {symbol}"))?;
                pending.push(p);
            }
            pending.into_iter().map(Pending::commit).collect()
        })
    };
    tokio::pin!(job);
    let mut interrupted: Option<Signal> = None;
    loop {
        tokio::select! {
            joined = &mut job => {
                let result = joined.context("the output writer stopped unexpectedly")?;
                return match (result, interrupted) {
                    // Every file was committed before the signal took effect: the work is done.
                    (Ok(paths), _) => Ok(paths),
                    (Err(_), Some(sig)) => Err(Interrupted(sig).into()),
                    (Err(e), None) => Err(e),
                };
            }
            sig = signals.recv() => {
                if let Some(first) = interrupted {
                    // Second signal: stop waiting for the writer, remove what it has written.
                    control.remove_temporaries();
                    return Err(Interrupted(first).into());
                }
                control.cancel();
                interrupted = Some(sig);
            }
        }
    }
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
            Command::Cache(_) => unreachable!(),
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
        assert_eq!(r.source, Some(SourcePolicy::Auto));
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
            with(&["BTCUSDT", "--market", "spot", "--kind", "funding"]).contains("futures only")
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
        let e = manager_config(&a).unwrap_err();
        assert!(e.is::<UsageError>());
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
        let c = manager_config(&a).unwrap();
        assert_eq!(c.rest_urls, RestUrls::all("http://127.0.0.1:9"));
        assert_eq!(c.vision_url, "http://127.0.0.1:8");
    }
}
