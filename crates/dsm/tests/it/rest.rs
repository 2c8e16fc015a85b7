//! The REST client against the in-process emulator: completeness across pages and markets, the
//! open candle, faults, the 429/418 regime, the weight budget and cancellation.
//!
//! Expected rows come from the emulator's truth accessors (`Emulator::klines` / `funding`), an
//! implementation independent of both the emulator's REST handlers and dsm.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use crate::support::{DAY, MIN, emu_kind, emu_market};

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeZone, Utc};
use dsm::rest::{RestClient, RestConfig, RestData, RestError};
use dsm::{DataKind, Dataset, ErrorCategory, Interval, Market, Symbol, TimeRange};
use dsm_emulator::{Emulator, EmulatorConfig, Fault, RateLimits};
use tokio_util::sync::CancellationToken;

fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
    t(y, m, d, h).timestamp_millis()
}

/// Emulator clock: 2024-03-01 12:00:30 UTC (30 s into a minute candle).
fn emu_now() -> DateTime<Utc> {
    t(2024, 3, 1, 12) + chrono::TimeDelta::seconds(30)
}

async fn emulator(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(cfg.with_now(emu_now()))
        .await
        .expect("emulator starts")
}

fn config(emu: &Emulator) -> RestConfig {
    RestConfig {
        pace: dsm::Pace {
            silence: Duration::from_millis(400),
            ..dsm::Pace::default()
        },
        connect_timeout: Duration::from_secs(2),
        retries: 3,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        // The documented limits, not the server's: the tests count every request.
        learn_limits: false,
        ..RestConfig::with_base_url(&emu.base_url())
    }
}

fn client(emu: &Emulator) -> RestClient {
    RestClient::new(config(emu)).expect("client")
}

type Row = (i64, f64, f64, f64, f64, f64, i64, f64, i64, f64, f64);

fn col<T: Clone + 'static>(b: &RecordBatch, name: &str) -> T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("type of {name}"))
        .clone()
}

fn rows(b: &RecordBatch) -> Vec<Row> {
    let ts = |n| col::<TimestampMillisecondArray>(b, n);
    let f = |n| col::<Float64Array>(b, n);
    let (ot, ct) = (ts("open_time"), ts("close_time"));
    let (o, h, l, c, v) = (f("open"), f("high"), f("low"), f("close"), f("volume"));
    let (qv, tbv, tbq) = (
        f("quote_volume"),
        f("taker_buy_volume"),
        f("taker_buy_quote_volume"),
    );
    let n = col::<Int64Array>(b, "count");
    (0..b.num_rows())
        .map(|i| {
            (
                ot.value(i),
                o.value(i),
                h.value(i),
                l.value(i),
                c.value(i),
                v.value(i),
                ct.value(i),
                qv.value(i),
                n.value(i),
                tbv.value(i),
                tbq.value(i),
            )
        })
        .collect()
}

fn truth(
    emu: &Emulator,
    market: Market,
    kind: DataKind,
    symbol: &str,
    interval: Interval,
    start: i64,
    end: i64,
) -> Vec<Row> {
    emu.klines(
        emu_market(market),
        emu_kind(kind),
        symbol,
        interval.as_str(),
        start,
        end,
    )
    .into_iter()
    .map(|k| {
        (
            k.open_time,
            k.open,
            k.high,
            k.low,
            k.close,
            k.volume,
            k.close_time,
            k.quote_volume,
            k.count,
            k.taker_buy_volume,
            k.taker_buy_quote_volume,
        )
    })
    .collect()
}

async fn klines(
    c: &RestClient,
    market: Market,
    kind: DataKind,
    symbol: &str,
    interval: Interval,
    start: i64,
    end: i64,
) -> Result<RestData, RestError> {
    c.klines(
        // Assembled by hand, unchecked: the client itself must refuse what the market lacks.
        &Dataset {
            market,
            kind,
            symbol: Symbol::new(symbol).unwrap(),
            interval: Some(interval),
        },
        TimeRange::new(start, end).unwrap(),
        &CancellationToken::new(),
    )
    .await
}

/// A candle series, checked.
fn series(market: Market, kind: DataKind, symbol: &str, interval: Interval) -> Dataset {
    Dataset::new(market, kind, Symbol::new(symbol).unwrap(), Some(interval)).unwrap()
}

