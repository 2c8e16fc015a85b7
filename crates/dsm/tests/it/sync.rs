//! Whole universes: `symbols` and `sync` against the emulator's spot universe of 26 symbols (23
//! trading since 2019, one listed in March 2024, one delisted and gone from exchangeInfo, one
//! delisted and kept there as BREAK). Expected rows come from the emulator's truth and expected
//! downloads from its symbols' documented lives, never from dsm's output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use dsm::manager::{Shard, StatusFilter, SymbolStatus, SyncProgress, SyncRequest, Universe};
use dsm::{DataKind, Error, ErrorCategory, Interval, Market, Request, SourcePolicy};
use tokio_util::sync::CancellationToken;

use crate::manager::{Env, concat, one, setup, setup_with};
use crate::support::{range, sym, t};

/// The year the syncs cover (whole months, all published by the emulator's clock).
const FROM: &str = "2024-01-01";
const TO: &str = "2024-12-01";
const NOW: &str = "2024-12-10";

/// The emulator's spot symbols trading through the year (listed 2017-2019).
fn steady() -> Vec<String> {
    let mut v: Vec<String> = ["BTCUSDT", "ETHUSDT", "BNBUSDT"].map(String::from).to_vec();
    v.extend((1..=20).map(|i| format!("SYM{i:02}USDT")));
    v
}

/// More spot symbols for the whole-universe syncs (the default universe and these make 32).
fn extra() -> Vec<String> {
    (1..=6).map(|i| format!("EXTRA{i}USDT")).collect()
}

/// An emulator at [`NOW`] with the default universe and [`extra`].
async fn setup_universe() -> Env {
    setup_with(
        NOW,
        |c| {
            let listed = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2019, 1, 1, 0, 0, 0);
            let mut symbols = dsm_emulator::default_symbols();
            symbols.extend(extra().iter().map(|s| {
                dsm_emulator::SymbolSpec::new(dsm_emulator::Market::Spot, s, listed.unwrap(), 5.0)
            }));
            c.with_symbols(symbols)
        },
        |c| c,
    )
    .await
}

/// The monthly and daily 1h zips one sync of [FROM, TO) needs at least, from the emulator's
/// documented lives: eleven months each for the 29 steady symbols; NEWCOINUSDT (listed
/// 2024-03-15): 17 March days and eight months; GONEUSDT (delisted 2024-05-20 12:00): four months
/// and 20 May days; HALTUSDT (delisted 2024-09-03): eight months and two September days.
fn minimum_zips() -> usize {
    29 * 11 + (17 + 8) + (4 + 20) + (8 + 2)
}

fn request(universe: &str) -> SyncRequest {
    SyncRequest::new(
        Market::Spot,
        DataKind::Klines,
        Some(Interval::H1),
        Universe::parse(universe, Market::Spot, DataKind::Klines).unwrap(),
        range(t(FROM), t(TO)),
    )
}

/// Every zip path downloaded, with how often.
fn zip_counts(env: &Env) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for z in env.zips() {
        *m.entry(z).or_default() += 1;
    }
    m
}

