//! The `dsm` binary as a user runs it: exit codes, messages, files left behind, requests made.
//!
//! Every test that could touch the network points `--rest-url`/`--vision-url` at an in-process
//! emulator on port 0 and checks its request log.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dsm_emulator::{Emulator, Fault, FaultKind};

mod support;
use support::{DSM, dsm, files_in};

/// An emulator whose clock is at 2026-06-10 00:00 UTC.
async fn emulator() -> Emulator {
    support::emulator_at(2026, 6, 10, 0, 0).await
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("dsm runs"))
        .await
        .expect("the runner thread")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_says_what_is_valid_and_makes_no_request() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = |name: &str| out.path().join(name).to_string_lossy().into_owned();
    let (csv, json) = (o("x.csv"), o("x.json"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "btcusdt",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "did you mean BTCUSDT",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "um",
                "--interval",
                "1s",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "1s klines exist on spot only",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "2024-01-02",
                "--end",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "must be before end",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "must be before end",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "-o",
                &json,
            ],
            "use .parquet, .arrow or .csv",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--kind",
                "funding",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "it exists on um, cm",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "last tuesday",
                "-o",
                &csv,
            ],
            "use RFC 3339",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "1704067200",
                "-o",
                &csv,
            ],
            "epoch milliseconds",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "needs an interval",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spat",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "use spot, um",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--source",
                "s3",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
            ],
            "use auto, cache, vision or rest",
        ),
        (
            vec![
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "-o",
                &csv,
                "--bogus",
            ],
            "--bogus",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["fetch"];
        full.extend_from_slice(&args);
        let out = output(dsm(&emu, cache.path(), &full)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "dsm {full:?}\nstderr: {stderr}");
        assert!(
            stderr.contains(expected),
            "dsm {full:?}: expected {expected:?} in\n{stderr}"
        );
        assert!(
            stderr.starts_with("error: "),
            "one clear error line: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    }
    assert!(
        emu.request_log().is_empty(),
        "no request: {:?}",
        emu.request_log()
    );
    assert_eq!(emu.stats().total_connections, 0, "not even a connection");
    assert!(
        files_in(out.path()).is_empty(),
        "no output file: {:?}",
        files_in(out.path())
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["fetch", "--help"],
        &["cache", "--help"],
    ] {
        let out = output({
            let mut c = Command::new(DSM);
            c.args(args);
            c
        })
        .await;
        assert_eq!(out.status.code(), Some(0), "dsm {args:?}");
        assert!(!out.stdout.is_empty());
    }
    let out = output(Command::new(DSM)).await;
    assert_eq!(out.status.code(), Some(2), "no subcommand is a usage error");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incomplete_answer_exits_6_unless_a_partial_one_is_allowed() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("btc.parquet");
    let args = [
        "fetch",
        "BTCUSDT",
        "--market",
        "spot",
        "--interval",
        "1h",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02",
        "--source",
        "cache",
        "--json",
        "-o",
    ];
    // Offline with an empty cache: nothing asked, nothing written, exit 6 naming what is missing.
    let mut cmd = dsm(&emu, cache.path(), &args);
    cmd.arg(&path);
    let (code, json, stderr) = run_json(cmd).await;
    assert_eq!(code, Some(6), "{stderr}");
    assert!(
        stderr.contains("incomplete") && stderr.contains("--allow-partial"),
        "{stderr}"
    );
    assert!(stderr.contains("2024-01-01T00:00:00.000Z"), "{stderr}");
    assert!(files_in(out.path()).is_empty(), "nothing written");
    assert_eq!(json["total"]["complete"], false, "{json}");
    assert_eq!(
        json["symbols"][0]["path"],
        serde_json::Value::Null,
        "{json}"
    );
    assert_eq!(
        json["symbols"][0]["missing"][0]["start"], "2024-01-01T00:00:00.000Z",
        "{json}"
    );
    assert!(
        emu.request_log().is_empty(),
        "offline: {:?}",
        emu.request_log()
    );
    assert_eq!(emu.stats().total_connections, 0);

    // --allow-partial: the (empty) answer is written, still reported, exit 0.
    let partial = [&args[..args.len() - 1], &["--allow-partial", "-o"]].concat();
    let mut cmd = dsm(&emu, cache.path(), &partial);
    cmd.arg(&path);
    let (code, json, stderr) = run_json(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(path.exists());
    assert_eq!(json["symbols"][0]["complete"], false, "{json}");
    assert_eq!(json["total"]["missing"], 1, "{json}");

    // Vision only, with days not yet published: exit 6 too.
    let recent = out.path().join("recent.csv");
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2026-06-05",
            "--end",
            "2026-06-09T12:00:00Z",
            "--source",
            "vision",
            "-q",
            "-o",
        ],
    );
    cmd.arg(&recent);
    let result = output(cmd).await;
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(6), "{stderr}");
    assert!(!recent.exists());
    emu.shutdown().await;
}

