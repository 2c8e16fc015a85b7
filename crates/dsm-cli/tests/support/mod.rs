//! Set-up shared by the CLI's integration tests: the `dsm` binary pointed at an in-process
//! emulator, and the files a run leaves behind.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{TimeZone, Utc};
use dsm_emulator::{Emulator, EmulatorConfig};

/// The `dsm` binary under test.
pub const DSM: &str = env!("CARGO_BIN_EXE_dsm");

/// An emulator on port 0 whose clock is at `y-m-d h:mi` UTC.
pub async fn emulator_at(y: i32, m: u32, d: u32, h: u32, mi: u32) -> Emulator {
    let now = Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap();
    Emulator::start(EmulatorConfig::default().with_now(now))
        .await
        .expect("the emulator starts")
}

/// `dsm args` with a clean environment: its cache in `cache`, every URL pointed at `emu`, no
/// standard input.
pub fn dsm(emu: &Emulator, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(DSM);
    cmd.args(args)
        .env_remove("DSM_LOG")
        .env("DSM_CACHE_DIR", cache)
        .env("DSM_REST_URL", emu.base_url())
        .env("DSM_VISION_URL", emu.base_url())
        .stdin(Stdio::null());
    cmd
}

/// The entries of `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
