//! REST (spec §3): selection rules §3.3, response shape §3.4, weights/bans §3.5, errors §3.6.

use std::time::Duration;

use dsm_emulator::{EmulatorConfig, KlineKind, Market, RateLimits};
use serde_json::Value;

use crate::{get, get_bytes, json, ms, rows, start, t, unzip};

const MIN: i64 = 60_000;

async fn kl(base: &str, path: &str, q: &str) -> (u16, Value) {
    json(&format!("{base}{path}?{q}")).await
}

fn opens(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn spot_and_um_selection_rules() {
    // Clock at 12:30:30 on 2024-03-01.
    let now = t(2024, 3, 1, 12) + chrono::TimeDelta::seconds(30 * 60 + 30);
    let emu = start(EmulatorConfig::default().with_now(now)).await;
    let b = emu.base_url();
    let noon = ms(2024, 3, 1, 12);
    for (path, sym) in [
        ("/api/v3/klines", "BTCUSDT"),
        ("/fapi/v1/klines", "BTCUSDT"),
    ] {
        // None: the last 500, ending with the open candle.
        let (s, v) = kl(&b, path, &format!("symbol={sym}&interval=1m")).await;
        assert_eq!(s, 200);
        let o = opens(&v);
        assert_eq!(o.len(), 500);
        assert_eq!(
            *o.last().unwrap(),
            noon + 30 * MIN,
            "the open candle is last"
        );
        assert!(
            o.windows(2).all(|w| w[1] == w[0] + MIN),
            "ascending, contiguous"
        );
        // Start only, not on a boundary: rounds up.
        let (_, v) = kl(
            &b,
            path,
            &format!("symbol={sym}&interval=1m&startTime={}&limit=3", noon + 1),
        )
        .await;
        assert_eq!(opens(&v), vec![noon + MIN, noon + 2 * MIN, noon + 3 * MIN]);
        // End only, not on a boundary: includes the candle opened before it.
        let (_, v) = kl(
            &b,
            path,
            &format!("symbol={sym}&interval=1m&endTime={}&limit=2", noon + 1),
        )
        .await;
        assert_eq!(opens(&v), vec![noon - MIN, noon]);
        // Both: the first `limit`, inclusive bounds.
        let (_, v) = kl(
            &b,
            path,
            &format!(
                "symbol={sym}&interval=1m&startTime={noon}&endTime={}&limit=1000",
                noon + 5 * MIN
            ),
        )
        .await;
        assert_eq!(opens(&v).len(), 6);
        let (_, v) = kl(
            &b,
            path,
            &format!(
                "symbol={sym}&interval=1m&startTime={noon}&endTime={}&limit=2",
                noon + 5 * MIN
            ),
        )
        .await;
        assert_eq!(opens(&v), vec![noon, noon + MIN]);
        // start == end is allowed.
        let (_, v) = kl(
            &b,
            path,
            &format!("symbol={sym}&interval=1m&startTime={noon}&endTime={noon}"),
        )
        .await;
        assert_eq!(opens(&v), vec![noon]);
        // Nothing after now.
        let (_, v) = kl(
            &b,
            path,
            &format!("symbol={sym}&interval=1m&startTime={}", noon + 3_600_000),
        )
        .await;
        assert!(opens(&v).is_empty());
        // Seconds instead of ms: a valid request in 1970 → [].
        let (s, v) = kl(
            &b,
            path,
            &format!("symbol={sym}&interval=1m&startTime=1709294400&endTime=1709298000"),
        )
        .await;
        assert_eq!(s, 200);
        assert!(opens(&v).is_empty());
    }
    // start > end: spot [] vs futures -1023.
    let (s, v) = kl(
        &b,
        "/api/v3/klines",
        &format!(
            "symbol=BTCUSDT&interval=1m&startTime={}&endTime={noon}",
            noon + 1
        ),
    )
    .await;
    assert_eq!((s, v), (200, serde_json::json!([])));
    let (s, v) = kl(
        &b,
        "/fapi/v1/klines",
        &format!(
            "symbol=BTCUSDT&interval=1m&startTime={}&endTime={noon}",
            noon + 1
        ),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        serde_json::json!({"code": -1023, "msg": "Start time is greater than end time."})
    );
}

#[tokio::test]
async fn limits_are_defaulted_and_clamped() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 1, 0))).await;
    let b = emu.base_url();
    let s = ms(2024, 1, 1, 0);
    let (_, v) = kl(
        &b,
        "/api/v3/klines",
        &format!("symbol=ETHUSDT&interval=1m&startTime={s}&limit=5000"),
    )
    .await;
    assert_eq!(opens(&v).len(), 1000);
    let (_, v) = kl(
        &b,
        "/fapi/v1/klines",
        &format!("symbol=ETHUSDT&interval=1m&startTime={s}&limit=5000"),
    )
    .await;
    assert_eq!(opens(&v).len(), 1500);
    let (_, v) = kl(
        &b,
        "/fapi/v1/klines",
        &format!("symbol=ETHUSDT&interval=1m&startTime={s}"),
    )
    .await;
    assert_eq!(opens(&v).len(), 500);
    let (st, v) = kl(&b, "/api/v3/klines", "symbol=ETHUSDT&interval=1m&limit=0").await;
    assert_eq!(st, 400);
    assert_eq!(v["code"], -1130);
    let (st, v) = kl(&b, "/api/v3/klines", "symbol=ETHUSDT&interval=1m&limit=abc").await;
    assert_eq!(st, 400);
    assert_eq!(v["code"], -1100);
    assert_eq!(
        v["msg"],
        "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."
    );
}

