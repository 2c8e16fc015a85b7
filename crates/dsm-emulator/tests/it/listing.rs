//! S3 ListObjects v1 (spec §1.8).

use dsm_emulator::EmulatorConfig;

use crate::{get, samples, start, t};

fn tags(xml: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len()..];
        let j = after.find(close).unwrap();
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

struct Page {
    keys: Vec<String>,
    prefixes: Vec<String>,
    truncated: bool,
    next_marker: Option<String>,
    max_keys: String,
    xml: String,
}

async fn list(base: &str, q: &str) -> Page {
    let r = get(&format!("{base}/data.binance.vision?{q}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/xml");
    let xml = r.text().await.unwrap();
    assert!(xml.contains("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>data.binance.vision</Name>"));
    Page {
        keys: tags(&xml, "<Key>", "</Key>"),
        prefixes: tags(
            &xml,
            "<CommonPrefixes><Prefix>",
            "</Prefix></CommonPrefixes>",
        ),
        truncated: tags(&xml, "<IsTruncated>", "</IsTruncated>")[0] == "true",
        next_marker: tags(&xml, "<NextMarker>", "</NextMarker>")
            .into_iter()
            .next(),
        max_keys: tags(&xml, "<MaxKeys>", "</MaxKeys>")[0].clone(),
        xml,
    }
}

#[tokio::test]
async fn directory_levels_with_delimiter() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 10, 0))).await;
    let b = emu.base_url();
    let p = list(&b, "prefix=data/&delimiter=/").await;
    assert_eq!(
        p.prefixes,
        vec!["data/futures/", "data/option/", "data/spot/"]
    );
    assert!(p.keys.is_empty());
    assert!(
        p.xml.contains("<Prefix>data/</Prefix>"),
        "root-level Prefix echo"
    );
    let p = list(&b, "prefix=data/option/daily/&delimiter=/").await;
    assert_eq!(
        p.prefixes,
        vec![
            "data/option/daily/BVOLIndex/",
            "data/option/daily/EOHSummary/"
        ]
    );
    let p = list(&b, "prefix=data/option/daily/BVOLIndex/&delimiter=/").await;
    assert_eq!(
        p.prefixes,
        vec![
            "data/option/daily/BVOLIndex/BTCBVOLUSDT/",
            "data/option/daily/BVOLIndex/ETHBVOLUSDT/"
        ]
    );
    // Liquidation snapshots are COIN-M's; metrics are on both futures markets.
    let p = list(&b, "prefix=data/futures/um/daily/&delimiter=/").await;
    assert!(
        p.prefixes
            .contains(&"data/futures/um/daily/metrics/".to_owned())
    );
    assert!(!p.prefixes.iter().any(|x| x.contains("liquidationSnapshot")));
    let p = list(&b, "prefix=data/futures/&delimiter=/").await;
    assert_eq!(p.prefixes, vec!["data/futures/cm/", "data/futures/um/"]);
    let p = list(&b, "prefix=data/spot/monthly/&delimiter=/").await;
    assert_eq!(
        p.prefixes,
        vec![
            "data/spot/monthly/aggTrades/",
            "data/spot/monthly/klines/",
            "data/spot/monthly/trades/"
        ]
    );
    let p = list(
        &b,
        "prefix=data/futures/cm/daily/indexPriceKlines/&delimiter=/",
    )
    .await;
    assert_eq!(
        p.prefixes,
        vec![
            "data/futures/cm/daily/indexPriceKlines/BTCUSD/",
            "data/futures/cm/daily/indexPriceKlines/ETHUSD/"
        ]
    );
    let p = list(
        &b,
        "prefix=data/futures/um/daily/klines/BTCUSDT/&delimiter=/",
    )
    .await;
    assert!(
        !p.prefixes.iter().any(|x| x.ends_with("/1s/")),
        "1s is spot only"
    );
    assert!(
        !p.prefixes.iter().any(|x| x.ends_with("/1w/")),
        "no daily 1w"
    );
    assert!(
        p.prefixes
            .contains(&"data/futures/um/daily/klines/BTCUSDT/1m/".to_string())
    );
    // A partial prefix.
    let p = list(&b, "prefix=data/spot/daily/klines/BT&delimiter=/").await;
    assert_eq!(p.prefixes, vec!["data/spot/daily/klines/BTCUSDT/"]);
    // Unknown prefix: empty 200.
    let p = list(&b, "prefix=data/spot/daily/klines/NOPE/1m/&delimiter=/").await;
    assert!(p.keys.is_empty() && p.prefixes.is_empty() && !p.truncated);
}

