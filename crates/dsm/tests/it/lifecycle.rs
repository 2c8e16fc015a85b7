//! Never hang, never leak, never lose: dsm's lifecycle and stress suite.
//!
//! Every test drives a [`DataSourceManager`] against the in-process emulator and *measures* what
//! it leaves behind: tokio's count of alive tasks, the process's open file descriptors, the
//! emulator's open TCP connections, temporary files in the cache directory and the process's
//! resident memory. The figures are printed (`--nocapture` / nextest's output shows them) and
//! bounded by assertions, so a regression — a detached task, a socket kept by a dropped future, a
//! temporary left by a cancelled write, a hang — fails CI (which runs this suite under nextest's
//! `terminate-after`).
//!
//! Process-wide figures (descriptors, memory) are meant for nextest, which runs each test in its
//! own process; under `cargo test` the tests share one process and those bounds are looser.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{emu_market, sym, t};

use arrow::array::{Array, Float64Array, Int64Array, TimestampMillisecondArray};
use chrono::{TimeZone, Utc};
use dsm::manager::{Progress, RestUrls, SymbolResult};
use dsm::time::TimeError;
use dsm::{
    DataSourceManager, Error, ErrorCategory, InputError, Interval, ManagerConfig, Market, Request,
    Symbol, TimeRange, UnavailableError,
};
use dsm_emulator::{Emulator, EmulatorConfig, Fault, KlineKind};

/// Measuring what a process holds: tasks, descriptors, connections, memory, temporaries.
mod resources {
    use super::*;

