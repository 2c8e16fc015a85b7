//! Integration tests of the Vision archive client against the emulator and the real Binance files
//! in `shared/binance-vision-samples` (expected values are read from the files themselves, or from
//! the emulator's truth accessors, never from dsm's own output).
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::{emu_kind, emu_market, range};

use arrow::array::{
    Array, BooleanArray, Float64Array, Int32Array, Int64Array, TimestampMicrosecondArray,
    TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeZone, Utc};
use dsm::vision::{FileKey, FileOutcome, VisionClient, VisionConfig, VisionError, parse_zip};
use dsm::{DataKind, Dataset, ErrorCategory, Interval, Market, Symbol};
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
        pace: dsm::Pace {
            silence: Duration::from_secs(5),
            ..dsm::Pace::default()
        },
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
        Ok(FileOutcome::Data(d)) => *d,
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

/// Compares two columns, reporting the length or the first difference (not thousands of values).
#[track_caller]
fn same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    if let Some(i) = (0..got.len()).find(|i| got[*i] != want[*i]) {
        panic!("{what}: row {i} is {:?}, expected {:?}", got[i], want[i]);
    }
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
            &Dataset::klines(Market::Spot, Symbol::new("BTCUSDT").unwrap(), Interval::M1),
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
            &Dataset::new(
                Market::UsdM,
                DataKind::FundingRate,
                Symbol::new("BTCUSDT").unwrap(),
                None,
            )
            .unwrap(),
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

// ---------------------------------------------------------------- synthetic files: every era

/// Whether the CSV inside a downloaded zip starts with a header row (the test's own look).
fn has_header(zip_bytes: &[u8]) -> bool {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut first = [0u8; 1];
    z.by_index(0).unwrap().read_exact(&mut first).unwrap();
    !first[0].is_ascii_digit()
}

fn first_csv_line(zip_bytes: &[u8]) -> String {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut text = String::new();
    z.by_index(0).unwrap().read_to_string(&mut text).unwrap();
    text.lines()
        .find(|l| l.as_bytes()[0].is_ascii_digit())
        .unwrap_or_default()
        .to_owned()
}

fn period_key(
    market: Market,
    kind: DataKind,
    symbol: &str,
    interval: Option<Interval>,
    monthly: bool,
    start: i64,
) -> FileKey {
    FileKey {
        dataset: Dataset::new(market, kind, Symbol::new(symbol).unwrap(), interval).unwrap(),
        period: if monthly {
            dsm::vision::Period::Month(start)
        } else {
            dsm::vision::Period::Day(start)
        },
    }
}