/// A cold fetch whose answer mixes Vision and REST rows writes every format (the `source`
/// column's dictionary is the same in every batch), and so does the warm rerun from the cache;
/// each file reads back, with Arrow's readers and with pyarrow, as the exchange's rows.
#[tokio::test(flavor = "multi_thread")]
async fn mixed_cold_and_warm_answers_write_every_format() {
    let emu = emulator().await;
    let out = tempfile::tempdir().unwrap();
    let truth = emu.klines(
        dsm_emulator::Market::Spot,
        dsm_emulator::KlineKind::Klines,
        "BTCUSDT",
        "1h",
        dsm::time::parse_instant("2026-06-05").unwrap(),
        dsm::time::parse_instant("2026-06-09T12:00:00Z").unwrap(),
    );
    let python = std::env::var_os("DSM_TEST_PYTHON");
    if python.is_none() {
        println!("pyarrow read-back skipped: DSM_TEST_PYTHON is not set (scripts/test.sh sets it)");
    }
    for ext in ["arrow", "parquet", "csv"] {
        let cache = tempfile::tempdir().unwrap();
        for run in ["cold", "warm"] {
            let path = out.path().join(format!("{run}.{ext}"));
            let mut cmd = dsm(
                &emu,
                cache.path(),
                &[
                    "fetch",
                    "BTCUSDT",
                    "--market",
                    "spot",
                    "--interval",
                    "1h",
                    "--start",
                    "2026-06-05",
                    "--end",
                    "2026-06-09T12:00:00Z",
                    "-q",
                    "-o",
                ],
            );
            cmd.arg(&path);
            let result = output(cmd).await;
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert_eq!(result.status.code(), Some(0), "{run} {ext}: {stderr}");
            let (rows, sources) = read_back(&path);
            assert_eq!(rows, truth.len(), "{run} {ext}");
            assert!(
                sources.contains("vision") && sources.contains("rest"),
                "{run} {ext}: a mixed answer, {sources:?}"
            );
            if let Some(python) = &python {
                let (py_rows, py_sources) = read_back_with_pyarrow(python, &path);
                assert_eq!(
                    (py_rows, py_sources),
                    (rows, sources),
                    "{run} {ext}: pyarrow"
                );
            }
        }
    }
    emu.shutdown().await;
}

/// Rows and distinct `source` values of an output file, as pyarrow reads it.
fn read_back_with_pyarrow(
    python: &std::ffi::OsStr,
    path: &Path,
) -> (usize, std::collections::BTreeSet<String>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_back.py");
    let out = Command::new(python)
        .arg(script)
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "pyarrow could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from read_back.py");
    let rows = v["rows"].as_u64().expect("rows") as usize;
    let sources = v["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect();
    (rows, sources)
}

/// Rows and distinct `source` values of an output file, read with Arrow's own readers.
fn read_back(path: &Path) -> (usize, std::collections::BTreeSet<String>) {
    use arrow::array::AsArray;
    let batches: Vec<arrow::record_batch::RecordBatch> =
        match path.extension().and_then(|e| e.to_str()) {
            Some("arrow") => {
                arrow::ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None)
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect()
            }
            Some("parquet") => parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                std::fs::File::open(path).unwrap(),
                1024,
            )
            .unwrap()
            .map(|b| b.unwrap())
            .collect(),
            _ => {
                let text = std::fs::read_to_string(path).unwrap();
                let mut lines = text.lines();
                let header: Vec<&str> = lines.next().unwrap().split(',').collect();
                let col = header.iter().position(|h| *h == "source").unwrap();
                let rows: Vec<&str> = lines.collect();
                let sources = rows
                    .iter()
                    .map(|l| l.split(',').nth(col).unwrap().to_owned())
                    .collect();
                return (rows.len(), sources);
            }
        };
    let mut sources = std::collections::BTreeSet::new();
    let mut rows = 0;
    for b in &batches {
        rows += b.num_rows();
        let c = arrow::compute::cast(
            b.column_by_name("source").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        sources.extend(c.as_string::<i32>().iter().flatten().map(str::to_owned));
    }
    (rows, sources)
}