    /// One measurement.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Snapshot {
        /// Tasks alive in the current tokio runtime (emulator tasks included).
        pub tasks: usize,
        /// Open file descriptors of the process.
        pub fds: usize,
        /// TCP connections the emulator has open.
        pub conns: u64,
        /// Resident set size, KiB.
        pub rss_kib: u64,
        /// Peak resident set size so far, KiB.
        pub hwm_kib: u64,
    }

    pub fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    pub fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// (VmRSS, VmHWM) in KiB from `/proc/self/status`.
    pub fn memory_kib() -> (u64, u64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn snapshot(emu: &Emulator) -> Snapshot {
        let (rss_kib, hwm_kib) = memory_kib();
        Snapshot {
            tasks: alive_tasks(),
            fds: open_fds(),
            conns: emu.stats().open_connections,
            rss_kib,
            hwm_kib,
        }
    }

    /// A snapshot once tasks and connections read the same in three polls 5 ms apart (polling at
    /// most 500 ms). A connection that is closing just after an answer is not a leak, but a
    /// snapshot in the middle of its ending counts its task when the emulator no longer counts
    /// the connection. A task that never ends is still counted.
    pub async fn quiet_snapshot(emu: &Emulator) -> Snapshot {
        let mut last = snapshot(emu);
        let mut same = 0;
        let t0 = Instant::now();
        while same < 2 && t0.elapsed() < Duration::from_millis(500) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let s = snapshot(emu);
            if (s.tasks, s.conns) == (last.tasks, last.conns) {
                same += 1;
            } else {
                same = 0;
            }
            last = s;
        }
        last
    }

    /// Cache temporaries (`.tmp-*`) anywhere under `dir`.
    pub fn temp_files(dir: &Path) -> Vec<String> {
        files_where(dir, |name| name.starts_with(".tmp-"))
    }

    /// Published partition manifests anywhere under `dir`.
    pub fn manifests(dir: &Path) -> Vec<String> {
        files_where(dir, |name| name == "_manifest.json")
    }

    fn files_where(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if wanted(&e.file_name().to_string_lossy()) {
                    out.push(p.display().to_string());
                }
            }
        }
        out
    }

    /// Polls `cond` every 2 ms until it holds; returns how long that took. Panics after `limit`.
    pub async fn settle(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let t0 = Instant::now();
        loop {
            if cond() {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < limit, "{what}: not reached within {limit:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

use resources::{manifests, quiet_snapshot, settle, snapshot, temp_files};

// ---------------------------------------------------------------------------------------------
// Set-up and checking against the emulator's truth
// ---------------------------------------------------------------------------------------------

/// The emulator's clock in every test: mid-June 2024, half past noon.
const NOW: &str = "2024-06-15T12:30:00Z";

fn range(a: &str, b: &str) -> TimeRange {
    TimeRange::new(t(a), t(b)).expect("valid range")
}

async fn emulator_with(f: impl FnOnce(EmulatorConfig) -> EmulatorConfig) -> Emulator {
    let now = Utc.timestamp_millis_opt(t(NOW)).single().expect("now");
    // A small zip cache keeps the emulator's share of this process's memory small.
    let cfg = EmulatorConfig {
        zip_cache_bytes: 16 << 20,
        ..EmulatorConfig::default().with_now(now)
    };
    Emulator::start(f(cfg)).await.expect("emulator starts")
}

async fn emulator() -> Emulator {
    emulator_with(|c| c).await
}

/// A manager on `emu` with short timeouts, caching in `cache` (or not at all).
fn config(emu: &Emulator, cache: Option<&Path>) -> ManagerConfig {
    ManagerConfig {
        cache_dir: cache.map(Path::to_path_buf),
        use_cache: cache.is_some(),
        vision_url: emu.base_url(),
        rest_urls: RestUrls::all(&emu.base_url()),
        connect_timeout: Duration::from_secs(2),
        pace: dsm::Pace {
            silence: Duration::from_secs(2),
            ..dsm::Pace::default()
        },
        retries: 2,
        ..ManagerConfig::default()
    }
}

fn manager(emu: &Emulator, cache: Option<&Path>) -> DataSourceManager {
    DataSourceManager::new(config(emu, cache)).expect("manager")
}

/// Asserts `r` holds exactly the emulator's closed candles for `range`, value for value.
fn assert_truth(
    emu: &Emulator,
    market: Market,
    interval: Interval,
    range: TimeRange,
    r: &SymbolResult,
) {
    let truth = emu.klines(
        emu_market(market),
        KlineKind::Klines,
        r.symbol.as_str(),
        &interval.to_string(),
        range.start(),
        range.end(),
    );
    assert!(!truth.is_empty(), "the emulator has candles for {range}");
    assert_eq!(
        r.num_rows(),
        truth.len(),
        "{} {market} {interval} {range}: row count (missing {:?}, gaps {:?})",
        r.symbol,
        r.missing,
        r.gaps
    );
    assert!(r.missing.is_empty(), "nothing missing: {:?}", r.missing);
    let mut i = 0;
    for b in &r.batches {
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("column {n}"));
        let open_time = col("open_time")
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("open_time ms");
        let f = |n: &str| {
            col(n)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap_or_else(|| panic!("{n} f64"))
                .clone()
        };
        let (open, high, low, close, volume) =
            (f("open"), f("high"), f("low"), f("close"), f("volume"));
        let count = col("count")
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count i64");
        for row in 0..b.num_rows() {
            let want = &truth[i];
            let got = (
                open_time.value(row),
                open.value(row),
                high.value(row),
                low.value(row),
                close.value(row),
                volume.value(row),
                count.value(row),
            );
            let exp = (
                want.open_time,
                want.open,
                want.high,
                want.low,
                want.close,
                want.volume,
                want.count,
            );
            assert_eq!(got, exp, "{} row {i}", r.symbol);
            i += 1;
        }
    }
}

fn path_count(emu: &Emulator, pred: impl Fn(&str) -> bool) -> usize {
    emu.request_log().iter().filter(|l| pred(&l.path)).count()
}

fn is_kline_page(p: &str) -> bool {
    p.ends_with("/klines")
}

fn is_zip(p: &str) -> bool {
    p.ends_with(".zip")
}

// ---------------------------------------------------------------------------------------------
// Basic behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_data_comes_from_rest() {
    let emu = emulator().await;
    let m = manager(&emu, None);
    let r = range("2024-06-15T06:00:00Z", "2024-06-15T12:00:00Z");
    let resp = m
        .get(Request::klines(
            Market::Spot,
            sym("BTCUSDT"),
            Interval::M1,
            r,
        ))
        .await
        .expect("recent candles");
    assert_truth(&emu, Market::Spot, Interval::M1, r, &resp.results[0]);
    assert_eq!(
        path_count(&emu, is_zip),
        0,
        "six hours ago is not on Vision yet"
    );
    assert!(path_count(&emu, is_kline_page) >= 1);
    assert!(resp.summary.rest.rows == 360 && resp.summary.vision.rows == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_data_comes_from_vision() {
    let emu = emulator().await;
    let m = manager(&emu, None);
    let r = range("2024-02-01", "2024-04-01");
    let resp = m
        .get(Request::klines(
            Market::Spot,
            sym("ETHUSDT"),
            Interval::M5,
            r,
        ))
        .await
        .expect("historical candles");
    assert_truth(&emu, Market::Spot, Interval::M5, r, &resp.results[0]);
    assert_eq!(
        path_count(&emu, is_kline_page),
        0,
        "no REST page for old data"
    );
    // Two monthly files, each with its CHECKSUM.
    assert_eq!(path_count(&emu, is_zip), 2, "{:?}", emu.request_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_day_data_has_the_closed_candles_and_not_the_open_one() {
    let emu = emulator().await;
    let m = manager(&emu, None);
    // From midnight to an hour past the emulator's "now": the answer stops at the last closed
    // candle, whatever minute the clock has reached by the time REST answers.
    let r = range("2024-06-15", "2024-06-15T13:30:00Z");
    let resp = m
        .get(Request::klines(
            Market::Spot,
            sym("BTCUSDT"),
            Interval::M1,
            r,
        ))
        .await
        .expect("today's candles");
    let res = &resp.results[0];
    let now = emu.now().timestamp_millis();
    let last = res.last_time.expect("rows");
    assert!(
        last + 60_000 <= now,
        "the last candle ({last}) has closed by {now}"
    );
    assert!(last + 2 * 60_000 > t(NOW), "every closed candle is there");
    let closed = TimeRange::new(r.start(), last + 60_000).expect("range");
    assert_truth(&emu, Market::Spot, Interval::M1, closed, res);
    assert!(
        res.num_rows() >= 12 * 60 + 30,
        "12:30 of candles: {}",
        res.num_rows()
    );
    assert_eq!(path_count(&emu, is_zip), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_fast_with_typed_errors() {
    let emu = emulator().await;
    let m = manager(&emu, None);
    let r = range("2024-01-01", "2024-01-02");

    // No network call at all for these.
    let t0 = Instant::now();
    assert!(matches!(
        Symbol::new("btc-usdt"),
        Err(InputError::InvalidSymbol { .. } | InputError::LowercaseSymbol { .. })
    ));
    let err = m
        .get(Request::klines(
            Market::UsdM,
            sym("BTCUSDT"),
            Interval::S1,
            r,
        ))
        .await
        .expect_err("1s is spot only");
    assert!(
        matches!(
            err,
            Error::Input(InputError::IntervalNotOnMarket {
                interval: Interval::S1,
                market: Market::UsdM
            })
        ),
        "{err:?}"
    );
    let err = m
        .get(Request::klines(
            Market::CoinM,
            sym("BTCUSDT"),
            Interval::H1,
            r,
        ))
        .await
        .expect_err("COIN-M symbols end in _PERP or a delivery date");
    assert_eq!(err.category(), ErrorCategory::Input, "{err:?}");
    assert!(matches!(
        TimeRange::new(t("2024-01-02"), t("2024-01-01")),
        Err(TimeError::EmptyRange { .. })
    ));
    let future = range("2030-01-01", "2030-01-02");
    let err = m
        .get(Request::klines(
            Market::Spot,
            sym("BTCUSDT"),
            Interval::H1,
            future,
        ))
        .await
        .expect_err("the future");
    assert!(
        matches!(err, Error::Unavailable(UnavailableError::Future { .. })),
        "{err:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(emu.stats().total_requests, 0, "{:?}", emu.request_log());

    // These need the exchange's answer, and fail with the right type.
    let before = range("2010-01-01", "2010-02-01");
    let err = m
        .get(Request::klines(
            Market::Spot,
            sym("BTCUSDT"),
            Interval::H1,
            before,
        ))
        .await
        .expect_err("before listing");
    assert!(
        matches!(err, Error::Unavailable(UnavailableError::NoData { .. })),
        "{err:?}"
    );
    let err = m
        .get(Request::klines(
            Market::Spot,
            sym("NOSUCHUSDT"),
            Interval::H1,
            r,
        ))
        .await
        .expect_err("unknown symbol");
    assert_eq!(err.category(), ErrorCategory::Unavailable, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Many consecutive retrievals: nothing grows
// ---------------------------------------------------------------------------------------------

const ITERATIONS: usize = 30;

/// Two days from Vision daily files plus the recent part from REST, no cache: every iteration
/// makes the same network calls.
fn mixed_request() -> (Request, TimeRange) {
    let r = range("2024-06-12", "2024-06-15T06:00:00Z");
    (
        Request::klines(Market::Spot, sym("BTCUSDT"), Interval::M1, r),
        r,
    )
}

fn report(label: &str, s: &[resources::Snapshot]) {
    let first = s[0];
    let last = s[s.len() - 1];
    eprintln!(
        "{label}: after 1 → {} iterations: tasks {} → {}, fds {} → {}, emulator connections {} → {}, RSS {} → {} KiB (peak {} KiB)",
        s.len(),
        first.tasks,
        last.tasks,
        first.fds,
        last.fds,
        first.conns,
        last.conns,
        first.rss_kib,
        last.rss_kib,
        last.hwm_kib
    );
}

/// Most connections the manager may keep: its Vision concurrency plus one REST connection.
const MAX_POOLED: u64 = 8 + 1;

/// No trend: the worst of the last ten iterations is no worse than the worst of the first five
/// (plus `slack`). A pooled keep-alive connection costs two tasks (the client's and the
/// emulator's) and two descriptors (both ends live in this process), and the pool may grow to the
/// request's concurrency; so tasks and descriptors are compared net of the open connections, and
/// the connections are bounded by the concurrency.
fn assert_no_growth(label: &str, s: &[resources::Snapshot], rss_slack_kib: u64) {
    let early = &s[..5];
    let late = &s[s.len() - 10..];
    let max = |v: &[resources::Snapshot], f: fn(&resources::Snapshot) -> u64| {
        v.iter().map(f).max().unwrap_or(0)
    };
    for (what, f, slack) in [
        (
            "alive tasks (net of pooled connections)",
            (|x: &resources::Snapshot| (x.tasks as u64).saturating_sub(2 * x.conns))
                as fn(&_) -> u64,
            0,
        ),
        (
            "open fds (net of pooled connections)",
            |x| (x.fds as u64).saturating_sub(2 * x.conns),
            1,
        ),
        ("RSS KiB", |x| x.rss_kib, rss_slack_kib),
    ] {
        assert!(
            max(late, f) <= max(early, f) + slack,
            "{label}: {what} grew: first {:?}, last {:?}",
            early.iter().map(f).collect::<Vec<_>>(),
            late.iter().map(f).collect::<Vec<_>>()
        );
    }
    let conns = max(s, |x| x.conns);
    assert!(
        conns <= MAX_POOLED,
        "{label}: {conns} connections open, more than the concurrency allows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_retrievals_with_one_manager_leak_nothing() {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let m = manager(&emu, None);
    let (req, r) = mixed_request();
    let mut snaps = Vec::new();
    for i in 0..ITERATIONS {
        let resp = m.get(req.clone()).await.expect("retrieval");
        if i == 0 {
            assert_truth(&emu, Market::Spot, Interval::M1, r, &resp.results[0]);
        } else {
            assert_eq!(resp.results[0].num_rows() as i64, r.duration_ms() / 60_000);
        }
        drop(resp);
        snaps.push(quiet_snapshot(&emu).await);
    }
    report("one manager", &snaps);
    assert_no_growth("one manager", &snaps, 16 * 1024);
    m.shutdown(Duration::from_secs(1)).await;
    drop(m);
    let t = settle(
        "connections closed and tasks gone after the manager is dropped",
        Duration::from_secs(2),
        || {
            let s = snapshot(&emu);
            s.conns == 0 && s.tasks == base.tasks
        },
    )
    .await;
    let end = snapshot(&emu);
    eprintln!(
        "one manager: dropped → tasks {} (before: {}), fds {} (before: {}), connections {} within {t:?}",
        end.tasks, base.tasks, end.fds, base.fds, end.conns
    );
    assert!(
        end.fds <= base.fds + 1,
        "fds: {} before, {} after",
        base.fds,
        end.fds
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_retrievals_with_a_new_manager_each_time_leak_nothing() {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let (req, r) = mixed_request();
    let mut snaps = Vec::new();
    let mut worst_settle = Duration::ZERO;
    for i in 0..ITERATIONS {
        let m = manager(&emu, None);
        let resp = m.get(req.clone()).await.expect("retrieval");
        if i == 0 {
            assert_truth(&emu, Market::Spot, Interval::M1, r, &resp.results[0]);
        }
        drop(resp);
        drop(m);
        let t = settle(
            "manager dropped: zero connections, base tasks",
            Duration::from_secs(2),
            || {
                let s = snapshot(&emu);
                s.conns == 0 && s.tasks == base.tasks
            },
        )
        .await;
        worst_settle = worst_settle.max(t);
        snaps.push(snapshot(&emu));
    }
    report("new manager each time", &snaps);
    eprintln!(
        "new manager each time: slowest release of all connections after drop {worst_settle:?}"
    );
    assert_no_growth("new manager each time", &snaps, 16 * 1024);
    let last = snaps[snaps.len() - 1];
    assert_eq!(last.tasks, base.tasks);
    assert!(
        last.fds <= base.fds + 1,
        "fds: {} before, {} after",
        base.fds,
        last.fds
    );
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Parallel retrievals sharing one manager
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_retrievals_across_markets_share_one_manager() {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let cache = tempfile::tempdir().expect("temp dir");
    let m = manager(&emu, Some(cache.path()));
    let r = range("2024-04-20", "2024-06-14T18:00:00Z");
    let jobs = [
        (Market::Spot, "BTCUSDT"),
        (Market::Spot, "ETHUSDT"),
        (Market::Spot, "BNBUSDT"),
        (Market::UsdM, "BTCUSDT"),
        (Market::UsdM, "ETHUSDT"),
        (Market::CoinM, "BTCUSD_PERP"),
        (Market::CoinM, "ETHUSD_PERP"),
    ];
    let t0 = Instant::now();
    let results = futures::future::join_all(
        jobs.iter()
            .map(|(market, s)| m.get(Request::klines(*market, sym(s), Interval::M15, r))),
    )
    .await;
    let elapsed = t0.elapsed();
    for ((market, _), res) in jobs.iter().zip(results) {
        let resp = res.expect("parallel retrieval");
        assert_truth(&emu, *market, Interval::M15, r, &resp.results[0]);
    }
    // The same series asked for twice at once: both writers share the partitions' locks.
    let twice = r
        .intersect(&range("2024-06-01", "2024-07-01"))
        .expect("June");
    let req = Request::klines(Market::Spot, sym("SYM01USDT"), Interval::M1, twice);
    let (a, b) = tokio::join!(m.get(req.clone()), m.get(req));
    for res in [a, b] {
        assert_truth(
            &emu,
            Market::Spot,
            Interval::M1,
            twice,
            &res.expect("twice").results[0],
        );
    }
    // And once more in one multi-symbol request per market, from the cache now.
    emu.clear_log();
    let both = m
        .get(Request::new(
            Market::Spot,
            dsm::DataKind::Klines,
            vec![sym("BTCUSDT"), sym("ETHUSDT")],
            Some(Interval::M15),
            r,
        ))
        .await
        .expect("from the cache");
    for res in &both.results {
        assert_truth(&emu, Market::Spot, Interval::M15, r, res);
    }
    assert_eq!(path_count(&emu, |p| is_zip(p) || is_kline_page(p)), 0);
    eprintln!("parallel: 7 series across spot, USD-M and COIN-M in {elapsed:?}");
    drop(m);
    settle("all released", Duration::from_secs(2), || {
        let s = snapshot(&emu);
        s.conns == 0 && s.tasks == base.tasks
    })
    .await;
    let report = dsm::cache::CacheStore::open(cache.path())
        .expect("cache")
        .verify()
        .await
        .expect("verify");
    assert!(report.is_clean() && report.removed == 0, "{report:?}");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Forced cancellation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// The archive accepted the request and never answers.
    BeforeFirstByte,
    /// The archive sends the body at 20 kB/s.
    MidBody,
    /// A big file has arrived and is being inflated and parsed.
    MidParse,
    /// The first file is cached (its partition published); the others are downloading or being
    /// written.
    MidCacheWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// The caller drops the future.
    Drop,
    /// `DataSourceManager::shutdown` (cancels the manager's root token) while `get` runs.
    Shutdown,
}

async fn cancel_at(point: Point, how: How) {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let cache = tempfile::tempdir().expect("temp dir");
    // Small 1s files for the parse point (a day is 86 400 rows), monthly 1m files otherwise.
    let (interval, r) = match point {
        Point::MidParse => (Interval::S1, range("2024-05-01", "2024-05-03")),
        _ => (Interval::M1, range("2024-01-01", "2024-05-01")),
    };
    let req_for = |progress: Option<dsm::manager::ProgressFn>| {
        let mut req = Request::klines(Market::Spot, sym("BTCUSDT"), interval, r);
        req.source = Some(dsm::manager::SourcePolicy::Vision);
        req.progress = progress;
        req
    };
    match point {
        Point::BeforeFirstByte => emu.add_fault("hang@*.zip".parse::<Fault>().expect("fault")),
        Point::MidBody => emu.add_fault("slow=20000@*.zip".parse::<Fault>().expect("fault")),
        _ => {}
    }
    let fetched = Arc::new(AtomicU64::new(0));
    let progress: dsm::manager::ProgressFn = {
        let fetched = fetched.clone();
        Arc::new(move |p: &Progress| {
            if let Progress::Fetched { .. } = p {
                fetched.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The trigger, watched from outside the request.
    let trigger = async {
        match point {
            Point::BeforeFirstByte => {
                while emu.stats().requests_by_status.get(&0).copied().unwrap_or(0) == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Point::MidBody => {
                while path_count(&emu, is_zip) == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Point::MidParse => {
                while !emu
                    .request_log()
                    .iter()
                    .any(|l| is_zip(&l.path) && l.status == 200)
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Point::MidCacheWrite => {
                while manifests(cache.path()).is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    };
    let m = manager(&emu, Some(cache.path()));
    let (latency, outcome) = match how {
        How::Drop => {
            let get = m.get(req_for(Some(progress)));
            let mut t0 = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = async { trigger.await; t0 = Instant::now(); } => None,
                r = get => Some(r),
            };
            // The `get` future has been dropped by the select.
            (t0.elapsed(), outcome)
        }
        How::Shutdown => {
            let t0 = std::cell::Cell::new(Instant::now());
            let (r, ()) = tokio::join!(m.get(req_for(Some(progress))), async {
                trigger.await;
                t0.set(Instant::now());
                m.shutdown(Duration::from_millis(100)).await;
            });
            (t0.get().elapsed(), Some(r))
        }
    };
    let at_cancel = fetched.load(Ordering::SeqCst);
    // Cleanup is synchronous: no temporary survives the return (or the drop) of the future.
    assert!(
        temp_files(cache.path()).is_empty(),
        "{point:?}/{how:?}: temporaries at return: {:?}",
        temp_files(cache.path())
    );
    match &outcome {
        None => {}
        Some(Err(Error::Cancelled)) => {}
        Some(other) => panic!("{point:?}/{how:?}: expected a cancellation, got {other:?}"),
    }
    assert!(
        latency < Duration::from_millis(100),
        "{point:?}/{how:?}: returned {latency:?} after the cancel"
    );
    // A shut-down manager refuses new work at once.
    if how == How::Shutdown {
        let again = m.get(req_for(None)).await;
        assert!(matches!(again, Err(Error::Cancelled)), "{again:?}");
    }
    let with_manager = snapshot(&emu);
    drop(m);
    let released = settle(
        "zero tasks and zero connections after cancelling",
        Duration::from_secs(1),
        || {
            let s = snapshot(&emu);
            s.conns == 0 && s.tasks == base.tasks
        },
    )
    .await;
    let temps_released = settle("no cache temporaries", Duration::from_secs(1), || {
        temp_files(cache.path()).is_empty()
    })
    .await;
    let verify = dsm::cache::CacheStore::open(cache.path())
        .expect("cache")
        .verify()
        .await
        .expect("verify");
    assert!(verify.is_clean(), "{point:?}/{how:?}: {verify:?}");
    eprintln!(
        "cancel {point:?} by {how:?}: returned in {latency:?} (files fetched before: {at_cancel}); while the manager lived: {} tasks (base {}), {} connections; after dropping it: zero connections and base tasks within {released:?}, temporaries gone within {temps_released:?}; verify: {} partitions, {} leftovers removed",
        with_manager.tasks, base.tasks, with_manager.conns, verify.partitions, verify.removed
    );

    // A rerun completes, reusing what was verified and cached.
    emu.clear_faults();
    emu.clear_log();
    let m = manager(&emu, Some(cache.path()));
    let resp = m.get(req_for(None)).await.expect("the rerun completes");
    assert_truth(&emu, Market::Spot, interval, r, &resp.results[0]);
    let zips = path_count(&emu, is_zip);
    let files = match point {
        Point::MidParse => 2,
        _ => 4,
    };
    if point == Point::MidCacheWrite {
        assert!(
            resp.results[0].summary.cache_hits >= 1 && zips < files,
            "the rerun reuses the file cached before the cancel: {zips} zips, {:?}",
            resp.summary
        );
    } else {
        assert!(zips <= files, "{zips} zips");
    }
    drop(m);
    emu.shutdown().await;
}

macro_rules! cancel_tests {
    ($($name:ident: $point:ident, $how:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cancel_at(Point::$point, How::$how).await;
        }
    )*};
}

cancel_tests! {
    cancel_by_drop_before_the_first_byte: BeforeFirstByte, Drop;
    cancel_by_shutdown_before_the_first_byte: BeforeFirstByte, Shutdown;
    cancel_by_drop_mid_body: MidBody, Drop;
    cancel_by_shutdown_mid_body: MidBody, Shutdown;
    cancel_by_drop_mid_parse: MidParse, Drop;
    cancel_by_shutdown_mid_parse: MidParse, Shutdown;
    cancel_by_drop_mid_cache_write: MidCacheWrite, Drop;
    cancel_by_shutdown_mid_cache_write: MidCacheWrite, Shutdown;
}

// ---------------------------------------------------------------------------------------------
// Faults: complete and correct, or a typed error — never silently partial
// ---------------------------------------------------------------------------------------------

/// One fault, on a two-symbol request that uses monthly and daily Vision files and REST: the
/// answer is complete and equal to the emulator's truth, or the error is typed (upstream or
/// integrity); the cache is left verified, and a rerun without the fault completes from it.
async fn fault_case(seed: u64, spec: &str) {
    let emu = emulator_with(|c| c.with_seed(seed)).await;
    emu.add_fault(spec.parse::<Fault>().expect("fault"));
    let base = snapshot(&emu);
    let cache = tempfile::tempdir().expect("temp dir");
    let cfg = ManagerConfig {
        pace: dsm::Pace {
            silence: Duration::from_millis(400),
            ..dsm::Pace::default()
        },
        connect_timeout: Duration::from_millis(400),
        ..config(&emu, Some(cache.path()))
    };
    let m = DataSourceManager::new(cfg).expect("manager");
    // Two months from monthly files, days from daily files, the last day and a half from REST.
    let r = range("2024-04-01", "2024-06-15T06:00:00Z");
    let req = Request::new(
        Market::Spot,
        dsm::DataKind::Klines,
        vec![sym("BTCUSDT"), sym("ETHUSDT")],
        Some(Interval::M5),
        r,
    );
    let t0 = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(60), m.get(req))
        .await
        .unwrap_or_else(|_| panic!("{spec}: no answer within 60 s"));
    let took = t0.elapsed();
    match res {
        Ok(resp) => {
            for s in &resp.results {
                assert_truth(&emu, Market::Spot, Interval::M5, r, s);
                assert!(s.gaps.is_empty(), "{spec}: {:?}", s.gaps);
            }
            eprintln!(
                "{spec}: complete and correct in {took:?} ({} failures worked around)",
                resp.summary.failures.len()
            );
        }
        Err(e) => {
            assert!(
                matches!(
                    e.category(),
                    ErrorCategory::Upstream | ErrorCategory::Integrity
                ),
                "{spec}: {e:?}"
            );
            eprintln!("{spec}: typed error in {took:?}: {e}");
        }
    }
    drop(m);
    settle("released", Duration::from_secs(2), || {
        let s = snapshot(&emu);
        s.conns == 0 && s.tasks == base.tasks
    })
    .await;
    assert!(temp_files(cache.path()).is_empty());
    let verify = dsm::cache::CacheStore::open(cache.path())
        .expect("cache")
        .verify()
        .await
        .expect("verify");
    assert!(verify.is_clean(), "{spec}: {verify:?}");
    // What the cache kept is exactly the truth: a rerun without faults completes.
    emu.clear_faults();
    let m = manager(&emu, Some(cache.path()));
    let resp = m
        .get(Request::klines(
            Market::Spot,
            sym("BTCUSDT"),
            Interval::M5,
            r,
        ))
        .await
        .expect("rerun");
    assert_truth(&emu, Market::Spot, Interval::M5, r, &resp.results[0]);
    drop(m);
    emu.shutdown().await;
}

macro_rules! fault_tests {
    ($($name:ident: $seed:literal, $spec:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            fault_case($seed, $spec).await;
        }
    )*};
}

fault_tests! {
    fault_resets_mid_body: 1, "reset@*.zip%0.3";
    fault_truncated_bodies: 2, "truncate@*%0.2";
    fault_checksum_mismatches: 3, "checksum-mismatch@*.zip%0.4";
    fault_corrupt_zips_with_matching_checksums: 4, "corrupt-zip@*.zip%0.3";
    fault_status_500: 5, "status500@*%0.2";
    fault_status_429_on_rest: 6, "status429@/api/v3/klines%0.2";
    fault_hangs: 7, "hang@*%0.1";
    fault_duplicate_rows_on_rest: 8, "duplicate-rows@/api/v3/klines";
    fault_missing_checksums: 9, "missing-checksum@*.zip%0.3";
    fault_status_403_on_the_archive: 10, "status403@/data/*%0.3";
}

// ---------------------------------------------------------------------------------------------
// Large volume: bounded memory, no leak
// ---------------------------------------------------------------------------------------------

async fn large_volume(
    symbols: &[&str],
    months: TimeRange,
    seconds: TimeRange,
    peak_bound_mib: u64,
) {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let cache = tempfile::tempdir().expect("temp dir");
    // The emulator synthesises a month of 1s candles (2.6 M rows) before it answers the first
    // request for it: give it time.
    let m = DataSourceManager::new(ManagerConfig {
        pace: dsm::Pace {
            silence: Duration::from_secs(120),
            ..dsm::Pace::default()
        },
        ..config(&emu, Some(cache.path()))
    })
    .expect("manager");
    let t0 = Instant::now();
    let mut rows = 0;
    for s in symbols {
        let resp = m
            .get(Request::klines(Market::Spot, sym(s), Interval::M1, months))
            .await
            .expect("1m");
        let res = &resp.results[0];
        assert_eq!(res.num_rows() as i64, months.duration_ms() / 60_000);
        assert_truth(&emu, Market::Spot, Interval::M1, months, res);
        rows += res.num_rows();
    }
    let resp = m
        .get(Request::klines(
            Market::Spot,
            sym(symbols[0]),
            Interval::S1,
            seconds,
        ))
        .await
        .expect("1s");
    assert_eq!(
        resp.results[0].num_rows() as i64,
        seconds.duration_ms() / 1000
    );
    rows += resp.results[0].num_rows();
    drop(resp);
    let elapsed = t0.elapsed();
    let after = snapshot(&emu);
    drop(m);
    settle("released", Duration::from_secs(2), || {
        let s = snapshot(&emu);
        s.conns == 0 && s.tasks == base.tasks
    })
    .await;
    let end = snapshot(&emu);
    let disk: u64 = walk_size(cache.path());
    eprintln!(
        "large volume: {rows} rows ({} symbols × {months} of 1m + {seconds} of 1s) in {elapsed:?}; RSS {} MiB before, peak {} MiB, {} MiB after dropping the answers; cache {} MiB on disk",
        symbols.len(),
        base.rss_kib / 1024,
        after.hwm_kib / 1024,
        end.rss_kib / 1024,
        disk >> 20
    );
    assert!(
        after.hwm_kib / 1024 <= peak_bound_mib,
        "peak memory {} MiB over the bound of {peak_bound_mib} MiB",
        after.hwm_kib / 1024
    );
    assert!(
        end.fds <= base.fds + 1,
        "fds: {} before, {} after",
        base.fds,
        end.fds
    );
    let verify = dsm::cache::CacheStore::open(cache.path())
        .expect("cache")
        .verify()
        .await
        .expect("verify");
    assert!(verify.is_clean() && verify.removed == 0, "{verify:?}");
    emu.shutdown().await;
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// CI-sized: 2 symbols × 2 months of 1m plus a day of 1s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_volume_ci_sized_has_bounded_memory() {
    large_volume(
        &["BTCUSDT", "ETHUSDT"],
        range("2024-01-01", "2024-03-01"),
        range("2024-05-01", "2024-05-02"),
        256,
    )
    .await;
}

/// Full size (run in release: `cargo test --release -p dsm --test lifecycle -- --ignored`):
/// 3 symbols × a year of 1m plus a month of 1s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes in release; run by hand"]
async fn large_volume_full_year_and_month_of_seconds() {
    large_volume(
        &["BTCUSDT", "ETHUSDT", "BNBUSDT"],
        range("2023-01-01", "2024-01-01"),
        range("2024-04-01", "2024-05-01"),
        2048,
    )
    .await;
}

/// Cancellation swept across cache writes: the future is dropped 0–30 ms after the first partition
/// was published, while the other files download and their partitions are written, so some drops
/// land while a partition lock is taken, some during the Parquet encode, some during a temporary
/// file's write and rename, some during a manifest publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_drop_swept_across_a_cache_write() {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let r = range("2024-01-01", "2024-04-01");
    let mut cancelled = 0;
    for delay_ms in [0u64, 1, 3, 10, 30] {
        let cache = tempfile::tempdir().expect("temp dir");
        let m = manager(&emu, Some(cache.path()));
        let mut req = Request::klines(Market::Spot, sym("BTCUSDT"), Interval::M1, r);
        req.source = Some(dsm::manager::SourcePolicy::Vision);
        let get = m.get(req.clone());
        let mut t0 = Instant::now();
        let finished = tokio::select! {
            () = async {
                while manifests(cache.path()).is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                t0 = Instant::now();
            } => false,
            r = get => { r.expect("finished before the cancel"); true }
        };
        let latency = t0.elapsed();
        let temps_at_return = temp_files(cache.path()).len();
        assert_eq!(temps_at_return, 0, "{delay_ms} ms: temporaries at return");
        drop(m);
        let released = settle("released", Duration::from_secs(1), || {
            let s = snapshot(&emu);
            s.conns == 0 && s.tasks == base.tasks
        })
        .await;
        let temps_gone = settle("no cache temporaries", Duration::from_secs(1), || {
            temp_files(cache.path()).is_empty()
        })
        .await;
        let verify = dsm::cache::CacheStore::open(cache.path())
            .expect("cache")
            .verify()
            .await
            .expect("verify");
        assert!(verify.is_clean(), "{delay_ms} ms: {verify:?}");
        eprintln!(
            "drop {delay_ms:>2} ms after the 1st partition: {} in {latency:?}; {temps_at_return} temporaries at return, gone within {temps_gone:?}; tasks and connections released within {released:?}; verify removed {} leftovers",
            if finished {
                "finished first"
            } else {
                "returned"
            },
            verify.removed
        );
        // A run that finished before the drop has no cancel latency to speak of (on a fast
        // machine the longest delays can outlast the whole download).
        if !finished {
            cancelled += 1;
            assert!(
                latency < Duration::from_millis(100),
                "{delay_ms} ms: returned {latency:?} after the drop"
            );
        }
        let m = manager(&emu, Some(cache.path()));
        let resp = m.get(req).await.expect("rerun");
        assert_truth(&emu, Market::Spot, Interval::M1, r, &resp.results[0]);
        assert!(resp.summary.cache_hits >= 1, "{:?}", resp.summary);
    }
    // The sweep is only worth its name if the drops did land mid-run.
    assert!(cancelled >= 1, "every run finished before its drop");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Never hang
// ---------------------------------------------------------------------------------------------

/// A server that accepts every request and never answers: every wait is bounded by the read
/// timeout, the retries by their count, and the call ends with a typed timeout error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_gives_a_timeout_error_not_a_hang() {
    let emu = emulator().await;
    emu.add_fault("hang@*".parse::<Fault>().expect("fault"));
    let base = snapshot(&emu);
    for (what, r, source) in [
        (
            "recent (REST)",
            range("2024-06-15T06:00:00Z", "2024-06-15T12:00:00Z"),
            dsm::manager::SourcePolicy::Auto,
        ),
        (
            "historical (Vision only)",
            range("2024-01-01", "2024-02-01"),
            dsm::manager::SourcePolicy::Vision,
        ),
    ] {
        let cfg = ManagerConfig {
            connect_timeout: Duration::from_millis(200),
            pace: dsm::Pace {
                silence: Duration::from_millis(200),
                ..dsm::Pace::default()
            },
            retries: 1,
            ..config(&emu, None)
        };
        let m = DataSourceManager::new(cfg).expect("manager");
        let t0 = Instant::now();
        let mut req = Request::klines(Market::Spot, sym("BTCUSDT"), Interval::H1, r);
        req.source = Some(source);
        let err = tokio::time::timeout(Duration::from_secs(20), m.get(req))
            .await
            .expect("bounded by the timeouts")
            .expect_err("nothing answers");
        let took = t0.elapsed();
        eprintln!("{what}: {err} after {took:?}");
        assert_eq!(err.category(), ErrorCategory::Upstream, "{err:?}");
        assert!(took < Duration::from_secs(5), "{what}: {took:?}");
        drop(m);
        settle("released", Duration::from_secs(1), || {
            let s = snapshot(&emu);
            s.conns == 0 && s.tasks == base.tasks
        })
        .await;
    }
    emu.shutdown().await;
}

/// The blocking front owns its runtime: dropping it stops everything and closes every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_manager_drops_cleanly() {
    let emu = emulator().await;
    let base = snapshot(&emu);
    let cfg = config(&emu, None);
    let r = range("2024-06-12", "2024-06-15T06:00:00Z");
    let (rows, dropped_in) = tokio::task::spawn_blocking(move || {
        let m = dsm::BlockingManager::new(cfg).expect("blocking manager");
        let resp = m
            .get(Request::klines(
                Market::Spot,
                sym("BTCUSDT"),
                Interval::M1,
                r,
            ))
            .expect("blocking get");
        let t0 = Instant::now();
        drop(m);
        (resp.results[0].num_rows(), t0.elapsed())
    })
    .await
    .expect("blocking thread");
    assert_eq!(rows as i64, r.duration_ms() / 60_000);
    let released = settle("released", Duration::from_secs(1), || {
        let s = snapshot(&emu);
        s.conns == 0 && s.tasks == base.tasks
    })
    .await;
    eprintln!(
        "blocking manager: dropped in {dropped_in:?}, connections closed within {released:?}"
    );
    assert!(dropped_in < Duration::from_millis(500), "{dropped_in:?}");
    emu.shutdown().await;
}
