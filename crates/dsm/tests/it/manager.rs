//! End-to-end tests of the DataSourceManager against the in-process emulator.
//!
//! Expected values always come from the emulator's truth accessors (`Emulator::klines`, `funding`,
//! `trades`, `agg_trades`), built independently of dsm's parsers, and request counts from the
//! emulator's request log.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::support::{MIN, range, sym, t};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use chrono::{DateTime, Datelike, TimeZone, Utc, Weekday};
use dsm::manager::SymbolResult;
use dsm::{
    DataKind, DataSourceManager, Error, ErrorCategory, Interval, ManagerConfig, Market, Request,
    SourcePolicy, TimeRange,
};
use dsm_emulator::{Emulator, EmulatorConfig, Fault, KlineKind, KlineRow};

fn dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("valid instant")
}

fn fault(s: &str) -> Fault {
    s.parse().expect("valid fault")
}

pub(crate) struct Env {
    pub(crate) emu: Emulator,
    pub(crate) m: DataSourceManager,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn setup_with(
    now: &str,
    emu_cfg: impl FnOnce(EmulatorConfig) -> EmulatorConfig,
    mgr_cfg: impl FnOnce(ManagerConfig) -> ManagerConfig,
) -> Env {
    let emu = Emulator::start(emu_cfg(EmulatorConfig::default().with_now(dt(t(now)))))
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = mgr_cfg(ManagerConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        vision_url: emu.base_url(),
        rest_urls: dsm::manager::RestUrls::all(&emu.base_url()),
        retries: 2,
        connect_timeout: Duration::from_secs(2),
        pace: dsm::Pace {
            silence: Duration::from_secs(5),
            ..dsm::Pace::default()
        },
        // A set budget: no exchangeInfo request to learn the server's, so the tests count only
        // the data requests (learning is tested on its own).
        weight_limit: Some(2000),
        ..ManagerConfig::default()
    });
    let m = DataSourceManager::new(config).expect("manager");
    Env { emu, m, dir }
}

pub(crate) async fn setup(now: &str) -> Env {
    setup_with(now, |c| c, |c| c).await
}

impl Env {
    fn paths(&self) -> Vec<String> {
        self.emu.request_log().into_iter().map(|l| l.path).collect()
    }
    /// Zip downloads (not `.CHECKSUM`) in the log.
    pub(crate) fn zips(&self) -> Vec<String> {
        self.paths()
            .into_iter()
            .filter(|p| p.ends_with(".zip"))
            .collect()
    }
    fn vision_requests(&self) -> Vec<String> {
        self.paths()
            .into_iter()
            .filter(|p| p.starts_with("/data/"))
            .collect()
    }
    fn rest_requests(&self) -> Vec<String> {
        self.paths()
            .into_iter()
            .filter(|p| !p.starts_with("/data/"))
            .collect()
    }
    /// Query strings of REST data (not `/time`) requests.
    fn rest_data_queries(&self) -> Vec<String> {
        self.emu
            .request_log()
            .into_iter()
            .filter(|l| !l.path.starts_with("/data/") && !l.path.ends_with("/time"))
            .map(|l| l.query)
            .collect()
    }
    fn truth(
        &self,
        market: dsm_emulator::Market,
        s: &str,
        iv: &str,
        r: TimeRange,
    ) -> Vec<KlineRow> {
        self.emu
            .klines(market, KlineKind::Klines, s, iv, r.start(), r.end())
    }
}

/// An integer query parameter.
fn param(query: &str, name: &str) -> i64 {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {query}"))
        .parse()
        .expect("integer parameter")
}

pub(crate) fn one(resp: &dsm::Response) -> &SymbolResult {
    assert_eq!(resp.results.len(), 1);
    &resp.results[0]
}

pub(crate) fn concat(r: &SymbolResult) -> RecordBatch {
    arrow::compute::concat_batches(&r.schema, &r.batches).expect("concat")
}

fn i64_col(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no {name}"));
    let c = arrow::compute::cast(c, &DataType::Int64).expect("cast to i64");
    c.as_primitive::<Int64Type>().values().to_vec()
}

fn f64_col(b: &RecordBatch, name: &str) -> Vec<f64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no {name}"));
    c.as_primitive::<Float64Type>().values().to_vec()
}

fn bool_col(b: &RecordBatch, name: &str) -> Vec<bool> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no {name}"));
    let c = c.as_boolean();
    (0..c.len()).map(|i| c.value(i)).collect()
}

pub(crate) fn sources(b: &RecordBatch) -> Vec<String> {
    let c = b.column_by_name("source").expect("source column");
    let c = arrow::compute::cast(c, &DataType::Utf8).expect("cast source");
    let c = c.as_string::<i32>();
    (0..c.len()).map(|i| c.value(i).to_owned()).collect()
}

/// The result's candles as the emulator's rows.
fn klines_of(r: &SymbolResult) -> Vec<KlineRow> {
    let b = concat(r);
    let open = i64_col(&b, "open_time");
    let (o, h, l, c, v) = (
        f64_col(&b, "open"),
        f64_col(&b, "high"),
        f64_col(&b, "low"),
        f64_col(&b, "close"),
        f64_col(&b, "volume"),
    );
    let close_time = i64_col(&b, "close_time");
    let (qv, n, tb, tq) = (
        f64_col(&b, "quote_volume"),
        i64_col(&b, "count"),
        f64_col(&b, "taker_buy_volume"),
        f64_col(&b, "taker_buy_quote_volume"),
    );
    (0..b.num_rows())
        .map(|i| KlineRow {
            open_time: open[i],
            open: o[i],
            high: h[i],
            low: l[i],
            close: c[i],
            volume: v[i],
            close_time: close_time[i],
            quote_volume: qv[i],
            count: n[i],
            taker_buy_volume: tb[i],
            taker_buy_quote_volume: tq[i],
        })
        .collect()
}

/// Every field of every row equals the truth, in order.
fn assert_klines(r: &SymbolResult, truth: &[KlineRow]) {
    let got = klines_of(r);
    assert!(!truth.is_empty(), "empty truth: a test bug");
    assert_eq!(got.len(), truth.len(), "row count");
    for (i, (g, w)) in got.iter().zip(truth).enumerate() {
        assert_eq!(g, w, "row {i}");
    }
    assert_eq!(r.first_time, truth.first().map(|k| k.open_time));
    assert_eq!(r.last_time, truth.last().map(|k| k.open_time));
}

fn kreq(market: Market, s: &str, interval: Interval, r: TimeRange) -> Request {
    Request::klines(market, sym(s), interval, r)
}

use dsm_emulator::Market as EM;

// ---------------------------------------------------------------------------------------------
// Planning, caching and truth
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn smoke_year_of_hours_then_cache() {
    let env = setup("2024-06-15T12:30:00Z").await;
    let r = range(t("2023-01-01"), t("2024-01-01"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::H1, r);
    let resp = env.m.get(req.clone()).await.expect("get");
    assert_eq!(one(&resp).num_rows(), 365 * 24, "{:?}", resp.summary);
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1h", r));
    // A cold old year: 12 monthly files, not 365 dailies.
    let zips = env.zips();
    assert_eq!(zips.len(), 12, "{zips:?}");
    assert!(
        zips.iter()
            .all(|p| p.contains("/monthly/klines/BTCUSDT/1h/"))
    );
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "vision"));
    assert_eq!(resp.summary.vision.rows, 365 * 24);
    assert_eq!(resp.summary.cache_rows, 0);

    env.emu.clear_log();
    let resp2 = env.m.get(req).await.expect("get again");
    assert_klines(one(&resp2), &env.truth(EM::Spot, "BTCUSDT", "1h", r));
    assert!(env.paths().is_empty(), "second request hit the network");
    assert_eq!(resp2.summary.cache_rows, 365 * 24);
    assert_eq!(resp2.summary.vision, Default::default());
    assert_eq!(resp2.summary.rest, Default::default());
    // Cached rows keep the source they were fetched from.
    assert!(sources(&concat(one(&resp2))).iter().all(|s| s == "vision"));
}

