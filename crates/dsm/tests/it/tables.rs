//! The archive's tables (metrics, book depth and ticker, liquidations, BVOL index, EOH summaries)
//! end to end against the emulator: every row equals the emulator's truth (built apart from dsm's
//! parser), the archive's quirks are repaired, and discontinued series end without an error.

use std::io::Read;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};
use dsm::{DataKind, Error, ErrorCategory, Market, Request, SourcePolicy, TimeRange};
use dsm_emulator::{TableKind, TableRow};

use crate::manager::{Env, concat, one, setup, sources};
use crate::support::{emu_market, range, sym, t};

/// One cell, compared as a number when it is one (the file prints `-5` or `-5.00`; both are -5).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Num(f64),
    Text(String),
}

fn cell_of_text(s: &str) -> Cell {
    if s.is_empty() {
        Cell::Null
    } else if let Ok(v) = s.parse::<f64>() {
        Cell::Num(v)
    } else {
        Cell::Text(s.to_owned())
    }
}

/// The emulator's rows as (time, cells), sorted.
fn truth_rows(rows: &[TableRow]) -> Vec<(i64, Vec<Cell>)> {
    let mut v: Vec<(i64, Vec<Cell>)> = rows
        .iter()
        .map(|r| (r.time, r.fields.iter().map(|f| cell_of_text(f)).collect()))
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

/// dsm's rows as (time, cells of every other column but `source`), sorted.
fn answer_rows(b: &RecordBatch, time_column: &str) -> Vec<(i64, Vec<Cell>)> {
    let schema = b.schema();
    let time = b
        .column_by_name(time_column)
        .expect("time column")
        .as_primitive::<TimestampMillisecondType>();
    let mut v = Vec::new();
    for i in 0..b.num_rows() {
        let mut cells = Vec::new();
        for (f, c) in schema.fields().iter().zip(b.columns()) {
            if f.name() == time_column || f.name() == "source" {
                continue;
            }
            cells.push(if c.is_null(i) {
                Cell::Null
            } else {
                match c.data_type() {
                    DataType::Float64 => Cell::Num(c.as_primitive::<Float64Type>().value(i)),
                    DataType::Int64 => Cell::Num(c.as_primitive::<Int64Type>().value(i) as f64),
                    DataType::Timestamp(..) => {
                        Cell::Num(c.as_primitive::<TimestampMillisecondType>().value(i) as f64)
                    }
                    DataType::Utf8 => cell_of_text(c.as_string::<i32>().value(i)),
                    other => panic!("unexpected column type {other}"),
                }
            });
        }
        v.push((time.value(i), cells));
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

/// The values of time column `name` (ms).
fn times_of(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no {name} column"))
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

struct Case {
    market: Market,
    kind: DataKind,
    table: TableKind,
    symbol: &'static str,
}

const CASES: [Case; 6] = [
    Case {
        market: Market::UsdM,
        kind: DataKind::Metrics,
        table: TableKind::Metrics,
        symbol: "BTCUSDT",
    },
    Case {
        market: Market::CoinM,
        kind: DataKind::BookDepth,
        table: TableKind::BookDepth,
        symbol: "BTCUSD_PERP",
    },
    Case {
        market: Market::UsdM,
        kind: DataKind::BookTicker,
        table: TableKind::BookTicker,
        symbol: "ETHUSDT",
    },
    Case {
        market: Market::CoinM,
        kind: DataKind::Liquidations,
        table: TableKind::Liquidations,
        symbol: "BTCUSD_PERP",
    },
    Case {
        market: Market::Option,
        kind: DataKind::BvolIndex,
        table: TableKind::BvolIndex,
        symbol: "BTCBVOLUSDT",
    },
    Case {
        market: Market::Option,
        kind: DataKind::EohSummary,
        table: TableKind::EohSummary,
        symbol: "ETHUSDT",
    },
];

fn request(c: &Case, r: TimeRange) -> Request {
    Request::new(c.market, c.kind, vec![sym(c.symbol)], None, r)
}

fn truth(env: &Env, c: &Case, r: TimeRange) -> Vec<(i64, Vec<Cell>)> {
    truth_rows(
        &env.emu
            .table(emu_market(c.market), c.table, c.symbol, r.start(), r.end()),
    )
}

/// The text of a file as the emulator serves it.
async fn file_text(env: &Env, path: &str) -> String {
    let url = format!("{}/{path}", env.emu.base_url());
    let bytes = reqwest::get(&url)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a zip");
    let mut text = String::new();
    zip.by_index(0)
        .expect("an entry")
        .read_to_string(&mut text)
        .expect("text");
    text
}

#[tokio::test]
async fn every_archive_table_round_trips_across_a_month_boundary() {
    let env = setup("2024-03-10T12:00:00Z").await;
    // Noon to noon: both ends cut a file's day, so [start, end) is applied to the rows.
    let r = range(t("2024-01-31T12:00:00Z"), t("2024-02-01T12:00:00Z"));
    for c in &CASES {
        env.emu.clear_log();
        let resp = env.m.get(request(c, r)).await.expect("get");
        let res = one(&resp);
        let b = concat(res);
        let time_column = dsm::schema::time_column(c.kind);
        let want = truth(&env, c, r);
        assert!(want.len() > 10, "{}: a thin truth", c.kind);
        assert_eq!(
            answer_rows(&b, time_column),
            want,
            "{} {}",
            c.market,
            c.kind
        );
        // Sorted by time; from the archive's two daily files, and nothing else.
        let times = times_of(&b, time_column);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{}", c.kind);
        assert!(sources(&b).iter().all(|s| s == "vision"));
        let zips = env.zips();
        assert_eq!(zips.len(), 2, "{}: {zips:?}", c.kind);
        assert!(zips.iter().all(|z| z.contains("/daily/")), "{zips:?}");
        assert!(res.missing.is_empty() && res.gaps.is_empty());

        // Again from the cache alone: the same rows, no download.
        env.emu.clear_log();
        let mut offline = request(c, r);
        offline.source = Some(SourcePolicy::Cache);
        let again = env.m.get(offline).await.expect("cached");
        assert_eq!(answer_rows(&concat(one(&again)), time_column), want);
        assert!(env.zips().is_empty());
    }
    // `cache verify` reads the new partitions back and finds them sound.
    let store = dsm::cache::CacheStore::open(env.dir.path()).expect("cache");
    let report = store.verify().await.expect("verify");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.partitions, 2 * CASES.len(), "{report:?}");
}

#[tokio::test]
async fn unordered_and_repeated_rows_come_out_sorted_and_once() {
    let env = setup("2024-03-10T12:00:00Z").await;
    let day = range(t("2024-02-05"), t("2024-02-06"));
    // The files themselves have the quirks: metrics out of order with repeats, every
    // liquidation twice, the book ticker interleaved.
    for (path, quirk) in [
        (
            "data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-02-05.zip",
            "metrics",
        ),
        (
            "data/futures/cm/daily/liquidationSnapshot/BTCUSD_PERP/BTCUSD_PERP-liquidationSnapshot-2024-02-05.zip",
            "liquidations",
        ),
        (
            "data/futures/um/daily/bookTicker/ETHUSDT/ETHUSDT-bookTicker-2024-02-05.zip",
            "book ticker",
        ),
    ] {
        let text = file_text(&env, path).await;
        let lines: Vec<&str> = text.lines().skip(1).collect();
        let mut unique = lines.clone();
        unique.sort_unstable();
        unique.dedup();
        let first_fields: Vec<&str> = lines
            .iter()
            .map(|l| l.split(',').next().unwrap_or(""))
            .collect();
        let ordered = first_fields.windows(2).all(|w| w[0] <= w[1]);
        match quirk {
            "metrics" => {
                assert!(!ordered, "metrics rows should be out of order");
                assert!(unique.len() < lines.len(), "metrics should repeat rows");
                assert!(
                    lines[0].starts_with("2024-02-05 "),
                    "text times: {}",
                    lines[0]
                );
            }
            "liquidations" => assert_eq!(lines.len(), 2 * unique.len()),
            _ => {
                let tx: Vec<i64> = lines
                    .iter()
                    .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
                    .collect();
                assert!(tx.windows(2).any(|w| w[1] < w[0]), "interleaved");
            }
        }
    }
    for c in [&CASES[0], &CASES[2], &CASES[3]] {
        let resp = env.m.get(request(c, day)).await.expect("get");
        let b = concat(one(&resp));
        let want = truth(&env, c, day);
        assert_eq!(b.num_rows(), want.len(), "{}", c.kind);
        assert_eq!(answer_rows(&b, dsm::schema::time_column(c.kind)), want);
    }
    // Metrics: 288 five-minute rows, each instant once, read from text as UTC.
    let resp = env.m.get(request(&CASES[0], day)).await.expect("metrics");
    let b = concat(one(&resp));
    let times = times_of(&b, "create_time");
    assert_eq!(times.len(), 288);
    assert_eq!(times[0], t("2024-02-05T00:00:00Z"));
    assert!(times.windows(2).all(|w| w[1] - w[0] == 300_000));
}

#[tokio::test]
async fn book_depth_reads_both_band_formats() {
    // Bands print `-5` in 2025 and `-5.00` from 2026: one answer across the change.
    let env = setup("2026-01-10T00:00:00Z").await;
    let r = range(t("2025-12-31T23:00:00Z"), t("2026-01-01T01:00:00Z"));
    let old = file_text(
        &env,
        "data/futures/cm/daily/bookDepth/BTCUSD_PERP/BTCUSD_PERP-bookDepth-2025-12-31.zip",
    )
    .await;
    let new = file_text(
        &env,
        "data/futures/cm/daily/bookDepth/BTCUSD_PERP/BTCUSD_PERP-bookDepth-2026-01-01.zip",
    )
    .await;
    assert!(old.contains(",-5,") && !old.contains(",-5.00,"));
    assert!(new.contains(",-5.00,"));
    let c = &CASES[1];
    let resp = env.m.get(request(c, r)).await.expect("get");
    let b = concat(one(&resp));
    assert_eq!(answer_rows(&b, "timestamp"), truth(&env, c, r));
    let bands: std::collections::BTreeSet<i64> = b
        .column_by_name("percentage")
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .iter()
        .map(|p| (p * 100.0).round() as i64)
        .collect();
    assert_eq!(bands.len(), 12, "{bands:?}");
}

#[tokio::test]
async fn a_discontinued_series_ends_without_an_error() {
    let env = setup("2024-06-10T00:00:00Z").await;
    let c = &CASES[2];
    // The book ticker's last daily file is 2024-03-30: the days after it are outside the series,
    // not missing, and the answer is complete.
    let r = range(t("2024-03-29"), t("2024-04-03"));
    let resp = env.m.get(request(c, r)).await.expect("complete answer");
    let res = one(&resp);
    assert_eq!(
        answer_rows(&concat(res), "transaction_time"),
        truth(&env, c, r)
    );
    assert!(res.missing.is_empty(), "{:?}", res.missing);
    assert_eq!(
        res.outside_life,
        vec![range(t("2024-03-31"), t("2024-04-03"))]
    );
    // Only the two days that exist were asked for.
    assert_eq!(env.zips().len(), 2, "{:?}", env.zips());

    // Wholly after the end: a clear error naming the end, before any download.
    env.emu.clear_log();
    let after = range(t("2024-05-01"), t("2024-05-02"));
    let err = env
        .m
        .get(request(c, after))
        .await
        .expect_err("after the end");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(err.category(), ErrorCategory::Unavailable);
    let msg = err.to_string();
    assert!(msg.contains("2024-03-31"), "{msg}");
    assert!(env.emu.request_log().is_empty());

    // Liquidation snapshots start 2023-06-25: earlier days are outside the series too.
    let liq = &CASES[3];
    let r = range(t("2023-06-24"), t("2023-06-26"));
    let resp = env.m.get(request(liq, r)).await.expect("liquidations");
    let res = one(&resp);
    assert_eq!(
        res.outside_life,
        vec![range(t("2023-06-24"), t("2023-06-25"))]
    );
    assert_eq!(answer_rows(&concat(res), "time"), truth(&env, liq, r));
}

#[tokio::test]
async fn tables_are_checked_against_their_markets_before_any_request() {
    let env = setup("2024-03-10T12:00:00Z").await;
    let r = range(t("2024-02-01"), t("2024-02-02"));
    for (market, kind, symbol) in [
        (Market::Spot, DataKind::Metrics, "BTCUSDT"),
        (Market::UsdM, DataKind::Liquidations, "BTCUSDT"),
        (Market::UsdM, DataKind::BvolIndex, "BTCBVOLUSDT"),
        (Market::Option, DataKind::Klines, "BTCUSDT"),
    ] {
        let req = Request::new(market, kind, vec![sym(symbol)], None, r);
        let err = env.m.get(req).await.expect_err("not offered");
        assert_eq!(err.category(), ErrorCategory::Input, "{err}");
        if kind.is_table() {
            let msg = err.to_string();
            let offered = Market::ALL
                .into_iter()
                .filter(|m| m.supports_kind(kind))
                .map(Market::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            assert!(msg.contains(&offered), "{msg}");
        }
    }
    assert!(env.emu.request_log().is_empty());
    // A kind REST does not serve is never asked of it: the recent days the archive has not
    // published are missing (an incomplete answer), not fetched elsewhere.
    let recent = range(t("2024-03-09"), t("2024-03-10T06:00:00Z"));
    let err = env
        .m
        .get(request(&CASES[1], recent))
        .await
        .expect_err("not published yet");
    assert_eq!(err.category(), ErrorCategory::Incomplete, "{err}");
    assert!(
        env.emu
            .request_log()
            .iter()
            .all(|l| l.path.starts_with("/data/")),
        "{:?}",
        env.emu.request_log()
    );
}

#[tokio::test]
async fn recent_metrics_come_from_the_statistics_endpoints() {
    let env = setup("2024-03-10T12:00:00Z").await;
    let c = &CASES[0];
    // The days the archive has published come from it; today's hours from REST's 5-minute
    // statistics (five endpoints joined on their time).
    let r = range(t("2024-03-08T18:00:00Z"), t("2024-03-10T06:00:00Z"));
    let resp = env.m.get(request(c, r)).await.expect("metrics");
    let res = one(&resp);
    let b = concat(res);
    assert_eq!(answer_rows(&b, "create_time"), truth(&env, c, r));
    let times = times_of(&b, "create_time");
    let srcs = sources(&b);
    assert!(srcs.iter().any(|s| s == "rest") && srcs.iter().any(|s| s == "vision"));
    for (time, src) in times.iter().zip(&srcs) {
        if *time >= t("2024-03-10") {
            assert_eq!(src, "rest", "{time}");
        }
    }
    let log = env.emu.request_log();
    let stats: Vec<&str> = log
        .iter()
        .map(|l| l.path.as_str())
        .filter(|p| p.starts_with("/futures/data/"))
        .collect();
    assert_eq!(stats.len() % 5, 0, "{stats:?}");
    assert!(stats.contains(&"/futures/data/openInterestHist"));
    assert!(stats.contains(&"/futures/data/takerlongshortRatio"));
    assert_eq!(
        res.summary.rest.rows as usize,
        srcs.iter().filter(|s| *s == "rest").count()
    );
    // `--json` says which source served what: the archive's days, then REST's hours.
    let report = dsm::report::FetchReport::of(c.kind, &resp.results, &resp.summary);
    let json = serde_json::to_value(&report).unwrap();
    let served = json["symbols"][0]["served"].as_array().unwrap().clone();
    let sources_of: Vec<&str> = served
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources_of.first(), Some(&"vision"), "{served:?}");
    assert_eq!(sources_of.last(), Some(&"rest"), "{served:?}");
    let rows: u64 = served.iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows as usize, b.num_rows());
    assert_eq!(served[0]["first"], "2024-03-08T18:00:00.000Z");

    // REST keeps 30 days: older days the archive lacks are missing, never asked of REST.
    env.emu.clear_log();
    let old = range(t("2024-01-10"), t("2024-01-11"));
    let mut rest_only = request(c, old);
    rest_only.source = Some(SourcePolicy::Rest);
    let err = env.m.get(rest_only).await.expect_err("too old for REST");
    assert_eq!(err.category(), ErrorCategory::Incomplete, "{err}");
    assert!(
        env.emu
            .request_log()
            .iter()
            .all(|l| !l.path.starts_with("/futures/data/")),
        "{:?}",
        env.emu.request_log()
    );
    // COIN-M metrics are the archive's only.
    let cm = Request::new(
        Market::CoinM,
        DataKind::Metrics,
        vec![sym("BTCUSD_PERP")],
        None,
        range(t("2024-03-10"), t("2024-03-10T06:00:00Z")),
    );
    let err = env.m.get(cm).await.expect_err("not on REST");
    assert_eq!(err.category(), ErrorCategory::Incomplete, "{err}");
}

#[tokio::test]
async fn a_table_file_that_fails_its_checksum_never_reaches_the_answer_or_the_cache() {
    let env = setup("2024-03-10T12:00:00Z").await;
    let c = &CASES[4];
    let bad = "/data/option/daily/BVOLIndex/BTCBVOLUSDT/BTCBVOLUSDT-BVOLIndex-2024-02-05.zip";
    env.emu
        .add_fault(format!("checksum-mismatch@{bad}").parse().expect("a fault"));
    let r = range(t("2024-02-04"), t("2024-02-06"));
    let err = env.m.get(request(c, r)).await.expect_err("integrity");
    assert_eq!(err.category(), ErrorCategory::Integrity, "{err}");
    assert!(
        err.to_string()
            .contains("BTCBVOLUSDT-BVOLIndex-2024-02-05.zip"),
        "{err}"
    );
    // The good day was cached, the bad one was not: offline, only the good day is there.
    let mut offline = request(c, r);
    offline.source = Some(SourcePolicy::Cache);
    offline.allow_partial = true;
    let resp = env.m.get(offline).await.expect("partial");
    let res = one(&resp);
    assert_eq!(res.missing, vec![range(t("2024-02-05"), t("2024-02-06"))]);
    assert_eq!(
        answer_rows(&concat(res), "calc_time"),
        truth(&env, c, range(t("2024-02-04"), t("2024-02-05")))
    );
}