#[tokio::test]
async fn every_market_era_and_header_convention_matches_the_emulator_truth() {
    let emu = emulator(t(2026, 6, 10, 0)).await;
    let c = client(&emu);
    // (market, kind, symbol, interval, monthly, start, header expected, µs expected)
    let d2021 = ms(2021, 6, 1, 0);
    let d2024 = ms(2024, 1, 1, 0);
    let d2025 = ms(2025, 6, 1, 0);
    let kline_cases = [
        (
            Market::Spot,
            DataKind::Klines,
            "BTCUSDT",
            Interval::H1,
            false,
            d2024,
            false,
            false,
        ),
        (
            Market::Spot,
            DataKind::Klines,
            "BTCUSDT",
            Interval::H1,
            false,
            d2025,
            false,
            true,
        ),
        (
            Market::Spot,
            DataKind::Klines,
            "ETHUSDT",
            Interval::S1,
            false,
            d2025,
            false,
            true,
        ),
        (
            Market::Spot,
            DataKind::Klines,
            "BTCUSDT",
            Interval::W1,
            true,
            d2024,
            false,
            false,
        ),
        (
            Market::Spot,
            DataKind::Klines,
            "BTCUSDT",
            Interval::Mo1,
            true,
            d2025,
            false,
            true,
        ),
        (
            Market::UsdM,
            DataKind::Klines,
            "BTCUSDT",
            Interval::H1,
            false,
            d2021,
            false,
            false,
        ),
        (
            Market::UsdM,
            DataKind::Klines,
            "BTCUSDT",
            Interval::M5,
            false,
            d2024,
            true,
            false,
        ),
        (
            Market::UsdM,
            DataKind::Klines,
            "BTCUSDT",
            Interval::D3,
            true,
            d2024,
            true,
            false,
        ),
        (
            Market::CoinM,
            DataKind::Klines,
            "BTCUSD_PERP",
            Interval::H1,
            false,
            d2021,
            false,
            false,
        ),
        (
            Market::CoinM,
            DataKind::Klines,
            "BTCUSD_PERP",
            Interval::H1,
            false,
            d2025,
            true,
            false,
        ),
        (
            Market::UsdM,
            DataKind::MarkPriceKlines,
            "BTCUSDT",
            Interval::H1,
            false,
            d2024,
            true,
            false,
        ),
        (
            Market::UsdM,
            DataKind::IndexPriceKlines,
            "BTCUSDT",
            Interval::H1,
            false,
            d2024,
            true,
            false,
        ),
        (
            Market::UsdM,
            DataKind::PremiumIndexKlines,
            "BTCUSDT",
            Interval::H1,
            false,
            d2024,
            true,
            false,
        ),
        (
            Market::CoinM,
            DataKind::IndexPriceKlines,
            "BTCUSD",
            Interval::H1,
            false,
            d2024,
            true,
            false,
        ),
        (
            Market::CoinM,
            DataKind::MarkPriceKlines,
            "BTCUSD_PERP",
            Interval::H1,
            true,
            d2024,
            true,
            false,
        ),
    ];
    for (market, kind, symbol, interval, monthly, start, header, micros) in kline_cases {
        let k = period_key(market, kind, symbol, Some(interval), monthly, start);
        let d = fetch_data(&c, &k).await;
        assert_eq!(has_header(&d.bytes), header, "{k}: header convention");
        let first = first_csv_line(&d.bytes);
        assert_eq!(
            first.split(',').next().unwrap().len() == 16,
            micros,
            "{k}: time unit"
        );
        let r = k.range();
        let truth = emu.klines(
            emu_market(market),
            emu_kind(kind),
            symbol,
            interval.as_str(),
            r.start(),
            r.end(),
        );
        assert!(!truth.is_empty(), "{k}");
        let b = &d.batch;
        assert_eq!(b.num_rows(), truth.len(), "{k}");
        assert_eq!(
            ms_col(b, "open_time"),
            truth.iter().map(|x| x.open_time).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            ms_col(b, "close_time"),
            truth.iter().map(|x| x.close_time).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "open"),
            truth.iter().map(|x| x.open).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "high"),
            truth.iter().map(|x| x.high).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "low"),
            truth.iter().map(|x| x.low).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "close"),
            truth.iter().map(|x| x.close).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "volume"),
            truth.iter().map(|x| x.volume).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "quote_volume"),
            truth.iter().map(|x| x.quote_volume).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            i64s(b, "count"),
            truth.iter().map(|x| x.count).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "taker_buy_volume"),
            truth.iter().map(|x| x.taker_buy_volume).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "taker_buy_quote_volume"),
            truth
                .iter()
                .map(|x| x.taker_buy_quote_volume)
                .collect::<Vec<_>>(),
            "{k}"
        );
    }

    for market in [Market::UsdM, Market::CoinM] {
        let symbol = if market == Market::UsdM {
            "BTCUSDT"
        } else {
            "BTCUSD_PERP"
        };
        let k = period_key(market, DataKind::FundingRate, symbol, None, true, d2024);
        let d = fetch_data(&c, &k).await;
        assert!(has_header(&d.bytes), "{k}");
        let truth = emu.funding(
            emu_market(market),
            symbol,
            k.range().start(),
            k.range().end(),
        );
        assert!(!truth.is_empty());
        assert_eq!(
            ms_col(&d.batch, "funding_time"),
            truth.iter().map(|x| x.funding_time).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(&d.batch, "funding_rate"),
            truth.iter().map(|x| x.funding_rate).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            col::<Int32Array>(&d.batch, "funding_interval_hours")
                .iter()
                .collect::<Vec<_>>(),
            truth
                .iter()
                .map(|x| Some(x.funding_interval_hours))
                .collect::<Vec<_>>()
        );
    }

    let d2022 = ms(2022, 1, 1, 0);
    let trade_cases = [
        (Market::Spot, "BTCUSDT", d2024, false),
        (Market::Spot, "BTCUSDT", d2025, false),
        (Market::UsdM, "BTCUSDT", d2022, false),
        (Market::UsdM, "BTCUSDT", d2024, true),
        (Market::CoinM, "BTCUSD_PERP", d2024, true),
    ];
    for (market, symbol, start, header) in trade_cases {
        let k = period_key(market, DataKind::AggTrades, symbol, None, false, start);
        let d = fetch_data(&c, &k).await;
        assert_eq!(has_header(&d.bytes), header, "{k}");
        let truth = emu.agg_trades(
            emu_market(market),
            symbol,
            k.range().start(),
            k.range().end(),
        );
        assert!(!truth.is_empty());
        let b = &d.batch;
        assert_eq!(
            i64s(b, "agg_trade_id"),
            truth.iter().map(|x| x.agg_id).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "price"),
            truth.iter().map(|x| x.price).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "quantity"),
            truth.iter().map(|x| x.qty).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            i64s(b, "first_trade_id"),
            truth.iter().map(|x| x.first_trade_id).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            i64s(b, "last_trade_id"),
            truth.iter().map(|x| x.last_trade_id).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            us_col(b, "transact_time"),
            truth.iter().map(|x| x.time * 1000).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            col::<BooleanArray>(b, "is_buyer_maker")
                .iter()
                .collect::<Vec<_>>(),
            truth
                .iter()
                .map(|x| Some(x.is_buyer_maker))
                .collect::<Vec<_>>()
        );
        let best_nulls = col::<BooleanArray>(b, "is_best_match").null_count();
        assert_eq!(
            best_nulls == 0,
            market == Market::Spot,
            "{k}: is_best_match only on spot"
        );

        let k = period_key(market, DataKind::Trades, symbol, None, false, start);
        let d = fetch_data(&c, &k).await;
        assert_eq!(has_header(&d.bytes), header, "{k}");
        let truth = emu.trades(
            emu_market(market),
            symbol,
            k.range().start(),
            k.range().end(),
        );
        let b = &d.batch;
        let qty_col = if market == Market::CoinM {
            "base_qty"
        } else {
            "quote_qty"
        };
        assert_eq!(
            i64s(b, "id"),
            truth.iter().map(|x| x.id).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "price"),
            truth.iter().map(|x| x.price).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, "qty"),
            truth.iter().map(|x| x.qty).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            f64s(b, qty_col),
            truth.iter().map(|x| x.quote_qty).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            us_col(b, "time"),
            truth.iter().map(|x| x.time * 1000).collect::<Vec<_>>(),
            "{k}"
        );
        assert_eq!(
            col::<BooleanArray>(b, "is_buyer_maker")
                .iter()
                .collect::<Vec<_>>(),
            truth
                .iter()
                .map(|x| Some(x.is_buyer_maker))
                .collect::<Vec<_>>()
        );
    }
    emu.shutdown().await;
}