#[tokio::test]
async fn cache_monthly_daily_and_rest_mix_into_the_truth() {
    // Default delay 36 h, so Mar 1 and Mar 2 are probed: Mar 1 is published (its CHECKSUM is
    // there), Mar 2 not yet (the emulator publishes it at 08:00): Vision before Mar 2, REST after.
    let env = setup("2024-03-03T06:00:00Z").await;
    // 1. Prime the cache with Jan 31 (its daily file is cached whole).
    let prime = range(t("2024-01-31T10:00:00Z"), t("2024-01-31T14:00:00Z"));
    env.m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, prime))
        .await
        .expect("prime");
    env.emu.clear_log();

    // 2. Off-grid start and end, across two month boundaries.
    let r = range(
        t("2024-01-30T23:58:30Z"),
        t("2024-03-02T06:00:30Z"), // the 06:00 candle opens before the end: included
    );
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect("get");
    let res = one(&resp);
    let truth = env.truth(EM::Spot, "BTCUSDT", "1m", r);
    assert_eq!(truth.first().unwrap().open_time, t("2024-01-30T23:59:00Z"));
    assert_eq!(truth.last().unwrap().open_time, t("2024-03-02T06:00:00Z"));
    assert_klines(res, &truth);
    assert!(res.gaps.is_empty(), "{:?}", res.gaps);
    assert!(res.missing.is_empty(), "{:?}", res.missing);

    // Jan 31 came from the cache; Jan 30 and Mar 1 from dailies; February from its monthly file.
    let mut zips = env.zips();
    zips.sort();
    assert_eq!(
        zips,
        vec![
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-30.zip",
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip",
            "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip",
        ]
    );
    // REST was asked only for Mar 2.
    let queries = env.rest_data_queries();
    assert!(!queries.is_empty());
    for q in &queries {
        assert!(param(q, "startTime") >= t("2024-03-02"), "{q}");
    }
    // Per-row source: vision before Mar 2, rest from Mar 2.
    let b = concat(res);
    for (open, src) in i64_col(&b, "open_time").iter().zip(sources(&b)) {
        let want = if *open < t("2024-03-02") {
            "vision"
        } else {
            "rest"
        };
        assert_eq!(src, want, "row at {open}");
    }
    let s = &resp.summary;
    assert_eq!(s.cache_rows, 1440);
    assert_eq!(s.rest.rows, 361);
    assert_eq!(s.rows, truth.len() as u64);
    assert_eq!(
        s.vision.requests,
        env.vision_requests().len() as u64,
        "vision requests in the summary vs the log"
    );
    assert_eq!(
        s.rest.requests,
        env.rest_requests().len() as u64,
        "rest requests in the summary vs the log"
    );
    let logged_bytes = |vision: bool| -> u64 {
        env.emu
            .request_log()
            .iter()
            .filter(|l| l.path.starts_with("/data/") == vision)
            .map(|l| l.bytes)
            .sum()
    };
    assert_eq!(s.vision.bytes, logged_bytes(true));
    assert_eq!(s.rest.bytes, logged_bytes(false));

    // 3. The same request again: all from the cache, zero requests.
    env.emu.clear_log();
    let again = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect("again");
    assert!(env.paths().is_empty(), "{:?}", env.paths());
    assert_klines(one(&again), &truth);
    assert_eq!(again.summary.cache_rows, truth.len() as u64);
    assert_eq!(sources(&concat(one(&again))), sources(&b));
}

/// A damaged manifest costs its partition a new download, not the whole answer: the other
/// partitions still come from the cache.
#[tokio::test]
async fn a_corrupt_manifest_is_fetched_again_not_an_error() {
    let env = setup("2024-06-15T12:30:00Z").await;
    let r = range(t("2023-01-01"), t("2023-04-01"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    env.m.get(req.clone()).await.expect("cold get");
    let february = find_files(env.dir.path(), &|p: &Path| {
        let s = p.to_string_lossy();
        s.contains("month=02") && s.contains("manifest")
    });
    assert_eq!(february.len(), 1, "{february:?}");
    std::fs::write(&february[0], b"{not json").expect("damage the manifest");

    env.emu.clear_log();
    let resp = env.m.get(req).await.expect("get with a damaged manifest");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", r));
    assert_eq!(
        env.zips(),
        vec!["/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-02.zip".to_owned()]
    );
    assert_eq!(resp.summary.cache_rows, (31 + 31) * 1440);
}

/// Files under `dir` (recursively) for which `pick` holds.
fn find_files(dir: &Path, pick: &dyn Fn(&Path) -> bool) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find_files(&p, pick));
        } else if pick(&p) {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn publish_delay_days_are_probed_and_a_404_moves_the_frontier() {
    let now = "2024-03-05T03:00:00Z";
    let day = range(t("2024-03-03"), t("2024-03-03T01:00:00Z"));
    // 36 h delay: Mar 3 lies inside it, so the archive is asked whether it has the day (one
    // CHECKSUM request): it has (published Mar 4 08:00), so the day comes from its file, not REST.
    let env = setup(now).await;
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, day))
        .await
        .expect("get");
    assert_eq!(
        env.paths(),
        vec![
            "/api/v3/time",
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-03.zip.CHECKSUM",
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-03.zip.CHECKSUM",
            "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-03.zip",
        ]
    );
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "vision"));
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", day));
    // Mar 4 is inside the delay too, but not published yet (Mar 5 08:00): one probe, a 404,
    // then REST; the next request in the hour goes straight to REST (the frontier is learnt).
    env.emu.clear_log();
    let mar4 = range(t("2024-03-04"), t("2024-03-04T01:00:00Z"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, mar4))
        .await
        .expect("get");
    assert_eq!(
        env.vision_requests(),
        vec!["/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-04.zip.CHECKSUM"]
    );
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "rest"));
    env.emu.clear_log();
    let later = range(t("2024-03-04T02:00:00Z"), t("2024-03-04T03:00:00Z"));
    env.m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, later))
        .await
        .expect("get");
    assert!(env.vision_requests().is_empty(), "{:?}", env.paths());
    // 1 h delay: Mar 3 is old enough → its daily file (published Mar 4 08:00).
    let env = setup_with(
        now,
        |c| c,
        |c| ManagerConfig {
            vision_publish_delay: Duration::from_secs(3600),
            ..c
        },
    )
    .await;
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, day))
        .await
        .expect("get");
    assert_eq!(
        env.zips(),
        vec!["/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-03.zip"]
    );
    assert_eq!(env.rest_data_queries().len(), 0);
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", day));

    // With 1 h, Mar 4 is asked from Vision too, but the emulator publishes it only at Mar 5 08:00:
    // 404 → REST, and the planner learns it.
    env.emu.clear_log();
    let first = range(t("2024-03-04T00:00:00Z"), t("2024-03-04T01:00:00Z"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, first))
        .await
        .expect("get");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", first));
    assert_eq!(
        env.zips(),
        vec!["/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-04.zip"]
    );
    assert!(!env.rest_data_queries().is_empty());
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "rest"));

    // Right after the 404, another part of that day goes straight to REST.
    env.emu.clear_log();
    let second = range(t("2024-03-04T02:00:00Z"), t("2024-03-04T03:00:00Z"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, second))
        .await
        .expect("get");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", second));
    assert!(
        env.vision_requests().is_empty(),
        "asked Vision again for a day it just said it does not have: {:?}",
        env.paths()
    );
    assert_eq!(env.rest_data_queries().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Edges and intervals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_second_candles_for_a_day_with_off_grid_edges() {
    // 2025: spot files in microseconds.
    let env = setup("2025-03-10T00:00:00Z").await;
    let r = range(t("2025-02-03") + 500, t("2025-02-04") - 1500);
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::S1, r))
        .await
        .expect("get");
    let truth = env.truth(EM::Spot, "BTCUSDT", "1s", r);
    assert_eq!(truth.len(), 86_400 - 2);
    assert_klines(one(&resp), &truth);
    assert_eq!(one(&resp).first_time, Some(t("2025-02-03") + 1000));
    assert_eq!(one(&resp).last_time, Some(t("2025-02-04") - 2000));
    assert_eq!(env.zips().len(), 1);
}

