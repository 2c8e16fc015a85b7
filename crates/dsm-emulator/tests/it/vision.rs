//! Synthetic Vision files: formats per market and era (spec §1.6–§2.4), row counts, headers,
//! publication gate (§1.10), listing/delivery bounds.

use dsm_emulator::{EmulatorConfig, KlineKind, Market};

use crate::{get, get_bytes, ms, rows, sha256_hex, start, start_default, t, unzip};

async fn zip_rows(base: &str, key: &str) -> (String, Vec<Vec<String>>, String) {
    let (s, b) = get_bytes(&format!("{base}/{key}")).await;
    assert_eq!(s, 200, "{key}");
    let (s2, c) = get_bytes(&format!("{base}/{key}.CHECKSUM")).await;
    assert_eq!(s2, 200);
    let c = String::from_utf8(c).unwrap();
    let name = key.rsplit('/').next().unwrap();
    // §1.7: `<sha256>  <name>` with no trailing newline.
    assert_eq!(c, format!("{}  {name}", sha256_hex(&b)));
    let (entry, csv) = unzip(&b);
    assert_eq!(entry, name.replace(".zip", ".csv"));
    assert!(csv.ends_with('\n'));
    (csv.clone(), rows(&csv), entry)
}

#[tokio::test]
async fn spot_daily_and_monthly_klines_have_the_right_shape_and_counts() {
    let emu = start_default().await;
    let base = emu.base_url();
    let (csv, r, _) = zip_rows(
        &base,
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-15.zip",
    )
    .await;
    assert!(csv.as_bytes()[0].is_ascii_digit(), "spot has no header");
    assert_eq!(r.len(), 1440);
    for row in &r {
        assert_eq!(row.len(), 12);
        assert_eq!(row[11], "0");
        assert_eq!(row[0].len(), 13, "2024 spot is ms");
        let (o, c): (i64, i64) = (row[0].parse().unwrap(), row[6].parse().unwrap());
        assert_eq!(c, o + 60_000 - 1);
        for i in [1, 2, 3, 4, 5, 7, 9, 10] {
            assert_eq!(row[i].split('.').nth(1).unwrap().len(), 8, "spot 8 dp");
        }
        let (h, l) = (
            row[2].parse::<f64>().unwrap(),
            row[3].parse::<f64>().unwrap(),
        );
        for i in [1, 4] {
            let v = row[i].parse::<f64>().unwrap();
            assert!(l <= v && v <= h);
        }
    }
    assert_eq!(r[0][0], ms(2024, 1, 15, 0).to_string());
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-15.zip",
    )
    .await;
    assert_eq!(r.len(), 24);
    // Leap February, 1h monthly.
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/monthly/klines/ETHUSDT/1h/ETHUSDT-1h-2024-02.zip",
    )
    .await;
    assert_eq!(r.len(), 29 * 24);
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/monthly/klines/ETHUSDT/1d/ETHUSDT-1d-2023-02.zip",
    )
    .await;
    assert_eq!(r.len(), 28);
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/monthly/klines/ETHUSDT/1mo/ETHUSDT-1mo-2023-02.zip",
    )
    .await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0][6], (ms(2023, 3, 1, 0) - 1).to_string());
    // 1w: Monday opens (2024-01 has Mondays 1, 8, 15, 22, 29).
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/monthly/klines/ETHUSDT/1w/ETHUSDT-1w-2024-01.zip",
    )
    .await;
    assert_eq!(r.len(), 5);
    assert_eq!(r[0][0], ms(2024, 1, 1, 0).to_string());
    // No daily files for 3d/1w/1mo.
    let (s, _) = get_bytes(&format!(
        "{base}/data/spot/daily/klines/ETHUSDT/1w/ETHUSDT-1w-2024-01-01.zip"
    ))
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn spot_2025_data_is_in_microseconds_with_python_booleans() {
    let emu = start_default().await;
    let base = emu.base_url();
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01-01.zip",
    )
    .await;
    assert_eq!(r.len(), 24);
    // Spec §2.3 example: open 1735689600000000, close 1735693199999999.
    assert_eq!(r[0][0], "1735689600000000");
    assert_eq!(r[0][6], "1735693199999999");
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-12-31.zip",
    )
    .await;
    assert_eq!(r[0][0].len(), 13);
    let (csv, r, _) = zip_rows(
        &base,
        "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-03-01.zip",
    )
    .await;
    assert!(!csv.starts_with("agg"));
    assert_eq!(r[0].len(), 8);
    assert_eq!(r[0][5].len(), 16);
    assert!(r[0][6] == "True" || r[0][6] == "False");
    assert_eq!(r[0][7], "True");
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-03-01.zip",
    )
    .await;
    assert_eq!(r.len(), 1000);
    assert_eq!(r[0].len(), 7);
    assert_eq!(r[0][4].len(), 13);
}

