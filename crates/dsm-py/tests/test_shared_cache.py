"""One cache shared by many processes on a real S3 server (SeaweedFS, started by scripts/test.sh),
and read as it is by other engines: pyarrow, polars and DuckDB, on S3 and on local disk.

The S3 tests need the server named by ``DSM_TEST_S3_URL`` (with the standard ``AWS_*``
variables); without one they skip, unless ``DSM_REQUIRE_S3`` says it must be there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

import dsm
from conftest import ROOT, Emulator, ms

CLI = os.environ.get("DSM_CLI", str(ROOT / "target" / "debug" / "dsm"))
KLINES = "klines-v1/market=spot/symbol={symbol}/interval=1m"


@pytest.fixture
def s3_place() -> str:
    """A fresh, empty prefix in the test bucket: ``s3://BUCKET/<random>``."""
    base = os.environ.get("DSM_TEST_S3_URL")
    if not base:
        if os.environ.get("DSM_REQUIRE_S3"):
            pytest.fail("DSM_REQUIRE_S3 is set but DSM_TEST_S3_URL is not: the S3 server did not start")
        pytest.skip("no S3 server (DSM_TEST_S3_URL unset); `bash scripts/test.sh` starts one")
    return f"{base.rstrip('/')}/py-{uuid.uuid4().hex[:12]}"


def s3fs() -> pafs.S3FileSystem:
    """pyarrow's S3 file system on the test server, from the same variables dsm reads."""
    return pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=os.environ["AWS_ENDPOINT_URL"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
    )


def polars_options() -> Dict[str, str]:
    return {
        "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "aws_endpoint_url": os.environ["AWS_ENDPOINT_URL"],
        "aws_region": os.environ.get("AWS_REGION", "us-east-1"),
        "aws_allow_http": "true",
    }


def objects(place: str) -> Dict[str, int]:
    """Every object under an ``s3://`` place: relative key -> size."""
    root = place[len("s3://"):]
    infos = s3fs().get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}