#[tokio::test]
async fn one_minute_end_is_exclusive_on_the_grid() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let r = range(t("2024-02-10T10:00:00Z"), t("2024-02-10T11:00:00Z"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect("get");
    let truth = env.truth(EM::Spot, "BTCUSDT", "1m", r);
    assert_eq!(truth.len(), 60);
    assert_klines(one(&resp), &truth);
    assert_eq!(one(&resp).last_time, Some(t("2024-02-10T10:59:00Z")));
}

#[tokio::test]
async fn daily_weekly_and_monthly_candles() {
    let env = setup("2024-03-10T12:00:00Z").await;
    // 1d across a year boundary, off-grid start (the Nov 15 candle opened before it: excluded).
    let r = range(t("2023-11-15T13:00:00Z"), t("2024-02-03"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::D1, r))
        .await
        .expect("1d");
    let truth = env.truth(EM::Spot, "BTCUSDT", "1d", r);
    assert_eq!(truth.first().unwrap().open_time, t("2023-11-16"));
    assert_eq!(truth.len(), 15 + 31 + 31 + 2);
    assert_klines(one(&resp), &truth);

    // 1w: weeks open on Monday; the first Monday at or after Dec 1 2023 is Dec 4.
    env.emu.clear_log();
    let r = range(t("2023-12-01"), t("2024-03-01"));
    let resp = env
        .m
        .get(kreq(Market::UsdM, "BTCUSDT", Interval::W1, r))
        .await
        .expect("1w");
    let truth = env.truth(EM::Um, "BTCUSDT", "1w", r);
    assert_eq!(truth.first().unwrap().open_time, t("2023-12-04"));
    assert_klines(one(&resp), &truth);
    for open in i64_col(&concat(one(&resp)), "open_time") {
        assert_eq!(dt(open).weekday(), Weekday::Mon);
    }
    // Monthly-only data: monthly files only.
    assert!(
        env.zips().iter().all(|p| p.contains("/monthly/")),
        "{:?}",
        env.zips()
    );

    // 1M: calendar months; Feb 2023 opened before the start.
    env.emu.clear_log();
    let r = range(t("2023-02-15"), t("2024-01-01"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "ETHUSDT", Interval::Mo1, r))
        .await
        .expect("1M");
    let truth = env.truth(EM::Spot, "ETHUSDT", "1M", r);
    assert_eq!(truth.len(), 10);
    assert_klines(one(&resp), &truth);
    for (open, close) in truth.iter().map(|k| (k.open_time, k.close_time)) {
        assert_eq!(dt(open).day(), 1);
        assert_eq!(dt(close + 1).day(), 1);
    }
}

#[tokio::test]
async fn coin_m_perpetual_and_delivery_contracts() {
    let env = setup("2025-07-10T00:00:00Z").await;
    let r = range(t("2024-12-30T05:00:00Z"), t("2025-01-02T07:30:00Z"));
    let resp = env
        .m
        .get(kreq(Market::CoinM, "BTCUSD_PERP", Interval::H1, r))
        .await
        .expect("perp");
    assert_klines(one(&resp), &env.truth(EM::Cm, "BTCUSD_PERP", "1h", r));
    assert!(
        env.zips()
            .iter()
            .all(|p| p.starts_with("/data/futures/cm/"))
    );

    // The quarterly contract: no candle after its delivery (2025-06-27 08:00), none invented.
    let r = range(t("2025-06-26T00:00:00Z"), t("2025-06-28"));
    let resp = env
        .m
        .get(kreq(Market::CoinM, "BTCUSD_250627", Interval::H1, r))
        .await
        .expect("delivery");
    let truth = env.truth(EM::Cm, "BTCUSD_250627", "1h", r);
    assert_eq!(truth.last().unwrap().open_time, t("2025-06-27T07:00:00Z"));
    assert_klines(one(&resp), &truth);
    // After delivery the contract no longer exists: outside its life, not a gap, never padded.
    assert!(one(&resp).gaps.is_empty(), "{:?}", one(&resp).gaps);
    assert_eq!(
        one(&resp).outside_life,
        vec![range(t("2025-06-27T08:00:00Z"), r.end())]
    );
    env.emu.clear_log();
    let again = env
        .m
        .get(kreq(Market::CoinM, "BTCUSD_250627", Interval::H1, r))
        .await
        .expect("again");
    assert!(env.paths().is_empty(), "{:?}", env.paths());
    assert_klines(one(&again), &truth);
}

// ---------------------------------------------------------------------------------------------
// Funding and trades
// ---------------------------------------------------------------------------------------------

fn assert_funding(env: &Env, market: EM, s: &str, r: TimeRange, res: &SymbolResult) {
    let truth = env.emu.funding(market, s, r.start(), r.end());
    assert!(!truth.is_empty());
    let b = concat(res);
    let times = i64_col(&b, "funding_time");
    let rates = f64_col(&b, "funding_rate");
    let hours = b
        .column_by_name("funding_interval_hours")
        .expect("hours")
        .as_primitive::<Int32Type>()
        .clone();
    let mark = b
        .column_by_name("mark_price")
        .expect("mark price")
        .as_primitive::<Float64Type>()
        .clone();
    let src = sources(&b);
    assert_eq!(times.len(), truth.len());
    for (i, f) in truth.iter().enumerate() {
        assert_eq!(times[i], f.funding_time, "row {i}");
        assert_eq!(rates[i], f.funding_rate, "row {i}");
        // Every row has its interval: Vision's files say it, REST's spacing shows it.
        assert!(hours.is_valid(i), "row {i} ({}): no interval", src[i]);
        assert_eq!(hours.value(i), f.funding_interval_hours, "row {i}");
        // The mark price where the source carries it (REST on USD-M), else null.
        let want = if src[i] == "rest" { f.mark_price } else { None };
        let got = mark.is_valid(i).then(|| mark.value(i));
        assert_eq!(got, want, "row {i} ({})", src[i]);
    }
}

#[tokio::test]
async fn funding_rates_on_um_and_cm() {
    let env = setup("2024-03-10T12:00:00Z").await;
    let r = range(t("2024-01-15"), t("2024-03-09T12:00:00Z"));
    for (market, em, s) in [
        (Market::UsdM, EM::Um, "BTCUSDT"),
        (Market::CoinM, EM::Cm, "BTCUSD_PERP"),
    ] {
        env.emu.clear_log();
        let req = Request::new(market, DataKind::FundingRate, vec![sym(s)], None, r);
        let resp = env.m.get(req).await.expect("funding");
        assert_funding(&env, em, s, r, one(&resp));
        // January and February from monthly files, March from REST.
        let zips = env.zips();
        assert_eq!(zips.len(), 2, "{zips:?}");
        assert!(zips.iter().all(|p| p.contains("/monthly/fundingRate/")));
        let b = concat(one(&resp));
        for (time, src) in i64_col(&b, "funding_time").iter().zip(sources(&b)) {
            let want = if *time < t("2024-03-01") {
                "vision"
            } else {
                "rest"
            };
            assert_eq!(src, want);
        }
    }
}

#[tokio::test]
async fn trades_and_agg_trades_come_from_vision_and_recent_ones_from_rest() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let r = range(t("2024-03-02T06:00:00Z"), t("2024-03-05T06:00:00Z"));
    // Days Vision has published (Mar 4 too: it is probed, inside the 36 h delay, and published at
    // 08:00) come from Vision; today's hours from REST: spot historicalTrades, aggTrades
    // everywhere.
    let req = Request::new(
        Market::Spot,
        DataKind::Trades,
        vec![sym("BTCUSDT")],
        None,
        r,
    );
    let resp = env.m.get(req).await.expect("trades");
    let res = one(&resp);
    assert!(res.is_complete(), "{:?}", res.missing);
    let truth = env.emu.trades(EM::Spot, "BTCUSDT", r.start(), r.end());
    assert!(!truth.is_empty());
    let b = concat(res);
    assert_eq!(b.num_rows(), truth.len());
    let (id, price, qty, qq, time, maker) = (
        i64_col(&b, "id"),
        f64_col(&b, "price"),
        f64_col(&b, "qty"),
        f64_col(&b, "quote_qty"),
        i64_col(&b, "time"),
        bool_col(&b, "is_buyer_maker"),
    );
    let src = sources(&b);
    for (i, w) in truth.iter().enumerate() {
        assert_eq!(
            (id[i], price[i], qty[i], qq[i], time[i], maker[i]),
            (
                w.id,
                w.price,
                w.qty,
                w.quote_qty,
                w.time * 1000,
                w.is_buyer_maker
            ),
            "trade row {i}"
        );
        let want = if w.time < t("2024-03-05") {
            "vision"
        } else {
            "rest"
        };
        assert_eq!(src[i], want, "trade row {i}");
    }
    assert!(
        env.rest_data_queries()
            .iter()
            .any(|q| q.contains("fromId=")),
        "{:?}",
        env.rest_data_queries()
    );

    let req = Request::new(
        Market::UsdM,
        DataKind::AggTrades,
        vec![sym("BTCUSDT")],
        None,
        r,
    );
    let resp = env.m.get(req).await.expect("aggTrades");
    let res = one(&resp);
    assert!(res.is_complete(), "{:?}", res.missing);
    let truth = env.emu.agg_trades(EM::Um, "BTCUSDT", r.start(), r.end());
    assert!(!truth.is_empty());
    let b = concat(res);
    assert_eq!(b.num_rows(), truth.len());
    let (id, price, qty, first, last, time, maker) = (
        i64_col(&b, "agg_trade_id"),
        f64_col(&b, "price"),
        f64_col(&b, "quantity"),
        i64_col(&b, "first_trade_id"),
        i64_col(&b, "last_trade_id"),
        i64_col(&b, "transact_time"),
        bool_col(&b, "is_buyer_maker"),
    );
    for (i, w) in truth.iter().enumerate() {
        assert_eq!(
            (
                id[i], price[i], qty[i], first[i], last[i], time[i], maker[i]
            ),
            (
                w.agg_id,
                w.price,
                w.qty,
                w.first_trade_id,
                w.last_trade_id,
                w.time * 1000,
                w.is_buyer_maker
            ),
            "aggTrade row {i}"
        );
    }
    assert!(sources(&b).iter().any(|s| s == "rest"));

    // Futures trade history needs an API key: the recent part is missing, so the answer is
    // incomplete unless a partial one is allowed.
    let mut req = Request::new(
        Market::UsdM,
        DataKind::Trades,
        vec![sym("BTCUSDT")],
        None,
        r,
    );
    let e = env.m.get(req.clone()).await.expect_err("incomplete");
    assert_eq!(e.category(), ErrorCategory::Incomplete, "{e}");
    assert!(
        e.to_string().contains("2024-03-05T00:00:00.000Z"),
        "names what is missing: {e}"
    );
    req.allow_partial = true;
    let resp = env.m.get(req).await.expect("partial");
    assert_eq!(one(&resp).missing, vec![range(t("2024-03-05"), r.end())]);
    let published = range(r.start(), t("2024-03-05"));
    let truth = env
        .emu
        .trades(EM::Um, "BTCUSDT", published.start(), published.end());
    assert_eq!(one(&resp).num_rows(), truth.len());
}

