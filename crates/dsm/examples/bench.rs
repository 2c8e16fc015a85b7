//! End-to-end benchmarks: dsm against the machine's limits, on loopback against the in-process
//! emulator.
//!
//! ```sh
//! cargo build --release -p dsm-cli            # for the CLI rows of the warm scenario
//! cargo run --release -p dsm --example bench  # full run (a few minutes)
//! cargo run --release -p dsm --example bench -- --quick   # small version of every scenario
//! ```
//!
//! Scenarios (see BENCHMARKS.md, "End-to-end"):
//! 1. cold 1m year (12 monthly files) into the cache and to a Parquet file;
//! 2. cold 1s, 30 days (2.6 M rows), run in a child process so its peak RSS (VmHWM) is its own;
//! 3. 20 symbols × a year of 1h in one request;
//! 4. REST top-up: the last 3 days of 1m for 10 symbols with the real spot weight limit;
//! 5. warm: 1–3 again from the cache, in-process and through the `dsm` CLI process;
//! 6. the pipeline limit: SHA-256 + inflate + parse of the same zips on one core.
//!
//! "Cold" means dsm's cache is empty; the emulator is warmed first (it synthesises each zip once
//! and keeps it in memory) so the figures measure dsm, not the emulator's generator.
//!
//! This is a benchmark runner: it prints its table on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use chrono::{TimeZone, Utc};
use dsm::manager::RestUrls;
use dsm::output::ParquetWriter;
use dsm::time::parse_instant;
use dsm::vision::FileKey;
use dsm::{
    DataKind, DataSourceManager, Dataset, Interval, ManagerConfig, Market, Request, Response,
    SourcePolicy, Symbol, TimeRange,
};
use dsm_emulator::{Emulator, EmulatorConfig};
use sha2::{Digest, Sha256};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// Sizes of every scenario: the full run and the `--quick` smoke run.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    /// Repetitions of each cold scenario (median reported).
    cold_reps: usize,
    /// Repetitions of each warm measurement.
    warm_reps: usize,
    /// Scenario 1: `[start, end)` of 1m.
    m1: (&'static str, &'static str),
    /// Scenario 2: `[start, end)` of 1s.
    s1: (&'static str, &'static str),
    /// Scenario 3: symbols and `[start, end)` of 1h.
    many_symbols: usize,
    h1: (&'static str, &'static str),
    /// Scenario 4: symbols and days of 1m through REST.
    rest_symbols: usize,
    rest_days: i64,
    /// Run scenario 4 alone (`--rest-only`).
    rest_only: bool,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            cold_reps: 3,
            warm_reps: 10,
            m1: ("2023-01-01", "2024-01-01"),
            // 30 days that do not make a calendar month: 30 daily files (a user's "last 30 days").
            s1: ("2024-05-01", "2024-05-31"),
            many_symbols: 20,
            h1: ("2023-01-01", "2024-01-01"),
            rest_symbols: 10,
            rest_days: 3,
            rest_only: false,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            cold_reps: 1,
            warm_reps: 3,
            m1: ("2023-01-01", "2023-03-01"),
            s1: ("2024-05-01", "2024-05-03"),
            many_symbols: 4,
            h1: ("2023-01-01", "2023-03-01"),
            rest_symbols: 2,
            rest_days: 1,
            rest_only: false,
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone, Default)]
struct Row {
    scenario: String,
    rows: u64,
    wall: Duration,
    requests: Option<u64>,
    note: String,
}

impl Row {
    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// One goal: met or missed, with the measured/target ratio.
#[derive(Debug, Clone)]
struct Goal {
    name: String,
    measured: String,
    target: String,
    ratio: f64,
    met: bool,
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child-fetch") {
        return child_fetch(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rest_only = args.iter().any(|a| a == "--rest-only");
    if let Some(bad) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "--quick" | "--rest-only"))
    {
        return Err(
            format!("unknown argument {bad:?}; usage: bench [--quick] [--rest-only]").into(),
        );
    }
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    plan.rest_only = rest_only;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(plan))
}

fn ms(s: &str) -> Res<i64> {
    Ok(parse_instant(s)?)
}

fn range(r: (&str, &str)) -> Res<TimeRange> {
    Ok(TimeRange::new(ms(r.0)?, ms(r.1)?)?)
}

