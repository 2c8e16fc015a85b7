//! Integration tests of the Vision archive client against the emulator and the real Binance files
//! in `shared/binance-vision-samples` (expected values are read from the files themselves, or from
//! the emulator's truth accessors, never from dsm's own output).
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use arrow::array::{
    Array, BooleanArray, Float64Array, Int32Array, Int64Array, TimestampMicrosecondArray,
    TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeZone, Utc};
use dsm::vision::{FileKey, FileOutcome, VisionClient, VisionConfig, VisionError, parse_zip};
use dsm::{DataKind, ErrorCategory, Interval, Market, Symbol, TimeRange};
use dsm_emulator::{Emulator, EmulatorConfig, Fault};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- helpers

/// The real sample files: `shared/binance-vision-samples` beside the repository (the repository is
/// cloned beside `shared/`; a git worktree one level deeper finds it via its ancestors), or
/// `$DSM_VISION_SAMPLES`.
fn samples() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/binance-vision-samples"
    ));
    let candidates = std::env::var_os("DSM_VISION_SAMPLES")
        .map(PathBuf::from)
        .into_iter()
        .chain([p.clone()])
        .chain(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|a| a.join("shared/binance-vision-samples")),
        );
    for c in candidates {
        if c.join("data").is_dir() {
            return Some(c);
        }
    }
    println!("skipped: {} not found", p.display());
    None
}

fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
    t(y, m, d, h).timestamp_millis()
}

fn range(a: i64, b: i64) -> TimeRange {
    TimeRange::new(a, b).unwrap()
}

async fn emulator(now: DateTime<Utc>) -> Emulator {
    let mut cfg = EmulatorConfig::default().with_now(now);
    if let Some(root) = samples() {
        cfg = cfg.with_root(root);
    }
    Emulator::start(cfg).await.expect("emulator starts")
}

/// Fast retries and short timeouts so fault tests take milliseconds.
fn config(emu: &Emulator) -> VisionConfig {
    VisionConfig {
        concurrency: 4,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_millis(500),
        retries: 2,
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..VisionConfig::for_base(&emu.base_url())
    }
}

fn client(emu: &Emulator) -> VisionClient {
    VisionClient::new(config(emu)).unwrap()
}

fn key(path: &str) -> FileKey {
    FileKey::from_path(path).unwrap_or_else(|| panic!("{path} is a Vision key"))
}

async fn fetch_data(c: &VisionClient, k: &FileKey) -> dsm::vision::FileData {
    match c.fetch(k, &CancellationToken::new()).await {
        Ok(FileOutcome::Data(d)) => d,
        other => panic!("{k}: expected data, got {other:?}"),
    }
}

/// The CSV rows of a zip, split by the test itself (header row dropped if the first byte is not a
/// digit).
fn csv_rows(zip_bytes: &[u8]) -> Vec<Vec<String>> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut text = String::new();
    z.by_index(0).unwrap().read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| !l.is_empty() && l.as_bytes()[0].is_ascii_digit())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn f(s: &str) -> f64 {
    s.parse().unwrap()
}
fn i(s: &str) -> i64 {
    s.parse().unwrap()
}
fn b(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}
/// Milliseconds from a 13-digit (ms) or 16-digit (µs) timestamp.
fn to_ms(s: &str) -> i64 {
    if s.len() >= 16 { i(s) / 1000 } else { i(s) }
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("type of {name}"))
}

fn f64s(batch: &RecordBatch, name: &str) -> Vec<f64> {
    col::<Float64Array>(batch, name).values().to_vec()
}
fn i64s(batch: &RecordBatch, name: &str) -> Vec<i64> {
    col::<Int64Array>(batch, name).values().to_vec()
}
fn ms_col(batch: &RecordBatch, name: &str) -> Vec<i64> {
    col::<TimestampMillisecondArray>(batch, name)
        .values()
        .to_vec()
}
fn us_col(batch: &RecordBatch, name: &str) -> Vec<i64> {
    col::<TimestampMicrosecondArray>(batch, name)
        .values()
        .to_vec()
}