// ---------------------------------------------------------------------------------------------
// Open candle, gaps
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn open_candle_only_on_request_and_never_cached() {
    let env = setup("2024-03-05T12:30:20Z").await;
    let r = range(t("2024-03-05T12:00:00Z"), t("2024-03-05T13:00:00Z"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect("closed only");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", r));
    assert_eq!(one(&resp).num_rows(), 30);
    assert!(one(&resp).gaps.is_empty(), "{:?}", one(&resp).gaps);

    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    req.include_open = true;
    let resp = env.m.get(req).await.expect("with open");
    let res = one(&resp);
    assert_eq!(res.num_rows(), 31);
    let b = concat(res);
    assert_eq!(
        *i64_col(&b, "open_time").last().unwrap(),
        t("2024-03-05T12:30:00Z")
    );
    assert_eq!(sources(&b).last().unwrap(), "rest");
    assert_eq!(res.last_time, Some(t("2024-03-05T12:30:00Z")));
    let partial_volume = *f64_col(&b, "volume").last().unwrap();

    // The clock moves on: the 12:30 candle closed; its final values are served, not the partial.
    env.emu.set_now(dt(t("2024-03-05T12:45:00Z")));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect("later");
    let truth = env.truth(EM::Spot, "BTCUSDT", "1m", r);
    assert_eq!(truth.len(), 45);
    assert_klines(one(&resp), &truth);
    // The open candle really was partial (so a cached copy would have been caught above).
    assert!(
        truth[30].volume > partial_volume,
        "{} vs {partial_volume}",
        truth[30].volume
    );
}

#[tokio::test]
async fn exchange_gaps_are_reported_not_invented_and_not_refetched() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| {
            c.with_fault(fault(
                "gap=2024-02-10T03:00:00Z..2024-02-10T05:30:00Z:BTCUSDT",
            ))
            .with_fault(fault(
                "gap=2024-03-05T01:00:00Z..2024-03-05T01:10:00Z:BTCUSDT",
            ))
        },
        |c| c,
    )
    .await;
    let r = range(t("2024-02-09T22:00:00Z"), t("2024-02-11T02:00:00Z"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    let resp = env.m.get(req.clone()).await.expect("vision gap");
    let res = one(&resp);
    let gap = range(t("2024-02-10T03:00:00Z"), t("2024-02-10T05:30:00Z"));
    assert_eq!(res.gaps, vec![gap]);
    assert!(res.missing.is_empty());
    assert_eq!(
        res.num_rows() as i64,
        (r.duration_ms() - gap.duration_ms()) / MIN
    );
    assert_klines(res, &env.truth(EM::Spot, "BTCUSDT", "1m", r));
    // ETHUSDT has no gap there.
    let eth = env
        .m
        .get(kreq(Market::Spot, "ETHUSDT", Interval::M1, r))
        .await
        .expect("eth");
    assert!(one(&eth).gaps.is_empty());

    env.emu.clear_log();
    let again = env.m.get(req).await.expect("again");
    assert!(
        env.paths().is_empty(),
        "re-fetched a known gap: {:?}",
        env.paths()
    );
    assert_eq!(one(&again).gaps, vec![gap]);

    // A gap in recent (REST) data.
    let r = range(t("2024-03-05T00:00:00Z"), t("2024-03-05T02:00:00Z"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    let resp = env.m.get(req.clone()).await.expect("rest gap");
    let gap = range(t("2024-03-05T01:00:00Z"), t("2024-03-05T01:10:00Z"));
    assert_eq!(one(&resp).gaps, vec![gap]);
    assert_eq!(one(&resp).num_rows(), 110);
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", r));
    env.emu.clear_log();
    let again = env.m.get(req).await.expect("again");
    assert!(
        env.paths().is_empty(),
        "re-fetched a known gap: {:?}",
        env.paths()
    );
    assert_eq!(one(&again).gaps, vec![gap]);
}

// ---------------------------------------------------------------------------------------------
// Source policies, several symbols
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn source_policies_restrict_what_is_asked() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let r = range(t("2024-03-01"), t("2024-03-05T06:00:00Z"));

    // Cache only, empty cache: nothing asked, everything missing: an incomplete answer, which
    // is an error unless a partial answer is allowed.
    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::H1, r);
    req.source = Some(SourcePolicy::Cache);
    let e = env.m.get(req.clone()).await.expect_err("incomplete");
    assert_eq!(e.category(), ErrorCategory::Incomplete, "{e}");
    assert!(
        matches!(&e, dsm::Error::Incomplete(i) if i.missing == vec![r]),
        "{e:?}"
    );
    req.allow_partial = true;
    let resp = env.m.get(req).await.expect("cache policy");
    assert!(!resp.is_complete());
    assert!(env.paths().is_empty(), "{:?}", env.paths());
    assert_eq!(one(&resp).num_rows(), 0);
    assert_eq!(one(&resp).missing, vec![r]);
    assert!(one(&resp).gaps.is_empty());

    // Vision only: only archive paths; what is not published is missing.
    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::H1, r);
    req.source = Some(SourcePolicy::Vision);
    let e = env.m.get(req.clone()).await.expect_err("incomplete");
    assert_eq!(e.category(), ErrorCategory::Incomplete, "{e}");
    req.allow_partial = true;
    let resp = env.m.get(req).await.expect("vision policy");
    assert!(!env.paths().is_empty());
    assert!(env.rest_requests().is_empty(), "{:?}", env.paths());
    // Without REST the local clock decides what is asked; what the archive lacks (Mar 5, not
    // published until Mar 6 08:00) is missing, not a gap.
    let published = range(r.start(), t("2024-03-05"));
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1h", published));
    assert_eq!(one(&resp).missing, vec![range(t("2024-03-05"), r.end())]);
    assert!(one(&resp).gaps.is_empty(), "{:?}", one(&resp).gaps);

    // REST only, on a range Vision has.
    env.emu.clear_log();
    let r = range(t("2024-02-01"), t("2024-02-02"));
    let mut req = kreq(Market::Spot, "ETHUSDT", Interval::M1, r);
    req.source = Some(SourcePolicy::Rest);
    let resp = env.m.get(req).await.expect("rest policy");
    assert!(env.vision_requests().is_empty(), "{:?}", env.paths());
    assert!(env.rest_data_queries().len() >= 2); // 1440 rows need two pages of 1000
    assert_klines(one(&resp), &env.truth(EM::Spot, "ETHUSDT", "1m", r));
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "rest"));

    // Cache only, now that it is cached: served, nothing asked.
    env.emu.clear_log();
    let mut req = kreq(Market::Spot, "ETHUSDT", Interval::M1, r);
    req.source = Some(SourcePolicy::Cache);
    let resp = env.m.get(req).await.expect("cache policy, cached");
    assert!(env.paths().is_empty());
    assert_klines(one(&resp), &env.truth(EM::Spot, "ETHUSDT", "1m", r));
    assert!(one(&resp).missing.is_empty());
}

#[tokio::test]
async fn several_symbols_share_one_budget_and_one_cache() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let r = range(t("2024-02-27T13:00:00Z"), t("2024-03-05T06:00:00Z"));
    let names = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];
    let req = Request::new(
        Market::Spot,
        DataKind::Klines,
        names.iter().map(|s| sym(s)).collect(),
        Some(Interval::H1),
        r,
    );
    let resp = env.m.get(req.clone()).await.expect("multi");
    assert_eq!(resp.results.len(), 3);
    for (res, name) in resp.results.iter().zip(names) {
        assert_eq!(res.symbol.as_str(), name);
        assert_klines(res, &env.truth(EM::Spot, name, "1h", r));
    }
    let total: u64 = resp.results.iter().map(|x| x.summary.rows).sum();
    assert_eq!(resp.summary.rows, total);
    // One weight budget: what the exchange counted is what the summary reports.
    assert_eq!(
        u64::from(env.emu.used_weight(EM::Spot)),
        resp.summary.rest_weight
    );
    assert_eq!(resp.summary.rest.requests, env.rest_requests().len() as u64);
    // One cache: each symbol is there, and the second run asks nothing.
    let parts = env.m.cache().expect("cache").list().await.expect("list");
    for name in names {
        assert!(
            parts.iter().any(|p| p.dataset.symbol.as_str() == name),
            "{name}"
        );
    }
    env.emu.clear_log();
    let again = env.m.get(req).await.expect("again");
    assert!(env.paths().is_empty());
    for (res, name) in again.results.iter().zip(names) {
        assert_klines(res, &env.truth(EM::Spot, name, "1h", r));
    }
}