#[tokio::test]
async fn error_catalogue() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 1, 0))).await;
    let b = emu.base_url();
    for (path, q, code, msg) in [
        (
            "/api/v3/klines",
            "symbol=NOPEUSDT&interval=1m",
            -1121,
            "Invalid symbol.",
        ),
        (
            "/dapi/v1/klines",
            "symbol=BTCUSDT&interval=1m",
            -1121,
            "Invalid symbol.",
        ),
        (
            "/fapi/v1/klines",
            "symbol=BTCUSDT&interval=1s",
            -1120,
            "Invalid interval.",
        ),
        (
            "/api/v3/klines",
            "symbol=BTCUSDT&interval=2m",
            -1120,
            "Invalid interval.",
        ),
        (
            "/api/v3/klines",
            "interval=1m",
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        ),
        (
            "/api/v3/klines",
            "symbol=btcusdt&interval=1m",
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        ),
        (
            "/fapi/v1/indexPriceKlines",
            "symbol=BTCUSDT&interval=1m",
            -1102,
            "Mandatory parameter 'pair' was not sent, was empty/null, or malformed.",
        ),
    ] {
        let (s, v) = kl(&b, path, q).await;
        assert_eq!(s, 400, "{path}?{q}");
        assert_eq!(
            v,
            serde_json::json!({"code": code, "msg": msg}),
            "{path}?{q}"
        );
    }
    // 1s is fine on spot.
    let (s, _) = kl(&b, "/api/v3/klines", "symbol=BTCUSDT&interval=1s&limit=3").await;
    assert_eq!(s, 200);
    assert_eq!(get(&format!("{b}/api/v3/nope")).await.status(), 404);
}