#[tokio::test]
async fn futures_files_follow_the_header_eras() {
    let emu = start_default().await;
    let base = emu.base_url();
    let header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n";
    let (csv, r, _) = zip_rows(
        &base,
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-03-01.zip",
    )
    .await;
    assert!(csv.starts_with(header));
    assert_eq!(r.len(), 1440);
    assert_eq!(r[0][0].len(), 13, "futures stay in ms");
    assert_eq!(
        r[0][1].split('.').nth(1).unwrap().len(),
        1,
        "BTC UM price has 1 dp"
    );
    let (csv, _, _) = zip_rows(
        &base,
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2021-03-01.zip",
    )
    .await;
    assert!(
        csv.as_bytes()[0].is_ascii_digit(),
        "old UM klines have no header"
    );
    let (csv, r, _) = zip_rows(
        &base,
        "data/futures/cm/daily/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2024-03-01.zip",
    )
    .await;
    assert!(csv.starts_with(header));
    assert!(!r[0][5].contains('.'), "CM volume is in contracts");
    assert!(r[0][7].contains('.'));
    let (csv, r, _) = zip_rows(
        &base,
        "data/futures/cm/daily/indexPriceKlines/BTCUSD/1h/BTCUSD-1h-2024-03-01.zip",
    )
    .await;
    assert!(csv.starts_with(header));
    assert_eq!(r[0][5], "0");
    assert_eq!(r[0][8], "3600");
    let (csv, r, _) = zip_rows(
        &base,
        "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-01.zip",
    )
    .await;
    assert!(csv.starts_with(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
    ));
    assert!(r[0][6] == "true" || r[0][6] == "false");
    let (csv, _, _) = zip_rows(
        &base,
        "data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2022-08-10.zip",
    )
    .await;
    assert!(
        csv.as_bytes()[0].is_ascii_digit(),
        "UM trades had no header up to 2022-08-10"
    );
    let (csv, _, _) = zip_rows(
        &base,
        "data/futures/cm/daily/trades/BTCUSD_PERP/BTCUSD_PERP-trades-2024-03-01.zip",
    )
    .await;
    assert!(csv.starts_with("id,price,qty,base_qty,time,is_buyer_maker\n"));
    let (csv, r, _) = zip_rows(
        &base,
        "data/futures/um/monthly/fundingRate/ETHUSDT/ETHUSDT-fundingRate-2024-02.zip",
    )
    .await;
    assert!(csv.starts_with("calc_time,funding_interval_hours,last_funding_rate\n"));
    assert_eq!(r.len(), 29 * 3);
    for row in &r {
        let jitter = row[0].parse::<i64>().unwrap() % (8 * 3_600_000);
        assert!((0..=13).contains(&jitter));
        assert_eq!(row[1], "8");
    }
    // fundingRate is monthly only.
    let (s, _) = get_bytes(&format!(
        "{base}/data/futures/um/daily/fundingRate/ETHUSDT/ETHUSDT-fundingRate-2024-02-01.zip"
    ))
    .await;
    assert_eq!(s, 404);
    // 1s is spot only.
    let (s, _) = get_bytes(&format!(
        "{base}/data/futures/um/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2024-02-01.zip"
    ))
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn old_header_cutoff_is_a_knob() {
    let mut cfg = EmulatorConfig::default().with_now(t(2026, 6, 1, 0));
    cfg.futures_klines_header_from = chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap();
    let emu = start(cfg).await;
    let (csv, _, _) = zip_rows(
        &emu.base_url(),
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-03-01.zip",
    )
    .await;
    assert!(csv.as_bytes()[0].is_ascii_digit());
}

#[tokio::test]
async fn object_headers_404_and_head() {
    let emu = start_default().await;
    let url = format!(
        "{}/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-15.zip",
        emu.base_url()
    );
    let r = get(&url).await;
    let h = r.headers().clone();
    let body = r.bytes().await.unwrap();
    assert_eq!(h["content-type"], "application/zip");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&body));
    assert_eq!(h["etag"], format!("\"{md5}\"").as_str());
    // Published 2024-01-16 08:00 (default 8 h delay).
    assert_eq!(h["last-modified"], "Tue, 16 Jan 2024 08:00:00 GMT");
    let r = crate::client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());
    // Range.
    let r = crate::client()
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..10]);
    for missing in [
        "data/spot/daily/klines/NOPEUSDT/1h/NOPEUSDT-1h-2024-01-15.zip",
        "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2017-08-16.zip",
        "data/spot/daily/klines/BTCUSDT/2m/BTCUSDT-2m-2024-01-15.zip",
        "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-1.zip",
    ] {
        let r = get(&format!("{}/{missing}", emu.base_url())).await;
        assert_eq!(r.status(), 404, "{missing}");
        let text = r.text().await.unwrap();
        assert!(text.contains("<Code>NoSuchKey</Code>"), "{text}");
    }
}