// ---------------------------------------------------------------------------------------------
// Typed errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_future_and_unknown_data_are_typed_errors() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let old = range(t("2024-02-01"), t("2024-02-02"));

    // Bad input: no request made.
    let bad = [
        Request::new(
            Market::Spot,
            DataKind::Klines,
            vec![sym("BTCUSDT")],
            None,
            old,
        ),
        kreq(Market::UsdM, "BTCUSDT", Interval::S1, old),
        Request::new(
            Market::Spot,
            DataKind::FundingRate,
            vec![sym("BTCUSDT")],
            None,
            old,
        ),
        Request::new(
            Market::Spot,
            DataKind::Klines,
            vec![],
            Some(Interval::M1),
            old,
        ),
        kreq(Market::CoinM, "BTCUSDT", Interval::M1, old),
    ];
    for req in bad {
        let e = env.m.get(req.clone()).await.expect_err("bad input");
        assert_eq!(e.category(), ErrorCategory::Input, "{req:?}: {e}");
        assert!(matches!(e, dsm::Error::Input(_)), "{e:?}");
    }
    assert!(env.paths().is_empty(), "{:?}", env.paths());

    // Far in the future: no request at all.
    let future = range(t("2100-01-01"), t("2100-01-02"));
    let e = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, future))
        .await
        .expect_err("future");
    assert_eq!(e.category(), ErrorCategory::Unavailable, "{e}");
    assert!(env.paths().is_empty(), "{:?}", env.paths());

    // After the exchange's clock: only its time is asked, no data.
    let later = range(t("2024-04-01"), t("2024-04-02"));
    let e = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, later))
        .await
        .expect_err("after exchange now");
    assert_eq!(e.category(), ErrorCategory::Unavailable, "{e}");
    assert!(env.vision_requests().is_empty(), "{:?}", env.paths());
    assert!(env.rest_data_queries().is_empty(), "{:?}", env.paths());

    // Unknown symbol: REST -1121.
    let e = env
        .m
        .get(kreq(Market::Spot, "NOPEUSDT", Interval::H1, old))
        .await
        .expect_err("unknown symbol");
    assert_eq!(e.category(), ErrorCategory::Unavailable, "{e}");
    assert!(matches!(e, dsm::Error::Rest(_)), "{e:?}");

    // Entirely before listing (BNBUSDT listed 2017-11-06).
    let before = range(t("2017-10-01"), t("2017-10-05"));
    let e = env
        .m
        .get(kreq(Market::Spot, "BNBUSDT", Interval::H1, before))
        .await
        .expect_err("before listing");
    assert_eq!(e.category(), ErrorCategory::Unavailable, "{e}");
}

#[tokio::test]
async fn a_ban_is_an_upstream_error() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault("status418@/api/v3/klines")),
        |c| c,
    )
    .await;
    let r = range(t("2024-03-05T00:00:00Z"), t("2024-03-05T02:00:00Z"));
    let started = std::time::Instant::now();
    let e = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect_err("banned");
    assert_eq!(e.category(), ErrorCategory::Upstream, "{e}");
    assert!(
        matches!(e, dsm::Error::Rest(dsm::rest::RestError::Banned { .. })),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

const BAD_FILE: &str = "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-10.zip";

#[tokio::test]
async fn integrity_failure_is_an_error_under_vision_and_replaced_by_rest_under_auto() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault(&format!("checksum-mismatch@{BAD_FILE}"))),
        |c| c,
    )
    .await;
    let r = range(t("2024-02-09T20:00:00Z"), t("2024-02-11T04:00:00Z"));

    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    req.source = Some(SourcePolicy::Vision);
    let e = env.m.get(req).await.expect_err("integrity");
    assert_eq!(e.category(), ErrorCategory::Integrity, "{e}");

    env.emu.clear_log();
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, r))
        .await
        .expect("auto");
    let res = one(&resp);
    assert_klines(res, &env.truth(EM::Spot, "BTCUSDT", "1m", r));
    let b = concat(res);
    let day = range(t("2024-02-10"), t("2024-02-11"));
    for (open, src) in i64_col(&b, "open_time").iter().zip(sources(&b)) {
        let want = if day.contains(*open) {
            "rest"
        } else {
            "vision"
        };
        assert_eq!(src, want, "row at {open}");
    }
    assert!(
        resp.summary
            .failures
            .iter()
            .any(|f| f.contains("BTCUSDT-1m-2024-02-10.zip")),
        "{:?}",
        resp.summary.failures
    );
    // REST was asked only for the bad day.
    let queries = env.rest_data_queries();
    assert!(!queries.is_empty());
    for q in queries {
        let (a, b) = (param(&q, "startTime"), param(&q, "endTime"));
        assert!(day.start() <= a && b < day.end(), "{q}");
    }
}

// ---------------------------------------------------------------------------------------------
// Failing upstreams
// ---------------------------------------------------------------------------------------------

/// A tight pace, so a dead or trickling server fails an attempt within about a second.
fn impatient(c: ManagerConfig) -> ManagerConfig {
    ManagerConfig {
        retries: 1,
        vision_concurrency: 2,
        pace: dsm::Pace {
            silence: Duration::from_millis(800),
            min_bytes_per_sec: 4096,
            window: Duration::from_secs(1),
        },
        ..c
    }
}

/// A Vision archive that fails (5xx, a hang, a trickle) for every file: the days come from REST,
/// the summary says so, and after a few failed files the archive is not asked again.
#[tokio::test]
async fn a_failing_vision_archive_falls_back_to_rest() {
    for spec in [
        "status500@/data/*",
        "status403@/data/*",
        "hang@/data/*.zip",
        "slow=100@/data/*.zip",
    ] {
        let env = setup_with(
            "2024-03-05T12:00:00Z",
            |c| c.with_fault(fault(spec)),
            impatient,
        )
        .await;
        let r = range(t("2024-02-01"), t("2024-02-11"));
        let started = std::time::Instant::now();
        let resp = env
            .m
            .get(kreq(Market::Spot, "BTCUSDT", Interval::H1, r))
            .await
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        let res = one(&resp);
        assert_klines(res, &env.truth(EM::Spot, "BTCUSDT", "1h", r));
        assert!(sources(&concat(res)).iter().all(|s| s == "rest"), "{spec}");
        assert!(
            resp.summary
                .failures
                .iter()
                .any(|f| f.contains("/data/spot/")),
            "{spec}: the failed file is named: {:?}",
            resp.summary.failures
        );
        if spec.starts_with("status403") {
            assert!(
                resp.summary.failures.iter().any(|f| f.contains("firewall")),
                "a 403 says what it likely is: {:?}",
                resp.summary.failures
            );
        }
        // Ten daily files, two at a time: after three failed, the archive is not asked again.
        let mut files: Vec<String> = env
            .paths()
            .into_iter()
            .filter(|p| p.starts_with("/data/"))
            .map(|p| p.trim_end_matches(".CHECKSUM").to_owned())
            .collect();
        files.sort();
        files.dedup();
        assert!(files.len() <= 4, "{spec}: {files:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{spec}: took {:?}",
            started.elapsed()
        );
        env.emu.shutdown().await;
    }
}

/// A REST API that fails while Vision works: Vision's rows are kept, the recent part REST alone
/// has is missing, and the error says why (the URL that failed) — an incomplete answer, not
/// exit 4; with `allow_partial` the rows Vision had are returned.
#[tokio::test]
async fn a_failing_rest_api_keeps_visions_rows_and_says_why_the_rest_is_missing() {
    for spec in ["status500@/api/v3/klines", "slow=100@/api/v3/klines"] {
        let env = setup_with(
            "2024-03-05T12:00:00Z",
            |c| c.with_fault(fault(spec)),
            impatient,
        )
        .await;
        // Vision has every day before today (yesterday's file is found by a probe); REST alone
        // has today's hours.
        let r = range(t("2024-02-25"), t("2024-03-05T10:00:00Z"));
        let mut req = kreq(Market::Spot, "BTCUSDT", Interval::H1, r);
        let e = env.m.get(req.clone()).await.expect_err("incomplete");
        let Error::Incomplete(inc) = &e else {
            panic!("{spec}: expected Incomplete, got {e}");
        };
        assert_eq!(e.category(), ErrorCategory::Incomplete);
        assert!(e.to_string().contains("/api/v3/klines"), "{spec}: {e}");
        assert!(!inc.missing.is_empty());
        req.allow_partial = true;
        let resp = env.m.get(req).await.expect("partial");
        let res = one(&resp);
        let missing = TimeRange::merge_all(res.missing.clone());
        let had = env.truth(EM::Spot, "BTCUSDT", "1h", r);
        let want: Vec<_> = had
            .iter()
            .filter(|k| !missing.iter().any(|m| m.contains(k.open_time)))
            .cloned()
            .collect();
        assert!(!want.is_empty() && want.len() < had.len(), "{spec}");
        assert_klines(res, &want);
        env.emu.shutdown().await;
    }
}

/// REST is fetched a cache partition at a time: once the API fails, the partitions after the
/// failing one are reported missing without being asked.
#[tokio::test]
async fn a_failing_rest_api_is_not_asked_for_the_later_partitions() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault("status500@/api/v3/klines")),
        impatient,
    )
    .await;
    // Three monthly partitions of 1m candles: December, January, February.
    let r = range(t("2023-12-01"), t("2024-03-01"));
    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    req.source = Some(SourcePolicy::Rest);
    let e = env.m.get(req).await.expect_err("REST down");
    assert_eq!(e.category(), ErrorCategory::Upstream, "{e}");
    let february = t("2024-02-01");
    let asked: Vec<String> = env.rest_data_queries();
    assert!(!asked.is_empty());
    for q in asked {
        assert!(
            param(&q, "startTime") < february,
            "asked after the failure: {q}"
        );
    }
}

