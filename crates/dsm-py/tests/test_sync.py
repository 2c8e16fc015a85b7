"""Whole universes from Python: ``dsm.symbols``, ``Manager.sync`` / ``async_sync`` with progress,
and a sharded sync on a Dask cluster into one S3 bucket. Expected rows come from the emulator's
REST API (its truth), expected files from its symbols' documented lives."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import dsm
from conftest import ROOT, Emulator, ms, settings
from test_shared_cache import objects, s3_place  # noqa: F401  (a fixture)


def zips(emu: Emulator) -> list:
    return [r["path"] for r in json.loads(emu._call("/_emulator/log")) if r["path"].endswith(".zip")]


def test_symbols_list_the_archive_s_delisted_symbols_with_their_lives(emulator: Emulator, tmp_path):
    entries = dsm.symbols("spot", "all", **settings(emulator, tmp_path))
    gone = next(e for e in entries if e["symbol"] == "GONEUSDT")
    assert gone["status"] == "delisted" and gone["exchange_status"] is None
    assert gone["listed"] == datetime(2019, 1, 1, tzinfo=timezone.utc)
    assert gone["ended"] == datetime(2024, 5, 21, tzinfo=timezone.utc)
    trading = dsm.symbols("spot", "trading", **settings(emulator, tmp_path))
    assert "GONEUSDT" not in {e["symbol"] for e in trading}
    assert {"BTCUSDT", "NEWCOINUSDT", "SYM20USDT"} <= {e["symbol"] for e in trading}
    with pytest.raises(dsm.InputError, match="trading, delisted or all"):
        dsm.symbols("spot", "gone", **settings(emulator, tmp_path))


def test_sync_fills_the_cache_with_progress_and_a_rerun_downloads_nothing(fresh_emulator: Emulator, tmp_path):
    events = []
    with dsm.Manager(**settings(fresh_emulator, tmp_path)) as m:
        report = m.sync(["SYM01USDT", "GONEUSDT"], "2024-01-01", "2024-07-01", interval="1h",
                        progress=events.append)
        assert report["complete"]
        # SYM01USDT: six months; GONEUSDT: four months, then May's days to its delisting.
        assert sorted(zips(fresh_emulator)) == sorted(set(zips(fresh_emulator)))
        assert len(zips(fresh_emulator)) == 6 + 4 + 20
        assert events[0] == {"event": "planned", "symbols": {"GONEUSDT": 5, "SYM01USDT": 6}, "units": 11}
        units = [e for e in events if e["event"] == "unit"]
        assert [e["done"] for e in units] == list(range(1, 12))
        assert sum(e["rows"] for e in units) == report["total"]["rows"]
        gone = next(s for s in report["symbols"] if s["symbol"] == "GONEUSDT")
        assert gone["range"]["end"] == "2024-05-21T00:00:00.000Z"
        # The cache holds the truth: read offline.
        r = m.get("GONEUSDT", "2024-01-01", "2024-05-21", interval="1h", source="cache")
        truth = fresh_emulator.klines("GONEUSDT", "1h", ms("2024-01-01"), ms("2024-05-21"))
        assert len(r) == len(truth)
        table = r.to_arrow()
        assert table["close"].to_pylist() == [float(k[4]) for k in truth]
        before = len(zips(fresh_emulator))
        again = m.sync(["SYM01USDT", "GONEUSDT"], "2024-01-01", "2024-07-01", interval="1h")
        assert again["complete"] and again["total"]["files"] == 0
        assert len(zips(fresh_emulator)) == before


def test_async_sync_raises_what_is_incomplete_with_the_report(emulator: Emulator, tmp_path):
    async def main():
        async with dsm.Manager(**settings(emulator, tmp_path)) as m:
            # The archive alone, up to the emulator's now: its last days are not published yet.
            with pytest.raises(dsm.IncompleteError) as e:
                await m.async_sync("SYM02USDT", "2024-07-01", interval="1h", source="vision")
            assert e.value.report["complete"] is False
            assert e.value.report["symbols"][0]["missing"]
            partial = await m.async_sync("SYM02USDT", "2024-07-01", interval="1h", source="vision",
                                         allow_partial=True)
            assert partial["symbols"][0]["rows"] > 0
            with pytest.raises(dsm.InputError, match="K/N"):
                await m.async_sync("all", "2024-07-01", interval="1h", shard="3/2")

    asyncio.run(main())


def test_a_sharded_sync_on_dask_fills_one_bucket(emulator: Emulator, s3_place, tmp_path):  # noqa: F811
    distributed = pytest.importorskip("dask.distributed")
    sys.path.insert(0, str(ROOT / "crates" / "dsm-py" / "examples"))
    try:
        import dask_sync
    finally:
        sys.path.pop(0)
    args = dict(vision_url=emulator.url, rest_url=emulator.url, weight_limit=2000)
    universe = "SYM1*"  # SYM10USDT .. SYM19USDT
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", scheduler_port=0) as cluster, distributed.Client(cluster) as client:
        reports = dask_sync.sharded_sync(client, 2, s3_place, "spot", "1h", universe, "2024-01-01",
                                         "2024-07-01", dict(args, cache_dir=str(tmp_path / "w")))
    assert [r["shard"] for r in reports] == ["1/2", "2/2"]
    assert all(r["complete"] for r in reports)
    # Together the shards fetched each of the 60 symbol-months once.
    assert sum(r["total"]["files"] for r in reports) == 10 * 6
    assert all(r["total"]["files"] > 0 for r in reports)
    # The bucket holds all of it: a sync over it has nothing to download, and reads the truth.
    with dsm.Manager(cache_url=s3_place, cache_dir=tmp_path / "check", **args) as m:
        again = m.sync(universe, "2024-01-01", "2024-07-01", interval="1h")
        assert again["total"]["files"] == 0 and again["total"]["rows"] == 10 * 4368
        r = m.get("SYM15USDT", "2024-01-01", "2024-07-01", interval="1h", source="cache")
        truth = emulator.klines("SYM15USDT", "1h", ms("2024-01-01"), ms("2024-07-01"))
        assert r.to_arrow()["close"].to_pylist() == [float(k[4]) for k in truth]
    assert any(k.startswith("klines-v1/market=spot/symbol=SYM15USDT/interval=1h/") for k in objects(s3_place))