/// Waits until the emulator has seen a request (the fetch is under way), at most 10 s.
async fn wait_for_request(emu: &Emulator, child: &mut Child) {
    let t0 = Instant::now();
    while emu.stats().total_requests == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dsm exited with {status} before making a request");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no request within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn interrupted_fetch_cleans_up(signal: nix::sys::signal::Signal, expected: i32) {
    let emu = emulator().await;
    emu.add_fault(Fault::new(FaultKind::Hang, "*"));
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("btc.csv");
    let args = [
        "fetch",
        "BTCUSDT",
        "--market",
        "spot",
        "--interval",
        "1m",
        "--start",
        "2024-01-01",
        "--end",
        "2024-03-01",
        "-o",
    ];
    let mut cmd = dsm(&emu, cache.path(), &args);
    cmd.arg(&path).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("dsm starts");
    wait_for_request(&emu, &mut child).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let sent = Instant::now();
    nix::sys::signal::kill(pid, signal).unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "dsm did not exit within 2 s of {signal}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(expected), "{status}");
    assert!(
        files_in(out.path()).is_empty(),
        "nothing left: {:?}",
        files_in(out.path())
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]

async fn sigint_during_a_hung_download_exits_130_promptly_without_output() {
    interrupted_fetch_cleans_up(nix::sys::signal::Signal::SIGINT, 130).await;
}

#[tokio::test(flavor = "multi_thread")]

async fn sigterm_during_a_hung_download_exits_143_promptly_without_output() {
    interrupted_fetch_cleans_up(nix::sys::signal::Signal::SIGTERM, 143).await;
}

// ---- End to end: these need the manager (`DataSourceManager::get`), which is not implemented yet.

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const JAN1: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
const JAN3: i64 = JAN1 + 2 * 86_400_000;
const JAN_1_TO_3: (&str, &str) = ("2024-01-01", "2024-01-03");

#[tokio::test(flavor = "multi_thread")]

async fn fetch_writes_the_exchanges_candles_to_csv_and_summarises_them_as_json() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("btc.csv");
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-03",
            "--json",
            "-o",
        ],
    );
    cmd.arg(&path);
    let result = output(cmd).await;
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "stderr: {stderr}");

    let truth = emu.klines(
        dsm_emulator::Market::Spot,
        dsm_emulator::KlineKind::Klines,
        "BTCUSDT",
        "1h",
        JAN1,
        JAN3,
    );
    assert_eq!(truth.len(), 48);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("open_time,open,high,low,close,")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), truth.len());
    for (row, k) in rows.iter().zip(&truth) {
        assert_eq!(row[0], rfc3339_ms(k.open_time));
        assert_eq!(row[4].parse::<f64>().unwrap(), k.close);
        assert_eq!(row[6], rfc3339_ms(k.close_time));
        assert!(
            row[11] == "vision" || row[11] == "rest",
            "source column: {}",
            row[11]
        );
    }

    let json: serde_json::Value = serde_json::from_slice(&result.stdout).expect("JSON on stdout");
    let sym = &json["symbols"][0];
    assert_eq!(sym["symbol"], "BTCUSDT");
    assert_eq!(sym["rows"], 48);
    assert_eq!(sym["first"], "2024-01-01T00:00:00.000Z");
    assert_eq!(sym["last"], "2024-01-02T23:00:00.000Z");
    assert_eq!(sym["gaps"].as_array().unwrap().len(), 0);
    assert_eq!(json["total"]["rows"], 48);
    let requests = json["total"]["sources"]["vision"]["requests"]
        .as_u64()
        .unwrap()
        + json["total"]["sources"]["rest"]["requests"]
            .as_u64()
            .unwrap();
    assert!(requests > 0);
    assert_eq!(
        files_in(out.path()),
        vec![path.clone()],
        "no temporary left"
    );

    // The second time the cache answers, offline.
    emu.clear_log();
    let again = out.path().join("again.csv");
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-03",
            "--source",
            "cache",
            "-q",
            "-o",
        ],
    );
    cmd.arg(&again);
    let result = output(cmd).await;
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(emu.request_log().is_empty());
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]

async fn several_symbols_get_one_parquet_file_each() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("data");
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "ETHUSDT",
            "--market",
            "um",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-03",
            "-q",
            "-o",
        ],
    );
    cmd.arg(&dir);
    let result = output(cmd).await;
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        files_in(&dir),
        vec![dir.join("BTCUSDT.parquet"), dir.join("ETHUSDT.parquet")]
    );
    for name in ["BTCUSDT", "ETHUSDT"] {
        let file = std::fs::File::open(dir.join(format!("{name}.parquet"))).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        let truth = emu.klines(
            dsm_emulator::Market::Um,
            dsm_emulator::KlineKind::Klines,
            name,
            "1h",
            JAN1,
            JAN3,
        );
        assert_eq!(rows, truth.len());
    }
    emu.shutdown().await;
}