/// Fetches `dataset` and compares every field with the emulator's truth for `truth_symbol` (the
/// pair, for index prices); returns the data.
async fn check(
    emu: &Emulator,
    c: &RestClient,
    dataset: &Dataset,
    truth_symbol: &str,
    start: i64,
    end: i64,
) -> RestData {
    let Dataset {
        market,
        kind,
        ref symbol,
        interval,
    } = *dataset;
    let interval = interval.unwrap();
    let data = c
        .klines(
            dataset,
            TimeRange::new(start, end).unwrap(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{market} {kind} {symbol} {interval}: {e}"));
    let want = truth(emu, market, kind, truth_symbol, interval, start, end);
    let got = rows(&data.batch);
    assert_eq!(
        got.len(),
        want.len(),
        "{market} {kind} {symbol} {interval}: row count"
    );
    assert_eq!(got, want, "{market} {kind} {symbol} {interval}: rows");
    assert_eq!(data.batch.schema(), dsm::schema::schema(market, kind));
    data
}

fn kline_requests(emu: &Emulator, path: &str) -> usize {
    emu.request_log().iter().filter(|r| r.path == path).count()
}

#[tokio::test]
async fn spot_off_grid_range_over_three_pages_is_complete() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    // 2500 candles, start and end off the minute grid: the candle containing the start is not in
    // the range (its open is before it), the one containing the end is.
    let start = ms(2024, 1, 10, 0) + 30_000;
    let end = start + 2500 * MIN;
    let data = check(
        &emu,
        &c,
        &series(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1),
        "BTCUSDT",
        start,
        end,
    )
    .await;
    assert_eq!(data.batch.num_rows(), 2500);
    assert!(data.open_candle.is_none());
    assert_eq!(kline_requests(&emu, "/api/v3/klines"), 3);
    assert_eq!(data.requests, 4, "3 pages and one /time");
    assert_eq!(data.weight, 3 * 2 + 1);
    assert!(data.bytes > 0);
    let server = data.server_time.expect("klines read the server time");
    let now = emu_now().timestamp_millis();
    assert!(
        server >= now && server < now + 60_000,
        "emulator clock, not ours"
    );
}

#[tokio::test]
async fn usd_m_pages_hold_1500_and_hours_and_months_are_complete() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    let start = ms(2024, 1, 1, 0);
    check(
        &emu,
        &c,
        &series(Market::UsdM, DataKind::Klines, "BTCUSDT", Interval::M1),
        "BTCUSDT",
        start,
        start + 3001 * MIN,
    )
    .await;
    assert_eq!(kline_requests(&emu, "/fapi/v1/klines"), 3);
    check(
        &emu,
        &c,
        &series(Market::UsdM, DataKind::Klines, "ETHUSDT", Interval::H1),
        "ETHUSDT",
        ms(2023, 1, 1, 0) + 1,
        ms(2024, 2, 1, 5) + 1,
    )
    .await;
    // Months step the calendar.
    check(
        &emu,
        &c,
        &series(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::Mo1),
        "BTCUSDT",
        ms(2017, 1, 1, 0),
        ms(2024, 3, 1, 0),
    )
    .await;
}

#[tokio::test]
async fn coin_m_long_ranges_follow_the_200_day_rule() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    // ~3.5 years of 1d candles: windows of 200 days; each COIN-M answer is the *last* `limit`
    // candles of its window, so a window larger than its limit would lose candles.
    let d = check(
        &emu,
        &c,
        &series(Market::CoinM, DataKind::Klines, "BTCUSD_PERP", Interval::D1),
        "BTCUSD_PERP",
        ms(2020, 8, 1, 0),
        ms(2024, 3, 1, 0),
    )
    .await;
    assert!(d.batch.num_rows() > 1200);
    assert!(
        emu.request_log().iter().all(|r| r.status == 200),
        "no window over 200 days was sent"
    );
    check(
        &emu,
        &c,
        &series(Market::CoinM, DataKind::Klines, "ETHUSD_PERP", Interval::H4),
        "ETHUSD_PERP",
        ms(2022, 6, 1, 3),
        ms(2024, 2, 20, 0),
    )
    .await;
    check(
        &emu,
        &c,
        &series(Market::CoinM, DataKind::Klines, "BTCUSD_PERP", Interval::W1),
        "BTCUSD_PERP",
        ms(2020, 8, 1, 0),
        ms(2024, 3, 1, 0),
    )
    .await;
    check(
        &emu,
        &c,
        &series(Market::CoinM, DataKind::Klines, "BTCUSD_PERP", Interval::M1),
        "BTCUSD_PERP",
        ms(2024, 2, 1, 0) + 7,
        ms(2024, 2, 3, 0) + 7,
    )
    .await;
}

