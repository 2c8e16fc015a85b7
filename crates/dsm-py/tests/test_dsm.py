"""What a Python user gets: exact rows in every frame type, times in every form, typed errors."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import date, datetime, timezone

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import dsm
from conftest import Emulator, ms, settings


def test_rows_equal_the_emulators_truth_in_every_frame_type(emulator: Emulator, tmp_path):
    truth = emulator.klines("BTCUSDT", "1h", ms("2024-01-01T00:00:00Z"), ms("2024-03-01T00:00:00Z"))
    assert len(truth) == 60 * 24
    with dsm.Manager(**settings(emulator, tmp_path / "cache")) as m:
        r = m.get("BTCUSDT", "2024-01-01", "2024-03-01", interval="1h")
    assert len(r) == len(truth) and r.complete and r.gaps == [] and r.missing == []

    table = r.to_arrow()
    assert table.column("open_time").to_pylist()[0] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert [t.timestamp() * 1000 for t in table.column("open_time").to_pylist()] == [
        row[0] for row in truth
    ]
    assert table.column("close").to_pylist() == [float(row[4]) for row in truth]

    df = r.to_polars()
    assert df.height == len(truth)
    assert df["open_time"].dtype == pl.Datetime("ms", "UTC")
    assert df["volume"].to_list() == [float(row[5]) for row in truth]

    pdf = r.to_pandas()
    assert isinstance(pdf.index, pd.DatetimeIndex) and pdf.index.name == "open_time"
    assert str(pdf.index.tz) == "UTC"
    assert pdf.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert pdf["close"].tolist() == [float(row[4]) for row in truth]

    # The PyCapsule stream is readable again and again (DuckDB reads it twice), and never copies:
    # both readings point at the same memory, dsm's own.
    first, second = pa.table(r), pa.table(r)
    assert first.num_rows == second.num_rows == len(truth)
    close = lambda t: t.column("close").chunk(0).buffers()[1].address  # noqa: E731
    assert close(first) == close(second)
    assert pl.DataFrame(r).height == len(truth)


def test_summary_is_the_clis_json_document(emulator: Emulator, tmp_path):
    with dsm.Manager(**settings(emulator, tmp_path / "cache")) as m:
        cold = m.get("BTCUSDT", "2024-02-01", "2024-02-03", interval="1m").summary
        warm = m.get("BTCUSDT", "2024-02-01", "2024-02-03", interval="1m").summary
    assert cold["time_column"] == "open_time"
    (s,) = cold["symbols"]
    assert s["symbol"] == "BTCUSDT" and s["rows"] == 2 * 1440 and s["complete"]
    assert s["first"] == "2024-02-01T00:00:00.000Z" and s["last"] == "2024-02-02T23:59:00.000Z"
    assert s["sources"]["vision"]["requests"] > 0 and s["sources"]["vision"]["rows"] == 2 * 1440
    assert cold["total"]["rows"] == 2 * 1440
    # The second answer comes from the cache, asking nothing of the network.
    assert warm["total"]["sources"]["cache"]["rows"] == 2 * 1440
    assert warm["total"]["sources"]["vision"]["requests"] == 0
    assert warm["total"]["sources"]["rest"]["requests"] == 0


def test_times_in_every_form_mean_the_same_instant(emulator: Emulator, tmp_path):
    forms = [
        ("2024-01-02", "2024-01-03"),
        ("2024-01-02T00:00:00Z", "2024-01-03T01:00:00+01:00"),
        (datetime(2024, 1, 2), datetime(2024, 1, 3)),  # naive = UTC
        (datetime(2024, 1, 2, tzinfo=timezone.utc), date(2024, 1, 3)),
        (1_704_153_600_000, 1_704_240_000_000),
        (pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03", tz="UTC")),
    ]
    with dsm.Manager(**settings(emulator, tmp_path / "cache")) as m:
        answers = [m.get("BTCUSDT", a, b, interval="1h").to_arrow() for a, b in forms]
    assert all(a.num_rows == 24 for a in answers)
    assert all(a.equals(answers[0]) for a in answers)


def test_a_list_of_symbols_is_one_request_and_a_dict_of_responses(emulator: Emulator, tmp_path):
    with dsm.Manager(**settings(emulator, tmp_path / "cache")) as m:
        got = m.get(["BTCUSDT", "ETHUSDT"], "2024-01-01", "2024-01-02", interval="1h")
        assert set(got) == {"BTCUSDT", "ETHUSDT"}
        assert all(len(r) == 24 for r in got.values())
        assert got["ETHUSDT"].symbol == "ETHUSDT"
        frames = dsm._output(got, dsm._converter("pandas"))
        assert set(frames) == {"BTCUSDT", "ETHUSDT"}


def test_bad_input_is_a_value_error_raised_before_any_request(fresh_emulator: Emulator, tmp_path):
    before = fresh_emulator.requests()
    with dsm.Manager(**settings(fresh_emulator, tmp_path / "cache")) as m:
        cases = [
            dict(symbol="btcusdt", start="2024-01-01", end="2024-01-02", interval="1h"),
            dict(symbol="BTCUSDT", start="2024-01-02", end="2024-01-01", interval="1h"),
            dict(symbol="BTCUSDT", start="2024-01-01", end="2024-01-02", interval="7m"),
            dict(symbol="BTCUSDT", start="2024-01-01", end="2024-01-02", market="xx", interval="1h"),
            dict(symbol="BTCUSDT", start="2024-01-01", end="2024-01-02"),  # candles need an interval
            dict(symbol="BTCUSDT", start=1_704_067_200, end="2024-01-02", interval="1h"),  # seconds
            dict(symbol="BTCUSDT", start=object(), end="2024-01-02", interval="1h"),
            dict(symbol="BTCUSDT", start="2024-01-01", end="2024-01-02", kind="funding"),  # spot
        ]
        for case in cases:
            with pytest.raises(dsm.InputError) as e:
                m.get(case.pop("symbol"), case.pop("start"), case.pop("end"), **case)
            assert isinstance(e.value, ValueError) and isinstance(e.value, dsm.DsmError)
            assert e.value.category == "input" and str(e.value)
        with pytest.raises(dsm.InputError, match="did you mean BTCUSDT"):
            m.get("btcusdt", "2024-01-01", "2024-01-02", interval="1h")
    with pytest.raises(dsm.InputError, match="source"):
        dsm.Manager(source="nowhere")
    with pytest.raises(dsm.InputError, match="no cache"):
        dsm.Manager(cache=False, source="cache")
    with pytest.raises(dsm.InputError, match="timeout"):
        dsm.Manager(timeout=0)
    assert fresh_emulator.requests() == before


def test_an_incomplete_answer_raises_unless_a_partial_one_is_allowed(emulator: Emulator, tmp_path):
    # The archive has not published the last day yet, and REST may not be used.
    args = ("BTCUSDT", "2024-07-13", "2024-07-15")
    with dsm.Manager(**settings(emulator, tmp_path / "cache"), source="vision") as m:
        with pytest.raises(dsm.IncompleteError) as e:
            m.get(*args, interval="1h")
        assert e.value.category == "incomplete" and e.value.symbol == "BTCUSDT"
        assert e.value.missing == [
            (datetime(2024, 7, 14, tzinfo=timezone.utc), datetime(2024, 7, 15, tzinfo=timezone.utc))
        ]
        assert "--allow-partial" in str(e.value)
        r = m.get(*args, interval="1h", allow_partial=True)
    assert not r.complete and len(r) == 24 and r.missing == e.value.missing
    assert r.summary["total"]["complete"] is False


def test_each_failure_has_its_category(fresh_emulator: Emulator, tmp_path):
    with dsm.Manager(**settings(fresh_emulator, tmp_path / "cache")) as m:
        with pytest.raises(dsm.UnavailableError) as e:
            m.get("BTCUSDT", "2030-01-01", "2030-01-02", interval="1h")
        assert "future" in str(e.value) and e.value.symbol == "BTCUSDT"
        fresh_emulator.faults("status500")
        with pytest.raises(dsm.UpstreamError) as e:
            m.get("ETHUSDT", "2024-01-01", "2024-01-02", interval="1h")
        assert fresh_emulator.url in str(e.value)  # the message names the URL
    fresh_emulator.faults()


def test_gather_across_markets_and_threads_on_one_manager(emulator: Emulator, tmp_path):
    with dsm.Manager(**settings(emulator, tmp_path / "cache")) as m:

        async def all_markets():
            return await asyncio.gather(
                m.aget("BTCUSDT", "2024-01-01", "2024-01-08", interval="1h"),
                m.aget("BTCUSDT", "2024-01-01", "2024-01-08", interval="1h", market="um"),
                m.aget("BTCUSD_PERP", "2024-01-01", "2024-01-08", interval="1h", market="cm"),
            )

        answers = asyncio.run(all_markets())
        assert [len(a) for a in answers] == [7 * 24] * 3
        for a, market, symbol in zip(
            answers, ["spot", "um", "cm"], ["BTCUSDT", "BTCUSDT", "BTCUSD_PERP"]
        ):
            truth = emulator.klines(
                symbol, "1h", ms("2024-01-01T00:00:00Z"), ms("2024-01-08T00:00:00Z"), market
            )
            assert a.to_arrow().column("close").to_pylist() == [float(t[4]) for t in truth]

        results = {}

        def worker(symbol: str) -> None:
            results[symbol] = len(m.get(symbol, "2024-02-01", "2024-02-03", interval="1m"))

        threads = [threading.Thread(target=worker, args=(s,)) for s in ("BTCUSDT", "ETHUSDT")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {"BTCUSDT": 2 * 1440, "ETHUSDT": 2 * 1440}


def test_other_threads_run_while_get_waits_and_close_cancels_it(fresh_emulator: Emulator, tmp_path):
    """The GIL is released while dsm works; closing the manager stops a `get` in another thread."""
    fresh_emulator.faults("hang")
    m = dsm.Manager(**settings(fresh_emulator, tmp_path / "cache"))
    errors = []

    def fetch() -> None:
        try:
            m.get("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h")
        except dsm.DsmError as e:
            errors.append(e)

    t = threading.Thread(target=fetch)
    t.start()
    assert fresh_emulator.wait_open_connections(1) == 1  # the request is in flight
    counted, until = 0, time.monotonic() + 0.3
    while time.monotonic() < until:
        counted += 1
    started = time.monotonic()
    m.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 1.0
    assert len(errors) == 1 and isinstance(errors[0], dsm.CancelledError), errors
    assert counted > 10_000
    assert fresh_emulator.wait_open_connections(0) == 0
    fresh_emulator.faults()


def test_get_data_returns_the_frame_asked_for(emulator: Emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("DSM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DSM_VISION_URL", emulator.url)
    monkeypatch.setenv("DSM_REST_URL", emulator.url)
    monkeypatch.setenv("DSM_WEIGHT_LIMIT", "2000")
    monkeypatch.setattr(dsm, "_default", None)
    df = dsm.get_data("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h")
    assert isinstance(df, pl.DataFrame) and df.height == 24
    pdf = dsm.get_data("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h", output="pandas")
    assert isinstance(pdf, pd.DataFrame) and len(pdf) == 24
    table = asyncio.run(
        dsm.aget_data("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h", output="arrow")
    )
    assert isinstance(table, pa.Table) and table.num_rows == 24
    with pytest.raises(dsm.InputError):
        dsm.get_data("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h", output="excel")
    dsm._default.close()
    assert list((tmp_path / "cache").iterdir())  # the environment's cache was used


def test_a_closed_manager_says_so(emulator: Emulator, tmp_path):
    m = dsm.Manager(**settings(emulator, tmp_path / "cache"))
    m.close()
    m.close()  # idempotent
    assert m.closed
    with pytest.raises(dsm.InputError, match="closed"):
        m.get("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h")

    async def twice():
        async with dsm.Manager(**settings(emulator, tmp_path / "cache")) as a:
            assert len(await a.aget("BTCUSDT", "2024-01-01", "2024-01-02", interval="1h")) == 24
        await a.aclose()
        assert a.closed

    asyncio.run(twice())


def test_archive_tables_reach_every_frame_type(emulator: Emulator, tmp_path):
    # Metrics every 5 minutes (read from text times, the file unordered and repeating rows), the
    # book depth's bands (several rows per time), and an option market table.
    with dsm.Manager(**settings(emulator, tmp_path / "cache")) as m:
        metrics = m.get("BTCUSDT", "2024-01-31T12:00:00Z", "2024-02-01T12:00:00Z", market="um", kind="metrics")
        depth = m.get("BTCUSD_PERP", "2024-02-01", "2024-02-02", market="cm", kind="book-depth")
        bvol = m.get("ETHBVOLUSDT", "2024-02-01", "2024-02-02", market="option", kind="bvol-index")
        with pytest.raises(dsm.InputError) as e:
            m.get("BTCUSDT", "2024-02-01", "2024-02-02", market="spot", kind="book-ticker")
        assert "um, cm" in str(e.value)
    assert metrics.complete and len(metrics) == 288 and metrics.time_column == "create_time"
    pdf = metrics.to_pandas()
    assert pdf.index.name == "create_time" and str(pdf.index.tz) == "UTC"
    assert pdf.index[0] == pd.Timestamp("2024-01-31T12:00:00", tz="UTC")
    assert pdf.index.is_monotonic_increasing and pdf.index.is_unique
    assert set(pdf["symbol"]) == {"BTCUSDT"}

    df = depth.to_polars()
    assert df.height == 288 * 12 and df["timestamp"].dtype == pl.Datetime("ms", "UTC")
    assert df.group_by("timestamp").len()["len"].to_list() == [12] * 288
    assert sorted(set(df["percentage"].to_list())) == [-5, -4, -3, -2, -1, -0.2, 0.2, 1, 2, 3, 4, 5]

    table = bvol.to_arrow()
    assert table.column("calc_time").type == pa.timestamp("ms", tz="UTC")
    assert set(table.column("symbol").to_pylist()) == {"ETHBVOLUSDT"}
    assert table.num_rows == 1440 and set(table.column("source").to_pylist()) == {"vision"}