fn manager(base: &str, cache: &Path) -> Res<DataSourceManager> {
    Ok(DataSourceManager::new(ManagerConfig {
        cache_dir: Some(cache.to_path_buf()),
        vision_url: base.to_owned(),
        rest_urls: RestUrls::all(base),
        ..ManagerConfig::default()
    })?)
}

fn symbols(n: usize) -> Res<Vec<Symbol>> {
    (1..=n)
        .map(|i| Ok(Symbol::new(&format!("SYM{i:02}USDT"))?))
        .collect()
}

fn rows_of(resp: &Response) -> u64 {
    resp.results.iter().map(|r| r.num_rows() as u64).sum()
}

fn check_complete(what: &str, resp: &Response) -> Res<()> {
    for r in &resp.results {
        if !r.missing.is_empty() || !r.gaps.is_empty() {
            return Err(format!(
                "{what}: {} is incomplete (gaps {:?}, missing {:?}); the benchmark needs full data",
                r.symbol, r.gaps, r.missing
            )
            .into());
        }
    }
    Ok(())
}

/// A Parquet writer with the CLI's settings and its parallel column encoding.
fn parquet_writer(
    path: &Path,
    schema: &arrow::datatypes::SchemaRef,
) -> Res<ParquetWriter<std::io::BufWriter<std::fs::File>>> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    Ok(ParquetWriter::try_new(file, schema.clone())?)
}

fn write_parquet(path: &Path, resp: &Response) -> Res<()> {
    let Some(first) = resp.results.first() else {
        return Ok(());
    };
    let mut w = parquet_writer(path, &first.schema)?;
    for r in &resp.results {
        for b in &r.batches {
            w.write(b)?;
        }
    }
    std::io::Write::flush(&mut w.into_inner()?)?;
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

/// Peak resident set size of this process (VmHWM), in kB.
fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Child mode for scenario 2: one cold fetch into an empty cache and to a Parquet file, alone in
/// this process so VmHWM is this scenario's. Prints one line: `get_ms total_ms rows hwm_kb`.
/// The child process of scenario 2: fetches with [`DataSourceManager::get_windows`] (the way to
/// write a long range without holding it) and writes each window to `OUT` as it arrives (`-` for
/// no file). Prints wall ms, rows and its own peak RSS (VmHWM, KiB).
fn child_fetch(args: &[String]) -> Res<()> {
    let [base, cache, symbol, interval, start, end, out] = args else {
        return Err("--child-fetch BASE CACHE SYMBOL INTERVAL START END OUT".into());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use futures::TryStreamExt;
        let m = manager(base, Path::new(cache))?;
        let interval: Interval = interval.parse()?;
        let req = Request::klines(
            Market::Spot,
            Symbol::new(symbol)?,
            interval,
            TimeRange::new(start.parse()?, end.parse()?)?,
        );
        let t0 = Instant::now();
        let token = tokio_util::sync::CancellationToken::new();
        let mut windows = std::pin::pin!(m.get_windows(req, &token));
        let mut writer = None;
        let mut rows = 0;
        while let Some(w) = windows.try_next().await? {
            check_complete("child fetch", &w)?;
            rows += rows_of(&w);
            if out != "-" {
                let r = w.results.first().ok_or("no result")?;
                if writer.is_none() {
                    writer = Some(parquet_writer(Path::new(out), &r.schema)?);
                }
                if let Some(wr) = writer.as_mut() {
                    for b in &r.batches {
                        wr.write(b)?;
                    }
                }
            }
        }
        if let Some(w) = writer {
            std::io::Write::flush(&mut w.into_inner()?)?;
        }
        let total = t0.elapsed();
        println!(
            "{} {} {}",
            total.as_secs_f64() * 1000.0,
            rows,
            vm_hwm_kb().unwrap_or(0)
        );
        m.shutdown(Duration::from_secs(2)).await;
        Ok(())
    })
}

struct Ctx {
    plan: Plan,
    emu: Emulator,
    base: String,
    tmp: tempfile::TempDir,
    rows: Vec<Row>,
    goals: Vec<Goal>,
}