#[tokio::test]
async fn mark_index_and_premium_klines_of_both_futures_markets() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    let (start, end) = (ms(2024, 2, 1, 0), ms(2024, 2, 3, 0) + 30 * MIN);
    for (market, symbol, pair) in [
        (Market::UsdM, "BTCUSDT", "BTCUSDT"),
        (Market::CoinM, "BTCUSD_PERP", "BTCUSD"),
    ] {
        for kind in [
            DataKind::MarkPriceKlines,
            DataKind::IndexPriceKlines,
            DataKind::PremiumIndexKlines,
        ] {
            let truth_symbol = if kind == DataKind::IndexPriceKlines {
                pair
            } else {
                symbol
            };
            check(
                &emu,
                &c,
                &series(market, kind, symbol, Interval::M5),
                truth_symbol,
                start,
                end,
            )
            .await;
        }
    }
    let index_queries: Vec<String> = emu
        .request_log()
        .into_iter()
        .filter(|r| r.path.ends_with("/indexPriceKlines"))
        .map(|r| r.query)
        .collect();
    assert!(index_queries.iter().any(|q| q.contains("pair=BTCUSD&")));
    assert!(index_queries.iter().all(|q| q.contains("pair=")));
}

#[tokio::test]
async fn funding_rates_of_both_futures_markets() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    for (market, symbol) in [(Market::UsdM, "BTCUSDT"), (Market::CoinM, "BTCUSD_PERP")] {
        let (start, end) = (ms(2022, 12, 31, 23), ms(2024, 2, 15, 0));
        let data = c
            .funding(
                market,
                &Symbol::new(symbol).unwrap(),
                TimeRange::new(start, end).unwrap(),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        let want = emu.funding(emu_market(market), symbol, start, end);
        assert!(want.len() > 1000, "more than one page");
        let b = &data.batch;
        assert_eq!(
            b.schema(),
            dsm::schema::schema(market, DataKind::FundingRate)
        );
        assert_eq!(b.num_rows(), want.len(), "{market}");
        let times = col::<TimestampMillisecondArray>(b, "funding_time");
        let rates = col::<Float64Array>(b, "funding_rate");
        let hours = col::<Int32Array>(b, "funding_interval_hours");
        let mark = col::<Float64Array>(b, "mark_price");
        for (i, w) in want.iter().enumerate() {
            assert_eq!(times.value(i), w.funding_time, "{market} row {i}");
            assert_eq!(rates.value(i), w.funding_rate, "{market} row {i}");
            // REST does not say the interval: the spacing of the records shows it, first row too.
            assert!(hours.is_valid(i), "{market} row {i}: no interval");
            assert_eq!(hours.value(i), w.funding_interval_hours, "{market} row {i}");
            let got = mark.is_valid(i).then(|| mark.value(i));
            assert_eq!(got, w.mark_price, "{market} row {i}: mark price");
        }
        assert!(data.open_candle.is_none());
    }
}

#[tokio::test]
async fn empty_future_and_before_listing_ranges_return_empty() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    // Before BTCUSDT spot was listed (2017-08-17).
    let d = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::H1,
        ms(2017, 1, 1, 0),
        ms(2017, 2, 1, 0),
    )
    .await
    .unwrap();
    assert_eq!(d.batch.num_rows(), 0);
    // In the future of the emulator clock: no page is requested at all.
    emu.clear_log();
    let d = klines(
        &c,
        Market::UsdM,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 3, 2, 0),
        ms(2024, 3, 3, 0),
    )
    .await
    .unwrap();
    assert_eq!(d.batch.num_rows(), 0);
    assert!(d.open_candle.is_none());
    assert_eq!(kline_requests(&emu, "/fapi/v1/klines"), 0);
    // An exchange downtime (no candles): empty, not an error.
    emu.add_fault(Fault::gap(
        t(2024, 2, 1, 0),
        t(2024, 2, 1, 6),
        Some("BTCUSDT"),
    ));
    let d = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 2, 1, 1),
        ms(2024, 2, 1, 5),
    )
    .await
    .unwrap();
    assert_eq!(d.batch.num_rows(), 0);
    // A range over the gap's edge has only the candles outside it.
    check(
        &emu,
        &c,
        &series(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1),
        "BTCUSDT",
        ms(2024, 2, 1, 5),
        ms(2024, 2, 1, 7),
    )
    .await;
}