#[tokio::test]
async fn paging_common_prefixes_with_next_marker() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 10, 0))).await;
    let b = emu.base_url();
    let mut all = Vec::new();
    let mut marker = String::new();
    loop {
        let p = list(
            &b,
            &format!("prefix=data/spot/daily/klines/&delimiter=/&max-keys=5&marker={marker}"),
        )
        .await;
        assert_eq!(p.max_keys, "5");
        assert!(p.prefixes.len() <= 5);
        all.extend(p.prefixes.clone());
        if !p.truncated {
            assert!(p.next_marker.is_none());
            break;
        }
        marker = p.next_marker.expect("NextMarker with a delimiter");
        assert_eq!(&marker, all.last().unwrap());
    }
    // 23 trading symbols, and GONEUSDT and HALTUSDT, delisted later; NEWCOINUSDT is not listed yet.
    assert_eq!(all.len(), 25);
    assert!(!all.iter().any(|p| p.contains("NEWCOIN")));
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all[0], "data/spot/daily/klines/BNBUSDT/");
}

#[tokio::test]
async fn paging_keys_without_delimiter_uses_the_last_key() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 10, 12))).await;
    let b = emu.base_url();
    let prefix = "data/spot/daily/klines/BTCUSDT/1h/";
    let p = list(&b, &format!("prefix={prefix}&max-keys=5000")).await;
    assert_eq!(p.max_keys, "1000", "max-keys is capped at 1000");
    assert_eq!(p.keys.len(), 1000);
    assert!(p.truncated);
    assert!(p.next_marker.is_none(), "no NextMarker without a delimiter");
    let mut all = p.keys;
    loop {
        let marker = all.last().unwrap().clone();
        let p = list(&b, &format!("prefix={prefix}&marker={marker}")).await;
        all.extend(p.keys);
        if !p.truncated {
            break;
        }
    }
    // 2017-08-17 ..= 2024-03-09 (out at 08:00 on the 10th; the 10th is not), zip + CHECKSUM each.
    let days = (chrono::NaiveDate::from_ymd_opt(2024, 3, 10).unwrap()
        - chrono::NaiveDate::from_ymd_opt(2017, 8, 17).unwrap())
    .num_days() as usize;
    assert_eq!(all.len(), 2 * days);
    assert_eq!(all[0], format!("{prefix}BTCUSDT-1h-2017-08-17.zip"));
    assert_eq!(
        all[1],
        format!("{prefix}BTCUSDT-1h-2017-08-17.zip.CHECKSUM")
    );
    assert_eq!(
        all.last().unwrap(),
        &format!("{prefix}BTCUSDT-1h-2024-03-09.zip.CHECKSUM")
    );
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted);
    // Listing metadata matches the object.
    let p = list(&b, &format!("prefix={prefix}BTCUSDT-1h-2024-03-09.zip")).await;
    let size: usize = tags(&p.xml, "<Size>", "</Size>")[0].parse().unwrap();
    let etag = tags(&p.xml, "<ETag>", "</ETag>")[0].replace("&quot;", "\"");
    let r = get(&format!("{b}/{prefix}BTCUSDT-1h-2024-03-09.zip")).await;
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.bytes().await.unwrap().len(), size);
    assert_eq!(
        tags(&p.xml, "<Size>", "</Size>")[1],
        "91",
        "CHECKSUM size = 64 + 2 + name"
    );
}

#[tokio::test]
async fn real_files_appear_in_the_listing() {
    let Some(root) = samples() else { return };
    let emu = start(
        EmulatorConfig::default()
            .with_root(&root)
            .with_now(t(2026, 6, 10, 0)),
    )
    .await;
    let key = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip";
    let p = list(&emu.base_url(), &format!("prefix={key}")).await;
    assert_eq!(p.keys, vec![key.to_string(), format!("{key}.CHECKSUM")]);
    let size: u64 = tags(&p.xml, "<Size>", "</Size>")[0].parse().unwrap();
    assert_eq!(size, std::fs::metadata(root.join(key)).unwrap().len());
}