impl Ctx {
    fn fresh_dir(&self, name: &str) -> Res<PathBuf> {
        let d = self.tmp.path().join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Requests the emulator answered since the last call (admin requests excluded).
    fn take_requests(&self) -> u64 {
        let n = self.emu.request_log().len() as u64;
        self.emu.clear_log();
        n
    }

    fn goal(&mut self, name: &str, measured: String, target: String, ratio: f64, met: bool) {
        self.goals.push(Goal {
            name: name.into(),
            measured,
            target,
            ratio,
            met,
        });
    }
}

async fn run(plan: Plan) -> Res<()> {
    // A fixed exchange clock: every 2023 month and every May 2024 day are published.
    let now = Utc
        .with_ymd_and_hms(2024, 7, 15, 0, 0, 0)
        .single()
        .ok_or("bad emulator clock")?;
    let emu = Emulator::start(EmulatorConfig {
        zip_cache_bytes: 2 << 30,
        ..EmulatorConfig::default().with_now(now)
    })
    .await
    .map_err(|e| format!("starting the emulator: {e}"))?;
    let base = emu.base_url();
    let mut ctx = Ctx {
        plan: plan.clone(),
        emu,
        base,
        tmp: tempfile::tempdir()?,
        rows: Vec::new(),
        goals: Vec::new(),
    };
    eprintln!(
        "dsm bench ({}), emulator at {}",
        if plan.quick { "quick" } else { "full" },
        ctx.base
    );

    if plan.rest_only {
        rest_topup(&mut ctx).await?;
        report(&ctx);
        return Ok(());
    }
    warm_emulator(&ctx).await?;
    let pipe = pipeline_limit(&mut ctx).await?;
    let heavy = cold_heavy(&mut ctx, &pipe).await?;
    let m1_cache = cold_m1(&mut ctx, &pipe).await?;
    let h1_cache = many_symbols(&mut ctx).await?;
    rest_topup(&mut ctx).await?;
    warm(&mut ctx, &m1_cache, &heavy, &h1_cache).await?;
    report(&ctx);
    Ok(())
}

fn btc() -> Res<Symbol> {
    Ok(Symbol::new("BTCUSDT")?)
}

/// Downloads every Vision file the scenarios use once (the emulator synthesises and keeps them).
async fn warm_emulator(ctx: &Ctx) -> Res<()> {
    let t0 = Instant::now();
    let dir = ctx.fresh_dir("warmup")?;
    let m = DataSourceManager::new(ManagerConfig {
        use_cache: false,
        cache_dir: Some(dir),
        vision_url: ctx.base.clone(),
        rest_urls: RestUrls::all(&ctx.base),
        ..ManagerConfig::default()
    })?;
    let p = &ctx.plan;
    m.get(Request::klines(
        Market::Spot,
        btc()?,
        Interval::M1,
        range(p.m1)?,
    ))
    .await?;
    m.get(Request::klines(
        Market::Spot,
        btc()?,
        Interval::S1,
        range(p.s1)?,
    ))
    .await?;
    m.get(Request::new(
        Market::Spot,
        DataKind::Klines,
        symbols(p.many_symbols)?,
        Some(Interval::H1),
        range(p.h1)?,
    ))
    .await?;
    m.shutdown(Duration::from_secs(2)).await;
    ctx.emu.clear_log();
    eprintln!("emulator warmed in {}", fmt_d(t0.elapsed()));
    Ok(())
}

/// The single-core pipeline figures for a set of files.
#[derive(Debug, Clone, Copy, Default)]
struct Pipe {
    /// Rows per second through SHA-256 + inflate + parse on one core.
    m1_rate: f64,
    s1_rate: f64,
}

/// Downloads `keys` (plain HTTP, once) and returns their bytes.
async fn download(base: &str, keys: &[FileKey]) -> Res<Vec<(FileKey, Vec<u8>)>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for k in keys {
        let resp = http.get(k.url(base)).send().await?.error_for_status()?;
        out.push((k.clone(), resp.bytes().await?.to_vec()));
    }
    Ok(out)
}

/// SHA-256 + inflate + parse of `files` in a tight loop on this thread; the best of `reps` passes.
fn pipeline_pass(files: &[(FileKey, Vec<u8>)], reps: usize) -> Res<(u64, Duration)> {
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..reps {
        let t0 = Instant::now();
        rows = 0;
        for (key, bytes) in files {
            let digest = Sha256::digest(bytes);
            std::hint::black_box(digest);
            let batch: RecordBatch = dsm::vision::parse_zip(bytes, key)?;
            rows += batch.num_rows() as u64;
        }
        best = best.min(t0.elapsed());
    }
    Ok((rows, best))
}