#[tokio::test]
async fn the_open_candle_is_returned_apart() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    let now = emu_now().timestamp_millis();
    for (market, symbol, interval) in [
        (Market::Spot, "BTCUSDT", Interval::M1),
        (Market::UsdM, "BTCUSDT", Interval::H1),
        (Market::CoinM, "BTCUSD_PERP", Interval::M15),
    ] {
        let start = now - 3 * DAY;
        let data = check(
            &emu,
            &c,
            &series(market, DataKind::Klines, symbol, interval),
            symbol,
            start,
            now + DAY,
        )
        .await;
        let open = data
            .open_candle
            .unwrap_or_else(|| panic!("{market} {interval}: the open candle is marked"));
        assert_eq!(open.open_time, interval.floor(now), "{market} {interval}");
        assert!(open.close_time >= data.server_time.unwrap());
        let last = rows(&data.batch).last().unwrap().0;
        assert_eq!(
            interval.next(last),
            open.open_time,
            "closed rows end before it"
        );
    }
}

#[tokio::test]
async fn duplicated_rows_from_the_server_are_removed() {
    let emu = emulator(
        EmulatorConfig::default()
            .with_fault("duplicate-rows@/api/v3/klines".parse().unwrap())
            .with_fault("duplicate-rows@/fapi/v1/fundingRate".parse().unwrap()),
    )
    .await;
    let c = client(&emu);
    check(
        &emu,
        &c,
        &series(Market::Spot, DataKind::Klines, "ETHUSDT", Interval::M1),
        "ETHUSDT",
        ms(2024, 1, 1, 0),
        ms(2024, 1, 2, 0),
    )
    .await;
    let (start, end) = (ms(2023, 1, 1, 0), ms(2023, 3, 1, 0));
    let f = c
        .funding(
            Market::UsdM,
            &Symbol::new("BTCUSDT").unwrap(),
            TimeRange::new(start, end).unwrap(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        f.batch.num_rows(),
        emu.funding(dsm_emulator::Market::Um, "BTCUSDT", start, end)
            .len()
    );
}

#[tokio::test]
async fn transient_failures_are_retried() {
    for fault in [
        "status500@/api/v3/klines#2",
        "reset@/api/v3/klines#1",
        "truncate@/api/v3/klines#1",
        "hang@/api/v3/klines#1",
        "status500@/api/v3/time#1",
    ] {
        let emu = emulator(EmulatorConfig::default().with_fault(fault.parse().unwrap())).await;
        let c = client(&emu);
        let started = std::time::Instant::now();
        check(
            &emu,
            &c,
            &series(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1),
            "BTCUSDT",
            ms(2024, 1, 1, 0),
            ms(2024, 1, 1, 0) + 1500 * MIN,
        )
        .await;
        // One /time and two pages, plus the failed attempt(s) that were retried.
        assert!(
            emu.request_log().len() > 3,
            "{fault}: the fault fired and was retried"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{fault}: retried promptly"
        );
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn persistent_failures_fail_the_whole_call() {
    let emu =
        emulator(EmulatorConfig::default().with_fault("status500@/api/v3/klines".parse().unwrap()))
            .await;
    let c = client(&emu);
    let e = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 2, 0),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RestError::Api { status: 500, .. }), "{e}");
    assert_eq!(e.category(), ErrorCategory::Upstream);
    emu.clear_faults();
    emu.add_fault("hang@/api/v3/klines".parse().unwrap());
    let e = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 1, 1),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RestError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn a_429_is_waited_out_then_the_call_succeeds() {
    let emu = emulator(
        EmulatorConfig::default()
            .with_rate_limits(RateLimits {
                retry_after: Some(Duration::from_secs(1)),
                ..RateLimits::default()
            })
            .with_fault("status429@/api/v3/klines#1".parse().unwrap()),
    )
    .await;
    let c = client(&emu);
    let started = std::time::Instant::now();
    check(
        &emu,
        &c,
        &series(Market::Spot, DataKind::Klines, "BTCUSDT", Interval::M1),
        "BTCUSDT",
        ms(2024, 1, 1, 0),
        ms(2024, 1, 1, 12),
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After of 1 s honoured, took {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "took {waited:?}");
    let statuses: Vec<u16> = emu.request_log().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429));
    assert!(!statuses.contains(&418));
}