/// Runs a BTCUSDT spot 1h fetch of `[start, end)` with its cache in `cache`, checks the rows
/// of a success against the exchange's, and returns (exit code, stderr).
async fn fetch_exit_in(
    emu: &Emulator,
    cache: &Path,
    (start, end): (&str, &str),
    extra: &[&str],
) -> (Option<i32>, String) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "fetch",
        "BTCUSDT",
        "--market",
        "spot",
        "--interval",
        "1h",
        "--start",
        start,
        "--end",
        end,
    ];
    args.extend_from_slice(extra);
    args.push("-o");
    let mut cmd = dsm(emu, cache, &args);
    let file = out.path().join("x.csv");
    cmd.arg(&file);
    let result = output(cmd).await;
    if result.status.success() {
        let (rows, _) = read_back(&file);
        assert_eq!(rows, 48);
    } else {
        assert!(files_in(out.path()).is_empty());
    }
    (
        result.status.code(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

/// Runs a spot 1h fetch of `[start, end)` and returns (exit code, stderr); checks that a failure
/// leaves no file.
async fn fetch_exit(
    emu: &Emulator,
    symbol: &str,
    (start, end): (&str, &str),
    extra: &[&str],
) -> (Option<i32>, String) {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "fetch",
        symbol,
        "--market",
        "spot",
        "--interval",
        "1h",
        "--start",
        start,
        "--end",
        end,
    ];
    args.extend_from_slice(extra);
    args.push("-o");
    let mut cmd = dsm(emu, cache.path(), &args);
    cmd.arg(out.path().join("x.csv"));
    let result = output(cmd).await;
    assert!(files_in(out.path()).is_empty() || result.status.success());
    (
        result.status.code(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]

async fn unavailable_data_exits_3() {
    let emu = emulator().await;
    let (code, stderr) = fetch_exit(&emu, "NOPEUSDT", JAN_1_TO_3, &[]).await;
    assert_eq!(code, Some(3), "unknown symbol: {stderr}");
    // Listed on 2019-01-01: a range entirely before the listing has no data at all.
    let (code, stderr) = fetch_exit(&emu, "SYM01USDT", ("2018-01-01", "2018-02-01"), &[]).await;
    assert_eq!(code, Some(3), "before listing: {stderr}");
    // In the future of the exchange's clock (2026-06-10).
    let (code, stderr) = fetch_exit(&emu, "BTCUSDT", ("2027-01-01", "2027-01-02"), &[]).await;
    assert_eq!(code, Some(3), "future: {stderr}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]

async fn a_ban_exits_4_and_a_bad_checksum_exits_5() {
    let emu = emulator().await;
    emu.add_fault(Fault::new(FaultKind::Banned418, "/api/*"));
    let (code, stderr) = fetch_exit(&emu, "BTCUSDT", JAN_1_TO_3, &["--source", "rest"]).await;
    assert_eq!(code, Some(4), "{stderr}");
    emu.clear_faults();
    emu.add_fault(Fault::new(FaultKind::ChecksumMismatch, "/data/*"));
    let (code, stderr) = fetch_exit(&emu, "BTCUSDT", JAN_1_TO_3, &["--source", "vision"]).await;
    assert_eq!(code, Some(5), "{stderr}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]

async fn a_closed_stdout_ends_quietly() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-03",
            "--json",
            "-o",
        ],
    );
    cmd.arg(out.path().join("x.arrow"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take()); // the reader goes away before dsm prints
    let result = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
    emu.shutdown().await;
}

// ---- dsm cache: against a cache filled through the library's own store.

async fn run_json(cmd: Command) -> (Option<i32>, serde_json::Value, String) {
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, stderr)
}

fn cache_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(DSM);
    cmd.arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(dir)
        .env_remove("DSM_CACHE_DIR");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_ls_size_verify_and_prune() {
    use dsm::cache::{CacheStore, Dataset, Provenance};
    use dsm::schema::{KlineBuilder, KlineRecord};
    use dsm::{DataKind, Interval, Market, Symbol, TimeRange};

    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(dir.path()).unwrap();
    let key = Dataset::klines(Market::Spot, Symbol::new("BTCUSDT").unwrap(), Interval::H1);
    let day = TimeRange::new(JAN1, JAN1 + 86_400_000).unwrap();
    let mut b = KlineBuilder::new(Market::Spot, DataKind::Klines, Interval::H1, 24);
    for h in 0..24 {
        let open = JAN1 + h * 3_600_000;
        b.push(&KlineRecord {
            open_time: open,
            open: 100.0,
            high: 110.0,
            low: 90.0,
            close: 105.0,
            volume: 1.0,
            close_time: open + 3_599_999,
            quote_volume: 100.0,
            count: 3,
            taker_buy_volume: 0.5,
            taker_buy_quote_volume: 50.0,
        })
        .unwrap();
    }
    let file = "BTCUSDT-1h-2024-01-01.zip".to_owned();
    let provenance = Provenance::Vision {
        file: file.clone(),
        sha256: "ab".repeat(32),
        etag: None,
        last_modified: None,
    };
    store
        .write(&key, day, &b.finish(), provenance)
        .await
        .unwrap();

    let (code, ls, stderr) = run_json(cache_cmd(dir.path(), &["ls", "--json"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let parts = ls.as_array().expect("a JSON array");
    assert_eq!(parts.len(), 1, "{ls}");
    assert_eq!(parts[0]["symbol"], "BTCUSDT");
    assert_eq!(parts[0]["market"], "spot");
    assert_eq!(parts[0]["interval"], "1h");
    assert_eq!(parts[0]["rows"], 24);
    assert_eq!(parts[0]["sources"][0], format!("vision:{file}"));
    let text = output(cache_cmd(dir.path(), &["ls"])).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("BTCUSDT"));

    let (code, size, _) = run_json(cache_cmd(dir.path(), &["size", "--json"])).await;
    assert_eq!(code, Some(0));
    assert_eq!(size["bytes"].as_u64(), Some(store.size().await.unwrap()));
    assert!(size["bytes"].as_u64().unwrap() > 0);

    let (code, report, stderr) = run_json(cache_cmd(dir.path(), &["verify", "--json"])).await;
    assert_eq!(code, Some(0), "a clean cache verifies: {stderr}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);

    // Damage the data file: verify finds it, quarantines it, and exits 5.
    let data = store.list().await.unwrap()[0].data_file.clone().unwrap();
    let path = dir.path().join(&data);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let out = output(cache_cmd(dir.path(), &["verify"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("1 problems"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));

    // Prune needs a criterion; --all conflicts with filters; --all empties the cache.
    let out = output(cache_cmd(dir.path(), &["prune"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
    let out = output(cache_cmd(
        dir.path(),
        &["prune", "--all", "--symbol", "BTCUSDT"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = output(cache_cmd(dir.path(), &["prune", "--symbol", "btcusdt"])).await;
    assert_eq!(out.status.code(), Some(2), "symbols are validated");
    let (code, pruned, stderr) =
        run_json(cache_cmd(dir.path(), &["prune", "--all", "--json"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(pruned["files"].as_u64().unwrap() > 0);
    let (_, ls, _) = run_json(cache_cmd(dir.path(), &["ls", "--json"])).await;
    assert_eq!(ls, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn aggtrades_from_rest_are_written() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("agg.csv");
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "um",
            "--kind",
            "aggtrades",
            "--start",
            "2026-06-08T10:00:00Z",
            "--end",
            "2026-06-08T14:00:00Z",
            "--source",
            "rest",
            "-q",
            "-o",
        ],
    );
    cmd.arg(&path);
    let result = output(cmd).await;
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let want = emu.agg_trades(
        dsm_emulator::Market::Um,
        "BTCUSDT",
        dsm::time::parse_instant("2026-06-08T10:00:00Z").unwrap(),
        dsm::time::parse_instant("2026-06-08T14:00:00Z").unwrap(),
    );
    assert!(!want.is_empty());
    let (rows, sources) = read_back(&path);
    assert_eq!(rows, want.len());
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), vec!["rest"]);
    assert!(
        emu.request_log()
            .iter()
            .all(|r| !r.path.starts_with("/data/"))
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_verify_remote_lists_and_refetches_republished_files() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-03",
            "-q",
            "-o",
        ],
    );
    cmd.arg(out.path().join("x.csv"));
    assert_eq!(output(cmd).await.status.code(), Some(0));
    emu.add_fault(
        "republish=0.5@*-1h-2024-01-02.zip"
            .parse::<Fault>()
            .unwrap(),
    );
    let mut cmd = cache_cmd(cache.path(), &["verify", "--remote", "--json"]);
    cmd.arg("--vision-url").arg(emu.base_url());
    let (code, json, stderr) = run_json(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["remote_checked"], 2, "{json}");
    let republished = json["republished"].as_array().unwrap();
    assert_eq!(republished.len(), 1, "{json}");
    assert_eq!(
        republished[0]["file"],
        "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-02.zip"
    );
    assert!(republished[0]["changed"].as_u64().unwrap() > 0, "{json}");
    // Fetched again: a second check finds nothing new.
    let mut cmd = cache_cmd(cache.path(), &["verify", "--remote", "--json"]);
    cmd.arg("--vision-url").arg(emu.base_url());
    let (code, json, stderr) = run_json(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["republished"].as_array().unwrap().len(), 0, "{json}");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Rate limits and bans
// ---------------------------------------------------------------------------------------------

/// Four dsm processes on one IP and one cache, against a server whose limit (120 weight per
/// 2 s) is far below Binance's documented 6000 per minute: dsm reads the server's limit and
/// shares one budget between the processes, so the server never answers 429 or 418, and every
/// process gets its rows.
#[tokio::test(flavor = "multi_thread")]
async fn four_processes_sharing_an_ip_never_get_banned() {
    let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 6, 10, 0, 0, 0).unwrap();
    let limits = dsm_emulator::RateLimits {
        spot_weight_limit: 120,
        window: Duration::from_secs(2),
        ban: Duration::from_secs(60),
        ..dsm_emulator::RateLimits::default()
    };
    let emu = Emulator::start(
        dsm_emulator::EmulatorConfig::default()
            .with_now(now)
            .with_rate_limits(limits),
    )
    .await
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Two weeks of 1m candles each: 21 pages of weight 2, the clock and the limit: 62 weight
    // per process, ~250 in all, so the processes share at least three windows.
    let symbols = ["SYM01USDT", "SYM02USDT", "SYM03USDT", "SYM04USDT"];
    let children: Vec<(String, Child)> = symbols
        .iter()
        .map(|s| {
            let file = out.path().join(format!("{s}.csv"));
            let mut cmd = dsm(
                &emu,
                cache.path(),
                &[
                    "fetch",
                    s,
                    "--market",
                    "spot",
                    "--interval",
                    "1m",
                    "--start",
                    "2024-01-01",
                    "--end",
                    "2024-01-15",
                    "--source",
                    "rest",
                    "--no-cache",
                    "-q",
                    "-o",
                ],
            );
            cmd.arg(&file).stdout(Stdio::null()).stderr(Stdio::piped());
            (s.to_string(), cmd.spawn().unwrap())
        })
        .collect();
    for (s, child) in children {
        let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(
            o.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (rows, _) = read_back(&out.path().join(format!("{s}.csv")));
        assert_eq!(rows, 14 * 1440, "{s}");
    }
    let stats = emu.stats();
    assert_eq!(stats.requests_by_status.get(&429), None, "{stats:?}");
    assert_eq!(stats.requests_by_status.get(&418), None, "{stats:?}");
    // The budget was needed: the weight sent is more than one window allows.
    let weight: u64 = emu
        .request_log()
        .iter()
        .map(|r| match r.path.rsplit('/').next() {
            Some("klines") => 2,
            Some("exchangeInfo") => 20,
            _ => 1,
        })
        .sum();
    assert!(weight > 120, "{weight}");
    emu.shutdown().await;
}

/// A 418 ban is remembered in the cache directory: the next run sends nothing to the banned
/// market and exits 4 at once, saying when the ban ends; Vision still answers what it has.
#[tokio::test(flavor = "multi_thread")]
async fn a_ban_is_remembered_across_runs() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    emu.add_fault("status418@/api/v3/klines#1".parse().unwrap());
    let run = |source: &str| {
        let mut cmd = dsm(
            &emu,
            cache.path(),
            &[
                "fetch",
                "BTCUSDT",
                "--market",
                "spot",
                "--interval",
                "1h",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-03",
                "--source",
                source,
                "-o",
            ],
        );
        cmd.arg(out.path().join(format!("{source}.csv")));
        cmd
    };
    let first = output(run("rest")).await;
    assert_eq!(first.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("banned this IP until"), "{stderr}");
    let before = emu.request_log().len();
    let started = Instant::now();
    let second = output(run("rest")).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("banned this IP until"), "{stderr}");
    assert!(stderr.contains("--wait-on-ban"), "{stderr}");
    assert_eq!(
        emu.request_log().len(),
        before,
        "nothing is sent to a banned market"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let third = output(run("vision")).await;
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    emu.shutdown().await;
}

/// `dsm cache` commands on a directory that does not exist say so (exit 2) and create nothing.
#[tokio::test(flavor = "multi_thread")]
async fn cache_commands_on_a_missing_directory_create_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("no-such-cache");
    for args in [&["verify"][..], &["ls"][..]] {
        let o = output(cache_cmd(&dir, args)).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("does not exist"), "{stderr}");
        assert!(stderr.contains(&*dir.to_string_lossy()), "{stderr}");
        assert!(!dir.exists(), "{args:?} created the directory");
    }
}

/// A cache directory that cannot be created (here: under a file): the fetch still answers, with
/// a warning that names the path and says what to do; nothing is cached.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_cache_directory_does_not_stop_a_fetch() {
    let emu = emulator().await;
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cache = file.join("cache");
    let out = tempfile::tempdir().unwrap();
    let mut cmd = dsm(
        &emu,
        &cache,
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-03",
            "-o",
        ],
    );
    cmd.arg(out.path().join("x.csv"));
    let o = output(cmd).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&*cache.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("--cache-dir"), "{stderr}");
    let (rows, _) = read_back(&out.path().join("x.csv"));
    assert_eq!(rows, 48);
    emu.shutdown().await;
}

/// `--wait-on-ban` waits for a remembered ban to end, then fetches: exit 0, exact rows.
#[tokio::test(flavor = "multi_thread")]
async fn wait_on_ban_waits_for_the_ban_to_end() {
    let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 6, 10, 0, 0, 0).unwrap();
    let limits = dsm_emulator::RateLimits {
        ban: Duration::from_secs(2),
        ..dsm_emulator::RateLimits::default()
    };
    let emu = Emulator::start(
        dsm_emulator::EmulatorConfig::default()
            .with_now(now)
            .with_rate_limits(limits),
    )
    .await
    .unwrap();
    emu.add_fault("status418@/api/v3/klines#1".parse().unwrap());
    let cache = tempfile::tempdir().unwrap();
    let (code, stderr) = fetch_exit_in(&emu, cache.path(), JAN_1_TO_3, &["--source", "rest"]).await;
    assert_eq!(code, Some(4), "{stderr}");
    let started = Instant::now();
    let (code, stderr) = fetch_exit_in(
        &emu,
        cache.path(),
        JAN_1_TO_3,
        &["--source", "rest", "--wait-on-ban"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
    emu.shutdown().await;
}

/// `--timeout` bounds a dead upstream: with every request hanging and `--timeout 1`, the run
/// ends with exit 4 after the documented attempts (4 per request, each at most 2 × timeout),
/// naming the URL and the attempts.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_upstream_fails_within_the_timeout_bound() {
    let emu = emulator().await;
    emu.add_fault("hang@*".parse().unwrap());
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, stderr) = fetch_exit_in(&emu, cache.path(), JAN_1_TO_3, &["--timeout", "1"]).await;
    let took = started.elapsed();
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("http://"), "{stderr}");
    assert!(stderr.contains("4 attempts"), "{stderr}");
    // The clock request: 4 attempts of at most 2 s, plus backoff; Vision likewise, concurrently.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    emu.shutdown().await;
}

/// A cache that fails once the fetch is under way (here its dataset directory is a file, so the
/// partition's manifest cannot be read): the fetch finishes with exact rows and one warning that
/// names the path and what to do. (Writes that fail go through the same rule; they cannot be made
/// to fail here, as the tests may run as root.)
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_cache_does_not_stop_a_fetch() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("klines-v1"), b"not a directory").unwrap();
    let (code, stderr) = fetch_exit_in(&emu, cache.path(), JAN_1_TO_3, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("cannot use the cache").count(),
        1,
        "one warning: {stderr}"
    );
    assert!(stderr.contains("klines-v1"), "the path is named: {stderr}");
    assert!(stderr.contains("--cache-dir"), "{stderr}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_tables_are_fetched_to_csv_with_their_own_columns() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("eoh.csv");
    let mut cmd = dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "BTCUSDT",
            "--market",
            "option",
            "--kind",
            "eoh-summary",
            "--start",
            "2024-01-31T22:00:00Z",
            "--end",
            "2024-02-01T02:00:00Z",
            "--json",
            "-o",
        ],
    );
    cmd.arg(&path);
    let result = output(cmd).await;
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "stderr: {stderr}");
    let truth = emu.table(
        dsm_emulator::Market::Option,
        dsm_emulator::TableKind::EohSummary,
        "BTCUSDT",
        1_706_738_400_000,
        1_706_752_800_000,
    );
    assert_eq!(truth.len(), 4 * 4);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("time,symbol,underlying,type,strike,open,")
    );
    let mut rows: Vec<(String, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1].to_owned())
        })
        .collect();
    rows.sort();
    let mut want: Vec<(String, String)> = truth
        .iter()
        .map(|r| (rfc3339_ms(r.time), r.fields[0].clone()))
        .collect();
    want.sort();
    assert_eq!(rows, want);
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).expect("JSON on stdout");
    assert_eq!(json["symbols"][0]["rows"], 16);
    assert!(
        emu.request_log()
            .iter()
            .all(|l| l.path.starts_with("/data/option/")),
        "only the archive is asked"
    );
    emu.shutdown().await;
}