/// Scenario 6: what one core can do on the same bytes.
async fn pipeline_limit(ctx: &mut Ctx) -> Res<Pipe> {
    let p = ctx.plan.clone();
    let m1_keys = dsm::vision::plan(
        &Dataset::klines(Market::Spot, btc()?, Interval::M1),
        range(p.m1)?,
    )?;
    let s1_keys = dsm::vision::plan(
        &Dataset::klines(Market::Spot, btc()?, Interval::S1),
        range(p.s1)?,
    )?;
    let m1_files = download(&ctx.base, &m1_keys).await?;
    let s1_files = download(&ctx.base, &s1_keys).await?;
    ctx.emu.clear_log();
    let reps = if p.quick { 2 } else { 3 };
    // One core: the loop runs on a blocking thread, nothing else of ours runs meanwhile.
    let ((m1_rows, m1_time), (s1_rows, s1_time)) = tokio::task::spawn_blocking(move || {
        Ok::<_, BoxError>((
            pipeline_pass(&m1_files, reps)?,
            pipeline_pass(&s1_files, reps)?,
        ))
    })
    .await??;
    let pipe = Pipe {
        m1_rate: m1_rows as f64 / m1_time.as_secs_f64(),
        s1_rate: s1_rows as f64 / s1_time.as_secs_f64(),
    };
    ctx.rows.push(Row {
        scenario: format!("6a pipeline 1m, 1 core ({} files)", m1_keys.len()),
        rows: m1_rows,
        wall: m1_time,
        requests: None,
        note: format!("2-core limit {}", fmt_rate(2.0 * pipe.m1_rate)),
    });
    ctx.rows.push(Row {
        scenario: format!("6b pipeline 1s, 1 core ({} files)", s1_keys.len()),
        rows: s1_rows,
        wall: s1_time,
        requests: None,
        note: format!("2-core limit {}", fmt_rate(2.0 * pipe.s1_rate)),
    });
    Ok(pipe)
}

/// Scenario 1: cold year of 1m into the cache and to a Parquet file. Returns a populated cache.
async fn cold_m1(ctx: &mut Ctx, pipe: &Pipe) -> Res<PathBuf> {
    let p = ctx.plan.clone();
    let mut gets = Vec::new();
    let mut totals = Vec::new();
    let mut rows = 0;
    let mut requests = 0;
    let mut cache = PathBuf::new();
    for rep in 0..p.cold_reps {
        cache = ctx.fresh_dir(&format!("m1-{rep}"))?;
        let out = cache.join("out.parquet");
        let m = manager(&ctx.base, &cache)?;
        ctx.take_requests();
        let t0 = Instant::now();
        let resp = m
            .get(Request::klines(
                Market::Spot,
                btc()?,
                Interval::M1,
                range(p.m1)?,
            ))
            .await?;
        let got = t0.elapsed();
        write_parquet(&out, &resp)?;
        let total = t0.elapsed();
        check_complete("cold 1m", &resp)?;
        requests = ctx.take_requests();
        rows = rows_of(&resp);
        gets.push(got);
        totals.push(total);
        m.shutdown(Duration::from_secs(2)).await;
    }
    let (get, total) = (median(gets), median(totals));
    let limit = 2.0 * pipe.m1_rate;
    let rate = rows as f64 / get.as_secs_f64();
    ctx.rows.push(Row {
        scenario: "1 cold 1m year -> cache".into(),
        rows,
        wall: get,
        requests: Some(requests),
        note: format!("{:.0}% of 2-core pipeline limit", 100.0 * rate / limit),
    });
    ctx.rows.push(Row {
        scenario: "1 cold 1m year -> cache + Parquet".into(),
        rows,
        wall: total,
        requests: Some(requests),
        note: String::new(),
    });
    let target = if p.quick {
        // Scale the 0.5 s goal to the quick run's share of the year.
        Duration::from_secs_f64(0.5 * (range(p.m1)?.duration_ms() as f64) / (365.0 * DAY_MS as f64))
    } else {
        Duration::from_millis(500)
    };
    ctx.goal(
        "cold 1m year, wall (cache + Parquet)",
        fmt_d(total),
        format!("< {}", fmt_d(target)),
        total.as_secs_f64() / target.as_secs_f64(),
        total < target,
    );
    Ok(cache)
}