#[tokio::test]
async fn a_418_bans_the_market_and_nothing_more_is_sent_to_it() {
    let emu = emulator(
        EmulatorConfig::default().with_fault("status418@/fapi/v1/klines#1".parse().unwrap()),
    )
    .await;
    let c = client(&emu);
    let e = klines(
        &c,
        Market::UsdM,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 2, 0), // one page, so no other page is in flight when the 418 arrives
    )
    .await
    .unwrap_err();
    let RestError::Banned { market, until_ms } = e else {
        panic!("expected Banned, got {e}");
    };
    assert_eq!(market, Market::UsdM);
    assert!(until_ms > dsm::time::now_ms());
    assert_eq!(dsm::Error::from(e).category(), ErrorCategory::Upstream);
    let banned_at = emu.request_log().len();
    // Further calls to USD-M fail at once, without a request (funding included), from a clone too.
    let clone = c.clone();
    for _ in 0..3 {
        let e = klines(
            &clone,
            Market::UsdM,
            DataKind::MarkPriceKlines,
            "BTCUSDT",
            Interval::M1,
            ms(2024, 1, 1, 0),
            ms(2024, 1, 2, 0),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, RestError::Banned { .. }), "{e}");
    }
    let e = c
        .funding(
            Market::UsdM,
            &Symbol::new("BTCUSDT").unwrap(),
            TimeRange::new(ms(2024, 1, 1, 0), ms(2024, 2, 1, 0)).unwrap(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Banned { .. }), "{e}");
    let log = emu.request_log();
    assert_eq!(
        log[banned_at..]
            .iter()
            .filter(|r| r.path.starts_with("/fapi/"))
            .count(),
        0,
        "no request to the banned market"
    );
    // Other markets are not banned.
    klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 1, 1),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_symbol_and_interval_are_typed_errors() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    let e = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "NOSUCHUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 2, 0),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, RestError::InvalidSymbol { market: Market::Spot, symbol } if symbol == "NOSUCHUSDT"),
        "{e}"
    );
    assert_eq!(dsm::Error::from(e).category(), ErrorCategory::Unavailable);
    let e = c
        .funding(
            Market::CoinM,
            &Symbol::new("XRPUSD_PERP").unwrap(),
            TimeRange::new(ms(2024, 1, 1, 0), ms(2024, 1, 2, 0)).unwrap(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::InvalidSymbol { .. }), "{e}");
    // 1s candles exist on spot only: rejected before any request.
    let before = emu.request_log().len();
    let e = klines(
        &c,
        Market::UsdM,
        DataKind::Klines,
        "BTCUSDT",
        Interval::S1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 2, 0),
    )
    .await
    .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Input, "{e}");
    assert_eq!(emu.request_log().len(), before);
}

