//! One test per fault kind, the fault syntax, and the admin endpoints.

use std::time::{Duration, Instant};

use dsm_emulator::{EmulatorConfig, Fault, FaultKind, KlineKind, Market};

use crate::{client, get, get_bytes, json, ms, rows, sha256_hex, start, t, unzip};

const ZIP: &str = "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-03-01.zip";
const KL: &str = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=5";

async fn emu() -> dsm_emulator::Emulator {
    start(EmulatorConfig::default().with_now(t(2024, 3, 10, 0))).await
}

fn fault(s: &str) -> Fault {
    s.parse().expect("valid fault")
}

#[tokio::test]
async fn hang_never_answers_until_the_budget_is_spent() {
    let emu = emu().await;
    emu.add_fault(fault("hang@/api/v3/ping#1"));
    let url = format!("{}/api/v3/ping", emu.base_url());
    let r = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(emu.stats().requests_by_status.get(&0), Some(&1));
}

#[tokio::test]
async fn slow_body_paces_the_transfer() {
    let emu = emu().await;
    let url = format!("{}/{ZIP}", emu.base_url());
    let (_, normal) = get_bytes(&url).await;
    let bps = (normal.len() as u64 * 2).max(1000); // about half a second
    emu.add_fault(fault(&format!("slow={bps}@*.zip")));
    let t0 = Instant::now();
    let (s, slow) = get_bytes(&url).await;
    assert_eq!(s, 200);
    assert_eq!(slow, normal);
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn reset_mid_body_drops_the_connection() {
    let emu = emu().await;
    emu.add_fault(fault("reset@*.zip#1"));
    let url = format!("{}/{ZIP}", emu.base_url());
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(r.bytes().await.is_err(), "body fails mid-way");
    let (_, ok) = get_bytes(&url).await;
    assert_eq!(ok.len(), len);
    let log = emu.request_log();
    assert_eq!(log[0].bytes as usize, len / 2);
}

#[tokio::test]
async fn truncated_body_announces_the_full_length() {
    let emu = emu().await;
    emu.add_fault(fault("truncate@*.zip#1"));
    let url = format!("{}/{ZIP}", emu.base_url());
    let r = get(&url).await;
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    if let Ok(b) = r.bytes().await {
        assert!(b.len() < len, "the body stops short");
    }
    assert_eq!(get_bytes(&url).await.1.len(), len);
}

#[tokio::test]
async fn checksum_mismatch() {
    let emu = emu().await;
    emu.add_fault(fault("checksum-mismatch@*.zip#1"));
    let url = format!("{}/{ZIP}", emu.base_url());
    let (_, zip) = get_bytes(&url).await;
    let (s, bad) = get_bytes(&format!("{url}.CHECKSUM")).await;
    assert_eq!(s, 200);
    let bad = String::from_utf8(bad).unwrap();
    assert_ne!(bad.split_whitespace().next().unwrap(), sha256_hex(&zip));
    assert!(bad.ends_with("  BTCUSDT-1h-2024-03-01.zip"));
    let good = String::from_utf8(get_bytes(&format!("{url}.CHECKSUM")).await.1).unwrap();
    assert_eq!(good.split_whitespace().next().unwrap(), sha256_hex(&zip));
}

#[tokio::test]
async fn corrupt_zip_with_a_matching_checksum() {
    let emu = emu().await;
    emu.add_fault(fault(&format!("corrupt-zip@/{ZIP}#1")));
    let url = format!("{}/{ZIP}", emu.base_url());
    let sidecar = String::from_utf8(get_bytes(&format!("{url}.CHECKSUM")).await.1).unwrap();
    let (_, bad) = get_bytes(&url).await;
    assert_eq!(
        sidecar.split_whitespace().next().unwrap(),
        sha256_hex(&bad),
        "checksum verifies"
    );
    assert!(
        zip::ZipArchive::new(std::io::Cursor::new(&bad)).is_err(),
        "but the zip does not open"
    );
    // Budget spent: the good file and its checksum.
    let sidecar = String::from_utf8(get_bytes(&format!("{url}.CHECKSUM")).await.1).unwrap();
    let (_, good) = get_bytes(&url).await;
    assert_eq!(
        sidecar.split_whitespace().next().unwrap(),
        sha256_hex(&good)
    );
    assert_eq!(rows(&unzip(&good).1).len(), 24);
}

#[tokio::test]
async fn missing_checksum() {
    let emu = emu().await;
    emu.add_fault(fault("missing-checksum@*.zip"));
    let url = format!("{}/{ZIP}", emu.base_url());
    assert_eq!(get(&url).await.status(), 200);
    let r = get(&format!("{url}.CHECKSUM")).await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("NoSuchKey"));
}

#[tokio::test]
async fn status_faults() {
    let emu = emu().await;
    let b = emu.base_url();
    emu.add_fault(fault("status500@/api/v3/klines#1"));
    let (s, v) = json(&format!("{b}{KL}")).await;
    assert_eq!(s, 500);
    assert_eq!(v["code"], -1000);
    assert_eq!(get(&format!("{b}{KL}")).await.status(), 200);

    emu.add_fault(fault("status403@/data/*#1"));
    let r = get(&format!("{b}/{ZIP}")).await;
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code><Message>Access Denied</Message>")
    );
    assert_eq!(get(&format!("{b}/{ZIP}")).await.status(), 200);

    emu.add_fault(fault("status429@/fapi/v1/klines#1"));
    let r = get(&format!("{b}/fapi/v1/klines?symbol=BTCUSDT&interval=1h")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["code"], -1003);

    emu.add_fault(fault("status418@/api/v3/klines#1"));
    let r = get(&format!("{b}{KL}")).await;
    assert_eq!(r.status(), 418);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(get(&format!("{b}{KL}")).await.status(), 200);
}

