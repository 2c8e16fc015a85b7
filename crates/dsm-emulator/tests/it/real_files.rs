//! Real Binance files served byte-identical, and REST/truth agreeing with them (spec §8).

use dsm_emulator::{EmulatorConfig, KlineKind, Market};

use crate::{get, get_bytes, json, ms, rows, samples, sha256_hex, start, t, unzip};

const REAL: &[&str] = &[
    "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip",
    "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-02.zip",
    "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-03.zip",
    "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2026-05-08.zip",
    "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2026-05-09.zip",
    "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-04.zip",
    "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip",
];

#[tokio::test]
async fn real_files_are_served_byte_identical_with_their_checksums() {
    let Some(root) = samples() else { return };
    let emu = start(
        EmulatorConfig::default()
            .with_root(&root)
            .with_now(t(2026, 6, 10, 0)),
    )
    .await;
    for key in REAL {
        let disk = std::fs::read(root.join(key)).unwrap();
        let r = get(&format!("{}/{key}", emu.base_url())).await;
        assert_eq!(r.status(), 200, "{key}");
        assert_eq!(r.headers()["content-type"], "application/zip");
        assert_eq!(
            r.headers()["content-length"],
            disk.len().to_string().as_str()
        );
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let served = r.bytes().await.unwrap().to_vec();
        assert_eq!(served, disk, "{key} served byte-identical");
        assert_eq!(
            etag,
            format!(
                "\"{}\"",
                hex::encode(<md5::Md5 as md5::Digest>::digest(&disk))
            )
        );
        let (s, sidecar) = get_bytes(&format!("{}/{key}.CHECKSUM", emu.base_url())).await;
        assert_eq!(s, 200);
        assert_eq!(
            sidecar,
            std::fs::read(root.join(format!("{key}.CHECKSUM"))).unwrap(),
            "sidecar as-is"
        );
        let line = String::from_utf8(sidecar).unwrap();
        let mut it = line.split_whitespace();
        assert_eq!(it.next().unwrap(), sha256_hex(&served), "{key} verifies");
        assert_eq!(it.next().unwrap(), key.rsplit('/').next().unwrap());
    }
}

#[tokio::test]
async fn rest_and_truth_serve_the_real_2020_minutes() {
    let Some(root) = samples() else { return };
    let emu = start(
        EmulatorConfig::default()
            .with_root(&root)
            .with_now(t(2026, 6, 10, 0)),
    )
    .await;
    let (_, csv) = unzip(&std::fs::read(root.join(REAL[0])).unwrap());
    let file = rows(&csv);
    assert_eq!(file.len(), 1440);
    // Spec §2.4 example row.
    assert_eq!(file[0][1], "7195.24000000");
    let start = ms(2020, 1, 1, 0);
    let mut rest: Vec<serde_json::Value> = Vec::new();
    for page in 0..2 {
        let (s, v) = json(&format!(
            "{}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={}&endTime={}&limit=1000",
            emu.base_url(),
            start + page * 1000 * 60_000,
            start + 86_400_000 - 1
        ))
        .await;
        assert_eq!(s, 200);
        rest.extend(v.as_array().unwrap().iter().cloned());
    }
    assert_eq!(rest.len(), 1440);
    for (f, r) in file.iter().zip(&rest) {
        assert_eq!(r[0].as_i64().unwrap().to_string(), f[0]);
        for i in [1, 2, 3, 4, 5, 7, 9, 10] {
            assert_eq!(r[i].as_str().unwrap(), f[i], "column {i}");
        }
        assert_eq!(r[6].as_i64().unwrap().to_string(), f[6]);
        assert_eq!(r[8].as_i64().unwrap().to_string(), f[8]);
    }
    let truth = emu.klines(
        Market::Spot,
        KlineKind::Klines,
        "BTCUSDT",
        "1m",
        start,
        start + 86_400_000,
    );
    assert_eq!(truth.len(), 1440);
    for (f, k) in file.iter().zip(&truth) {
        assert_eq!(k.open_time.to_string(), f[0]);
        assert_eq!(k.open, f[1].parse::<f64>().unwrap());
        assert_eq!(k.high, f[2].parse::<f64>().unwrap());
        assert_eq!(k.quote_volume, f[7].parse::<f64>().unwrap());
        assert_eq!(k.count.to_string(), f[8]);
        assert_eq!(k.taker_buy_quote_volume, f[10].parse::<f64>().unwrap());
    }
}