#[tokio::test]
async fn listing_day_and_delivery_bound_the_data() {
    let emu = start_default().await;
    let base = emu.base_url();
    // BNBUSDT listed 2017-11-06: that day exists (from listing on), the day before does not.
    let (_, r, _) = zip_rows(
        &base,
        "data/spot/daily/klines/BNBUSDT/1m/BNBUSDT-1m-2017-11-06.zip",
    )
    .await;
    assert_eq!(r.len(), 1440);
    let (s, _) = get_bytes(&format!(
        "{base}/data/spot/daily/klines/BNBUSDT/1m/BNBUSDT-1m-2017-11-05.zip"
    ))
    .await;
    assert_eq!(s, 404);
    // BTCUSD_250627 delivers 2025-06-27 08:00: 8 hourly candles that day, nothing after.
    let (_, r, _) = zip_rows(
        &base,
        "data/futures/cm/daily/klines/BTCUSD_250627/1h/BTCUSD_250627-1h-2025-06-27.zip",
    )
    .await;
    assert_eq!(r.len(), 8);
    let (s, _) = get_bytes(&format!(
        "{base}/data/futures/cm/daily/klines/BTCUSD_250627/1h/BTCUSD_250627-1h-2025-06-28.zip"
    ))
    .await;
    assert_eq!(s, 404);
    let k = emu.klines(
        Market::Cm,
        KlineKind::Klines,
        "BTCUSD_250627",
        "1h",
        ms(2025, 6, 27, 0),
        ms(2025, 7, 1, 0),
    );
    assert_eq!(k.len(), 8);
}

#[tokio::test]
async fn publication_gate_follows_the_clock() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 2, 7))).await;
    let base = emu.base_url();
    let day = format!("{base}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip");
    let month = format!("{base}/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02.zip");
    let today = format!("{base}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-02.zip");
    assert_eq!(
        get(&day).await.status(),
        404,
        "day D is not out before D+1 08:00"
    );
    assert_eq!(get(&format!("{day}.CHECKSUM")).await.status(), 404);
    assert_eq!(
        get(&month).await.status(),
        404,
        "February is out on March 2 00:00 + 2 days"
    );
    assert_eq!(get(&today).await.status(), 404);
    emu.set_now(t(2024, 3, 2, 8));
    assert_eq!(get(&day).await.status(), 200);
    assert_eq!(get(&month).await.status(), 404);
    emu.set_now(t(2024, 3, 3, 0));
    assert_eq!(get(&month).await.status(), 200);
    assert_eq!(
        get(&today).await.status(),
        404,
        "the current day never exists"
    );
    // The admin endpoint moves the clock too.
    let r = crate::client()
        .post(format!("{base}/_emulator/clock?now=2024-03-01T00:00:00Z"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&day).await.status(), 404);
    assert!(emu.now() < t(2024, 3, 1, 1));
}

#[tokio::test]
async fn a_day_of_seconds_is_generated_once_and_cached() {
    let emu = start_default().await;
    let url = format!(
        "{}/data/spot/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2024-02-01.zip",
        emu.base_url()
    );
    let t0 = std::time::Instant::now();
    let (s, b) = get_bytes(&url).await;
    let first = t0.elapsed();
    assert_eq!(s, 200);
    let t1 = std::time::Instant::now();
    let (_, b2) = get_bytes(&url).await;
    let second = t1.elapsed();
    assert_eq!(b, b2);
    assert!(second < first, "cached: {first:?} then {second:?}");
    let (_, csv) = unzip(&b);
    assert_eq!(csv.lines().count(), 86_400);
}
