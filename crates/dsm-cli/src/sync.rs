//! `dsm sync` and `dsm symbols`: a whole universe into the cache, and the list it is drawn from.

use anyhow::Context as _;
use dsm::manager::{SyncRequest, Universe};
use dsm::report::{SymbolEntry, SyncReport};
use dsm::{DataSourceManager, SourcePolicy};

use crate::args::{SymbolsArgs, SyncArgs, parse_range};
use crate::exit::{Interrupted, SyncIncomplete, UsageError};
use crate::fetch::{SHUTDOWN_DEADLINE, manager_config};
use crate::printer::Printer;
use crate::progress::SyncUi;
use crate::signal::Signals;

/// Builds and validates the sync from the arguments: no network. `now_ms` is the default end.
pub fn build_request(args: &SyncArgs, now_ms: i64) -> anyhow::Result<SyncRequest> {
    if args.source == SourcePolicy::Cache {
        return Err(UsageError(
            "--source cache has nothing to sync: use auto, vision or rest".into(),
        )
        .into());
    }
    args.dataset
        .market
        .check(args.dataset.kind, args.dataset.interval)?;
    let universe = Universe::parse(&args.symbols, args.dataset.market, args.dataset.kind)?;
    let range = parse_range(&args.start, args.end.as_deref(), now_ms)?;
    let mut request = SyncRequest::new(
        args.dataset.market,
        args.dataset.kind,
        args.dataset.interval,
        universe,
        range,
    );
    request.shard = args.shard;
    request.source = Some(args.source);
    request.validate()?;
    Ok(request)
}

/// Runs `dsm sync`.
pub async fn run(args: &SyncArgs, printer: Printer, signals: &mut Signals) -> anyhow::Result<()> {
    let mut request = build_request(args, dsm::time::now_ms())?;
    let config = manager_config(&args.conn, args.source, true)?;
    let what = format!(
        "{} {} {}{} over {}",
        args.symbols,
        args.dataset.market,
        args.dataset
            .interval
            .map(|i| format!("{i} "))
            .unwrap_or_default(),
        args.dataset.kind,
        request.range
    );
    let progress = SyncUi::new(printer.quiet() || printer.verbose());
    if let Some(p) = &progress {
        request.progress = Some(p.callback());
    }
    let manager = DataSourceManager::new(config).context("starting the data source manager")?;
    let token = tokio_util::sync::CancellationToken::new();
    let outcome = tokio::select! {
        r = manager.sync(request, &token) => r,
        sig = signals.recv() => {
            // Units already cached stay; a rerun resumes from them.
            token.cancel();
            drop(progress);
            manager.shutdown(SHUTDOWN_DEADLINE).await;
            return Err(Interrupted(sig).into());
        }
    };
    drop(progress);
    manager.shutdown(SHUTDOWN_DEADLINE).await;
    let outcome = outcome.with_context(|| format!("syncing {what}"))?;
    let report = SyncReport::new(&outcome);
    for s in &report.symbols {
        for f in &s.failures {
            printer.warn(&format!("{}: {}", s.symbol, f.message));
        }
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        printer.out(&json)?;
    } else {
        let (t, c) = (&report.total, &report.total.counts);
        printer.status(&format!(
            "synced {} symbol(s){}: {} units, {} rows ({} already cached), {} files, {} bytes, {} REST requests, {} gaps, in {:.1} s",
            t.symbols,
            report.shard.as_ref().map(|s| format!(" (shard {s})")).unwrap_or_default(),
            c.units,
            c.rows,
            c.cache_rows,
            c.files,
            c.bytes,
            c.rest.requests,
            t.gaps,
            t.elapsed_ms as f64 / 1000.0
        ));
        for s in report.symbols.iter().filter(|s| !s.complete) {
            let missing: Vec<String> = s
                .missing
                .iter()
                .map(|g| format!("[{}, {})", g.start, g.end))
                .collect();
            printer.status(&format!(
                "{}: incomplete; missing {}; {} failed unit(s)",
                s.symbol,
                if missing.is_empty() {
                    "nothing else".into()
                } else {
                    missing.join(", ")
                },
                s.failures.len()
            ));
        }
    }
    match outcome.failure_category() {
        None => Ok(()),
        Some(category) => Err(SyncIncomplete(
            category,
            format!(
                "syncing {what}: {} of {} symbol(s) incomplete ({}); rerun to fetch only what is missing",
                report.total.incomplete.len(),
                report.total.symbols,
                first_few(&report.total.incomplete)
            ),
        )
        .into()),
    }
}

/// Runs `dsm symbols`.
pub async fn symbols(args: &SymbolsArgs, printer: Printer) -> anyhow::Result<()> {
    let config = manager_config(&args.conn, SourcePolicy::Auto, false)?;
    let manager = DataSourceManager::new(config).context("starting the data source manager")?;
    let listed = manager
        .symbols(args.market, args.status)
        .await
        .with_context(|| format!("listing {}'s symbols", args.market));
    manager.shutdown(SHUTDOWN_DEADLINE).await;
    let entries: Vec<SymbolEntry> = listed?.iter().map(SymbolEntry::new).collect();
    if args.json {
        let json = serde_json::to_string_pretty(&entries).context("encoding the list")?;
        printer.out(&json)?;
    } else {
        let mut text = String::new();
        for e in &entries {
            let status = match (&e.exchange_status, e.status) {
                (Some(s), _) => s.clone(),
                (None, _) => "DELISTED".into(),
            };
            text.push_str(&format!(
                "{:<20} {:<10} {:<24} {}\n",
                e.symbol,
                status,
                e.listed.as_deref().unwrap_or("-"),
                e.ended.as_deref().unwrap_or("-")
            ));
        }
        printer.out(text.trim_end())?;
    }
    Ok(())
}

/// The first ten names, and how many more.
fn first_few(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}