#[tokio::test]
async fn rest_converts_the_real_2026_microsecond_hours_to_ms() {
    let Some(root) = samples() else { return };
    let emu = start(
        EmulatorConfig::default()
            .with_root(&root)
            .with_now(t(2026, 6, 10, 0)),
    )
    .await;
    let (_, csv) = unzip(&std::fs::read(root.join(REAL[3])).unwrap());
    let file = rows(&csv);
    assert_eq!(file.len(), 24);
    assert_eq!(file[0][0].len(), 16, "2026 spot file is in microseconds");
    let start = ms(2026, 5, 8, 0);
    let (_, v) = json(&format!(
        "{}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={start}&endTime={}",
        emu.base_url(),
        start + 86_400_000 - 1
    ))
    .await;
    let rest = v.as_array().unwrap();
    assert_eq!(rest.len(), 24);
    for (f, r) in file.iter().zip(rest) {
        let open_us: i64 = f[0].parse().unwrap();
        let close_us: i64 = f[6].parse().unwrap();
        assert_eq!(r[0].as_i64().unwrap(), open_us / 1000);
        assert_eq!(r[6].as_i64().unwrap(), close_us / 1000);
        assert_eq!(r[4].as_str().unwrap(), f[4]);
        assert_eq!(r[5].as_str().unwrap(), f[5]);
    }
    // With X-MBX-TIME-UNIT the REST times are µs, equal to the file's.
    let r = crate::client()
        .get(format!(
            "{}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={start}&limit=1",
            emu.base_url()
        ))
        .header("X-MBX-TIME-UNIT", "MICROSECOND")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v[0][0].as_i64().unwrap().to_string(), file[0][0]);
    assert_eq!(v[0][6].as_i64().unwrap().to_string(), file[0][6]);
    // The synthetic monthly file of May 2026 carries the real rows of the 8th, in µs.
    let (s, b) = get_bytes(&format!(
        "{}/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2026-05.zip",
        emu.base_url()
    ))
    .await;
    assert_eq!(s, 200);
    let (name, month) = unzip(&b);
    assert_eq!(name, "BTCUSDT-1h-2026-05.csv");
    let month = rows(&month);
    assert_eq!(month.len(), 31 * 24);
    let day8 = &month[7 * 24..8 * 24];
    assert_eq!(day8, &file[..]);
}

#[tokio::test]
async fn real_funding_and_agg_trades_feed_the_truth() {
    let Some(root) = samples() else { return };
    let emu = start(
        EmulatorConfig::default()
            .with_root(&root)
            .with_now(t(2026, 6, 10, 0)),
    )
    .await;
    let (_, csv) = unzip(&std::fs::read(root.join(REAL[5])).unwrap());
    assert!(csv.starts_with("calc_time,funding_interval_hours,last_funding_rate\n"));
    let file = rows(&csv);
    assert_eq!(file.len(), 90);
    let f = emu.funding(Market::Um, "BTCUSDT", ms(2026, 4, 1, 0), ms(2026, 5, 1, 0));
    assert_eq!(f.len(), 90);
    assert_eq!(f[0].funding_time.to_string(), file[0][0]);
    assert_eq!(f[0].funding_rate, file[0][2].parse::<f64>().unwrap());
    // REST agrees.
    let (_, v) = json(&format!(
        "{}/fapi/v1/fundingRate?symbol=BTCUSDT&startTime={}&limit=1000&endTime={}",
        emu.base_url(),
        ms(2026, 4, 1, 0),
        ms(2026, 5, 1, 0) - 1
    ))
    .await;
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 90);
    assert_eq!(
        v[0]["fundingTime"].as_i64().unwrap().to_string(),
        file[0][0]
    );
    assert_eq!(v[0]["fundingRate"].as_str().unwrap(), file[0][2]);
    assert!(v[0]["markPrice"].is_string());

    let (_, csv) = unzip(&std::fs::read(root.join(REAL[6])).unwrap());
    let file = rows(&csv);
    let a = emu.agg_trades(
        Market::Cm,
        "BTCUSD_PERP",
        ms(2026, 5, 8, 0),
        ms(2026, 5, 9, 0),
    );
    assert_eq!(a.len(), 105_280);
    assert_eq!(a[0].agg_id.to_string(), file[0][0]);
    assert_eq!(a[0].price, file[0][1].parse::<f64>().unwrap());
    assert_eq!(a[0].qty, file[0][2].parse::<f64>().unwrap());
}