#[tokio::test]
async fn coin_m_returns_the_last_limit_of_a_200_day_window() {
    let now = t(2024, 3, 1, 0);
    let emu = start(EmulatorConfig::default().with_now(now)).await;
    let b = emu.base_url();
    let p = "/dapi/v1/klines";
    let s = ms(2024, 1, 1, 0);
    // Both bounds, 3000 candles in range, limit 1500: the LAST 1500.
    let e = s + 2999 * MIN;
    let (_, v) = kl(
        &b,
        p,
        &format!("symbol=BTCUSD_PERP&interval=1m&startTime={s}&endTime={e}&limit=1500"),
    )
    .await;
    let o = opens(&v);
    assert_eq!(o.len(), 1500);
    assert_eq!(*o.first().unwrap(), e - 1499 * MIN);
    assert_eq!(*o.last().unwrap(), e);
    // Start only: end = start + 200 d (capped by now); still the last `limit` of it.
    let (_, v) = kl(
        &b,
        p,
        &format!(
            "symbol=BTCUSD_PERP&interval=1d&startTime={}&limit=10",
            ms(2023, 1, 1, 0)
        ),
    )
    .await;
    let o = opens(&v);
    assert_eq!(*o.last().unwrap(), ms(2023, 1, 1, 0) + 200 * 86_400_000);
    // None: window ends now, the open candle last.
    let (_, v) = kl(&b, p, "symbol=BTCUSD_PERP&interval=1d&limit=3").await;
    assert_eq!(*opens(&v).last().unwrap(), ms(2024, 3, 1, 0));
    // End only: start = end − 200 d.
    let (_, v) = kl(
        &b,
        p,
        &format!(
            "symbol=BTCUSD_PERP&interval=1d&endTime={}&limit=1500",
            ms(2024, 1, 1, 0)
        ),
    )
    .await;
    assert_eq!(opens(&v).len(), 201);
    // More than 200 days: an error (knob).
    let (st, v) = kl(
        &b,
        p,
        &format!(
            "symbol=BTCUSD_PERP&interval=1d&startTime={}&endTime={}",
            ms(2023, 1, 1, 0),
            ms(2024, 1, 1, 0)
        ),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["code"], -1130);
    let mut cfg = EmulatorConfig::default().with_now(now);
    cfg.cm_window_error = false;
    let emu2 = start(cfg).await;
    let (st, v) = kl(
        &emu2.base_url(),
        p,
        &format!(
            "symbol=BTCUSD_PERP&interval=1d&startTime={}&endTime={}",
            ms(2023, 1, 1, 0),
            ms(2024, 1, 1, 0)
        ),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(opens(&v).len(), 201);
}

#[tokio::test]
async fn rest_equals_vision_equals_truth_for_closed_candles() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 10, 0))).await;
    let b = emu.base_url();
    let day = ms(2024, 3, 1, 0);
    for (market, kind, sym, path, seg, dt, pair_param) in [
        (
            Market::Um,
            KlineKind::Klines,
            "BTCUSDT",
            "/fapi/v1/klines",
            "futures/um",
            "klines",
            "symbol",
        ),
        (
            Market::Cm,
            KlineKind::Klines,
            "BTCUSD_PERP",
            "/dapi/v1/klines",
            "futures/cm",
            "klines",
            "symbol",
        ),
        (
            Market::Um,
            KlineKind::MarkPrice,
            "ETHUSDT",
            "/fapi/v1/markPriceKlines",
            "futures/um",
            "markPriceKlines",
            "symbol",
        ),
        (
            Market::Cm,
            KlineKind::IndexPrice,
            "BTCUSD",
            "/dapi/v1/indexPriceKlines",
            "futures/cm",
            "indexPriceKlines",
            "pair",
        ),
        (
            Market::Um,
            KlineKind::PremiumIndex,
            "BTCUSDT",
            "/fapi/v1/premiumIndexKlines",
            "futures/um",
            "premiumIndexKlines",
            "symbol",
        ),
        (
            Market::Spot,
            KlineKind::Klines,
            "SYM07USDT",
            "/api/v3/klines",
            "spot",
            "klines",
            "symbol",
        ),
    ] {
        let (s, zip) = get_bytes(&format!(
            "{b}/data/{seg}/daily/{dt}/{sym}/1h/{sym}-1h-2024-03-01.zip"
        ))
        .await;
        assert_eq!(s, 200, "{sym} {dt}");
        let file = rows(&unzip(&zip).1);
        assert_eq!(file.len(), 24);
        let (_, v) = kl(
            &b,
            path,
            &format!(
                "{pair_param}={sym}&interval=1h&startTime={day}&endTime={}",
                day + 86_400_000 - 1
            ),
        )
        .await;
        let rest = v.as_array().unwrap();
        assert_eq!(rest.len(), 24, "{sym} {dt}");
        let truth = emu.klines(market, kind, sym, "1h", day, day + 86_400_000);
        assert_eq!(truth.len(), 24);
        for ((f, r), k) in file.iter().zip(rest).zip(&truth) {
            assert_eq!(r[0].as_i64().unwrap().to_string(), f[0]);
            assert_eq!(r[6].as_i64().unwrap().to_string(), f[6]);
            assert_eq!(r[8].as_i64().unwrap().to_string(), f[8]);
            for i in [1, 2, 3, 4, 5, 7, 9, 10] {
                assert_eq!(r[i].as_str().unwrap(), f[i], "{sym} {dt} col {i}");
            }
            assert_eq!(r[11], "0");
            assert_eq!(k.open_time.to_string(), f[0]);
            assert_eq!(k.close_time.to_string(), f[6]);
            for (x, i) in [
                (k.open, 1),
                (k.high, 2),
                (k.low, 3),
                (k.close, 4),
                (k.volume, 5),
                (k.quote_volume, 7),
                (k.taker_buy_volume, 9),
                (k.taker_buy_quote_volume, 10),
            ] {
                assert_eq!(x, f[i].parse::<f64>().unwrap(), "{sym} {dt} col {i}");
            }
        }
    }
}