fn assert_klines_equal_csv(batch: &RecordBatch, rows: &[Vec<String>]) {
    assert_eq!(batch.num_rows(), rows.len());
    let pick = |c: usize| rows.iter().map(|r| r[c].clone()).collect::<Vec<_>>();
    let fl = |c: usize| pick(c).iter().map(|s| f(s)).collect::<Vec<_>>();
    assert_eq!(
        ms_col(batch, "open_time"),
        pick(0).iter().map(|s| to_ms(s)).collect::<Vec<_>>()
    );
    assert_eq!(f64s(batch, "open"), fl(1));
    assert_eq!(f64s(batch, "high"), fl(2));
    assert_eq!(f64s(batch, "low"), fl(3));
    assert_eq!(f64s(batch, "close"), fl(4));
    assert_eq!(f64s(batch, "volume"), fl(5));
    assert_eq!(
        ms_col(batch, "close_time"),
        pick(6).iter().map(|s| to_ms(s)).collect::<Vec<_>>()
    );
    assert_eq!(f64s(batch, "quote_volume"), fl(7));
    assert_eq!(
        i64s(batch, "count"),
        pick(8).iter().map(|s| i(s)).collect::<Vec<_>>()
    );
    assert_eq!(f64s(batch, "taker_buy_volume"), fl(9));
    assert_eq!(f64s(batch, "taker_buy_quote_volume"), fl(10));
}

// ---------------------------------------------------------------- real files

