"""What a Python user waits for: a year of BTCUSDT 1m candles into a polars frame, cold (an empty
cache, every file from the emulator's archive) and warm (from dsm's cache), against the emulator.

    cargo build --release -p dsm-emulator
    maturin build --release --manifest-path crates/dsm-py/Cargo.toml --out dist && pip install dist/dsm-*.whl
    python crates/dsm-py/bench/bench.py [--emulator target/release/dsm-emulator]

Cold figures are the median of 3 runs (each with a new cache directory and manager), warm ones the
median of 10. The emulator's files are synthesised once before any timing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl

import dsm

YEAR = dict(symbol="BTCUSDT", start="2023-01-01", end="2024-01-01", interval="1m")
ROWS = 525_600


def main() -> None:
    root = Path(__file__).resolve().parents[3]
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulator", default=str(root / "target" / "release" / "dsm-emulator"))
    args = ap.parse_args()
    emu = subprocess.Popen(
        [args.emulator, "--port", "0", "--now", "2024-07-15T00:00:00Z"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert emu.stdout is not None
        url = emu.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            def manager(cache: str) -> dsm.Manager:
                return dsm.Manager(cache_dir=cache, vision_url=url, rest_url=url, weight_limit=6000)

            # Warm the emulator: every file is synthesised once, outside the timings.
            with manager(f"{tmp}/warmup") as m:
                m.get(**YEAR)

            cold = []
            for i in range(3):
                with manager(f"{tmp}/cold{i}") as m:
                    t0 = time.perf_counter()
                    df = m.get(**YEAR).to_polars()
                    cold.append(time.perf_counter() - t0)
                    assert isinstance(df, pl.DataFrame) and df.height == ROWS

            warm = []
            with manager(f"{tmp}/cold0") as m:
                for _ in range(10):
                    t0 = time.perf_counter()
                    r = m.get(**YEAR, source="cache")
                    df = r.to_polars()
                    warm.append(time.perf_counter() - t0)
                    assert df.height == ROWS
                    assert r.summary["total"]["sources"]["vision"]["requests"] == 0

            print("| scenario | rows | wall (median) | runs |")
            print("|---|---:|---:|---:|")
            print(f"| cold 1m year -> polars (empty cache) | {ROWS} | {statistics.median(cold) * 1e3:.1f} ms | 3 |")
            print(f"| warm 1m year -> polars (cache) | {ROWS} | {statistics.median(warm) * 1e3:.1f} ms | 10 |")
    finally:
        emu.terminate()
        emu.wait()
        if emu.stdout is not None:
            emu.stdout.close()


if __name__ == "__main__":
    main()