#[tokio::test]
async fn a_burst_of_concurrent_calls_stays_within_the_weight_budget() {
    let window = Duration::from_secs(1);
    let limit = 24;
    let emu = emulator(EmulatorConfig::default().with_rate_limits(RateLimits {
        spot_weight_limit: limit,
        window,
        retry_after: Some(Duration::from_secs(1)),
        ban: Duration::from_secs(10),
        ..RateLimits::default()
    }))
    .await;
    let c = RestClient::new(RestConfig {
        spot_weight_per_minute: limit,
        weight_window: window,
        max_concurrent_pages: 8,
        ..config(&emu)
    })
    .unwrap();
    // 8 symbols × (3 pages × 2 + 1) = 56 weight: at least three windows' worth.
    let start = ms(2024, 1, 1, 0);
    let end = start + 2100 * MIN;
    let symbols: Vec<String> = (1..=8).map(|i| format!("SYM{i:02}USDT")).collect();
    let started = std::time::Instant::now();
    let calls = symbols.iter().map(|s| {
        let c = c.clone();
        async move {
            (
                s.clone(),
                klines(
                    &c,
                    Market::Spot,
                    DataKind::Klines,
                    s,
                    Interval::M1,
                    start,
                    end,
                )
                .await,
            )
        }
    });
    let results = futures::future::join_all(calls).await;
    for (s, r) in results {
        let d = r.unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            rows(&d.batch),
            truth(
                &emu,
                Market::Spot,
                DataKind::Klines,
                &s,
                Interval::M1,
                start,
                end
            ),
            "{s}"
        );
    }
    let stats = emu.stats();
    assert_eq!(stats.requests_by_status.get(&429), None, "{stats:?}");
    assert_eq!(stats.requests_by_status.get(&418), None, "{stats:?}");
    assert_eq!(stats.total_requests, 8 * 4);
    assert!(
        started.elapsed() >= window,
        "56 weight in windows of 24 needs three windows, so two window boundaries"
    );
}

/// Waits until the emulator has no open connection and the runtime is back to `baseline` tasks.
async fn settles(emu: &Emulator, baseline: usize) -> (u64, usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..200 {
        let (conns, tasks) = (emu.stats().open_connections, metrics.num_alive_tasks());
        if conns == 0 && tasks <= baseline {
            return (conns, tasks);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (emu.stats().open_connections, metrics.num_alive_tasks())
}

#[tokio::test]
async fn cancellation_with_a_hung_server_is_prompt_and_leaves_nothing() {
    let emu =
        emulator(EmulatorConfig::default().with_fault("hang@/api/v3/klines".parse().unwrap()))
            .await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let c = RestClient::new(RestConfig {
        pace: dsm::Pace {
            silence: Duration::from_secs(30),
            ..dsm::Pace::default()
        },
        ..config(&emu)
    })
    .unwrap();
    let token = CancellationToken::new();
    let call = {
        let (c, token) = (c.clone(), token.clone());
        async move {
            let r = c
                .klines(
                    &Dataset::klines(Market::Spot, Symbol::new("BTCUSDT").unwrap(), Interval::M1),
                    TimeRange::new(ms(2024, 1, 1, 0), ms(2024, 1, 5, 0)).unwrap(),
                    &token,
                )
                .await;
            (r, std::time::Instant::now())
        }
    };
    let canceller = async {
        // Wait until the pages are hanging on the server, then cancel.
        while emu.request_log().iter().filter(|r| r.status == 0).count() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at = std::time::Instant::now();
        token.cancel();
        at
    };
    let ((result, returned), cancelled_at) = tokio::join!(call, canceller);
    assert!(matches!(result, Err(RestError::Cancelled)), "{result:?}");
    let took = returned.duration_since(cancelled_at);
    assert!(
        took < Duration::from_millis(100),
        "returned {took:?} after cancel"
    );
    drop(c);
    let (conns, tasks) = settles(&emu, baseline).await;
    assert_eq!(conns, 0, "no connection left open");
    assert!(tasks <= baseline, "{tasks} tasks alive, {baseline} before");

    // Dropping the future (a timeout) instead of cancelling leaves nothing either.
    let c = client(&emu);
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        klines(
            &c,
            Market::Spot,
            DataKind::Klines,
            "ETHUSDT",
            Interval::M1,
            ms(2024, 1, 1, 0),
            ms(2024, 1, 2, 0),
        ),
    )
    .await;
    assert!(r.is_err(), "the call hangs until dropped");
    drop(c);
    let (conns, tasks) = settles(&emu, baseline).await;
    assert_eq!(conns, 0, "no connection left open");
    assert!(tasks <= baseline, "{tasks} tasks alive, {baseline} before");
}

#[tokio::test]
async fn the_deadline_bounds_a_call() {
    let emu =
        emulator(EmulatorConfig::default().with_fault("hang@/api/v3/klines".parse().unwrap()))
            .await;
    let c = RestClient::new(RestConfig {
        pace: dsm::Pace {
            silence: Duration::from_secs(30),
            ..dsm::Pace::default()
        },
        deadline: Some(Duration::from_millis(300)),
        ..config(&emu)
    })
    .unwrap();
    let started = std::time::Instant::now();
    let e = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 2, 0),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RestError::DeadlineExceeded { .. }), "{e}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(500),
        "{took:?}"
    );
}

