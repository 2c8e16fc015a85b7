#!/usr/bin/env bash
# The whole test suite: unit, integration (against the in-process emulator), doc tests, and a short
# smoke run of the benchmarks. Needs only the Rust toolchain and cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cargo nextest run --workspace --locked --profile ci
cargo test --workspace --doc --locked