#[tokio::test]
async fn the_open_candle_is_partial_then_final() {
    let now = t(2024, 3, 1, 12) + chrono::TimeDelta::minutes(20);
    let emu = start(EmulatorConfig::default().with_now(now)).await;
    let b = emu.base_url();
    let q = format!(
        "symbol=BTCUSDT&interval=1h&startTime={}",
        ms(2024, 3, 1, 12)
    );
    let (_, v) = kl(&b, "/api/v3/klines", &q).await;
    let open = v[0].clone();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        open[6].as_i64().unwrap(),
        ms(2024, 3, 1, 13) - 1,
        "closeTime in the future"
    );
    assert!(
        emu.klines(
            Market::Spot,
            KlineKind::Klines,
            "BTCUSDT",
            "1h",
            ms(2024, 3, 1, 12),
            ms(2024, 3, 1, 13)
        )
        .is_empty()
    );
    emu.set_now(t(2024, 3, 1, 13));
    let (_, v) = kl(&b, "/api/v3/klines", &q).await;
    let fin = v[0].clone();
    assert_eq!(open[1], fin[1], "same open");
    assert_ne!(open[5], fin[5], "partial volume differs");
    let pv: f64 = open[5].as_str().unwrap().parse().unwrap();
    let fv: f64 = fin[5].as_str().unwrap().parse().unwrap();
    assert!(pv < fv);
    let truth = emu.klines(
        Market::Spot,
        KlineKind::Klines,
        "BTCUSDT",
        "1h",
        ms(2024, 3, 1, 12),
        ms(2024, 3, 1, 13),
    );
    assert_eq!(truth.len(), 1);
    assert_eq!(truth[0].volume, fv);
    assert_eq!(
        truth[0].close,
        fin[4].as_str().unwrap().parse::<f64>().unwrap()
    );
}

#[tokio::test]
async fn weights_and_headers() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 1, 0))).await;
    let b = emu.base_url();
    let w = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().parse::<u32>().unwrap())
    };
    let r = get(&format!(
        "{b}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1"
    ))
    .await;
    assert_eq!(w(&r, "x-mbx-used-weight-1m"), Some(2));
    assert_eq!(w(&r, "x-mbx-used-weight"), Some(2));
    let r = get(&format!("{b}/api/v3/exchangeInfo")).await;
    assert_eq!(w(&r, "x-mbx-used-weight-1m"), Some(22));
    let r = get(&format!("{b}/api/v3/ping")).await;
    assert_eq!(w(&r, "x-mbx-used-weight-1m"), Some(23));
    assert_eq!(emu.used_weight(Market::Spot), 23);
    let mut expected = 0;
    for (limit, weight) in [
        ("99", 1),
        ("100", 2),
        ("499", 2),
        ("", 5),
        ("1000", 5),
        ("1001", 10),
    ] {
        expected += weight;
        let q = if limit.is_empty() {
            String::new()
        } else {
            format!("&limit={limit}")
        };
        let r = get(&format!("{b}/fapi/v1/klines?symbol=BTCUSDT&interval=1m{q}")).await;
        assert_eq!(
            w(&r, "x-mbx-used-weight-1m"),
            Some(expected),
            "limit {limit}"
        );
        assert_eq!(
            w(&r, "x-mbx-used-weight"),
            None,
            "legacy header is spot only"
        );
    }
    let r = get(&format!("{b}/fapi/v1/exchangeInfo")).await;
    assert_eq!(w(&r, "x-mbx-used-weight-1m"), Some(expected + 1));
    let r = get(&format!("{b}/dapi/v1/time")).await;
    assert_eq!(w(&r, "x-mbx-used-weight-1m"), Some(1), "per-market windows");
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let server = v["serverTime"].as_i64().unwrap();
    assert!((server - ms(2024, 3, 1, 0)).abs() < 60_000);
}

