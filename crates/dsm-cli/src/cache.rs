//! `dsm cache ls|verify|prune|size`: thin wrappers over [`dsm::cache::CacheStore`].
//!
//! This module decides no policy: it opens the store (`--cache-dir`, `$DSM_CACHE_DIR`, or the
//! platform default), calls one store operation, and prints its report on stdout (it is the
//! command's result) as text or, with `--json`, JSON. It must never read or change cache files
//! itself: the on-disk format belongs to the library.

use std::path::PathBuf;

use anyhow::Context as _;
use dsm::cache::{CacheStore, PartitionInfo, PruneFilter};
use dsm::time::format_ms;
use dsm::{DataSourceManager, ManagerConfig, TimeRange};
use indicatif::HumanBytes;
use serde::Serialize;

use crate::args::{CacheArgs, CacheCommand, VerifyArgs};
use crate::exit::{CacheProblems, UsageError};
use crate::printer::Printer;

/// Runs a `dsm cache` subcommand.
pub async fn run(command: &CacheCommand, printer: Printer) -> anyhow::Result<()> {
    match command {
        CacheCommand::Ls(args) => ls(args, printer).await,
        CacheCommand::Verify(args) => verify(args, printer).await,
        CacheCommand::Prune {
            common,
            symbol,
            market,
            older_than,
            all,
        } => {
            let filter = PruneFilter {
                symbol: symbol.as_deref().map(dsm::Symbol::new).transpose()?,
                market: *market,
                older_than: older_than
                    .as_deref()
                    .map(dsm::time::parse_instant)
                    .transpose()?,
                all: *all,
            };
            if !filter.all
                && filter.symbol.is_none()
                && filter.market.is_none()
                && filter.older_than.is_none()
            {
                return Err(UsageError(
                    "dsm cache prune needs --all or at least one of --symbol, --market, \
                     --older-than"
                        .into(),
                )
                .into());
            }
            prune(common, &filter, printer).await
        }
        CacheCommand::Size(args) => size(args, printer).await,
    }
}

/// Opens the cache for `dsm cache` commands, which only look at (or tidy) an existing cache: a
/// directory that does not exist is an error, and nothing is created.
async fn open(args: &CacheArgs) -> anyhow::Result<CacheStore> {
    if let Some(url) = &args.cache_url {
        return Ok(CacheStore::open_url(url).map_err(dsm::Error::from)?);
    }
    let dir = store_dir(args)?;
    if !dir.is_dir() {
        return Err(crate::exit::UsageError(format!(
            "no cache at {}: the directory does not exist (nothing was created); check --cache-dir or $DSM_CACHE_DIR (dsm fetch creates the cache)",
            dir.display()
        ))
        .into());
    }
    let store = tokio::task::spawn_blocking(move || CacheStore::open(dir))
        .await
        .context("opening the cache")?
        .map_err(dsm::Error::from)?;
    Ok(store)
}

fn ranges(r: &[TimeRange]) -> Vec<String> {
    r.iter().map(ToString::to_string).collect()
}

#[derive(Debug, Serialize)]
struct PartitionJson {
    market: String,
    kind: String,
    symbol: String,
    interval: Option<String>,
    path: String,
    start: String,
    end: String,
    rows: u64,
    bytes: u64,
    covered: Vec<String>,
    gaps: Vec<String>,
    sources: Vec<String>,
    short_files: Vec<String>,
}

impl From<&PartitionInfo> for PartitionJson {
    fn from(p: &PartitionInfo) -> PartitionJson {
        PartitionJson {
            market: p.dataset.market.to_string(),
            kind: p.dataset.kind.to_string(),
            symbol: p.dataset.symbol.to_string(),
            interval: p.dataset.interval.map(|i| i.to_string()),
            path: p.path.clone(),
            start: format_ms(p.partition.start()),
            end: format_ms(p.partition.end()),
            rows: p.rows,
            bytes: p.bytes,
            covered: ranges(&p.covered),
            gaps: ranges(&p.gaps),
            sources: p.sources.iter().map(ToString::to_string).collect(),
            short_files: p.short_files.clone(),
        }
    }
}

