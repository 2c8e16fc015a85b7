//! End-to-end tests of the DataSourceManager against the in-process emulator.

use chrono::{TimeZone, Utc};
use dsm::time::parse_instant;
use dsm::{DataSourceManager, Interval, ManagerConfig, Market, Request, Symbol, TimeRange};
use dsm_emulator::{Emulator, EmulatorConfig};

fn t(s: &str) -> i64 {
    parse_instant(s).expect("valid time")
}

async fn setup(now: &str) -> (Emulator, DataSourceManager, tempfile::TempDir) {
    let now = Utc
        .timestamp_millis_opt(t(now))
        .single()
        .expect("valid now");
    let emu = Emulator::start(EmulatorConfig::default().with_now(now))
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ManagerConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        vision_url: emu.base_url(),
        rest_urls: dsm::manager::RestUrls::all(&emu.base_url()),
        retries: 2,
        ..ManagerConfig::default()
    };
    let m = DataSourceManager::new(config).expect("manager");
    (emu, m, dir)
}

#[tokio::test]
async fn smoke_year_of_hours_then_cache() {
    let (emu, m, _dir) = setup("2024-06-15T12:30:00Z").await;
    let range = TimeRange::new(t("2023-01-01"), t("2024-01-01")).expect("range");
    let req = Request::klines(
        Market::Spot,
        Symbol::new("BTCUSDT").expect("sym"),
        Interval::H1,
        range,
    );
    let resp = m.get(req.clone()).await.expect("get");
    let r = &resp.results[0];
    assert_eq!(r.num_rows(), 365 * 24, "{:?}", resp.summary);
    let log = emu.request_log();
    eprintln!(
        "{} requests: {:?}",
        log.len(),
        log.iter().map(|l| l.path.clone()).collect::<Vec<_>>()
    );
    emu.clear_log();
    let resp2 = m.get(req).await.expect("get again");
    assert_eq!(resp2.results[0].num_rows(), 365 * 24);
    assert!(
        emu.request_log().is_empty(),
        "second request hit the network"
    );
}