/// The cache holds exactly the truth for every symbol (read offline).
async fn assert_cache_is_the_truth(env: &Env, symbols: &[String]) {
    for s in symbols {
        // Each symbol's life inside the year: the cache has no reason to hold more.
        let (from, to) = match s.as_str() {
            "NEWCOINUSDT" => (t("2024-03-15"), t(TO)),
            "GONEUSDT" => (t(FROM), t("2024-05-21")),
            "HALTUSDT" => (t(FROM), t("2024-09-03")),
            _ => (t(FROM), t(TO)),
        };
        let mut req = Request::klines(Market::Spot, sym(s), Interval::H1, range(from, to));
        req.source = Some(SourcePolicy::Cache);
        let resp = env
            .m
            .get(req)
            .await
            .unwrap_or_else(|e| panic!("{s} offline: {e}"));
        let b = concat(one(&resp));
        let truth = env.emu.klines(
            dsm_emulator::Market::Spot,
            dsm_emulator::KlineKind::Klines,
            s,
            "1h",
            from,
            to,
        );
        assert!(!truth.is_empty(), "{s}: the truth has rows");
        let times = b
            .column_by_name("open_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let close = b
            .column_by_name("close")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(times.len(), truth.len(), "{s}: rows");
        for (i, row) in truth.iter().enumerate() {
            assert_eq!(
                (times.value(i), close.value(i)),
                (row.open_time, row.close),
                "{s} row {i}"
            );
        }
    }
}

fn spot_universe() -> Vec<String> {
    let mut v = steady();
    v.extend(extra());
    v.extend(["NEWCOINUSDT", "GONEUSDT", "HALTUSDT"].map(String::from));
    v
}

#[tokio::test]
async fn symbols_come_from_exchange_info_and_the_archive_with_their_lives() {
    let env = setup_universe().await;
    let all = env
        .m
        .symbols(Market::Spot, StatusFilter::All)
        .await
        .unwrap();
    let names: BTreeSet<&str> = all.iter().map(|s| s.symbol.as_str()).collect();
    let expected: BTreeSet<String> = spot_universe().into_iter().collect();
    assert_eq!(names, expected.iter().map(String::as_str).collect());
    let get = |n: &str| all.iter().find(|s| s.symbol.as_str() == n).unwrap();
    // Gone from exchangeInfo: the archive's first and last daily files give its life.
    let gone = get("GONEUSDT");
    assert_eq!(gone.status, SymbolStatus::Delisted);
    assert_eq!(gone.exchange_status, None);
    assert_eq!(
        (gone.listed, gone.ended),
        (Some(t("2019-01-01")), Some(t("2024-05-21")))
    );
    // Kept as BREAK: delisted, with the exchange's word.
    let halt = get("HALTUSDT");
    assert_eq!(halt.status, SymbolStatus::Delisted);
    assert_eq!(halt.exchange_status.as_deref(), Some("BREAK"));
    assert_eq!(
        (halt.listed, halt.ended),
        (Some(t("2020-02-10")), Some(t("2024-09-03")))
    );
    assert_eq!(get("BTCUSDT").status, SymbolStatus::Trading);
    assert_eq!(get("BTCUSDT").ended, None);

    let trading = env
        .m
        .symbols(Market::Spot, StatusFilter::Trading)
        .await
        .unwrap();
    assert_eq!(trading.len(), 30);
    let delisted = env
        .m
        .symbols(Market::Spot, StatusFilter::Delisted)
        .await
        .unwrap();
    let names: Vec<&str> = delisted.iter().map(|s| s.symbol.as_str()).collect();
    assert_eq!(names, ["GONEUSDT", "HALTUSDT"]);

    // COIN-M: the quarterly (listed 2024-12-27) is not listed yet at the emulator's clock.
    let cm = env
        .m
        .symbols(Market::CoinM, StatusFilter::All)
        .await
        .unwrap();
    assert!(!cm.iter().any(|s| s.symbol.as_str() == "BTCUSD_250627"));
    let perp = cm
        .iter()
        .find(|s| s.symbol.as_str() == "BTCUSD_PERP")
        .unwrap();
    assert_eq!(perp.listed, Some(t("2020-08-11")), "onboardDate");
    assert_eq!(perp.ended, None, "the 2100 placeholder is not a delivery");
}

#[tokio::test]
async fn a_delivered_contract_only_the_archive_lists_syncs_to_its_delivery() {
    // After the quarterly's delivery (2025-06-27 08:00) it has left exchangeInfo.
    let env = setup("2025-07-10").await;
    let cm = env
        .m
        .symbols(Market::CoinM, StatusFilter::Delisted)
        .await
        .unwrap();
    let q = cm
        .iter()
        .find(|s| s.symbol.as_str() == "BTCUSD_250627")
        .unwrap();
    assert_eq!(q.exchange_status, None);
    assert_eq!(
        (q.listed, q.ended),
        (Some(t("2024-12-27")), Some(t("2025-06-27T08:00:00Z")))
    );

    let mut req = request("all");
    req.market = Market::CoinM;
    req.range = range(t("2025-01-01"), t("2025-07-01"));
    let outcome = env.m.sync(req, &CancellationToken::new()).await.unwrap();
    assert!(outcome.is_complete());
    let names: Vec<&str> = outcome.symbols.iter().map(|s| s.symbol.as_str()).collect();
    assert_eq!(names, ["BTCUSD_250627", "BTCUSD_PERP", "ETHUSD_PERP"]);
    let q = &outcome.symbols[0];
    assert_eq!(
        q.range,
        Some(range(t("2025-01-01"), t("2025-06-27T08:00:00Z")))
    );
    // Six months for each perpetual; January to May, then June's days to the delivery.
    assert_eq!(q.files, 5 + 27);
    let zips = zip_counts(&env);
    assert!(zips.values().all(|&n| n == 1), "{zips:?}");
    assert_eq!(zips.len(), 2 * 6 + 5 + 27);
    assert!(
        !zips
            .keys()
            .any(|z| z.contains("BTCUSD_250627") && z.contains("2025-06-28"))
    );
    // The cache holds the contract's truth to its delivery.
    let r = range(t("2025-01-01"), t("2025-06-27T08:00:00Z"));
    let mut get = Request::klines(Market::CoinM, sym("BTCUSD_250627"), Interval::H1, r);
    get.source = Some(SourcePolicy::Cache);
    let b = concat(one(&env.m.get(get).await.unwrap()));
    let truth = env.emu.klines(
        dsm_emulator::Market::Cm,
        dsm_emulator::KlineKind::Klines,
        "BTCUSD_250627",
        "1h",
        r.start(),
        r.end(),
    );
    let times = b
        .column_by_name("open_time")
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    let want: Vec<i64> = truth.iter().map(|k| k.open_time).collect();
    assert!(!want.is_empty());
    assert_eq!(times.values().to_vec(), want);
}

#[tokio::test]
async fn a_universe_syncs_once_to_the_truth_and_a_rerun_downloads_nothing() {
    let env = setup_universe().await;
    let token = CancellationToken::new();
    let outcome = env.m.sync(request("*USDT"), &token).await.unwrap();
    assert!(
        outcome.is_complete(),
        "{:?}",
        outcome
            .symbols
            .iter()
            .filter(|s| !s.is_complete())
            .collect::<Vec<_>>()
    );
    assert_eq!(outcome.failure_category(), None);
    let names: Vec<&str> = outcome.symbols.iter().map(|s| s.symbol.as_str()).collect();
    let mut expected = spot_universe();
    expected.sort();
    assert_eq!(names, expected);

    // Each file once, and only the files the lives need: no month before listing or after
    // delisting is asked for.
    let zips = zip_counts(&env);
    assert!(zips.values().all(|&n| n == 1), "{zips:?}");
    assert_eq!(zips.len(), minimum_zips());
    assert!(
        !zips
            .keys()
            .any(|z| z.contains("GONEUSDT") && (z.contains("2024-06") || z.contains("2024-05-21")))
    );
    assert!(
        !zips
            .keys()
            .any(|z| z.contains("NEWCOINUSDT")
                && (z.contains("2024-03-14") || z.contains("2024-02")))
    );
    let files: u64 = outcome.symbols.iter().map(|s| s.files).sum();
    assert_eq!(files as usize, minimum_zips(), "files reported");
    let gone = outcome
        .symbols
        .iter()
        .find(|s| s.symbol.as_str() == "GONEUSDT")
        .unwrap();
    assert_eq!(gone.range, Some(range(t(FROM), t("2024-05-21"))));
    let rows: u64 = outcome.symbols.iter().map(|s| s.rows).sum();
    assert_cache_is_the_truth(&env, &spot_universe()).await;

    // A second sync: everything from the cache, not one archive request.
    let before = env.emu.request_log().len();
    let again = env.m.sync(request("*USDT"), &token).await.unwrap();
    assert!(again.is_complete());
    let later: Vec<String> = env.emu.request_log()[before..]
        .iter()
        .map(|l| l.path.clone())
        .collect();
    assert!(!later.iter().any(|p| p.starts_with("/data/")), "{later:?}");
    assert_eq!(again.symbols.iter().map(|s| s.files).sum::<u64>(), 0);
    assert_eq!(
        again.symbols.iter().map(|s| s.cache_rows).sum::<u64>(),
        rows
    );
}

#[tokio::test]
async fn two_shards_split_the_work_and_a_rerun_finds_it_all_done() {
    let env = setup_universe().await;
    let token = CancellationToken::new();
    let mut per_shard = Vec::new();
    for k in 1..=2 {
        let before = env.zips().len();
        let mut req = request("all");
        req.shard = Some(Shard::new(k, 2).unwrap());
        let outcome = env.m.sync(req, &token).await.unwrap();
        assert!(outcome.is_complete());
        per_shard.push(env.zips().len() - before);
    }
    // Both shards did a real share, together each file once, as one unsharded sync would.
    assert!(
        per_shard.iter().all(|&n| n > minimum_zips() / 4),
        "{per_shard:?}"
    );
    let zips = zip_counts(&env);
    assert!(zips.values().all(|&n| n == 1), "{zips:?}");
    assert_eq!(zips.len(), minimum_zips());
    // The unsharded rerun has nothing left to download.
    let outcome = env.m.sync(request("all"), &token).await.unwrap();
    assert!(outcome.is_complete());
    assert_eq!(env.zips().len(), minimum_zips());
    assert_cache_is_the_truth(&env, &spot_universe()).await;
}

#[tokio::test]
async fn a_sync_stopped_halfway_resumes_and_downloads_each_file_once_in_total() {
    let env = setup_with(
        NOW,
        |c| c,
        |c| dsm::ManagerConfig {
            vision_concurrency: 1,
            ..c
        },
    )
    .await;
    let token = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let mut req = request("SYM0*");
    let (stop, count) = (token.clone(), done.clone());
    req.progress = Some(Arc::new(move |p: &SyncProgress| {
        if let SyncProgress::UnitDone { .. } = p
            && count.fetch_add(1, Ordering::SeqCst) + 1 == 50
        {
            stop.cancel();
        }
    }));
    let e = env.m.sync(req, &token).await.unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    let first = env.zips().len();
    assert!(
        (50..9 * 11).contains(&first),
        "stopped halfway: {first} files"
    );

    let outcome = env
        .m
        .sync(request("SYM0*"), &CancellationToken::new())
        .await
        .unwrap();
    assert!(outcome.is_complete());
    let zips = zip_counts(&env);
    assert_eq!(zips.len(), 9 * 11, "SYM01..SYM09, eleven months");
    assert!(zips.values().all(|&n| n == 1), "{zips:?}");
    // The archive was asked about the lives of the matching symbols alone.
    let about_gone = env
        .emu
        .request_log()
        .iter()
        .filter(|l| l.query.contains("GONEUSDT") || l.path.contains("GONEUSDT"))
        .count();
    assert_eq!(about_gone, 0);
}

#[tokio::test]
async fn a_failing_symbol_never_stops_the_others() {
    let env = setup_with(
        NOW,
        |c| {
            c.with_fault(
                "status500@/data/spot/monthly/klines/SYM03USDT/*"
                    .parse()
                    .unwrap(),
            )
        },
        |c| c,
    )
    .await;
    let mut req = request("SYM0[1-5]USDT");
    req.source = Some(SourcePolicy::Vision);
    let outcome = env.m.sync(req, &CancellationToken::new()).await.unwrap();
    let bad: Vec<&str> = outcome
        .symbols
        .iter()
        .filter(|s| !s.is_complete())
        .map(|s| s.symbol.as_str())
        .collect();
    assert_eq!(bad, ["SYM03USDT"]);
    let sym03 = &outcome.symbols[2];
    assert!(
        sym03
            .failures
            .iter()
            .all(|f| f.category == ErrorCategory::Upstream && f.message.contains("SYM03USDT")),
        "{:?}",
        sym03.failures
    );
    assert_eq!(outcome.failure_category(), Some(ErrorCategory::Upstream));
    assert_cache_is_the_truth(
        &env,
        &[
            "SYM01USDT".into(),
            "SYM02USDT".into(),
            "SYM04USDT".into(),
            "SYM05USDT".into(),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_list_of_globs_syncs_every_symbol_matching_any_of_them() {
    let env = setup(NOW).await;
    let mut req = request("SYM0[12]USDT, ETH*,BTCUSDT,BTC*");
    req.range = range(t("2024-03-01"), t("2024-05-01"));
    let outcome = env.m.sync(req, &CancellationToken::new()).await.unwrap();
    assert!(outcome.is_complete());
    let mut got: Vec<&str> = outcome.symbols.iter().map(|s| s.symbol.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["BTCUSDT", "ETHUSDT", "SYM01USDT", "SYM02USDT"]);
    // Two monthly files each, every symbol once.
    let zips = zip_counts(&env);
    assert_eq!(zips.len(), 4 * 2, "{zips:?}");
    assert!(zips.values().all(|&n| n == 1), "{zips:?}");
}

#[tokio::test]
async fn unknown_symbols_and_bad_shards_fail_before_any_download() {
    let env = setup(NOW).await;
    let e = env
        .m
        .sync(request("BTCUSDT,NOSUCHUSDT"), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Input);
    assert!(e.to_string().contains("NOSUCHUSDT"), "{e}");
    assert!(env.zips().is_empty());
    for bad in ["0/2", "3/2", "1/0", "1-2", "a/b"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    let e = Universe::parse("[", Market::Spot, DataKind::Klines).unwrap_err();
    assert!(e.to_string().contains("glob"), "{e}");
    // Each glob of a list must match a symbol: the one that matches none is named.
    let e = env
        .m
        .sync(request("SYM0*,NOSUCH*"), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Input);
    assert!(e.to_string().contains("\"NOSUCH*\""), "{e}");
    assert!(env.zips().is_empty());
    // Before any request: a kind the market lacks.
    let mut req = request("all");
    req.kind = DataKind::FundingRate;
    req.interval = None;
    assert_eq!(
        env.m
            .sync(req, &CancellationToken::new())
            .await
            .unwrap_err()
            .category(),
        ErrorCategory::Input
    );
    assert!(
        env.emu
            .request_log()
            .iter()
            .all(|l| !l.path.starts_with("/data/")
                || l.path.ends_with('/')
                || l.query.contains("prefix"))
    );
}

#[tokio::test]
async fn the_recent_edge_comes_from_rest_and_a_later_sync_extends_it() {
    // The emulator's clock is 2024-12-10 00:00: November is a monthly file, December's first
    // days are daily files, and the days not yet published come from REST.
    let env = setup(NOW).await;
    let mut req = request("SYM07USDT");
    req.range = range(t("2024-11-01"), t(NOW));
    let outcome = env
        .m
        .sync(req.clone(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{:?}", outcome.symbols);
    let s = &outcome.symbols[0];
    assert!(s.rest.requests > 0 && s.rest.rows > 0, "{s:?}");
    assert!(
        s.files >= 8,
        "November's file and December's published days: {s:?}"
    );
    let truth = env.emu.klines(
        dsm_emulator::Market::Spot,
        dsm_emulator::KlineKind::Klines,
        "SYM07USDT",
        "1h",
        t("2024-11-01"),
        t(NOW),
    );
    assert_eq!(s.rows as usize, truth.len());
    let mut get = Request::klines(Market::Spot, sym("SYM07USDT"), Interval::H1, req.range);
    get.source = Some(SourcePolicy::Cache);
    let b = concat(one(&env.m.get(get).await.unwrap()));
    assert_eq!(
        b.num_rows(),
        truth.len(),
        "all of it cached, the REST edge too"
    );

    // A day later the same sync asks only for the new day.
    env.emu.set_now(dt_of(t("2024-12-11")));
    let before = env.emu.request_log().len();
    req.range = range(t("2024-11-01"), t("2024-12-11"));
    let later = env.m.sync(req, &CancellationToken::new()).await.unwrap();
    assert!(later.is_complete());
    assert_eq!(later.symbols[0].rows as usize, truth.len() + 24);
    let zips_after: Vec<String> = env.emu.request_log()[before..]
        .iter()
        .filter(|l| l.path.ends_with(".zip"))
        .map(|l| l.path.clone())
        .collect();
    assert!(
        zips_after.iter().all(|z| z.contains("2024-12-")),
        "{zips_after:?}"
    );
}

fn dt_of(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, ms).unwrap()
}