def fetch(emu: Emulator, place: str, cache_dir: Path, out: Path, symbols: Sequence[str],
          start: str, end: str, *extra: str) -> subprocess.Popen:
    """A ``dsm fetch`` process of 1m candles into the cache at `place`."""
    return subprocess.Popen(
        [CLI, "fetch", "--market", "spot", "--interval", "1m", "--start", start, "--end", end,
         "--cache-url", place, "--cache-dir", str(cache_dir), "--vision-url", emu.url,
         "--rest-url", emu.url, "--weight-limit", "2000", "-q", "-o", str(out), *extra, *symbols],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(p: subprocess.Popen) -> Tuple[int, str]:
    out, err = p.communicate(timeout=120)
    return p.returncode, err


def rows_of(table) -> List[Tuple[int, float]]:
    """(open time in ms, close) per row, in time order."""
    t = table.sort_by("open_time")
    times = [int(x.timestamp() * 1000) for x in t.column("open_time").to_pylist()]
    return list(zip(times, t.column("close").to_pylist()))


def truth_rows(emu: Emulator, symbol: str, start: str, end: str) -> List[Tuple[int, float]]:
    return [(r[0], float(r[4])) for r in emu.klines(symbol, "1m", ms(start), ms(end))]


def visible_data_problems(place: str, settled: bool = True) -> List[str]:
    """What other engines would take for data but is not: more than one ``*.parquet`` file in a
    partition (outside the quarantine), or one with no manifest. `settled`: also one that is not
    the file its manifest references (a writer killed after publishing its manifest leaves the
    file it replaced visible until `verify` or the next writer finishes the publication)."""
    objs = objects(place)
    problems = []
    by_dir: Dict[str, List[str]] = {}
    for key in objs:
        name = key.rsplit("/", 1)[-1]
        if key.startswith("_quarantine/") or name.startswith(("_", ".")):
            continue
        if name.endswith(".parquet"):
            by_dir.setdefault(key.rsplit("/", 1)[0], []).append(name)
    root = place[len("s3://"):]
    fs = s3fs()
    for d, names in by_dir.items():
        if len(names) > 1:
            problems.append(f"{d}: {len(names)} visible data files {names}")
        manifest = f"{d}/_manifest.json"
        if manifest not in objs:
            problems.append(f"{d}: {names} with no manifest")
            continue
        with fs.open_input_stream(f"{root}/{manifest}") as f:
            referenced = (json.loads(f.read()).get("file") or {}).get("name")
        for n in names:
            if settled and n != referenced:
                problems.append(f"{d}/{n} is not the file the manifest references ({referenced})")
    return problems


def test_four_processes_fill_one_bucket_and_every_engine_reads_it(emulator: Emulator, s3_place, tmp_path):
    jobs = [
        (["BTCUSDT"], "2024-01-20", "2024-03-05", ()),
        (["BTCUSDT", "ETHUSDT"], "2024-02-10", "2024-04-01", ()),
        (["ETHUSDT", "BTCUSDT"], "2024-01-01", "2024-02-15", ()),
        # REST rows for part of the same partitions, written at the same time.
        (["BTCUSDT"], "2024-02-25", "2024-03-03", ("--source", "rest")),
    ]
    def out(i: int, symbol: str) -> Path:
        return tmp_path / f"out{i}" / f"{symbol}.parquet"

    for i in range(len(jobs)):
        (tmp_path / f"out{i}").mkdir()
    procs = [
        fetch(emulator, s3_place, tmp_path / f"state{i}", tmp_path / f"out{i}", syms, a, b, *extra)
        for i, (syms, a, b, extra) in enumerate(jobs)
    ]
    for i, p in enumerate(procs):
        code, err = finish(p)
        assert code == 0, f"process {i}: exit {code}: {err}"
    # Every answer is the truth.
    for i, (syms, a, b, _) in enumerate(jobs):
        for s in syms:
            assert rows_of(ds.dataset(out(i, s)).to_table()) == truth_rows(emulator, s, a, b), (i, s)

    verify = subprocess.run([CLI, "cache", "verify", "--cache-url", s3_place, "--json"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["problems"] == [] and report["quarantined"] == [], report
    # BTCUSDT 2024-01..03 and ETHUSDT 2024-01..03: six partitions, none lost or duplicated.
    assert report["partitions"] == 6 and report["files"] == 6, report
    assert visible_data_problems(s3_place) == []
    assert not [k for k in objects(s3_place) if "_staged-" in k or ".tmp-" in k]

    root = s3_place[len("s3://"):]
    with dsm.Manager(cache_url=s3_place, cache_dir=tmp_path / "reader", source="cache") as m:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            a, b = ("2024-01-01", "2024-04-01") if symbol == "ETHUSDT" else ("2024-01-20", "2024-04-01")
            truth = truth_rows(emulator, symbol, a, b)
            from_dsm = rows_of(m.get(symbol, a, b, interval="1m").to_arrow())
            assert from_dsm == truth, symbol
            lo, hi = ms(a), ms(b)
            # pyarrow.dataset on the bucket, Hive-style.
            table = ds.dataset(f"{root}/{KLINES.format(symbol=symbol)}", filesystem=s3fs(),
                               format="parquet", partitioning="hive").to_table()
            assert set(table.column("year").to_pylist()) == {2024}
            got = [r for r in rows_of(table) if lo <= r[0] < hi]
            assert got == from_dsm, f"pyarrow reads {len(got)} rows of {symbol}, dsm {len(from_dsm)}"
            # polars on the bucket.
            frame = (
                pl.scan_parquet(f"{s3_place}/{KLINES.format(symbol=symbol)}/**/*.parquet",
                                hive_partitioning=True, storage_options=polars_options())
                .filter((pl.col("open_time") >= pl.lit(lo).cast(pl.Datetime("ms", "UTC")))
                        & (pl.col("open_time") < pl.lit(hi).cast(pl.Datetime("ms", "UTC"))))
                .sort("open_time")
                .collect()
            )
            assert rows_of(frame.to_arrow()) == from_dsm, symbol


def test_sigkill_during_s3_writes_leaves_nothing_taken_for_data(emulator: Emulator, s3_place, tmp_path):
    root = s3_place[len("s3://"):]
    fs = s3fs()

    def listing() -> List[str]:
        return [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))]

    killed_mid_publish = 0
    symbols = [f"SYM{i:02d}USDT" for i in range(1, 7)]
    for symbol in symbols:
        # A symbol of its own each round, so every round writes.
        p = fetch(emulator, s3_place, tmp_path / "state", tmp_path / f"{symbol}.parquet",
                  [symbol], "2024-01-01", "2024-07-01")
        # Kill it the moment a data file is staged (between its put and the manifest's
        # publication, or its promotion).
        deadline = time.monotonic() + 30
        while p.poll() is None and time.monotonic() < deadline:
            if any("_staged-" in k for k in listing()):
                killed_mid_publish += 1
                break
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        assert visible_data_problems(s3_place, settled=False) == [], symbol
        # What other engines read now is exact exchange data, each row once.
        files = [k for k in listing() if k.endswith(".parquet") and f"symbol={symbol}/" in k]
        if files:
            rows = rows_of(ds.dataset(files, filesystem=fs, format="parquet").to_table())
            truth = dict(truth_rows(emulator, symbol, "2024-01-01", "2024-07-01"))
            assert len({t for t, _ in rows}) == len(rows), f"{symbol}: duplicated rows"
            assert all(truth.get(t) == c for t, c in rows), f"{symbol}: rows that are not the truth"
        # verify takes nothing left over for data, and finishes an interrupted publication.
        verify = subprocess.run([CLI, "cache", "verify", "--cache-url", s3_place, "--json"],
                                capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["problems"] == [], verify.stdout
        assert visible_data_problems(s3_place) == [], symbol
    assert killed_mid_publish >= 3, f"only {killed_mid_publish} of 6 kills landed during a write"
    # A rerun completes the cache, and its answer is the truth.
    for symbol in symbols:
        code, err = finish(fetch(emulator, s3_place, tmp_path / "state", tmp_path / "all.parquet",
                                 [symbol], "2024-01-01", "2024-07-01"))
        assert code == 0, err
        assert rows_of(ds.dataset(tmp_path / "all.parquet").to_table()) == truth_rows(
            emulator, symbol, "2024-01-01", "2024-07-01"), symbol
    assert visible_data_problems(s3_place) == []


def test_other_engines_read_the_local_cache(emulator: Emulator, tmp_path):
    cache = tmp_path / "cache"
    with dsm.Manager(cache_dir=cache, vision_url=emulator.url, rest_url=emulator.url, weight_limit=2000) as m:
        answer = rows_of(m.get("BTCUSDT", "2024-02-01", "2024-04-01", interval="1m").to_arrow())
    assert answer == truth_rows(emulator, "BTCUSDT", "2024-02-01", "2024-04-01")
    d = cache / KLINES.format(symbol="BTCUSDT")
    assert rows_of(ds.dataset(d, format="parquet", partitioning="hive").to_table()) == answer
    frame = pl.scan_parquet(f"{d}/**/*.parquet", hive_partitioning=True).sort("open_time").collect()
    assert rows_of(frame.to_arrow()) == answer
    assert frame["month"].unique().sort().to_list() == [2, 3]
    con = duckdb.connect()
    try:
        n, first, last, months = con.execute(
            "select count(*), min(epoch_ms(open_time)), max(epoch_ms(open_time)), count(distinct month) "
            f"from read_parquet('{d}/**/*.parquet', hive_partitioning = true)"
        ).fetchone()
    finally:
        con.close()
    assert (n, first, last, months) == (len(answer), answer[0][0], answer[-1][0], 2)


def test_a_wrong_secret_names_the_bucket_and_what_to_check(s3_place, tmp_path):
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY="not-the-secret")
    r = subprocess.run([CLI, "cache", "ls", "--cache-url", s3_place], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode != 0
    assert s3_place in r.stderr and "AWS_SECRET_ACCESS_KEY" in r.stderr, r.stderr


def test_a_cache_url_that_is_not_s3_fails_before_any_request(fresh_emulator: Emulator, tmp_path):
    for url in ("ftp://host/cache", "s3://", "s3:///prefix"):
        with pytest.raises(dsm.InputError, match="s3://BUCKET") as e:
            dsm.Manager(cache_url=url, cache_dir=tmp_path, vision_url=fresh_emulator.url,
                        rest_url=fresh_emulator.url)
        assert isinstance(e.value, ValueError) and url in str(e.value)
    assert fresh_emulator.requests() == 0
