//! Integration tests of the emulator against the spec (`binance-spec.md`) and real Binance files.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod faults;
mod lifecycle;
mod listing;
mod real_files;
mod rest;
mod vision;

use std::io::Read;
use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use dsm_emulator::{Emulator, EmulatorConfig};
use sha2::{Digest, Sha256};

/// The real sample files (`shared/binance-vision-samples` beside the repository), if present.
pub fn samples() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DSM_VISION_SAMPLES") {
        return Some(PathBuf::from(p));
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in here.ancestors() {
        let p = dir.join("shared/binance-vision-samples");
        if p.join("data").is_dir() {
            return Some(p);
        }
    }
    println!(
        "SKIP: shared/binance-vision-samples not found (set DSM_VISION_SAMPLES); real-file test skipped"
    );
    None
}

pub fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

pub fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
    t(y, m, d, h).timestamp_millis()
}

pub async fn start(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(cfg).await.expect("emulator starts")
}

/// An emulator whose clock is at 2026-06-01 00:00 UTC (everything before late May is published).
pub async fn start_default() -> Emulator {
    start(EmulatorConfig::default().with_now(t(2026, 6, 10, 0))).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("request sent")
}

pub async fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    let r = get(url).await;
    let s = r.status().as_u16();
    (s, r.bytes().await.expect("body").to_vec())
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The single CSV entry of a zip: (entry name, text).
pub fn unzip(bytes: &[u8]) -> (String, String) {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
    assert_eq!(z.len(), 1, "exactly one entry");
    let mut e = z.by_index(0).unwrap();
    let name = e.name().unwrap().to_string();
    let mut s = String::new();
    e.read_to_string(&mut s).unwrap();
    (name, s)
}

/// Data lines of a CSV (header dropped when the first byte is not a digit).
pub fn rows(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .filter(|l| l.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

pub async fn json(url: &str) -> (u16, serde_json::Value) {
    let (s, b) = get_bytes(url).await;
    (s, serde_json::from_slice(&b).expect("json body"))
}
