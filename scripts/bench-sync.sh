#!/usr/bin/env bash
# Benchmark: whole-universe syncs, cold, into a fresh local cache. The emulator (release build,
# clock at 2025-01-10) gets N extra spot symbols BENCH001USDT.. listed 2019-01-01; `dsm sync`
# fills one year (2024) of 1h, then of 1m candles for them. Prints, per run: wall time, peak RSS
# (GNU time), the files and HTTP requests dsm made (its --json report and the emulator's log)
# against the minimum (12 monthly files a symbol, each a .zip and its .CHECKSUM), and a rerun's
# archive downloads (0 expected). Usage: bash scripts/bench-sync.sh [SYMBOLS...] (default 10 50)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("${@:-10 50}")
# shellcheck disable=SC2206
counts=(${counts[*]})
max=0
for n in "${counts[@]}"; do ((n > max)) && max=$n; done
cargo build --release --locked -p dsm-cli -p dsm-emulator --quiet
work=$(mktemp -d)
symbols=()
for i in $(seq 1 "$max"); do symbols+=(--symbol "spot:BENCH$(printf %03d "$i")USDT:2019-01-01"); done
target/release/dsm-emulator --port 0 --now 2025-01-10T00:00:00Z "${symbols[@]}" >"$work/emu" 2>/dev/null &
emu_pid=$!
trap 'kill $emu_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [ -s "$work/emu" ] && break; sleep 0.1; done
emu=$(head -1 "$work/emu")
log_len() { curl -s "$emu/_emulator/log" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
zips_since() { curl -s "$emu/_emulator/log" | python3 -c "import json,sys; print(sum(1 for r in json.load(sys.stdin)[$1:] if r['path'].endswith('.zip')))"; }

for interval in 1h 1m; do
  for n in "${counts[@]}"; do
    # BENCH001USDT..BENCH<n>USDT as a list.
    list=$(for i in $(seq 1 "$n"); do printf 'BENCH%03dUSDT,' "$i"; done)
    list=${list%,}
    cache="$work/cache-$interval-$n"
    before=$(log_len)
    /usr/bin/time -f '%e %M' -o "$work/time" target/release/dsm -q sync --market spot \
      --interval "$interval" --symbols "$list" --start 2024-01-01 --end 2025-01-01 \
      --cache-dir "$cache" --rest-url "$emu" --vision-url "$emu" --json >"$work/report"
    read -r wall rss <"$work/time"
    requests=$(( $(log_len) - before ))
    files=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["files"])' "$work/report")
    before=$(log_len)
    target/release/dsm -q sync --market spot --interval "$interval" --symbols "$list" \
      --start 2024-01-01 --end 2025-01-01 --cache-dir "$cache" --rest-url "$emu" --vision-url "$emu"
    rerun=$(zips_since "$before")
    printf '%s %3d symbols: %6.1f s  peak RSS %4d MiB  files %4d (min %4d)  HTTP requests %4d (min %4d + listing)  rerun downloads %d\n' \
      "$interval" "$n" "$wall" $((rss / 1024)) "$files" $((12 * n)) "$requests" $((24 * n)) "$rerun"
  done
done