#[tokio::test]
async fn real_spot_2020_minutes_parse_to_the_values_in_the_files() {
    let Some(root) = samples() else { return };
    let emu = emulator(t(2026, 6, 10, 0)).await;
    let c = client(&emu);
    for day in 1..=3 {
        let path = format!("data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-0{day}.zip");
        let disk = std::fs::read(root.join(&path)).unwrap();
        let sidecar = std::fs::read_to_string(root.join(format!("{path}.CHECKSUM"))).unwrap();
        let d = fetch_data(&c, &key(&path)).await;
        assert_eq!(d.sha256, sidecar.split_whitespace().next().unwrap());
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&disk)));
        assert!(!d.unverified);
        let rows = csv_rows(&disk);
        assert_eq!(rows.len(), 1440);
        assert_klines_equal_csv(&d.batch, &rows);
        // The same through the pure parser.
        assert_eq!(parse_zip(&disk, &key(&path)).unwrap(), d.batch);
    }
    // The first row of 2020-01-01, as quoted in the brief from the file.
    let d = fetch_data(
        &c,
        &key("data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip"),
    )
    .await;
    let first = "1577836800000,7195.24000000,7196.25000000,7183.14000000,7186.68000000,51.64281200,1577836859999,371233.51835535,493,19.59823000,140888.41428273,0";
    let row: Vec<String> = first.split(',').map(str::to_owned).collect();
    assert_klines_equal_csv(&d.batch.slice(0, 1), &[row]);

    // Three days through the range API stitch into 4320 contiguous minutes.
    let got = c
        .fetch_range(
            Market::Spot,
            DataKind::Klines,
            &Symbol::new("BTCUSDT").unwrap(),
            Some(Interval::M1),
            range(ms(2020, 1, 1, 0), ms(2020, 1, 4, 0)),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let opens: Vec<i64> = got
        .batches
        .iter()
        .flat_map(|b| ms_col(b, "open_time"))
        .collect();
    assert_eq!(opens.len(), 4320);
    assert!(opens.windows(2).all(|w| w[1] - w[0] == 60_000));
    assert!(got.not_published.is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn real_spot_2026_microsecond_hours_are_normalised_to_milliseconds() {
    let Some(root) = samples() else { return };
    let emu = emulator(t(2026, 6, 10, 0)).await;
    let c = client(&emu);
    for day in 8..=9 {
        let path = format!("data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2026-05-0{day}.zip");
        let disk = std::fs::read(root.join(&path)).unwrap();
        let rows = csv_rows(&disk);
        assert_eq!(rows.len(), 24);
        assert_eq!(rows[0][0].len(), 16, "the file has µs timestamps");
        let d = fetch_data(&c, &key(&path)).await;
        assert_klines_equal_csv(&d.batch, &rows);
        assert_eq!(ms_col(&d.batch, "open_time")[0], ms(2026, 5, day, 0));
        assert_eq!(
            ms_col(&d.batch, "close_time")[23],
            ms(2026, 5, day + 1, 0) - 1
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn real_um_funding_month_keeps_jittered_calc_times() {
    let Some(root) = samples() else { return };
    let emu = emulator(t(2026, 6, 10, 0)).await;
    let c = client(&emu);
    let path = "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-04.zip";
    let disk = std::fs::read(root.join(path)).unwrap();
    let rows = csv_rows(&disk);
    assert_eq!(rows.len(), 90);
    let d = fetch_data(&c, &key(path)).await;
    let batch = &d.batch;
    assert_eq!(
        ms_col(batch, "funding_time"),
        rows.iter().map(|r| i(&r[0])).collect::<Vec<_>>()
    );
    assert_eq!(
        col::<Int32Array>(batch, "funding_interval_hours")
            .iter()
            .collect::<Vec<_>>(),
        rows.iter()
            .map(|r| Some(i(&r[1]) as i32))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        f64s(batch, "funding_rate"),
        rows.iter().map(|r| f(&r[2])).collect::<Vec<_>>()
    );
    let jittered = ms_col(batch, "funding_time")
        .iter()
        .filter(|t| **t % 3_600_000 != 0)
        .count();
    assert!(jittered > 0, "calc_time jitter is kept as in the file");

    // A partial-month range uses the monthly file (funding has no dailies) and is cut to the range.
    let got = c
        .fetch_range(
            Market::UsdM,
            DataKind::FundingRate,
            &Symbol::new("BTCUSDT").unwrap(),
            None,
            range(ms(2026, 4, 10, 0), ms(2026, 4, 20, 0)),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let times: Vec<i64> = got
        .batches
        .iter()
        .flat_map(|b| ms_col(b, "funding_time"))
        .collect();
    let expected: Vec<i64> = rows
        .iter()
        .map(|r| i(&r[0]))
        .filter(|t| (ms(2026, 4, 10, 0)..ms(2026, 4, 20, 0)).contains(t))
        .collect();
    assert_eq!(times, expected);
    assert_eq!(got.files.len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn real_cm_agg_trades_day_parses_exactly() {
    let Some(root) = samples() else { return };
    let emu = emulator(t(2026, 6, 10, 0)).await;
    let c = client(&emu);
    let path = "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip";
    let disk = std::fs::read(root.join(path)).unwrap();
    let rows = csv_rows(&disk);
    assert_eq!(rows.len(), 105_280);
    let d = fetch_data(&c, &key(path)).await;
    let batch = &d.batch;
    let ids = i64s(batch, "agg_trade_id");
    assert_eq!(ids, rows.iter().map(|r| i(&r[0])).collect::<Vec<_>>());
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "contiguous ids");
    assert_eq!(
        f64s(batch, "price"),
        rows.iter().map(|r| f(&r[1])).collect::<Vec<_>>()
    );
    assert_eq!(
        f64s(batch, "quantity"),
        rows.iter().map(|r| f(&r[2])).collect::<Vec<_>>()
    );
    assert_eq!(
        i64s(batch, "first_trade_id"),
        rows.iter().map(|r| i(&r[3])).collect::<Vec<_>>()
    );
    assert_eq!(
        i64s(batch, "last_trade_id"),
        rows.iter().map(|r| i(&r[4])).collect::<Vec<_>>()
    );
    assert_eq!(
        us_col(batch, "transact_time"),
        rows.iter().map(|r| i(&r[5]) * 1000).collect::<Vec<_>>()
    );
    assert_eq!(
        col::<BooleanArray>(batch, "is_buyer_maker")
            .iter()
            .collect::<Vec<_>>(),
        rows.iter().map(|r| Some(b(&r[6]))).collect::<Vec<_>>()
    );
    assert_eq!(
        col::<BooleanArray>(batch, "is_best_match").null_count(),
        rows.len()
    );
    emu.shutdown().await;
}
