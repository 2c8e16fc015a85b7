#!/usr/bin/env bash
# dsm's main job, runnable on a fresh machine with only the Rust toolchain: build dsm, start the
# bundled Binance emulator on loopback (this machine has no internet; the real Binance files in
# ../shared/binance-vision-samples are served when present), and fetch three days of BTCUSDT 1m
# candles plus the recent days through REST into Parquet files under ./dsm-demo/.
#
# Against the real Binance the same fetch is simply:
#   dsm fetch BTCUSDT --market spot --interval 1m --start 2020-01-01 --end 2020-01-04 -o btc.parquet
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p dsm-cli -p dsm-emulator

out=dsm-demo
mkdir -p "$out"
root_args=()
if [ -d ../shared/binance-vision-samples ]; then
  root_args=(--root ../shared/binance-vision-samples)
fi
url_file=$(mktemp)
target/release/dsm-emulator --port 0 --now 2026-05-12T10:30:00Z "${root_args[@]}" >"$url_file" 2>"$out/emulator.log" &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -f "$url_file"' EXIT
for _ in $(seq 100); do [ -s "$url_file" ] && break; sleep 0.1; done
url=$(head -n 1 "$url_file")
echo "emulator at $url"

export DSM_CACHE_DIR="$PWD/$out/cache"
dsm=target/release/dsm
# History from the Vision archive (the real 2020-01-01..03 files when present).
"$dsm" fetch BTCUSDT --market spot --interval 1m --start 2020-01-01 --end 2020-01-04 \
  --vision-url "$url" --rest-url "$url" -o "$out/BTCUSDT-1m-2020-01.parquet" --json
# Recent candles: daily files for the published days, REST for the rest, the open candle excluded.
"$dsm" fetch BTCUSDT ETHUSDT --market spot --interval 1h --start 2026-05-01 --end 2026-05-12T10:00:00Z \
  --vision-url "$url" --rest-url "$url" -o "$out/recent" --json
# The same request again is answered from the cache alone.
"$dsm" fetch BTCUSDT --market spot --interval 1m --start 2020-01-01 --end 2020-01-04 \
  --source cache -o "$out/BTCUSDT-1m-2020-01.csv" --json
echo "outputs in $out/"