/// Scenario 2: cold 1s (30 days) in a child process; its VmHWM is this scenario's alone.
async fn cold_heavy(ctx: &mut Ctx, pipe: &Pipe) -> Res<PathBuf> {
    let p = ctx.plan.clone();
    let exe = std::env::current_exe()?;
    let r = range(p.s1)?;
    let mut gets = Vec::new();
    let mut totals = Vec::new();
    let mut hwm = 0;
    let mut rows = 0;
    let mut requests = 0;
    let mut cache = PathBuf::new();
    // Each repetition: one run into an empty cache only, one into an empty cache and a file.
    for rep in 0..2 * p.cold_reps {
        let to_file = rep % 2 == 1;
        cache = ctx.fresh_dir(&format!("s1-{rep}"))?;
        let out = if to_file {
            cache.join("out.parquet").display().to_string()
        } else {
            "-".to_owned()
        };
        ctx.take_requests();
        let base = ctx.base.clone();
        let (exe, cache_s) = (exe.clone(), cache.display().to_string());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(exe)
                .args([
                    "--child-fetch",
                    &base,
                    &cache_s,
                    "BTCUSDT",
                    "1s",
                    &r.start().to_string(),
                    &r.end().to_string(),
                    &out,
                ])
                .output()
        })
        .await??;
        if !output.status.success() {
            return Err(format!(
                "cold 1s child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        requests = ctx.take_requests();
        let text = String::from_utf8_lossy(&output.stdout);
        let f: Vec<f64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let [wall_ms, n, kb] = f[..] else {
            return Err(format!("unexpected child output {text:?}").into());
        };
        let wall = Duration::from_secs_f64(wall_ms / 1000.0);
        if to_file {
            totals.push(wall);
            hwm = hwm.max(kb as u64);
        } else {
            gets.push(wall);
        }
        rows = n as u64;
    }
    let (get, total) = (median(gets), median(totals));
    let limit = 2.0 * pipe.s1_rate;
    let rate = rows as f64 / get.as_secs_f64();
    let mb = hwm as f64 / 1024.0;
    ctx.rows.push(Row {
        scenario: "2 cold 1s 30 days -> cache".into(),
        rows,
        wall: get,
        requests: Some(requests),
        note: format!("{:.0}% of 2-core pipeline limit", 100.0 * rate / limit),
    });
    ctx.rows.push(Row {
        scenario: "2 cold 1s 30 days -> cache + Parquet".into(),
        rows,
        wall: total,
        requests: Some(requests),
        note: format!("peak RSS {mb:.0} MB"),
    });
    ctx.goal(
        "cold 1s month, share of 2-core pipeline limit",
        format!("{:.0}%", 100.0 * rate / limit),
        ">= 60%".into(),
        (rate / limit) / 0.6,
        rate / limit >= 0.6,
    );
    ctx.goal(
        "cold 1s month, peak RSS",
        format!("{mb:.0} MB"),
        "< 300 MB".into(),
        mb / 300.0,
        mb < 300.0,
    );
    Ok(cache)
}

fn many_request(p: &Plan) -> Res<Request> {
    Ok(Request::new(
        Market::Spot,
        DataKind::Klines,
        symbols(p.many_symbols)?,
        Some(Interval::H1),
        range(p.h1)?,
    ))
}

/// Scenario 3: many symbols × a year of 1h in one request.
async fn many_symbols(ctx: &mut Ctx) -> Res<PathBuf> {
    let p = ctx.plan.clone();
    let mut walls = Vec::new();
    let mut rows = 0;
    let mut requests = 0;
    let mut cache = PathBuf::new();
    for rep in 0..p.cold_reps {
        cache = ctx.fresh_dir(&format!("h1-{rep}"))?;
        let m = manager(&ctx.base, &cache)?;
        ctx.take_requests();
        let t0 = Instant::now();
        let resp = m.get(many_request(&p)?).await?;
        walls.push(t0.elapsed());
        check_complete("many symbols", &resp)?;
        requests = ctx.take_requests();
        rows = rows_of(&resp);
        m.shutdown(Duration::from_secs(2)).await;
    }
    let files = p.many_symbols as u64 * range(p.h1)?.months().count() as u64;
    ctx.rows.push(Row {
        scenario: format!("3 cold {} symbols x 1h -> cache", p.many_symbols),
        rows,
        wall: median(walls),
        requests: Some(requests),
        note: format!(
            "minimum {} (zip + CHECKSUM per file, 1 time per symbol)",
            2 * files + p.many_symbols as u64
        ),
    });
    Ok(cache)
}

/// Scenario 4: the last days of 1m for several symbols through REST, real spot weight limits.
async fn rest_topup(ctx: &mut Ctx) -> Res<()> {
    let p = ctx.plan.clone();
    let cache = ctx.fresh_dir("rest")?;
    let m = manager(&ctx.base, &cache)?;
    let now = ctx.emu.now().timestamp_millis();
    let end = now - now.rem_euclid(MINUTE_MS);
    let r = TimeRange::new(end - p.rest_days * DAY_MS, end)?;
    let mut req = Request::new(
        Market::Spot,
        DataKind::Klines,
        symbols(p.rest_symbols)?,
        Some(Interval::M1),
        r,
    );
    req.source = Some(SourcePolicy::Rest);
    let before = ctx.emu.stats();
    ctx.take_requests();
    let t0 = Instant::now();
    let resp = m.get(req).await?;
    let wall = t0.elapsed();
    check_complete("REST top-up", &resp)?;
    let log = ctx.emu.request_log();
    ctx.emu.clear_log();
    let after = ctx.emu.stats();
    let status = |s: &dsm_emulator::Stats, code: u16| -> u64 {
        s.requests_by_status.get(&code).copied().unwrap_or(0)
    };
    let too_many = status(&after, 429) - status(&before, 429);
    let banned = status(&after, 418) - status(&before, 418);
    let kline_requests = log.iter().filter(|l| l.path.ends_with("/klines")).count() as u64;
    let time_requests = log.iter().filter(|l| l.path.ends_with("/time")).count() as u64;
    let requests = log.len() as u64;
    // Spot klines cost 2 whatever the limit, /time costs 1 (spec §3.2).
    let weight = 2 * kline_requests + time_requests;
    let pages_per_symbol = (p.rest_days as u64 * 1440).div_ceil(1000);
    let min_requests = p.rest_symbols as u64 * pages_per_symbol + 1;
    let min_weight = 2 * p.rest_symbols as u64 * pages_per_symbol + 1;
    let rows = rows_of(&resp);
    ctx.rows.push(Row {
        scenario: format!(
            "4 REST {} symbols x {} days of 1m",
            p.rest_symbols, p.rest_days
        ),
        rows,
        wall,
        requests: Some(requests),
        note: format!(
            "{kline_requests} klines + {time_requests} time; weight {weight} (dsm says {}), minimum {min_requests} requests / weight {min_weight}; 429s {too_many}, 418s {banned}",
            resp.summary.rest_weight
        ),
    });
    let ratio = requests as f64 / min_requests as f64;
    ctx.goal(
        "REST top-up, requests vs minimum, zero 429s",
        format!("{requests} requests, {too_many} x 429"),
        format!(
            "<= {:.0} (minimum {min_requests} + 10%), 0 x 429",
            1.1 * min_requests as f64
        ),
        ratio / 1.1,
        ratio <= 1.1 && too_many == 0 && banned == 0,
    );
    m.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// Scenario 5: the same requests from a warm cache, via the library and via the CLI process.
async fn warm(ctx: &mut Ctx, m1_cache: &Path, s1_cache: &Path, h1_cache: &Path) -> Res<()> {
    let p = ctx.plan.clone();
    let many = many_request(&p)?;
    let cases: Vec<(&str, &Path, Request)> = vec![
        (
            "1m year",
            m1_cache,
            Request::klines(Market::Spot, btc()?, Interval::M1, range(p.m1)?),
        ),
        (
            "1s 30 days",
            s1_cache,
            Request::klines(Market::Spot, btc()?, Interval::S1, range(p.s1)?),
        ),
        ("many symbols 1h", h1_cache, many),
    ];
    let cli = cli_binary();
    for (name, cache, req) in cases {
        let m = manager(&ctx.base, cache)?;
        let mut walls = Vec::new();
        let mut rows = 0;
        ctx.take_requests();
        for _ in 0..p.warm_reps {
            let t0 = Instant::now();
            let resp = m.get(req.clone()).await?;
            walls.push(t0.elapsed());
            rows = rows_of(&resp);
            check_complete("warm", &resp)?;
        }
        let requests = ctx.take_requests();
        let wall = median(walls);
        ctx.rows.push(Row {
            scenario: format!("5 warm {name}, library get"),
            rows,
            wall,
            requests: Some(requests),
            note: format!("median of {}", p.warm_reps),
        });
        m.shutdown(Duration::from_secs(2)).await;
        if name == "1m year" {
            let target = Duration::from_millis(25);
            ctx.goal(
                "warm 1m year, library",
                fmt_d(wall),
                "< 25 ms".into(),
                wall.as_secs_f64() / target.as_secs_f64(),
                wall < target,
            );
        }

        let Some(cli) = &cli else { continue };
        let out = if req.symbols.len() > 1 {
            cache.join("warm-out")
        } else {
            cache.join("warm-out.parquet")
        };
        let mut args: Vec<String> = vec!["fetch".into()];
        args.extend(req.symbols.iter().map(|s| s.as_str().to_owned()));
        args.extend(
            [
                "--market",
                "spot",
                "--interval",
                req.interval.map_or("1m", Interval::as_str),
                "--start",
                &req.range.start().to_string(),
                "--end",
                &req.range.end().to_string(),
                "--source",
                "cache",
                "--cache-dir",
                &cache.display().to_string(),
                "-q",
                "-o",
                &out.display().to_string(),
            ]
            .map(str::to_owned),
        );
        if req.symbols.len() > 1 {
            args.extend(["--format".into(), "parquet".into()]);
        }
        let mut walls = Vec::new();
        for _ in 0..p.warm_reps {
            let (cli, args) = (cli.clone(), args.clone());
            let t0 = Instant::now();
            let status = tokio::task::spawn_blocking(move || {
                Command::new(cli)
                    .args(args)
                    .env_remove("DSM_VISION_URL")
                    .env_remove("DSM_REST_URL")
                    .output()
            })
            .await??;
            walls.push(t0.elapsed());
            if !status.status.success() {
                return Err(format!(
                    "dsm fetch {name} from the cache failed: {}",
                    String::from_utf8_lossy(&status.stderr)
                )
                .into());
            }
        }
        let written = parquet_rows(&out)?;
        if written != rows {
            return Err(format!(
                "dsm fetch {name} wrote {written} rows, the library returned {rows}"
            )
            .into());
        }
        let requests = ctx.take_requests();
        let wall = median(walls);
        ctx.rows.push(Row {
            scenario: format!("5 warm {name}, CLI process -> Parquet"),
            rows,
            wall,
            requests: Some(requests),
            note: format!("median of {}", p.warm_reps),
        });
        if name == "1m year" {
            let target = Duration::from_millis(150);
            ctx.goal(
                "warm 1m year, CLI process to Parquet",
                fmt_d(wall),
                "< 150 ms".into(),
                wall.as_secs_f64() / target.as_secs_f64(),
                wall < target,
            );
        }
    }
    if cli.is_none() {
        eprintln!(
            "skipped the CLI rows: no release `dsm` binary next to this example; build it with `cargo build --release -p dsm-cli`"
        );
    }
    Ok(())
}

/// Rows in the Parquet file `path`, or in every Parquet file of the directory `path`.
fn parquet_rows(path: &Path) -> Res<u64> {
    let files = if path.is_dir() {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![path.to_owned()]
    };
    let mut rows = 0;
    for f in files {
        let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&f)?)?;
        use parquet::file::reader::FileReader;
        rows += reader.metadata().file_metadata().num_rows() as u64;
    }
    Ok(rows)
}

/// The release `dsm` binary: `<target>/release/dsm`, beside `<target>/release/examples/bench`.
fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let release = exe.parent()?.parent()?;
    let bin = release.join("dsm");
    bin.is_file().then_some(bin)
}

fn report(ctx: &Ctx) {
    println!();
    println!(
        "| scenario | rows | wall | rows/s | requests | notes |\n|---|---:|---:|---:|---:|---|"
    );
    for r in &ctx.rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.rows,
            fmt_d(r.wall),
            fmt_rate(r.rows_per_sec()),
            r.requests.map_or("-".into(), |n| n.to_string()),
            r.note
        );
    }
    println!();
    println!("| goal | measured | target | ratio | |\n|---|---:|---:|---:|---|");
    for g in &ctx.goals {
        println!(
            "| {} | {} | {} | {:.2} | {} |",
            g.name,
            g.measured,
            g.target,
            g.ratio,
            if g.met { "met" } else { "MISSED" }
        );
    }
}