/// A REST-heavy run that fails part-way keeps what it fetched (in chunks of ten pages, cached as
/// they arrive); the rerun asks only for the rest, and the answer is exact.
#[tokio::test]
async fn a_rest_run_that_fails_part_way_keeps_its_pages_for_the_rerun() {
    // The API answers 60 klines pages, then fails.
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault("status500@/api/v3/klines~60")),
        impatient,
    )
    .await;
    // 91 days of 1m candles: 132 pages of 1000.
    let r = range(t("2023-12-01"), t("2024-03-01"));
    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    req.source = Some(SourcePolicy::Rest);
    let e = env.m.get(req.clone()).await.expect_err("the API fails");
    assert_eq!(e.category(), ErrorCategory::Incomplete, "{e}");
    env.emu.clear_faults();
    env.emu.clear_log();
    let resp = env.m.get(req).await.expect("rerun");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", r));
    let pages = env.rest_data_queries().len();
    assert!(
        pages <= 132 - 40,
        "the rerun asked {pages} pages: at least four chunks of ten fetched before the failure were kept"
    );
    assert_eq!(
        resp.summary.cache_rows,
        131_040 - one(&resp).summary.rest.rows
    );
}

/// A one-off failure of the exchange's clock request is retried, not taken for an outage.
#[tokio::test]
async fn a_one_off_clock_error_is_retried() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault("status500@/api/v3/time#1")),
        impatient,
    )
    .await;
    let r = range(t("2024-03-05"), t("2024-03-05T06:00:00Z"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::H1, r))
        .await
        .expect("retried");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1h", r));
    assert!(
        resp.summary.failures.is_empty(),
        "{:?}",
        resp.summary.failures
    );
    let clock = env.paths().iter().filter(|p| p.ends_with("/time")).count();
    assert_eq!(clock, 2, "the failed clock request and its retry");
}

/// Every source down: an upstream failure (exit 4) naming the URL, not an empty answer.
#[tokio::test]
async fn everything_down_is_an_upstream_error() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault("status500@*")),
        impatient,
    )
    .await;
    let r = range(t("2024-02-01"), t("2024-02-03"));
    let e = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::H1, r))
        .await
        .expect_err("down");
    assert_eq!(e.category(), ErrorCategory::Upstream, "{e}");
    assert!(e.to_string().contains("http://"), "{e}");
    assert!(e.to_string().contains("attempts"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Interrupted runs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_interrupted_run_resumes_with_only_what_is_missing() {
    let slow_days = ["2024-01-07", "2024-01-08", "2024-01-09"];
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |mut c| {
            for d in slow_days {
                c = c.with_fault(fault(&format!("slow=50@*BTCUSDT-1h-{d}.zip")));
            }
            c
        },
        |c| c,
    )
    .await;
    let r = range(t("2024-01-03"), t("2024-01-10"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::H1, r);
    let cache = env.m.cache().expect("cache").clone();
    let key = dsm::cache::Dataset {
        market: Market::Spot,
        kind: DataKind::Klines,
        symbol: sym("BTCUSDT"),
        interval: Some(Interval::H1),
    };
    // Drop the request once the fast days are cached.
    let fast = range(t("2024-01-03"), t("2024-01-07"));
    {
        let get = env.m.get(req.clone());
        tokio::pin!(get);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::select! {
                r = &mut get => panic!("finished despite slow files: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            let cov = cache.coverage(&key, fast).await.expect("coverage");
            if cov.missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fast days never cached"
            );
        }
    } // dropped here
    let cov = cache.coverage(&key, r).await.expect("coverage");
    assert_eq!(cov.missing, vec![range(t("2024-01-07"), t("2024-01-10"))]);

    env.emu.clear_faults();
    env.emu.clear_log();
    let resp = env.m.get(req).await.expect("rerun");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1h", r));
    let mut zips = env.zips();
    zips.sort();
    let want: Vec<String> = slow_days
        .iter()
        .map(|d| format!("/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-{d}.zip"))
        .collect();
    assert_eq!(zips, want);
    assert_eq!(resp.summary.cache_rows, 4 * 24);
    assert!(env.rest_data_queries().is_empty());
}

#[tokio::test]
async fn an_unpublished_monthly_file_falls_back_to_dailies_or_rest() {
    // Mar 2 14:00: with the 36 h delay February is due, but the emulator publishes monthly files
    // two days after the month (Mar 3): the monthly file 404s.
    let env = setup("2024-03-02T14:00:00Z").await;
    let r = range(t("2024-02-01"), t("2024-03-01"));
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::H1, r))
        .await
        .expect("klines");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1h", r));
    let zips = env.zips();
    let monthly = zips.iter().filter(|p| p.contains("/monthly/")).count();
    let daily = zips.iter().filter(|p| p.contains("/daily/")).count();
    assert_eq!((monthly, daily), (1, 29), "{zips:?}");
    assert!(env.rest_data_queries().is_empty());
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "vision"));

    // Funding has no daily files: the unpublished month comes from REST.
    env.emu.clear_log();
    let req = Request::new(
        Market::UsdM,
        DataKind::FundingRate,
        vec![sym("BTCUSDT")],
        None,
        r,
    );
    let resp = env.m.get(req).await.expect("funding");
    assert_funding(&env, EM::Um, "BTCUSDT", r, one(&resp));
    assert_eq!(env.zips().len(), 1);
    assert!(!env.rest_data_queries().is_empty());
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "rest"));
}

#[tokio::test]
async fn a_callers_token_cancels_a_hung_request_promptly() {
    let env = setup_with(
        "2024-06-15T12:30:00Z",
        |c| c.with_fault(fault("hang@/data/*")),
        |c| c,
    )
    .await;
    let token = tokio_util::sync::CancellationToken::new();
    let req = kreq(
        Market::Spot,
        "BTCUSDT",
        Interval::H1,
        range(t("2023-01-01"), t("2023-02-01")),
    );
    let canceller = {
        let token = token.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let at = std::time::Instant::now();
            token.cancel();
            at
        }
    };
    let (result, cancelled_at) =
        tokio::join!(env.m.get_with_cancel(req.clone(), &token), canceller);
    let latency = cancelled_at.elapsed();
    assert!(matches!(result, Err(dsm::Error::Cancelled)), "{result:?}");
    assert!(
        latency < Duration::from_millis(100),
        "returned {latency:?} after the cancel"
    );
    // The manager itself is not shut down: the next request (without the fault) works.
    env.emu.clear_faults();
    let resp = env.m.get(req).await.expect("a later request still works");
    assert_eq!(one(&resp).num_rows(), 31 * 24);
}

// ---------------------------------------------------------------------------------------------
// Windowed answers
// ---------------------------------------------------------------------------------------------

/// Every window of a `get_windows` stream, or the error that ended it.
async fn windows(env: &Env, req: Request) -> Result<Vec<dsm::Response>, dsm::Error> {
    use futures::TryStreamExt;
    let token = tokio_util::sync::CancellationToken::new();
    env.m.get_windows(req, &token).try_collect().await
}

/// The windows of one symbol joined: rows in order, gaps merged across window boundaries.
fn joined(ws: &[dsm::Response]) -> (Vec<KlineRow>, Vec<TimeRange>) {
    let mut rows = Vec::new();
    let mut gaps = Vec::new();
    for w in ws {
        rows.extend(klines_of(one(w)));
        gaps.extend(one(w).gaps.iter().copied());
    }
    (rows, TimeRange::merge_all(gaps))
}

#[tokio::test]
async fn windows_join_into_the_same_answer_as_one_get() {
    // A gap across the January/February boundary, Vision months and days, REST for the last day.
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| {
            c.with_fault(fault(
                "gap=2024-01-31T23:00:00Z..2024-02-01T01:00:00Z:BTCUSDT",
            ))
        },
        |c| c,
    )
    .await;
    let r = range(t("2024-01-30"), t("2024-03-05T06:00:00Z"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, r);
    let ws = windows(&env, req.clone()).await.expect("windows");
    // One window per cache partition (a month of 1m), in time order, each exact.
    let spans: Vec<TimeRange> = ws
        .iter()
        .map(|w| {
            let res = one(w);
            range(
                res.first_time.expect("rows"),
                res.last_time.expect("rows") + MIN,
            )
        })
        .collect();
    assert_eq!(
        spans,
        vec![
            range(t("2024-01-30"), t("2024-01-31T23:00:00Z")),
            range(t("2024-02-01T01:00:00Z"), t("2024-03-01")),
            range(t("2024-03-01"), t("2024-03-05T06:00:00Z")),
        ]
    );
    let (rows, gaps) = joined(&ws);
    let truth = env.truth(EM::Spot, "BTCUSDT", "1m", r);
    assert_eq!(rows, truth);
    let gap = range(t("2024-01-31T23:00:00Z"), t("2024-02-01T01:00:00Z"));
    assert_eq!(gaps, vec![gap]);
    // The exchange's clock was asked once for the whole stream.
    let clock = env.paths().iter().filter(|p| p.ends_with("/time")).count();
    assert_eq!(clock, 1, "{:?}", env.paths());

    // The same as one `get` (now from the cache).
    let resp = env.m.get(req).await.expect("get");
    assert_eq!(klines_of(one(&resp)), truth);
    assert_eq!(one(&resp).gaps, vec![gap]);
}