async fn ls(args: &CacheArgs, printer: Printer) -> anyhow::Result<()> {
    let store = open(args).await?;
    let parts = store.list().await.map_err(dsm::Error::from)?;
    let parts: Vec<PartitionJson> = parts.iter().map(PartitionJson::from).collect();
    if args.json {
        return printer.out(&serde_json::to_string_pretty(&parts)?);
    }
    if parts.is_empty() {
        return printer.out(&format!("the cache at {} is empty", store.location()));
    }
    for p in &parts {
        let interval = p
            .interval
            .as_deref()
            .map(|i| format!(" {i}"))
            .unwrap_or_default();
        printer.out(&format!(
            "{} {} {}{interval}  {} .. {}  {} rows  {}  covered {}{}  [{}]",
            p.market,
            p.kind,
            p.symbol,
            p.start,
            p.end,
            p.rows,
            HumanBytes(p.bytes),
            p.covered.join(" "),
            if p.gaps.is_empty() {
                String::new()
            } else {
                format!("  gaps {}", p.gaps.join(" "))
            },
            p.sources.join(", ")
        ))?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct VerifyJson {
    partitions: usize,
    files: usize,
    rows: u64,
    problems: Vec<ProblemJson>,
    quarantined: Vec<String>,
    removed: usize,
    /// With `--remote`: cached Vision files whose `.CHECKSUM` was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_checked: Option<usize>,
    /// With `--remote`: files Binance re-published (fetched again and cached).
    #[serde(skip_serializing_if = "Option::is_none")]
    republished: Option<Vec<dsm::manager::Republished>>,
    /// With `--remote`: cached files the archive no longer has.
    #[serde(skip_serializing_if = "Option::is_none")]
    gone: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
struct ProblemJson {
    path: String,
    reason: String,
}

/// Asks the archive whether cached Vision files were re-published; fetches those again.
async fn check_remote(args: &VerifyArgs) -> anyhow::Result<dsm::manager::RepublishReport> {
    let since = args
        .since
        .as_deref()
        .map(dsm::time::parse_instant)
        .transpose()?;
    let mut config = ManagerConfig {
        cache_dir: Some(store_dir(&args.common)?),
        cache_url: args.common.cache_url.clone(),
        ..ManagerConfig::default()
    };
    if let Some(url) = &args.vision_url {
        config.vision_url = url.trim_end_matches('/').to_owned();
    }
    let manager = DataSourceManager::new(config).context("starting the data source manager")?;
    let token = tokio_util::sync::CancellationToken::new();
    let report = manager
        .check_republished(since, &token)
        .await
        .context("checking cached Vision files against the archive")?;
    manager
        .shutdown(std::time::Duration::from_millis(500))
        .await;
    Ok(report)
}

/// The cache directory the command works on.
fn store_dir(args: &CacheArgs) -> anyhow::Result<PathBuf> {
    match &args.cache_dir {
        Some(d) => Ok(d.clone()),
        None => CacheStore::default_dir().map_err(|e| dsm::Error::from(e).into()),
    }
}

async fn verify(args: &VerifyArgs, printer: Printer) -> anyhow::Result<()> {
    let store = open(&args.common).await?;
    let r = store.verify().await.map_err(dsm::Error::from)?;
    let remote = if args.remote {
        Some(check_remote(args).await?)
    } else {
        None
    };
    if args.common.json {
        let json = VerifyJson {
            partitions: r.partitions,
            files: r.files,
            rows: r.rows,
            problems: r
                .problems
                .iter()
                .map(|p| ProblemJson {
                    path: p.path.clone(),
                    reason: p.reason.clone(),
                })
                .collect(),
            quarantined: r.quarantined.clone(),
            removed: r.removed,
            remote_checked: remote.as_ref().map(|x| x.checked),
            republished: remote.as_ref().map(|x| x.republished.clone()),
            gone: remote.as_ref().map(|x| x.gone.clone()),
        };
        printer.out(&serde_json::to_string_pretty(&json)?)?;
    } else {
        printer.out(&format!(
            "checked {} partitions, {} files, {} rows in {}: {}",
            r.partitions,
            r.files,
            r.rows,
            store.location(),
            if r.is_clean() {
                "all good".to_owned()
            } else {
                format!("{} problems", r.problems.len())
            }
        ))?;
        for p in &r.problems {
            printer.out(&format!("  {}: {}", p.path, p.reason))?;
        }
        for q in &r.quarantined {
            printer.out(&format!("  quarantined {q} (it will be fetched again)"))?;
        }
        if r.removed > 0 {
            printer.out(&format!("  removed {} stray files", r.removed))?;
        }
        if let Some(x) = &remote {
            printer.out(&format!(
                "checked {} cached Vision files against the archive: {} re-published",
                x.checked,
                x.republished.len()
            ))?;
            for p in &x.republished {
                printer.out(&format!(
                    "  re-published {}: {} rows changed, {} added, {} removed (cached anew)",
                    p.file, p.changed, p.added, p.removed
                ))?;
            }
            for g in &x.gone {
                printer.out(&format!("  no longer in the archive: {g} (kept)"))?;
            }
        }
    }
    if r.is_clean() {
        Ok(())
    } else {
        Err(CacheProblems(r.problems.len()).into())
    }
}

async fn prune(args: &CacheArgs, filter: &PruneFilter, printer: Printer) -> anyhow::Result<()> {
    let store = open(args).await?;
    let r = store.prune(filter).await.map_err(dsm::Error::from)?;
    if args.json {
        printer.out(&serde_json::json!({ "files": r.files, "bytes": r.bytes }).to_string())
    } else {
        printer.out(&format!(
            "removed {} files, {} freed from {}",
            r.files,
            HumanBytes(r.bytes),
            store.location()
        ))
    }
}

async fn size(args: &CacheArgs, printer: Printer) -> anyhow::Result<()> {
    let store = open(args).await?;
    let bytes = store.size().await.map_err(dsm::Error::from)?;
    if args.json {
        printer
            .out(&serde_json::json!({ "bytes": bytes, "location": store.location() }).to_string())
    } else {
        printer.out(&format!(
            "{} ({bytes} bytes) in {}",
            HumanBytes(bytes),
            store.location()
        ))
    }
}
