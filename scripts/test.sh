#!/usr/bin/env bash
# The whole test suite: unit, integration (against the in-process emulator), doc tests, and a short
# smoke run of the benchmarks. Needs the Rust toolchain and Python 3 (for a venv with pyarrow, which
# reads the CLI's output files back as a user's tools would); installs cargo-nextest if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# A private venv (under target/, never the system Python) with pyarrow for the read-back tests.
venv=target/test-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'pyarrow>=15'
fi
export DSM_TEST_PYTHON="$PWD/$venv/bin/python"

cargo nextest run --workspace --locked --profile ci
cargo test --workspace --doc --locked
