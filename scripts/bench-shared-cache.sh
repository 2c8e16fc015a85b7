#!/usr/bin/env bash
# Benchmark: a year of 1m candles (BTCUSDT spot, 2023), cold fill and warm read, with the cache
# on local disk and on S3 (SeaweedFS on loopback), alternating in one run; and the S3 requests
# per partition written and read, from the server's own counters. Release binaries, the
# project's emulator as Binance. Usage: bash scripts/bench-shared-cache.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
venv=target/test-venv
[ -x "$venv/bin/weed" ] || { echo "run bash scripts/test.sh once first (it makes $venv)" >&2; exit 1; }
cargo build --release --locked -p dsm-cli -p dsm-emulator --quiet
DSM_TEST_S3_METRICS_PORT=9327
source scripts/s3-server.sh
work=$(mktemp -d)
target/release/dsm-emulator --port 0 --now 2024-07-15T00:00:00Z >"$work/emu" 2>/dev/null &
emu_pid=$!
trap 'kill $emu_pid 2>/dev/null; stop_s3; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [ -s "$work/emu" ] && break; sleep 0.1; done
emu=$(head -1 "$work/emu")

# S3 requests so far, by type (PUT, GET, HEAD, LIST, DELETE, COPY...), and the server's time
# spent on them ("<type> s"), as JSON.
requests() {
  "$venv/bin/python" - <<'PY'
import json, re, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9327/metrics", timeout=5).read().decode()
out = {}
for metric, suffix in (("SeaweedFS_s3_request_total", ""), ("SeaweedFS_s3_request_seconds_sum", " s")):
    for m in re.finditer(r'^' + metric + r'\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("bucket") == "dsm-test":
            k = labels["type"] + suffix
            out[k] = out.get(k, 0) + float(m.group(2))
print(json.dumps(out))
PY
}

run() { # label, cache options...
  local t0 t1 label=$1
  shift
  t0=$(date +%s%N)
  target/release/dsm fetch --market spot --interval 1m --start 2023-01-01 --end 2024-01-01 \
    --vision-url "$emu" --rest-url "$emu" "$@" -q -o "$work/out.parquet" BTCUSDT
  t1=$(date +%s%N)
  echo "$label $(( (t1 - t0) / 1000000 ))" >>"$work/times"
}

for r in $(seq 1 "$rounds"); do
  run local-cold --cache-dir "$work/local-$r"
  run local-warm --cache-dir "$work/local-$r"
  before=$(requests)
  run s3-cold --cache-dir "$work/state" --cache-url "s3://dsm-test/bench-$r"
  mid=$(requests)
  run s3-warm --cache-dir "$work/state" --cache-url "s3://dsm-test/bench-$r"
  after=$(requests)
  echo "$before|$mid|$after" >>"$work/requests"
done

"$venv/bin/python" - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
times = {}
for line in open(f"{work}/times"):
    label, ms = line.split()
    times.setdefault(label, []).append(int(ms))
for label in ("local-cold", "s3-cold", "local-warm", "s3-warm"):
    v = sorted(times[label])
    print(f"{label:11} median {statistics.median(v):7.0f} ms   runs {v}")
print(f"cold S3/local: {statistics.median(times['s3-cold']) / statistics.median(times['local-cold']):.2f}x   "
      f"warm S3/local: {statistics.median(times['s3-warm']) / statistics.median(times['local-warm']):.2f}x")
before, mid, after = (json.loads(x) for x in open(f"{work}/requests").readline().strip().split("|"))
diff = lambda a, b: {k: round(b.get(k, 0) - a.get(k, 0), 3) for k in sorted(set(a) | set(b)) if b.get(k, 0) != a.get(k, 0)}
print("S3 requests, cold fill of 12 partitions:", diff(before, mid))
print("S3 requests, warm read of 12 partitions:", diff(mid, after))
PY