#[tokio::test]
async fn duplicate_rows_in_rest() {
    let emu = emu().await;
    emu.add_fault(fault("duplicate-rows@/api/v3/klines#1"));
    let url = format!(
        "{}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={}&limit=20",
        emu.base_url(),
        ms(2024, 3, 1, 0)
    );
    let (_, v) = json(&url).await;
    let opens: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    let mut unique = opens.clone();
    unique.dedup();
    assert!(opens.len() > unique.len(), "some rows repeated");
    assert_eq!(unique.len(), 20);
    let (_, v) = json(&url).await;
    assert_eq!(v.as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn gap_removes_candles_from_every_source() {
    let emu = emu().await;
    emu.add_fault(fault(
        "gap=2024-03-01T01:00:00Z..2024-03-01T03:00:00Z:BTCUSDT",
    ));
    let b = emu.base_url();
    let (_, zip) = get_bytes(&format!(
        "{b}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip"
    ))
    .await;
    let file = rows(&unzip(&zip).1);
    assert_eq!(file.len(), 1440 - 120);
    assert!(file.iter().all(|r| {
        let o: i64 = r[0].parse().unwrap();
        !(ms(2024, 3, 1, 1)..ms(2024, 3, 1, 3)).contains(&o)
    }));
    let (_, v) = json(&format!(
        "{b}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={}&endTime={}&limit=1000",
        ms(2024, 3, 1, 0),
        ms(2024, 3, 1, 4) - 1
    ))
    .await;
    assert_eq!(v.as_array().unwrap().len(), 240 - 120);
    let truth = emu.klines(
        Market::Spot,
        KlineKind::Klines,
        "BTCUSDT",
        "1m",
        ms(2024, 3, 1, 0),
        ms(2024, 3, 2, 0),
    );
    assert_eq!(truth.len(), 1320);
    // Other symbols are untouched; clearing restores.
    assert_eq!(
        emu.klines(
            Market::Spot,
            KlineKind::Klines,
            "ETHUSDT",
            "1m",
            ms(2024, 3, 1, 0),
            ms(2024, 3, 2, 0)
        )
        .len(),
        1440
    );
    emu.clear_faults();
    let (_, zip) = get_bytes(&format!(
        "{b}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip"
    ))
    .await;
    assert_eq!(rows(&unzip(&zip).1).len(), 1440);
}

#[tokio::test]
async fn probability_faults_hit_some_requests() {
    let emu = emu().await;
    emu.add_fault(fault("status500@/api/v3/ping%0.5"));
    let mut hits = 0;
    for _ in 0..40 {
        if get(&format!("{}/api/v3/ping", emu.base_url()))
            .await
            .status()
            == 500
        {
            hits += 1;
        }
    }
    assert!((5..35).contains(&hits), "{hits}");
}

#[tokio::test]
async fn fault_syntax_round_trips() {
    let f = fault("hang@/data/spot/*#2");
    assert_eq!(f.kind, FaultKind::Hang);
    assert_eq!(f.target, "/data/spot/*");
    assert_eq!(f.limit, dsm_emulator::FaultLimit::First(2));
    assert_eq!(
        fault("slow=2000@*.zip").kind,
        FaultKind::SlowBody {
            bytes_per_sec: 2000
        }
    );
    assert!(
        matches!(fault("status500@/api/v3/klines%0.5").limit, dsm_emulator::FaultLimit::Probability(p) if p == 0.5)
    );
    for s in [
        "hang@/x#2",
        "gap=2024-01-01T00:00:00Z..2024-01-01T02:00:00Z:BTCUSDT",
        "truncate",
        "reset@*.zip",
    ] {
        assert_eq!(fault(s).to_string(), s);
    }
    assert!("explode@*".parse::<Fault>().is_err());
}

#[tokio::test]
async fn admin_endpoints() {
    let emu = emu().await;
    let b = emu.base_url();
    let c = client();
    let r = c
        .post(format!("{b}/_emulator/faults"))
        .body("status500@/api/v3/ping#1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = json(&format!("{b}/_emulator/faults")).await;
    assert_eq!(v, serde_json::json!(["status500@/api/v3/ping#1"]));
    assert_eq!(get(&format!("{b}/api/v3/ping")).await.status(), 500);
    assert_eq!(get(&format!("{b}/api/v3/ping")).await.status(), 200);
    let r = c
        .post(format!("{b}/_emulator/faults"))
        .body("bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    c.delete(format!("{b}/_emulator/faults"))
        .send()
        .await
        .unwrap();
    assert!(emu.faults().is_empty());
    let (_, v) = json(&format!("{b}/_emulator/stats")).await;
    assert_eq!(v["total_requests"], 2);
    assert_eq!(v["requests_by_path"]["/api/v3/ping"], 2);
    assert_eq!(v["requests_by_status"]["500"], 1);
    assert!(v["open_connections"].as_u64().unwrap() >= 1);
    let (_, v) = json(&format!("{b}/_emulator/log")).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["path"], "/api/v3/ping");
    emu.clear_log();
    assert!(emu.request_log().is_empty());
}