#[tokio::test]
async fn server_time_and_exchange_symbols() {
    let emu = emulator(EmulatorConfig::default()).await;
    let c = client(&emu);
    let cancel = CancellationToken::new();
    let now = c.server_time(Market::CoinM, &cancel).await.unwrap();
    assert!((now - emu_now().timestamp_millis()).abs() < 60_000);
    let cm = c.exchange_symbols(Market::CoinM, &cancel).await.unwrap();
    let perp = cm
        .iter()
        .find(|s| s.symbol == "BTCUSD_PERP")
        .expect("listed");
    assert_eq!(perp.status, "TRADING");
    assert_eq!(perp.pair.as_deref(), Some("BTCUSD"));
    assert_eq!(perp.onboard_date, Some(ms(2020, 8, 11, 0)));
    let spot = c.exchange_symbols(Market::Spot, &cancel).await.unwrap();
    assert!(spot.iter().any(|s| s.symbol == "ETHUSDT"));
    // exchangeInfo weighs 20 on spot, 1 on futures; /time 1.
    assert!(c.used_weight(Market::Spot) >= 20);
    assert!(c.used_weight(Market::CoinM) >= 2);
}

#[tokio::test]
async fn the_servers_weight_header_corrects_the_budget() {
    // Hour-long windows so that no window boundary falls inside the test.
    let window = Duration::from_secs(3600);
    let emu = emulator(EmulatorConfig::default().with_rate_limits(RateLimits {
        window,
        ..RateLimits::default()
    }))
    .await;
    let mine = RestClient::new(RestConfig {
        weight_window: window,
        ..config(&emu)
    })
    .unwrap();
    // Another process on the same IP spends weight this client does not know about.
    let other = RestClient::new(RestConfig {
        weight_window: window,
        ..config(&emu)
    })
    .unwrap();
    let cancel = CancellationToken::new();
    other.exchange_symbols(Market::Spot, &cancel).await.unwrap();
    assert_eq!(other.used_weight(Market::Spot), 20);
    mine.server_time(Market::Spot, &cancel).await.unwrap();
    assert_eq!(
        mine.used_weight(Market::Spot),
        21,
        "the X-MBX-USED-WEIGHT-1M header (20 + this request's 1) is adopted"
    );
    assert_eq!(emu.used_weight(dsm_emulator::Market::Spot), 21);
}

