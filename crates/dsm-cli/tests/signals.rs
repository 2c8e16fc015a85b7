//! `dsm fetch` under signals, as a user's Ctrl-C or a crash delivers them: SIGINT and SIGTERM
//! mid-download (exit 130 / 143 promptly, no output file, a clean cache), a second SIGINT (still a
//! prompt 130, never the default "killed by signal"), and SIGKILL mid-write (the next run's
//! `dsm cache verify` is clean and a rerun completes, reusing what was cached).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dsm_emulator::{Emulator, Fault, KlineKind, Market};
use nix::sys::signal::Signal;

mod support;
use support::{DSM, files_in};

async fn emulator() -> Emulator {
    support::emulator_at(2024, 6, 15, 12, 30).await
}

/// `dsm args` against `emu` with its cache in `cache`, standard error captured.
fn dsm(emu: &Emulator, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = support::dsm(emu, cache, args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// Four months of BTCUSDT 1m candles (four monthly Vision files) into `out`.
fn fetch_args(out: &Path) -> Vec<String> {
    [
        "fetch",
        "BTCUSDT",
        "--market",
        "spot",
        "--interval",
        "1m",
        "--start",
        "2024-01-01",
        "--end",
        "2024-05-01",
        "-o",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([out.to_string_lossy().into_owned()])
    .collect()
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn cache_temporaries(cache: &Path) -> Vec<PathBuf> {
    walk(cache)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect()
}

async fn wait_until(what: &str, child: &mut Child, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dsm exited with {status} before {what}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for `child` to exit, at most `limit`; returns its status and how long it took.
async fn exit_within(child: &mut Child, limit: Duration, what: &str) -> (ExitStatus, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, t0.elapsed());
        }
        assert!(
            t0.elapsed() < limit,
            "dsm did not exit within {limit:?} of {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn kill(child: &Child, sig: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read as _;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// `dsm cache verify --json`: exit code and stdout (stderr is printed).
async fn verify_cache(cache: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(DSM);
    cmd.args(["cache", "verify", "--json", "--cache-dir"])
        .arg(cache)
        .env_remove("DSM_CACHE_DIR")
        .stdin(Stdio::null());
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    if !o.stderr.is_empty() {
        eprintln!("dsm cache verify: {}", String::from_utf8_lossy(&o.stderr));
    }
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// A signal (or two) while the archive is sending its files slowly.
async fn signal_mid_download(signals: &[Signal], expected: i32) {
    let emu = emulator().await;
    emu.add_fault("slow=50000@*.zip".parse::<Fault>().unwrap());
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("btc.csv");
    let mut child = dsm(&emu, cache.path(), &[])
        .args(fetch_args(&target))
        .spawn()
        .unwrap();
    wait_until("a zip is downloading", &mut child, || {
        emu.request_log().iter().any(|l| l.path.ends_with(".zip"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in signals {
        kill(&child, *s);
    }
    let (status, took) = exit_within(&mut child, Duration::from_secs(2), "the signal").await;
    let stderr = stderr_of(&mut child);
    eprintln!("{signals:?} mid-download: {status} after {took:?}");
    assert_eq!(status.code(), Some(expected), "{status}: {stderr}");
    assert!(
        stderr.contains("interrupted"),
        "says it was interrupted: {stderr}"
    );
    assert!(
        files_in(out.path()).is_empty(),
        "no partial output: {:?}",
        files_in(out.path())
    );
    assert!(
        cache_temporaries(cache.path()).is_empty(),
        "{:?}",
        cache_temporaries(cache.path())
    );
    let (code, report) = verify_cache(cache.path()).await;
    assert_eq!(code, Some(0), "{report}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_download_exits_130_promptly_with_no_output_and_a_clean_cache() {
    signal_mid_download(&[Signal::SIGINT], 130).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_download_exits_143_promptly_with_no_output_and_a_clean_cache() {
    signal_mid_download(&[Signal::SIGTERM], 143).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigint_still_exits_130_at_once() {
    signal_mid_download(&[Signal::SIGINT, Signal::SIGINT], 130).await;
}

/// When a SIGKILL lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// The first cache temporary exists: a write is half done.
    FirstTemporary,
    /// The first file is published (its manifest exists): later files are under way.
    FirstPublished,
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_cache_write_leaves_a_cache_that_verifies_and_a_rerun_completes() {
    sigkill_at(KillAt::FirstTemporary).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_after_a_file_is_cached_the_rerun_reuses_it() {
    sigkill_at(KillAt::FirstPublished).await;
}

async fn sigkill_at(at: KillAt) {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("btc.csv");
    let mut child = dsm(&emu, cache.path(), &[])
        .args(fetch_args(&target))
        .spawn()
        .unwrap();
    wait_until("the kill point", &mut child, || {
        walk(cache.path()).iter().any(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let n = n.as_deref().unwrap_or("");
            match at {
                KillAt::FirstTemporary => n.starts_with(".tmp-"),
                KillAt::FirstPublished => n == "_manifest.json",
            }
        })
    })
    .await;
    kill(&child, Signal::SIGKILL);
    let (status, _) = exit_within(&mut child, Duration::from_secs(2), "SIGKILL").await;
    assert_eq!(status.code(), None, "killed: {status}");
    let leftovers = cache_temporaries(cache.path()).len();
    assert!(
        !target.exists(),
        "no output file from a killed run: {:?}",
        files_in(out.path())
    );

    let (code, report) = verify_cache(cache.path()).await;
    assert_eq!(code, Some(0), "verify after SIGKILL: {report}");
    assert!(cache_temporaries(cache.path()).is_empty());
    let json: serde_json::Value = serde_json::from_str(&report).expect("verify --json");
    let removed = json["removed"].as_u64().expect("removed");
    assert!(
        removed >= leftovers as u64,
        "verify reports the {leftovers} leftovers it cleaned: {report}"
    );
    eprintln!(
        "SIGKILL at {at:?}: {leftovers} temporaries left by the killed process, verify exit 0, {removed} removed"
    );

    emu.clear_log();
    let mut rerun = dsm(&emu, cache.path(), &[]);
    rerun.args(fetch_args(&target)).stdout(Stdio::piped());
    let o = tokio::task::spawn_blocking(move || rerun.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let zips = emu
        .request_log()
        .iter()
        .filter(|l| l.path.ends_with(".zip"))
        .count();
    if at == KillAt::FirstPublished {
        assert!(
            zips < 4,
            "the rerun reuses what was cached: {zips} of 4 files fetched"
        );
    }
    // The CSV has a header and every candle, exactly as the exchange has them.
    let truth = emu.klines(
        Market::Spot,
        KlineKind::Klines,
        "BTCUSDT",
        "1m",
        1_704_067_200_000,
        1_714_521_600_000,
    );
    let text = std::fs::read_to_string(&target).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), truth.len() + 1, "header + one line per candle");
    let last = lines[lines.len() - 1];
    assert!(
        last.contains(&truth[truth.len() - 1].close.to_string()),
        "last line {last:?} vs {:?}",
        truth[truth.len() - 1]
    );
    assert_eq!(files_in(out.path()), vec![target]);
    emu.shutdown().await;
}

/// `dsm sync` killed (SIGKILL) halfway, then run again: the cache verifies, the rerun completes,
/// and every file is downloaded once in total, but for the one in flight at the kill
/// (`--concurrency 1`: one at a time).
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_halfway_resumes_and_downloads_each_file_once_but_the_one_in_flight() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    // SYM01USDT..SYM09USDT, five months: 45 monthly files.
    let args = [
        "sync",
        "--market",
        "spot",
        "--interval",
        "1h",
        "--symbols",
        "SYM0*",
        "--start",
        "2024-01-01",
        "--end",
        "2024-06-01",
        "--concurrency",
        "1",
    ];
    let zips = |emu: &Emulator| -> Vec<String> {
        emu.request_log()
            .into_iter()
            .filter(|l| l.path.ends_with(".zip"))
            .map(|l| l.path)
            .collect()
    };
    // After 20 files the archive slows to a trickle, so the kill lands halfway on any machine.
    emu.add_fault("slow=2000@/data/*.zip~20".parse::<Fault>().unwrap());
    let mut child = dsm(&emu, cache.path(), &args).spawn().unwrap();
    wait_until("20 files", &mut child, || zips(&emu).len() >= 20).await;
    kill(&child, Signal::SIGKILL);
    let (status, _) = exit_within(&mut child, Duration::from_secs(2), "SIGKILL").await;
    assert_eq!(status.code(), None, "killed: {status}");
    let killed_at = zips(&emu).len();
    assert!(killed_at < 45, "killed halfway: {killed_at} files");

    let (code, report) = verify_cache(cache.path()).await;
    assert_eq!(code, Some(0), "verify after SIGKILL: {report}");
    emu.clear_faults();
    let mut rerun = dsm(&emu, cache.path(), &args);
    let o = tokio::task::spawn_blocking(move || rerun.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let all = zips(&emu);
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 45);
    assert!(
        all.len() - distinct.len() <= 1,
        "{} downloads for 45 files (killed after {killed_at})",
        all.len()
    );
}