/// `dsm sync` and `dsm symbols` as a user runs them, against an emulator at 2024-12-10 whose
/// archive fails (HTTP 500) for SYM03USDT's monthly files.
#[tokio::test(flavor = "multi_thread")]
async fn sync_fills_the_cache_and_exits_0_6_or_4_by_what_it_got() {
    let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2024, 12, 10, 0, 0, 0).unwrap();
    let emu = Emulator::start(
        dsm_emulator::EmulatorConfig::default()
            .with_now(now)
            .with_fault(
                "status500@/data/spot/monthly/klines/SYM03USDT/*"
                    .parse()
                    .unwrap(),
            ),
    )
    .await
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let json = |o: &Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).unwrap() };
    let exits = |o: &Output, code: i32| {
        assert_eq!(
            o.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let entry = |v: &serde_json::Value, s: &str| {
        v["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["symbol"] == s)
            .unwrap()
            .clone()
    };
    let sync = |args: &[&str]| {
        let mut all = vec!["sync", "--market", "spot", "--interval", "1h", "--json"];
        all.extend_from_slice(args);
        dsm(&emu, cache.path(), &all)
    };

    // Complete: a trading symbol and one gone from exchangeInfo, clipped to its life.
    let o = output(sync(&[
        "--symbols",
        "SYM01USDT,GONEUSDT",
        "--start",
        "2024-01-01",
        "--end",
        "2024-12-01",
    ]))
    .await;
    exits(&o, 0);
    let v = json(&o);
    assert_eq!(v["complete"], true);
    let gone = entry(&v, "GONEUSDT");
    assert_eq!(gone["status"], "delisted");
    assert_eq!(gone["range"]["end"], "2024-05-21T00:00:00.000Z");
    assert_eq!(
        gone["files"],
        4 + 20,
        "four months, then May's days to the delisting"
    );
    assert_eq!(entry(&v, "SYM01USDT")["files"], 11);
    assert_eq!(v["total"]["files"], 11 + 24);
    let zips = emu
        .request_log()
        .iter()
        .filter(|l| l.path.ends_with(".zip"))
        .count();
    assert_eq!(zips, 11 + 24);
    // What sync cached, fetch reads offline.
    let out = tempfile::tempdir().unwrap();
    let csv = out.path().join("gone.csv").to_string_lossy().into_owned();
    let o = output(dsm(
        &emu,
        cache.path(),
        &[
            "fetch",
            "GONEUSDT",
            "--market",
            "spot",
            "--interval",
            "1h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-05-20T12:00:00Z",
            "--source",
            "cache",
            "-o",
            &csv,
        ],
    ))
    .await;
    exits(&o, 0);

    // Incomplete: the archive alone, up to now; its last days are not published yet (exit 6).
    let o = output(sync(&[
        "--symbols",
        "SYM02USDT",
        "--start",
        "2024-12-01",
        "--source",
        "vision",
    ]))
    .await;
    exits(&o, 6);
    let v = json(&o);
    assert_eq!(v["complete"], false);
    assert!(
        !entry(&v, "SYM02USDT")["missing"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("SYM02USDT"));

    // Upstream failure: SYM03USDT's archive fails; SYM04USDT is synced all the same (exit 4).
    let o = output(sync(&[
        "--symbols",
        "SYM03USDT,SYM04USDT",
        "--start",
        "2024-01-01",
        "--end",
        "2024-03-01",
        "--source",
        "vision",
    ]))
    .await;
    exits(&o, 4);
    let v = json(&o);
    assert_eq!(entry(&v, "SYM04USDT")["complete"], true);
    let bad = entry(&v, "SYM03USDT");
    assert_eq!(bad["complete"], false);
    assert_eq!(bad["failures"][0]["category"], "upstream");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("SYM03USDT") && stderr.contains("rerun"),
        "{stderr}"
    );

    // The list the universe comes from.
    let o = output(dsm(
        &emu,
        cache.path(),
        &[
            "symbols", "--market", "spot", "--status", "delisted", "--json",
        ],
    ))
    .await;
    exits(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GONEUSDT", "HALTUSDT"]);
    assert_eq!(v[1]["exchange_status"], "BREAK");
    assert_eq!(v[1]["ended"], "2024-09-03T00:00:00.000Z");

    // Bad input: before any request.
    let before = emu.request_log().len();
    for (args, says) in [
        (
            vec![
                "--symbols",
                "all",
                "--start",
                "2024-01-01",
                "--shard",
                "3/2",
            ],
            "K/N",
        ),
        (
            vec!["--symbols", "btcusdt", "--start", "2024-01-01"],
            "BTCUSDT",
        ),
        (
            vec![
                "--symbols",
                "all",
                "--start",
                "2024-01-01",
                "--source",
                "cache",
            ],
            "nothing to sync",
        ),
    ] {
        let o = output(sync(&args)).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(emu.request_log().len(), before);
}

/// A cache that fails during a sync (its dataset directory is a file) stops the sync with exit 1
/// naming the cache: a sync is only worth what it cached, so it never ends "complete" without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_cache_stops_a_sync_with_exit_1() {
    let emu = emulator().await;
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("klines-v1"), b"not a directory").unwrap();
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
    ];
    let o = output(dsm(&emu, cache.path(), &args)).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sync stopped"), "{stderr}");
    assert!(
        stderr.contains(&*cache.path().to_string_lossy()),
        "names the cache: {stderr}"
    );
    // It stopped at the first unit instead of downloading the universe for nothing.
    let zips = emu
        .request_log()
        .iter()
        .filter(|l| l.path.ends_with(".zip"))
        .count();
    assert!(zips <= 8, "{zips} files downloaded");
}