#[tokio::test]
async fn windows_stop_at_the_exchange_clock_and_fail_like_get() {
    let env = setup("2024-03-05T12:00:00Z").await;
    // 1s windows are days; the last two start after the exchange's clock.
    let r = range(t("2024-03-05T11:00:00Z"), t("2024-03-08"));
    let ws = windows(&env, kreq(Market::Spot, "BTCUSDT", Interval::S1, r))
        .await
        .expect("windows up to the clock");
    let (rows, _) = joined(&ws);
    let closed = range(r.start(), t("2024-03-05T12:00:00Z"));
    assert_eq!(rows, env.truth(EM::Spot, "BTCUSDT", "1s", closed));

    // Listed in the middle of the range: the empty window is not an error.
    let r = range(t("2017-10-25"), t("2017-11-08"));
    let ws = windows(&env, kreq(Market::Spot, "BNBUSDT", Interval::M1, r))
        .await
        .expect("listed mid-range");
    let (rows, _) = joined(&ws);
    assert!(!rows.is_empty());
    assert_eq!(rows, env.truth(EM::Spot, "BNBUSDT", "1m", r));

    // No data at all: the error `get` gives, at the end of the stream.
    let before = range(t("2017-10-01"), t("2017-10-05"));
    let e = windows(&env, kreq(Market::Spot, "BNBUSDT", Interval::H1, before))
        .await
        .expect_err("before listing");
    assert!(
        matches!(
            e,
            dsm::Error::Unavailable(dsm::UnavailableError::NoData { .. })
        ),
        "{e:?}"
    );

    // Bad input: the first item, no request made.
    env.emu.clear_log();
    let e = windows(&env, kreq(Market::CoinM, "BTCUSDT", Interval::M1, before))
        .await
        .expect_err("bad input");
    assert_eq!(e.category(), ErrorCategory::Input, "{e}");
    assert!(env.paths().is_empty(), "{:?}", env.paths());
}

// ---------------------------------------------------------------------------------------------
// Integrity: short files, hostile files, corrupt cache files
// ---------------------------------------------------------------------------------------------

/// A Vision file that verifies but holds only part of its day (Binance has published such files):
/// the missing hours come from REST, the file is reported as short, and nothing of it is
/// remembered as an exchange gap, so the answer stays right once the archive is repaired.
#[tokio::test]
async fn a_short_vision_file_is_completed_from_rest_never_a_gap() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    env.emu
        .add_fault(fault("short-file=0.57@*/BTCUSDT-1m-2024-02-10.zip"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, day);
    let resp = env.m.get(req.clone()).await.expect("short file");
    let res = one(&resp);
    assert_klines(res, &env.truth(EM::Spot, "BTCUSDT", "1m", day));
    assert!(res.gaps.is_empty(), "false gaps: {:?}", res.gaps);
    assert!(res.is_complete());
    assert_eq!(res.summary.short_files, vec!["BTCUSDT-1m-2024-02-10.zip"]);
    // The partition's manifest remembers the file as short.
    let parts = env.m.cache().expect("cache").list().await.expect("list");
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0].short_files, vec!["BTCUSDT-1m-2024-02-10.zip"]);
    let src = sources(&concat(res));
    assert!(src.iter().any(|s| s == "vision") && src.iter().any(|s| s == "rest"));
    assert!(!env.rest_data_queries().is_empty());

    // The cache holds the whole day, with no remembered gap: answered offline, nothing asked.
    env.emu.clear_faults();
    env.emu.clear_log();
    let mut offline = req.clone();
    offline.source = Some(SourcePolicy::Cache);
    let again = env.m.get(offline).await.expect("cached");
    assert!(env.paths().is_empty(), "{:?}", env.paths());
    assert_klines(one(&again), &env.truth(EM::Spot, "BTCUSDT", "1m", day));
    assert!(one(&again).gaps.is_empty());
}

/// Without REST, a hole in a verified file cannot be confirmed: it is missing (incomplete), not a
/// gap, and it is not cached, so a later run fetches it again and gets it once the file is whole.
#[tokio::test]
async fn a_short_vision_file_without_rest_is_incomplete_and_not_remembered() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    env.emu
        .add_fault(fault("short-file=0.5@*/BTCUSDT-1h-2024-02-10.zip"));
    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::H1, day);
    req.source = Some(SourcePolicy::Vision);
    let e = env.m.get(req.clone()).await.expect_err("incomplete");
    assert_eq!(e.category(), ErrorCategory::Incomplete, "{e}");
    req.allow_partial = true;
    let resp = env.m.get(req.clone()).await.expect("partial");
    let res = one(&resp);
    assert_eq!(res.num_rows(), 12);
    assert_eq!(
        res.missing,
        vec![range(t("2024-02-10T12:00:00Z"), day.end())]
    );
    assert!(res.gaps.is_empty(), "{:?}", res.gaps);

    // The archive is repaired: the same request is now whole.
    env.emu.clear_faults();
    req.allow_partial = false;
    let resp = env.m.get(req).await.expect("repaired");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1h", day));
}

/// Real downtime (no candles in any source) inside a Vision file is confirmed by REST, reported
/// as a gap and remembered.
#[tokio::test]
async fn downtime_inside_a_vision_file_is_confirmed_by_rest_and_remembered() {
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |c| c.with_fault(fault("gap=2024-02-10T03:00:00Z..2024-02-10T05:00:00Z")),
        |c| c,
    )
    .await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, day);
    let resp = env.m.get(req.clone()).await.expect("day");
    let gap = range(t("2024-02-10T03:00:00Z"), t("2024-02-10T05:00:00Z"));
    assert_eq!(one(&resp).gaps, vec![gap]);
    assert!(one(&resp).summary.short_files.is_empty());
    // REST was asked about the hole only.
    let q = env.rest_data_queries();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(param(&q[0], "startTime"), gap.start());
    env.emu.clear_log();
    let again = env.m.get(req).await.expect("again");
    assert!(env.paths().is_empty(), "{:?}", env.paths());
    assert_eq!(one(&again).gaps, vec![gap]);
}

/// Peak resident memory of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A small zip whose entry inflates to a huge line: a typed integrity error within seconds,
/// bounded memory, nothing cached. Candles fall back to REST; trades (no REST) fail.
#[tokio::test]
async fn a_hostile_archive_is_rejected_quickly_with_bounded_memory() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    env.emu
        .add_fault(fault("no-newline=536870912@*-2024-02-10.zip"));
    let started = std::time::Instant::now();
    let mut req = Request::new(
        Market::UsdM,
        DataKind::AggTrades,
        vec![sym("BTCUSDT")],
        None,
        day,
    );
    req.source = Some(SourcePolicy::Vision);
    let e = env.m.get(req).await.expect_err("hostile");
    assert_eq!(e.category(), ErrorCategory::Integrity, "{e}");
    assert!(
        e.to_string().contains("BTCUSDT-aggTrades-2024-02-10.zip"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Candles: a declared size no day of 1m candles can have is refused before inflating, and
    // REST supplies the day.
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, day);
    let resp = env.m.get(req).await.expect("REST instead");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", day));
    assert!(
        one(&resp)
            .summary
            .failures
            .iter()
            .any(|f| f.contains("BTCUSDT-1m-2024-02-10.zip")),
        "{:?}",
        one(&resp).summary.failures
    );
    assert!(sources(&concat(one(&resp))).iter().all(|s| s == "rest"));
    let cached = env.m.cache().expect("cache").list().await.expect("list");
    assert!(
        cached.iter().all(|p| p.dataset.kind != DataKind::AggTrades),
        "{cached:?}"
    );
    // The peak is the process's: meaningful when this test has its process to itself (nextest).
    let own_process = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    match peak_rss() {
        Some(peak) if own_process => {
            assert!(peak < 100 << 20, "peak RSS {} MiB", peak >> 20);
        }
        _ => println!("peak RSS not checked: run under nextest (process per test) on Linux"),
    }
}

/// The files under `dir` (quarantine excluded) whose name `wanted` accepts.
fn cache_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("_quarantine") {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(&wanted) {
                out.push(p);
            }
        }
    }
    out
}

/// Asks `req` (spot BTCUSDT 1m over `day`) again after the cache was damaged: the archive is asked
/// again, the answer is right, one failure line names every one of `needles`, and the bad file
/// is in `_quarantine/`.
async fn assert_fetched_again(env: &Env, req: Request, day: TimeRange, needles: &[&str]) {
    env.emu.clear_log();
    let resp = env.m.get(req).await.expect("fetched again");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", day));
    assert!(!env.zips().is_empty(), "fetched again");
    let failures = &one(&resp).summary.failures;
    assert!(
        failures
            .iter()
            .any(|f| needles.iter().all(|n| f.contains(n))),
        "{failures:?}"
    );
    assert!(env.dir.path().join("_quarantine").exists());
}