#[tokio::test]
async fn over_the_limit_429_then_418_ban() {
    let limits = RateLimits {
        spot_weight_limit: 4,
        window: Duration::from_secs(3600),
        retry_after: Some(Duration::from_millis(100)),
        ban: Duration::from_millis(300),
        ..RateLimits::default()
    };
    let emu = start(
        EmulatorConfig::default()
            .with_now(t(2024, 3, 1, 0))
            .with_rate_limits(limits),
    )
    .await;
    let url = format!(
        "{}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1",
        emu.base_url()
    );
    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(get(&url).await.status(), 200);
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["code"], -1003);
    assert!(v["msg"].as_str().unwrap().starts_with(
        "Too much request weight used; current limit is 4 request weight per 1 MINUTE."
    ));
    // Ignoring Retry-After: banned, and everything on spot is 418 during the ban.
    let r = get(&url).await;
    assert_eq!(r.status(), 418);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(
        v["msg"].as_str().unwrap().contains("IP banned until "),
        "{v}"
    );
    assert_eq!(
        get(&format!("{}/api/v3/ping", emu.base_url()))
            .await
            .status(),
        418
    );
    // Futures are untouched.
    assert_eq!(
        get(&format!("{}/fapi/v1/ping", emu.base_url()))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The ban is over; the window still holds the weight: 429 again, not 418.
    assert_eq!(get(&url).await.status(), 429);
}

#[tokio::test]
async fn funding_history() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 1, 1))).await;
    let b = emu.base_url();
    let (_, v) = kl(&b, "/fapi/v1/fundingRate", "symbol=BTCUSDT").await;
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 100, "default limit 100, most recent");
    let last = v.last().unwrap()["fundingTime"].as_i64().unwrap();
    assert!(last >= ms(2024, 3, 1, 0) && last <= ms(2024, 3, 1, 0) + 13);
    assert!(v[0]["markPrice"].is_string());
    let s = ms(2024, 1, 1, 0);
    let (_, v) = kl(
        &b,
        "/fapi/v1/fundingRate",
        &format!("symbol=BTCUSDT&startTime={s}&limit=3"),
    )
    .await;
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 3);
    assert!(v[0]["fundingTime"].as_i64().unwrap() - s <= 13);
    let truth = emu.funding(Market::Um, "BTCUSDT", s, s + 86_400_000);
    assert_eq!(truth.len(), 3);
    assert_eq!(truth[1].funding_time, v[1]["fundingTime"].as_i64().unwrap());
    assert_eq!(
        truth[1].funding_rate,
        v[1]["fundingRate"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    );
    let (_, v) = kl(
        &b,
        "/dapi/v1/fundingRate",
        &format!("symbol=BTCUSD_PERP&startTime={s}&limit=2"),
    )
    .await;
    assert!(v[0].get("markPrice").is_none(), "CM has no markPrice");
    let (s2, v) = kl(&b, "/dapi/v1/fundingRate", "").await;
    assert_eq!(s2, 400);
    assert_eq!(v["code"], -1102);
    let (_, v) = kl(&b, "/dapi/v1/fundingRate", "symbol=BTCUSD_250627").await;
    assert_eq!(v, serde_json::json!([]));
}