// ---------------------------------------------------------------- planning and publication

fn zip_requests(emu: &Emulator) -> Vec<(String, u16)> {
    emu.request_log()
        .into_iter()
        .filter(|r| r.path.ends_with(".zip"))
        .map(|r| (r.path, r.status))
        .collect()
}

#[tokio::test]
async fn a_range_uses_monthly_files_for_whole_months_and_daily_files_for_the_rest() {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    let c = client(&emu);
    let sym = Symbol::new("BTCUSDT").unwrap();
    let (start, end) = (ms(2024, 1, 15, 0), ms(2024, 3, 10, 0));
    let got = c
        .fetch_range(
            &Dataset::klines(Market::Spot, sym.clone(), Interval::M1),
            range(start, end),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let base = "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-";
    let mut expected: Vec<String> = (15..=31)
        .map(|d| format!("{base}2024-01-{d:02}.zip"))
        .collect();
    expected.push("/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip".into());
    expected.extend((1..=9).map(|d| format!("{base}2024-03-{d:02}.zip")));
    let mut requested: Vec<String> = zip_requests(&emu)
        .into_iter()
        .map(|(p, s)| {
            assert_eq!(s, 200, "{p}");
            p
        })
        .collect();
    requested.sort();
    expected.sort();
    assert_eq!(
        requested, expected,
        "one request per planned file, nothing else"
    );
    assert_eq!(got.requests, 2 * 27, "each file and its CHECKSUM once");
    assert_eq!(emu.stats().total_requests, 2 * 27);

    let truth = emu.klines(
        dsm_emulator::Market::Spot,
        dsm_emulator::KlineKind::Klines,
        "BTCUSDT",
        "1m",
        start,
        end,
    );
    let opens: Vec<i64> = got
        .batches
        .iter()
        .flat_map(|b| ms_col(b, "open_time"))
        .collect();
    let closes: Vec<f64> = got.batches.iter().flat_map(|b| f64s(b, "close")).collect();
    same(
        &opens,
        &truth.iter().map(|x| x.open_time).collect::<Vec<_>>(),
        "open_time",
    );
    same(
        &closes,
        &truth.iter().map(|x| x.close).collect::<Vec<_>>(),
        "close",
    );
    assert!(got.not_published.is_empty());
    assert!(got.bytes > 0);

    // A range inside a day is cut to the range.
    let got = c
        .fetch_range(
            &Dataset::klines(Market::Spot, sym.clone(), Interval::M1),
            range(ms(2024, 1, 1, 10), ms(2024, 1, 1, 11)),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let opens: Vec<i64> = got
        .batches
        .iter()
        .flat_map(|b| ms_col(b, "open_time"))
        .collect();
    assert_eq!(opens.len(), 60);
    assert_eq!(opens[0], ms(2024, 1, 1, 10));
    emu.shutdown().await;
}

#[tokio::test]
async fn an_unpublished_monthly_file_falls_back_to_daily_files_inside_the_range() {
    // Monthly files appear 2 days after the month ends, daily files at 08:00 the next day: at
    // 2024-03-02 12:00 February's monthly file is not out, its daily files and March 1st are.
    let emu = emulator(t(2024, 3, 2, 12)).await;
    let c = client(&emu);
    let sym = Symbol::new("BTCUSDT").unwrap();
    let (start, end) = (ms(2024, 2, 1, 0), ms(2024, 3, 5, 0));
    let got = c
        .fetch_range(
            &Dataset::klines(Market::Spot, sym.clone(), Interval::H1),
            range(start, end),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let log = zip_requests(&emu);
    assert!(
        log.contains(&(
            "/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02.zip".into(),
            404
        )),
        "{log:?}"
    );
    let dailies_ok = log
        .iter()
        .filter(|(p, s)| p.contains("/daily/") && *s == 200)
        .count();
    assert_eq!(dailies_ok, 29 + 1, "February's 29 days and March 1st");
    let not_published: Vec<String> = got.not_published.iter().map(|k| k.file_name()).collect();
    assert_eq!(
        not_published,
        vec![
            "BTCUSDT-1h-2024-03-02.zip",
            "BTCUSDT-1h-2024-03-03.zip",
            "BTCUSDT-1h-2024-03-04.zip"
        ]
    );
    let truth = emu.klines(
        dsm_emulator::Market::Spot,
        dsm_emulator::KlineKind::Klines,
        "BTCUSDT",
        "1h",
        start,
        ms(2024, 3, 2, 0),
    );
    let opens: Vec<i64> = got
        .batches
        .iter()
        .flat_map(|b| ms_col(b, "open_time"))
        .collect();
    assert_eq!(opens, truth.iter().map(|x| x.open_time).collect::<Vec<_>>());
    assert_eq!(opens.len(), 30 * 24);

    // Funding has no daily files: an unpublished month is reported, not replaced.
    let got = c
        .fetch_range(
            &Dataset::new(Market::UsdM, DataKind::FundingRate, sym.clone(), None).unwrap(),
            range(start, ms(2024, 3, 1, 0)),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(got.batches.is_empty());
    assert_eq!(got.not_published.len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn fetch_files_streams_each_file_as_it_completes() {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    let c = client(&emu);
    let sym = Symbol::new("BTCUSDT").unwrap();
    let hourly = Dataset::klines(Market::Spot, sym.clone(), Interval::H1);
    let keys = dsm::vision::plan(&hourly, range(ms(2024, 1, 1, 0), ms(2024, 1, 11, 0))).unwrap();
    assert_eq!(keys.len(), 10);
    let mut seen = Vec::new();
    let mut stream = std::pin::pin!(c.fetch_files(keys.clone(), &CancellationToken::new()));
    while let Some(r) = stream.next().await {
        assert_eq!(r.requests, 2);
        match r.outcome.unwrap() {
            FileOutcome::Data(d) => assert_eq!(d.batch.num_rows(), 24),
            FileOutcome::NotPublished => panic!("{} is published", r.key),
        }
        seen.push(r.key);
    }
    seen.sort();
    let mut want = keys;
    want.sort();
    assert_eq!(seen, want);
    emu.shutdown().await;
}

// ---------------------------------------------------------------- faults

const SMALL: &str = "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-01.zip";
const MINUTES: &str = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip";

fn fault(s: &str) -> Fault {
    s.parse().unwrap()
}

fn count(emu: &Emulator, path: &str) -> u64 {
    emu.stats()
        .requests_by_path
        .get(&format!("/{path}"))
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn transient_faults_are_retried_and_then_reported() {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    let c = VisionClient::new(VisionConfig {
        pace: dsm::Pace {
            silence: Duration::from_millis(300),
            ..dsm::Pace::default()
        },
        ..config(&emu)
    })
    .unwrap();
    let cancel = CancellationToken::new();
    let clean = fetch_data(&c, &key(SMALL)).await;
    let clean_minutes = fetch_data(&c, &key(MINUTES)).await;

    // Limited faults: retried, then the right data.
    for (spec, path) in [
        ("hang@*.zip#1", SMALL),
        ("reset@*.zip#1", MINUTES),
        ("truncate@*.zip#1", MINUTES),
        ("status500@*.zip#2", SMALL),
        ("status403@*.zip#2", SMALL),
        ("status500@*.CHECKSUM#1", SMALL),
        ("slow=200000@*.zip", MINUTES),
    ] {
        emu.clear_faults();
        emu.add_fault(fault(spec));
        let before = count(&emu, path);
        let d = fetch_data(&c, &key(path)).await;
        let want = if path == SMALL {
            &clean
        } else {
            &clean_minutes
        };
        assert_eq!(d.batch, want.batch, "{spec}");
        assert_eq!(d.sha256, want.sha256, "{spec}");
        let retried = count(&emu, path) - before;
        assert!(retried >= 1, "{spec}");
    }

    // Permanent faults: bounded retries (1 + retries requests), then a typed transient error.
    for (spec, check) in [
        (
            "hang@*.zip",
            (|e: &VisionError| matches!(e, VisionError::Timeout { .. }))
                as fn(&VisionError) -> bool,
        ),
        ("reset@*.zip", |e| {
            matches!(
                e,
                VisionError::Network { .. } | VisionError::Truncated { .. }
            )
        }),
        ("truncate@*.zip", |e| {
            matches!(
                e,
                VisionError::Network { .. } | VisionError::Truncated { .. }
            )
        }),
        ("status500@*.zip", |e| {
            matches!(e, VisionError::Http { status: 500, .. })
        }),
        ("status403@*.zip", |e| {
            matches!(e, VisionError::Http { status: 403, .. })
        }),
    ] {
        emu.clear_faults();
        emu.add_fault(fault(spec));
        let path = if spec.starts_with("hang") {
            SMALL
        } else {
            MINUTES
        };
        let before = count(&emu, path);
        let err = c.fetch(&key(path), &cancel).await.expect_err(spec);
        assert!(check(&err), "{spec}: {err:?}");
        assert!(err.is_transient() && !err.is_integrity(), "{spec}");
        assert_eq!(dsm::Error::from(err).category(), ErrorCategory::Upstream);
        assert_eq!(count(&emu, path) - before, 3, "{spec}: 1 try + 2 retries");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn integrity_faults_never_return_bad_data() {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    let c = client(&emu);
    let cancel = CancellationToken::new();
    let clean = fetch_data(&c, &key(SMALL)).await;

    // Checksum mismatch once: downloaded again, then fine.
    emu.add_fault(fault("checksum-mismatch@*.zip#1"));
    let d = fetch_data(&c, &key(SMALL)).await;
    assert_eq!(d.batch, clean.batch);

    // Always: retried, then ChecksumMismatch naming file, expected and actual digests.
    emu.clear_faults();
    emu.add_fault(fault("checksum-mismatch@*.zip"));
    let before = count(&emu, SMALL);
    let err = c.fetch(&key(SMALL), &cancel).await.expect_err("mismatch");
    match &err {
        VisionError::ChecksumMismatch {
            url,
            expected,
            actual,
        } => {
            assert!(url.ends_with(SMALL));
            assert_eq!(actual, &clean.sha256);
            assert_ne!(expected, actual);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count(&emu, SMALL) - before,
        3,
        "a fresh download per attempt"
    );
    assert_eq!(dsm::Error::from(err).category(), ErrorCategory::Integrity);

    // A broken zip whose CHECKSUM matches: once → fine; always → CorruptArchive.
    emu.clear_faults();
    emu.add_fault(fault("corrupt-zip@*.zip#1"));
    assert_eq!(fetch_data(&c, &key(SMALL)).await.batch, clean.batch);
    emu.clear_faults();
    emu.add_fault(fault("corrupt-zip@*.zip"));
    let err = c.fetch(&key(SMALL), &cancel).await.expect_err("corrupt");
    assert!(matches!(err, VisionError::CorruptArchive { .. }), "{err:?}");
    assert!(err.is_integrity());

    // Missing CHECKSUM: rejected by default, accepted (flagged unverified) when configured.
    emu.clear_faults();
    emu.add_fault(fault("missing-checksum@*.zip"));
    let err = c.fetch(&key(SMALL), &cancel).await.expect_err("missing");
    assert!(
        matches!(err, VisionError::MissingChecksum { .. }),
        "{err:?}"
    );
    assert_eq!(dsm::Error::from(err).category(), ErrorCategory::Integrity);
    let lenient = VisionClient::new(VisionConfig {
        accept_missing_checksum: true,
        ..config(&emu)
    })
    .unwrap();
    let d = fetch_data(&lenient, &key(SMALL)).await;
    assert!(d.unverified);
    assert_eq!(d.batch, clean.batch);

    // A file that is simply not there is "not published", not an error.
    emu.clear_faults();
    let missing = key("data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2030-01-01.zip");
    assert!(matches!(
        c.fetch(&missing, &cancel).await,
        Ok(FileOutcome::NotPublished)
    ));
    emu.shutdown().await;
}

#[test]
fn invalid_rows_fail_the_file_with_their_line_number() {
    fn zip_of(name: &str, csv: &str) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, csv.as_bytes()).unwrap();
        w.finish().unwrap().into_inner()
    }
    let k = key(SMALL);
    let row = |h: i64, close: &str| {
        let open = ms(2024, 1, 1, 0) + h * 3_600_000;
        format!(
            "{open},10.0,12.0,9.0,{close},1.0,{},10.0,3,0.5,5.0,0\n",
            open + 3_599_999
        )
    };
    let good = format!("{}{}", row(0, "11.0"), row(1, "11.0"));
    assert_eq!(
        parse_zip(&zip_of("BTCUSDT-1h-2024-01-01.csv", &good), &k)
            .unwrap()
            .num_rows(),
        2
    );
    // Exact duplicates are dropped; junk entries are ignored.
    let dup = format!("{}{}{}", row(0, "11.0"), row(0, "11.0"), row(1, "11.0"));
    assert_eq!(
        parse_zip(&zip_of("BTCUSDT-1h-2024-01-01.csv", &dup), &k)
            .unwrap()
            .num_rows(),
        2
    );
    for (csv, line, what) in [
        (
            format!("{}{}", row(0, "11.0"), row(1, "x")),
            2,
            "not a number",
        ),
        (format!("{}1,2,3\n", row(0, "11.0")), 2, "fields"),
        (
            format!("{}{}", row(0, "11.0"), row(24, "11.0")),
            2,
            "outside",
        ),
        (format!("{}{}", row(0, "11.0"), row(1, "13.0")), 2, "OHLC"),
        (
            format!("{}{}", row(1, "11.0"), row(0, "11.0")),
            2,
            "not after",
        ),
    ] {
        let err = parse_zip(&zip_of("BTCUSDT-1h-2024-01-01.csv", &csv), &k).unwrap_err();
        match &err {
            VisionError::InvalidData { row, reason, .. } => {
                assert_eq!(*row, line, "{what}: {err}");
                assert!(reason.contains(what), "{what}: {err}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(err.is_integrity());
    }
    let err = parse_zip(b"not a zip", &k).unwrap_err();
    assert!(matches!(err, VisionError::CorruptArchive { .. }));
}

#[test]
fn junk_zip_entries_are_ignored() {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default();
    w.start_file("__MACOSX/._BTCUSDT-1h-2024-01-01.csv", o)
        .unwrap();
    std::io::Write::write_all(&mut w, b"\x00\x05junk").unwrap();
    w.start_file("BTCUSDT-1h-2024-01-01.csv", o).unwrap();
    let open = ms(2024, 1, 1, 0);
    std::io::Write::write_all(
        &mut w,
        format!("{open},1,1,1,1,0,{},0,0,0,0,0", open + 3_599_999).as_bytes(),
    )
    .unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let b = parse_zip(&bytes, &key(SMALL)).unwrap();
    assert_eq!(b.num_rows(), 1, "last line without a newline is read too");
}

// ---------------------------------------------------------------- lifecycle

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

async fn cancel_promptly(spec: &str, path: &str) {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    let c = VisionClient::new(VisionConfig {
        pace: dsm::Pace {
            silence: Duration::from_secs(30),
            ..dsm::Pace::default()
        },
        ..config(&emu)
    })
    .unwrap();
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    emu.add_fault(fault(spec));
    let cancel = CancellationToken::new();
    let k = key(path);
    let (res, cancelled_at) = tokio::join!(c.fetch(&k, &cancel), async {
        assert!(wait_for(|| emu.stats().open_connections >= 1).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let at = std::time::Instant::now();
        cancel.cancel();
        at
    });
    let took = cancelled_at.elapsed();
    assert!(
        matches!(res, Err(VisionError::Cancelled)),
        "{spec}: {res:?}"
    );
    assert!(
        took < Duration::from_millis(100),
        "{spec}: returned {took:?} after cancel"
    );
    assert_eq!(
        dsm::Error::from(res.unwrap_err()).category(),
        ErrorCategory::Cancelled
    );
    assert!(
        wait_for(|| emu.stats().open_connections == 0).await,
        "{spec}: {:?}",
        emu.stats()
    );

    // Dropping the future instead of cancelling: same guarantees.
    let dropped = tokio::time::timeout(
        Duration::from_millis(150),
        c.fetch(&k, &CancellationToken::new()),
    )
    .await;
    assert!(dropped.is_err());
    assert!(
        wait_for(|| emu.stats().open_connections == 0).await,
        "{spec}: {:?}",
        emu.stats()
    );

    // What remains belongs to the client's connection pool (its idle-connection reaper, once a
    // connection was pooled); with the client gone, the runtime is back to its baseline.
    drop(c);
    let metrics = tokio::runtime::Handle::current().metrics();
    assert!(
        wait_for(|| metrics.num_alive_tasks() == baseline).await,
        "{spec}: {} tasks alive, baseline {baseline}",
        metrics.num_alive_tasks()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_hung_download_returns_promptly_and_leaves_nothing_behind() {
    cancel_promptly("hang@*", SMALL).await;
}

#[tokio::test]
async fn cancelling_a_slow_body_returns_promptly_and_leaves_nothing_behind() {
    cancel_promptly("slow=2000@*.zip", MINUTES).await;
}

#[tokio::test]
async fn a_deadline_bounds_the_whole_operation() {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    emu.add_fault(fault("hang@*"));
    let c = VisionClient::new(VisionConfig {
        deadline: Some(Duration::from_millis(150)),
        pace: dsm::Pace {
            silence: Duration::from_secs(30),
            ..dsm::Pace::default()
        },
        ..config(&emu)
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    let err = c
        .fetch(&key(SMALL), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, VisionError::DeadlineExceeded(_)), "{err:?}");
    assert!(t0.elapsed() < Duration::from_millis(400));
    emu.shutdown().await;
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn listing_follows_every_page() {
    let emu = emulator(t(2024, 6, 1, 0)).await;
    let c = client(&emu);
    let cancel = CancellationToken::new();
    let top = c.list("data/", &cancel).await.unwrap();
    assert!(top.prefixes.contains(&"data/spot/".to_owned()), "{top:?}");
    // BTCUSDT 1d daily files since 2017-08-17: more than 1000 keys (zip + CHECKSUM), several pages.
    let l = c
        .list("data/spot/daily/klines/BTCUSDT/1d/", &cancel)
        .await
        .unwrap();
    assert!(l.pages >= 2, "{} pages", l.pages);
    let zips: Vec<FileKey> = l
        .keys
        .iter()
        .filter_map(|k| FileKey::from_path(k))
        .collect();
    // At 2024-06-01 00:00 the last published daily file is May 30th's (May 31st's comes at 08:00).
    let days = (ms(2024, 5, 30, 0) - ms(2017, 8, 17, 0)) / 86_400_000 + 1;
    assert_eq!(zips.len() as i64, days, "every published day once");
    assert!(l.keys.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    emu.shutdown().await;
}

/// The real files are whole: through the manager, their days and month are answered from Vision
/// alone, with no hole to confirm on REST and no file reported short.
#[tokio::test]
async fn real_files_have_no_holes_for_rest_to_confirm() {
    let Some(_) = samples() else { return };
    let emu = emulator(t(2026, 6, 10, 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dsm::DataSourceManager::new(dsm::ManagerConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        vision_url: emu.base_url(),
        rest_urls: dsm::manager::RestUrls::all(&emu.base_url()),
        ..dsm::ManagerConfig::default()
    })
    .unwrap();
    let requests = [
        dsm::Request::klines(
            Market::Spot,
            Symbol::new("BTCUSDT").unwrap(),
            Interval::M1,
            range(ms(2020, 1, 1, 0), ms(2020, 1, 4, 0)),
        ),
        dsm::Request::new(
            Market::UsdM,
            DataKind::FundingRate,
            vec![Symbol::new("BTCUSDT").unwrap()],
            None,
            range(ms(2026, 4, 1, 0), ms(2026, 5, 1, 0)),
        ),
    ];
    for req in requests {
        emu.clear_log();
        let resp = m.get(req.clone()).await.unwrap();
        let r = &resp.results[0];
        assert!(r.num_rows() > 0, "{req:?}");
        assert!(r.summary.short_files.is_empty(), "{req:?}");
        assert!(r.gaps.is_empty(), "{req:?}: {:?}", r.gaps);
        let data: Vec<String> = emu
            .request_log()
            .into_iter()
            // The clock and the weight limit are not data.
            .filter(|l| {
                !l.path.starts_with("/data/")
                    && !l.path.ends_with("/time")
                    && !l.path.ends_with("/exchangeInfo")
            })
            .map(|l| format!("{}?{}", l.path, l.query))
            .collect();
        assert!(data.is_empty(), "{req:?}: REST asked {data:?}");
    }
}