/// Aggregate trades of every market and spot trades, over a range that needs several pages:
/// an hour window to find the first trade, then `fromId` paging; every row equals the
/// exchange's, with its real weights.
#[tokio::test]
async fn agg_trades_and_spot_trades_page_by_id() {
    // ~2,000 trades an hour: an hour window holds more than one page.
    let emu = emulator(EmulatorConfig {
        trades_per_day: 48_000,
        ..EmulatorConfig::default()
    })
    .await;
    let c = client(&emu);
    let cancel = CancellationToken::new();
    let (start, end) = (ms(2024, 2, 29, 22) + 17 * MIN, ms(2024, 3, 1, 2));
    let range = TimeRange::new(start, end).unwrap();
    for (market, symbol) in [
        (Market::Spot, "BTCUSDT"),
        (Market::UsdM, "BTCUSDT"),
        (Market::CoinM, "BTCUSD_PERP"),
    ] {
        emu.clear_log();
        let sym = Symbol::new(symbol).unwrap();
        let data = c.agg_trades(market, &sym, range, &cancel).await.unwrap();
        let want = emu.agg_trades(emu_market(market), symbol, start, end);
        assert!(want.len() > 3_000, "{market}: several pages");
        let b = &data.batch;
        assert_eq!(b.schema(), dsm::schema::schema(market, DataKind::AggTrades));
        assert_eq!(b.num_rows(), want.len(), "{market}");
        let ids = col::<Int64Array>(b, "agg_trade_id");
        let first = col::<Int64Array>(b, "first_trade_id");
        let last = col::<Int64Array>(b, "last_trade_id");
        let price = col::<Float64Array>(b, "price");
        let qty = col::<Float64Array>(b, "quantity");
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                (
                    ids.value(i),
                    first.value(i),
                    last.value(i),
                    price.value(i),
                    qty.value(i)
                ),
                (w.agg_id, w.first_trade_id, w.last_trade_id, w.price, w.qty),
                "{market} row {i}"
            );
        }
        let log = emu.request_log();
        assert!(log.iter().all(|r| r.path.ends_with("/aggTrades")));
        // One time window, then ids: never a window longer than an hour.
        assert!(log[0].query.contains("startTime="), "{:?}", log[0]);
        assert!(
            log[1..].iter().all(|r| r.query.contains("fromId=")),
            "{log:?}"
        );
        let per = if market == Market::Spot { 4 } else { 20 };
        assert_eq!(data.weight, per * log.len() as u64, "{market}");
    }

    emu.clear_log();
    let sym = Symbol::new("BTCUSDT").unwrap();
    let data = c.trades(Market::Spot, &sym, range, &cancel).await.unwrap();
    let want = emu.trades(dsm_emulator::Market::Spot, "BTCUSDT", start, end);
    let b = &data.batch;
    assert_eq!(b.num_rows(), want.len());
    let ids = col::<Int64Array>(b, "id");
    let quote = col::<Float64Array>(b, "quote_qty");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            (ids.value(i), quote.value(i)),
            (w.id, w.quote_qty),
            "trade row {i}"
        );
    }
    let log = emu.request_log();
    assert!(log[0].path.ends_with("/aggTrades"));
    assert!(
        log[1..]
            .iter()
            .all(|r| r.path.ends_with("/historicalTrades"))
    );
    assert_eq!(data.weight, 4 + 25 * (log.len() as u64 - 1));

    // Futures trade history needs an API key: refused before any request.
    emu.clear_log();
    let e = c
        .trades(Market::UsdM, &sym, range, &cancel)
        .await
        .expect_err("futures trades");
    assert_eq!(e.category(), ErrorCategory::Input, "{e}");
    assert!(emu.request_log().is_empty());
}

/// The budget follows the limit the server states (300 per 10 s here, far below Binance's
/// documented 6000 per minute), learnt from one exchangeInfo request and remembered in the state
/// directory, so a second client (another process) does not ask again; a burst above it draws
/// no 429.
#[tokio::test]
async fn the_servers_stated_limit_is_learnt_once_and_followed() {
    let window = Duration::from_secs(10);
    let emu = emulator(EmulatorConfig::default().with_rate_limits(RateLimits {
        spot_weight_limit: 30,
        window,
        ban: Duration::from_secs(60),
        ..RateLimits::default()
    }))
    .await;
    let state = tempfile::tempdir().unwrap();
    let cfg = || RestConfig {
        learn_limits: true,
        state_dir: Some(state.path().to_path_buf()),
        ..config(&emu)
    };
    let c = RestClient::new(cfg()).unwrap();
    let cancel = CancellationToken::new();
    c.server_time(Market::Spot, &cancel).await.unwrap();
    assert_eq!(
        c.weight_limit(Market::Spot),
        (27, window),
        "90% of 30 per 10 s"
    );
    let other = RestClient::new(cfg()).unwrap();
    assert_eq!(other.weight_limit(Market::Spot), (27, window));
    other.server_time(Market::Spot, &cancel).await.unwrap();
    let asked = emu
        .request_log()
        .iter()
        .filter(|r| r.path.ends_with("/exchangeInfo"))
        .count();
    assert_eq!(asked, 1, "learnt once, then read from the state directory");
    // 20 (exchangeInfo) + 2 (time) used; 3 klines pages of weight 2 fit only in the next window.
    let started = std::time::Instant::now();
    let data = klines(
        &c,
        Market::Spot,
        DataKind::Klines,
        "BTCUSDT",
        Interval::M1,
        ms(2024, 1, 1, 0),
        ms(2024, 1, 1, 0) + 2500 * MIN,
    )
    .await
    .unwrap();
    assert_eq!(data.batch.num_rows(), 2500);
    let stats = emu.stats();
    assert_eq!(stats.requests_by_status.get(&429), None, "{stats:?}");
    assert_eq!(stats.requests_by_status.get(&418), None, "{stats:?}");
    assert!(started.elapsed() < Duration::from_secs(25));
}