/// A cached file that fails its checksum: `auto` quarantines it, says so, and fetches the
/// partition again; offline (`cache`) cannot repair and fails with an integrity error.
#[tokio::test]
async fn a_corrupt_cached_file_is_quarantined_and_fetched_again() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, day);
    env.m.get(req.clone()).await.expect("first");
    let files = cache_files(env.dir.path(), |n| n.ends_with(".parquet"));
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&files[0], bytes).expect("write");

    let mut offline = req.clone();
    offline.source = Some(SourcePolicy::Cache);
    let e = env
        .m
        .get(offline.clone())
        .await
        .expect_err("offline cannot repair");
    assert_eq!(e.category(), ErrorCategory::Integrity, "{e}");

    assert_fetched_again(&env, req, day, &["quarantined", ".parquet"]).await;
    // Whole again: offline works.
    let resp = env.m.get(offline).await.expect("offline after repair");
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", day));
}

/// A delivery contract's data ends at its delivery: a range that straddles it is answered up to
/// then, with the rest reported as outside the symbol's life (no gap, nothing missing); a range
/// after it is "no data" before any request.
#[tokio::test]
async fn a_delivered_contract_ends_at_delivery_not_in_a_gap() {
    let env = setup("2025-07-05T00:00:00Z").await;
    let delivered = t("2025-06-27T08:00:00Z");
    let r = range(t("2025-06-20"), t("2025-07-01"));
    let req = kreq(Market::CoinM, "BTCUSD_250627", Interval::H1, r);
    let resp = env.m.get(req).await.expect("straddling delivery");
    let res = one(&resp);
    let truth = env.emu.klines(
        EM::Cm,
        KlineKind::Klines,
        "BTCUSD_250627",
        "1h",
        r.start(),
        delivered,
    );
    assert_klines(res, &truth);
    assert_eq!(res.last_time, Some(delivered - 3_600_000));
    assert!(res.gaps.is_empty(), "{:?}", res.gaps);
    assert!(res.missing.is_empty(), "{:?}", res.missing);
    assert_eq!(res.outside_life, vec![range(delivered, r.end())]);

    env.emu.clear_log();
    let after = range(t("2025-06-28"), t("2025-06-30"));
    let e = env
        .m
        .get(kreq(Market::CoinM, "BTCUSD_250627", Interval::H1, after))
        .await
        .expect_err("after delivery");
    assert_eq!(e.category(), ErrorCategory::Unavailable, "{e}");
    assert!(e.to_string().contains("delivered"), "{e}");
    assert!(env.paths().is_empty(), "{:?}", env.paths());
}

/// A cached Vision file that Binance re-publishes with other rows: `check_republished` notices
/// the new `.CHECKSUM`, fetches the file again, counts what changed and caches the new rows.
#[tokio::test]
async fn a_republished_vision_file_is_noticed_and_fetched_again() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    let mut req = kreq(Market::Spot, "BTCUSDT", Interval::M1, day);
    env.m.get(req.clone()).await.expect("cached");
    let token = tokio_util::sync::CancellationToken::new();
    let same = env.m.check_republished(None, &token).await.expect("check");
    assert_eq!((same.checked, same.republished.len()), (1, 0), "{same:?}");
    // The cache keeps the file's digest, ETag and Last-Modified as served.
    let served = || async {
        let parts = env.m.cache().expect("cache").list().await.expect("list");
        parts[0]
            .sources
            .iter()
            .find_map(|s| match s {
                dsm::cache::Provenance::Vision {
                    sha256,
                    etag: Some(etag),
                    last_modified: Some(_),
                    ..
                } => Some((sha256.clone(), etag.clone())),
                _ => None,
            })
            .expect("a Vision source with its ETag and Last-Modified")
    };
    let before = served().await;

    env.emu
        .add_fault(fault("republish=0.1@*/BTCUSDT-1m-2024-02-10.zip"));
    // Files ending before `since` are not asked about.
    env.emu.clear_log();
    let skipped = env
        .m
        .check_republished(Some(t("2024-02-11")), &token)
        .await
        .expect("check since");
    assert_eq!(skipped.checked, 0);
    assert!(env.paths().is_empty(), "{:?}", env.paths());

    let report = env.m.check_republished(None, &token).await.expect("check");
    assert_eq!(report.republished.len(), 1, "{report:?}");
    let r = &report.republished[0];
    assert_eq!(
        r.file,
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-10.zip"
    );
    // What the cache holds now differs from the original rows in exactly the changed volumes.
    req.source = Some(SourcePolicy::Cache);
    let cached = klines_of(one(&env.m.get(req).await.expect("from cache")));
    let truth = env.truth(EM::Spot, "BTCUSDT", "1m", day);
    assert_eq!(cached.len(), truth.len());
    let differing = cached
        .iter()
        .zip(&truth)
        .filter(|(c, w)| {
            assert_eq!(c.open_time, w.open_time);
            c != w
        })
        .count();
    assert!(differing > 100, "{differing}");
    assert_eq!((r.changed, r.added, r.removed), (differing as u64, 0, 0));
    assert!(
        cached
            .iter()
            .zip(&truth)
            .all(|(c, w)| c.close == w.close && c.count == w.count),
        "only volumes changed"
    );
    let after = served().await;
    assert!(
        after.0 != before.0 && after.1 != before.1,
        "{before:?} {after:?}"
    );
    // Now current: nothing to fetch again.
    let again = env.m.check_republished(None, &token).await.expect("again");
    assert!(again.republished.is_empty(), "{again:?}");
}

/// Many small holes in one Vision file (here 60 one-minute outages) are confirmed with a page or
/// two of REST, never a request per hole; each stays a confirmed gap.
#[tokio::test]
async fn many_holes_in_a_file_cost_a_few_rest_pages() {
    let day = range(t("2024-02-10"), t("2024-02-11"));
    let outages: Vec<TimeRange> = (0..60)
        .map(|i| {
            let s = day.start() + i * 20 * MIN + 7 * MIN;
            range(s, s + MIN)
        })
        .collect();
    let env = setup_with(
        "2024-03-05T12:00:00Z",
        |mut c| {
            for o in &outages {
                c = c.with_fault(Fault::gap(dt(o.start()), dt(o.end()), None));
            }
            c
        },
        |c| c,
    )
    .await;
    let resp = env
        .m
        .get(kreq(Market::Spot, "BTCUSDT", Interval::M1, day))
        .await
        .expect("day");
    assert_eq!(one(&resp).gaps, outages);
    assert_klines(one(&resp), &env.truth(EM::Spot, "BTCUSDT", "1m", day));
    let pages = env.rest_data_queries().len();
    assert!(pages <= 2, "{pages} REST requests for 60 holes");
    assert!(one(&resp).summary.short_files.is_empty());
}

/// A monthly funding file that verifies but lacks part of its month: the missing records come
/// from REST and the file is reported short; a whole file costs no REST request.
#[tokio::test]
async fn a_short_funding_file_is_completed_from_rest() {
    let env = setup("2024-03-10T12:00:00Z").await;
    let month = range(t("2024-01-01"), t("2024-02-01"));
    let req =
        |s: &str, market| Request::new(market, DataKind::FundingRate, vec![sym(s)], None, month);
    let whole = env
        .m
        .get(req("BTCUSD_PERP", Market::CoinM))
        .await
        .expect("whole");
    assert_funding(&env, EM::Cm, "BTCUSD_PERP", month, one(&whole));
    assert!(
        env.rest_data_queries().is_empty(),
        "{:?}",
        env.rest_data_queries()
    );

    env.emu
        .add_fault(fault("short-file=0.5@*/BTCUSDT-fundingRate-2024-01.zip"));
    let resp = env
        .m
        .get(req("BTCUSDT", Market::UsdM))
        .await
        .expect("short");
    assert_funding(&env, EM::Um, "BTCUSDT", month, one(&resp));
    assert_eq!(
        one(&resp).summary.short_files,
        vec!["BTCUSDT-fundingRate-2024-01.zip"]
    );
}

/// A manifest that fails its own checksum (one flipped bit) is treated as absent: quarantined,
/// reported, its partition fetched again; never an empty answer or "no data upstream".
#[tokio::test]
async fn a_flipped_manifest_is_quarantined_reported_and_fetched_again() {
    let env = setup("2024-03-05T12:00:00Z").await;
    let day = range(t("2024-02-10"), t("2024-02-11"));
    let req = kreq(Market::Spot, "BTCUSDT", Interval::M1, day);
    env.m.get(req.clone()).await.expect("first");
    let manifests = cache_files(env.dir.path(), |n| n == "_manifest.json");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let mut bytes = std::fs::read(&manifests[0]).expect("read");
    let at = String::from_utf8_lossy(&bytes)
        .find("\"max\"")
        .expect("a row group")
        + 8;
    bytes[at] ^= 0x01;
    std::fs::write(&manifests[0], bytes).expect("write");

    assert_fetched_again(&env, req, day, &["_manifest.json", "checksum"]).await;
}
