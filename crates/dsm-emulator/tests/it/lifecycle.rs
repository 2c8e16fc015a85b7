//! Shutdown, connection accounting and the binary.

use std::io::BufRead;
use std::time::{Duration, Instant};

use dsm_emulator::EmulatorConfig;

use crate::{get, start, t};

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn shutdown_with_a_hung_connection_is_prompt() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 1, 0))).await;
    emu.add_fault("hang@/api/v3/time".parse().unwrap());
    let url = format!("{}/api/v3/time", emu.base_url());
    let pending = tokio::spawn(async move { reqwest::Client::new().get(url).send().await });
    assert!(wait_for(|| emu.stats().requests_by_status.get(&0) == Some(&1)).await);
    assert!(emu.stats().open_connections >= 1);
    let t0 = Instant::now();
    emu.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let r = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("client unblocked")
        .unwrap();
    assert!(r.is_err(), "the hung request fails once the server is gone");
}

#[tokio::test]
async fn open_connections_return_to_zero() {
    let emu = start(EmulatorConfig::default().with_now(t(2024, 3, 1, 0))).await;
    {
        let c = reqwest::Client::new();
        for _ in 0..3 {
            assert_eq!(
                c.get(format!("{}/api/v3/ping", emu.base_url()))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        assert_eq!(
            emu.stats().open_connections,
            1,
            "keep-alive reuses one connection"
        );
        let other = reqwest::Client::new();
        other
            .get(format!("{}/fapi/v1/ping", emu.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(emu.stats().open_connections, 2);
    }
    assert!(
        wait_for(|| emu.stats().open_connections == 0).await,
        "{:?}",
        emu.stats()
    );
    assert_eq!(emu.stats().total_connections, 2);
}

#[tokio::test]
async fn drop_stops_the_server() {
    let emu = start(EmulatorConfig::default()).await;
    let url = format!("{}/api/v3/ping", emu.base_url());
    assert_eq!(get(&url).await.status(), 200);
    drop(emu);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(r.is_err());
}

#[tokio::test]
async fn binary_prints_its_url_and_stops_on_sigterm() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dsm-emulator"))
        .args([
            "--port",
            "0",
            "--now",
            "2024-03-01T00:00:00Z",
            "--fault",
            "status500@/api/v3/ping#1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert_eq!(get(&format!("{base}/api/v3/ping")).await.status(), 500);
    let (_, v) = crate::json(&format!("{base}/api/v3/time")).await;
    assert!((v["serverTime"].as_i64().unwrap() - crate::ms(2024, 3, 1, 0)).abs() < 60_000);
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "binary did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