#[tokio::test]
async fn exchange_info() {
    let emu = start(EmulatorConfig::default().with_now(t(2025, 3, 1, 0))).await;
    let b = emu.base_url();
    let (_, v) = kl(&b, "/api/v3/exchangeInfo", "").await;
    assert_eq!(v["timezone"], "UTC");
    let syms = v["symbols"].as_array().unwrap();
    // 23 symbols trading since 2019, NEWCOINUSDT (2024), and HALTUSDT, delisted but kept with
    // status BREAK; GONEUSDT, delisted, has left exchangeInfo.
    assert_eq!(syms.len(), 25);
    let status = |name: &str| {
        syms.iter()
            .find(|s| s["symbol"] == name)
            .map(|s| s["status"].clone())
    };
    assert_eq!(status("HALTUSDT"), Some(serde_json::json!("BREAK")));
    assert_eq!(status("NEWCOINUSDT"), Some(serde_json::json!("TRADING")));
    assert_eq!(status("GONEUSDT"), None);
    assert!(
        syms.iter().any(|s| s["symbol"] == "BTCUSDT"
            && s["status"] == "TRADING"
            && s["baseAsset"] == "BTC")
    );
    let (_, v) = kl(&b, "/api/v3/exchangeInfo", "symbol=ETHUSDT").await;
    assert_eq!(v["symbols"].as_array().unwrap().len(), 1);
    let (s, v) = kl(&b, "/api/v3/exchangeInfo", "symbol=NOPE").await;
    assert_eq!((s, v["code"].as_i64()), (400, Some(-1121)));
    let (_, v) = kl(&b, "/dapi/v1/exchangeInfo", "").await;
    let q = v["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "BTCUSD_250627")
        .unwrap()
        .clone();
    assert_eq!(q["deliveryDate"], ms(2025, 6, 27, 8));
    assert_eq!(q["contractSize"], 100);
    assert_eq!(q["contractStatus"], "TRADING");
    let (_, v) = kl(&b, "/fapi/v1/exchangeInfo", "").await;
    let p = v["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "BTCUSDT")
        .unwrap()
        .clone();
    assert_eq!(p["deliveryDate"], 4_133_404_800_000_i64);
    assert_eq!(p["contractType"], "PERPETUAL");
}

#[tokio::test]
async fn usd_m_statistics_serve_the_archives_metrics_for_30_days() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 10, 12))).await;
    let b = emu.base_url();
    let day = ms(2024, 3, 9, 0);
    let truth = emu.table(
        Market::Um,
        dsm_emulator::TableKind::Metrics,
        "BTCUSDT",
        day,
        day + 86_400_000,
    );
    assert_eq!(truth.len(), 288);
    let q = |extra: &str| format!("symbol=BTCUSDT&period=5m&startTime={day}&limit=500{extra}");
    let (s, v) = kl(&b, "/futures/data/openInterestHist", &q("")).await;
    assert_eq!(s, 200);
    let rows = v.as_array().unwrap();
    // Up to 500 points from the start: the day, then the next morning up to the clock (12:00
    // included).
    assert_eq!(rows.len(), 288 + 145);
    for (r, want) in rows.iter().zip(&truth) {
        assert_eq!(r["timestamp"].as_i64(), Some(want.time));
        assert_eq!(r["sumOpenInterest"].as_str(), Some(want.fields[1].as_str()));
        assert_eq!(
            r["sumOpenInterestValue"].as_str(),
            Some(want.fields[2].as_str())
        );
    }
    let (_, v) = kl(&b, "/futures/data/takerlongshortRatio", &q("")).await;
    assert_eq!(
        v[0]["buySellRatio"].as_str(),
        Some(truth[0].fields[6].as_str())
    );
    let (_, v) = kl(&b, "/futures/data/globalLongShortAccountRatio", &q("")).await;
    assert_eq!(
        v[0]["longShortRatio"].as_str(),
        Some(truth[0].fields[5].as_str())
    );
    // 30 days back only; 5-minute periods only; the symbol is required.
    let old = ms(2024, 2, 1, 0);
    let (s, v) = kl(
        &b,
        "/futures/data/openInterestHist",
        &format!(
            "symbol=BTCUSDT&period=5m&startTime={old}&endTime={}",
            old + 3_600_000
        ),
    )
    .await;
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(0)));
    let (s, _) = kl(
        &b,
        "/futures/data/openInterestHist",
        "symbol=BTCUSDT&period=1m",
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = kl(&b, "/futures/data/openInterestHist", "period=5m").await;
    assert_eq!(s, 400);
    emu.shutdown().await;
}
