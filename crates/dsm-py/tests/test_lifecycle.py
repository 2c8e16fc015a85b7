"""The lifecycle, the reason dsm exists: cancellation is prompt and drops the work, Ctrl-C works,
and the interpreter exits cleanly, quickly and without a crash in the middle of downloads."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import dsm
from conftest import PYTHON, Emulator, settings, temp_files

#: A year of minutes: long enough to be in flight whenever a test interrupts it.
LONG = dict(symbol="BTCUSDT", start="2023-01-01", end="2024-01-01", interval="1m")


def test_cancelling_an_aget_task_is_prompt_and_drops_the_work(fresh_emulator: Emulator, tmp_path):
    fresh_emulator.faults("hang")
    cache = tmp_path / "cache"

    async def run() -> float:
        async with dsm.Manager(**settings(fresh_emulator, cache)) as m:
            task = asyncio.create_task(m.aget(**LONG))
            while fresh_emulator.connections() == 0:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started

    assert asyncio.run(run()) < 0.1
    assert fresh_emulator.wait_open_connections(0) == 0
    assert temp_files(cache) == []
    fresh_emulator.faults()


def test_wait_for_times_out_on_time(fresh_emulator: Emulator, tmp_path):
    fresh_emulator.faults("hang")

    async def run() -> float:
        async with dsm.Manager(**settings(fresh_emulator, tmp_path / "cache")) as m:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(m.aget(**LONG), 0.2)
            return time.monotonic() - started

    assert asyncio.run(run()) < 0.3
    assert fresh_emulator.wait_open_connections(0) == 0
    fresh_emulator.faults()


CTRL_C = """
import sys, time
import dsm
m = dsm.Manager(cache_dir=sys.argv[2], vision_url=sys.argv[1], rest_url=sys.argv[1], weight_limit=2000)
print("ready", flush=True)
try:
    m.get("BTCUSDT", "2023-01-01", "2024-01-01", interval="1m")
except KeyboardInterrupt:
    print(time.monotonic(), flush=True)
    m.close()
    sys.exit(0)
"""


def test_ctrl_c_during_get_raises_keyboard_interrupt_at_once(fresh_emulator: Emulator, tmp_path):
    fresh_emulator.faults("hang")
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        PYTHON + ["-c", CTRL_C, fresh_emulator.url, str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert fresh_emulator.wait_open_connections(1) == 1
    sent = time.monotonic()  # CLOCK_MONOTONIC: the same clock in both processes
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    assert err == ""
    assert float(out.strip()) - sent < 0.2
    assert fresh_emulator.wait_open_connections(0) == 0
    assert temp_files(cache) == []
    fresh_emulator.faults()


EXIT_CHILD = """
import asyncio, sys, threading, time
# Exit hooks run last-registered first: this one runs right after dsm's, and says when dsm was done.
threading._register_atexit(lambda: print(time.monotonic(), flush=True))
import dsm

url, cache, how, style = sys.argv[1:5]
m = dsm.Manager(cache_dir=cache, vision_url=url, rest_url=url, weight_limit=2000)

def fetch(symbol):
    m.get(symbol, "2023-01-01", "2024-01-01", interval="1m")

for symbol, daemon in (("BTCUSDT", False), ("ETHUSDT", True)):
    threading.Thread(target=fetch, args=(symbol,), daemon=daemon).start()

def leave():
    print(time.monotonic(), flush=True)
    if how == "exit":
        sys.exit(3)
    if how == "raise":
        raise RuntimeError("boom")
    if how == "interrupt":
        raise KeyboardInterrupt

async def main():
    # -X dev logs any loop step over 100 ms; several of these interpreters share two cores, so
    # only a step over a second (a real stall) may be reported here.
    asyncio.get_running_loop().slow_callback_duration = 1.0
    tasks = [asyncio.create_task(m.aget(s, "2023-01-01", "2024-01-01", interval="1m"))
             for s in ("BTCUSDT", "BNBUSDT")]
    await asyncio.sleep(0.3)  # downloads are in flight
    leave()

if style == "async":
    asyncio.run(main())
else:
    time.sleep(0.3)  # downloads are in flight
    leave()
"""

#: How each way of leaving ends, as Python defines it: exit status and what stderr says.
EXITS = {
    "end": (0, None),
    "exit": (3, None),
    "raise": (1, "RuntimeError: boom"),
    "interrupt": (-signal.SIGINT, "KeyboardInterrupt"),
}


def _exit_once(url: str, cache: Path, how: str, style: str) -> tuple:
    child = subprocess.Popen(
        PYTHON + ["-c", EXIT_CHILD, url, str(cache), how, style],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        return (how, style, None, out, err, None, None)
    ended = time.monotonic()
    stamps = [float(line) for line in out.split()]
    if len(stamps) != 2:
        return (how, style, child.returncode, out, err, None, None)
    left, stopped = stamps
    return (how, style, child.returncode, out, err, stopped - left, ended - left)


def test_interpreter_exit_mid_download_never_hangs_or_crashes(tmp_path):
    """50 interpreters leave while async tasks and sync calls (daemon and not) are downloading:
    dsm's work stops inside its exit deadline (1 s), every interpreter is gone within 2 s,
    with its proper exit status, and says nothing unexpected."""
    emu = Emulator(faults=["slow=2000"])  # a trickle: every transfer stays in flight
    try:
        runs = [
            (how, style)
            for _ in range(7)
            for how in EXITS
            for style in ("async", "sync")
        ][:50]
        while len(runs) < 50:
            runs.append(("end", "async"))
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(
                pool.map(
                    lambda r: _exit_once(emu.url, tmp_path / f"cache-{r[1]}", r[0], r[1]), runs
                )
            )
    finally:
        emu.close()
    for how, style, code, out, err, stopping, took in results:
        want_code, want_err = EXITS[how]
        what = f"{how}/{style}: exit {code}, stdout {out!r}, stderr {err!r}"
        assert code == want_code, what
        # Stopped, not abandoned at the deadline: every download ended when cancelled.
        assert stopping is not None and stopping < dsm._EXIT_TIMEOUT, f"{what}, dsm: {stopping}"
        assert took is not None and took < 2.0, f"{what}, took {took}"
        if want_err is None:
            assert err == "", what
        else:
            lines = err.strip().splitlines()
            assert lines[0] == "Traceback (most recent call last):", what
            assert lines[-1] == want_err, what
            assert sum(line.startswith("Traceback") for line in lines) == 1, what


def _proc_counts() -> tuple:
    fds = os.listdir("/proc/self/fd")
    sockets = sum(
        1 for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")
        and os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    )
    threads = len(os.listdir("/proc/self/task"))
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    return threads, len(fds), sockets, rss_pages * os.sysconf("SC_PAGE_SIZE")


def test_a_hundred_create_get_close_cycles_leave_nothing_behind(emulator: Emulator, tmp_path):
    cache = tmp_path / "cache"

    def cycle() -> None:
        with dsm.Manager(**settings(emulator, cache)) as m:
            assert len(m.get("BTCUSDT", "2024-01-01", "2024-01-03", interval="1h")) == 48

    def async_cycle() -> None:
        async def run():
            async with dsm.Manager(**settings(emulator, cache)) as m:
                return len(await m.aget("BTCUSDT", "2024-01-01", "2024-01-03", interval="1h"))

        assert asyncio.run(run()) == 48

    for _ in range(10):  # warm-up: the runtime's threads, the cache, allocator pools
        cycle()
        async_cycle()
    time.sleep(1.5)  # idle blocking threads end
    threads, fds, sockets, rss = _proc_counts()
    for i in range(100):
        (cycle if i % 2 else async_cycle)()
    # Threads for blocking file work idle out after a second: wait for them.
    deadline = time.monotonic() + 5
    while True:
        threads2, fds2, sockets2, rss2 = _proc_counts()
        if threads2 <= threads or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert threads2 <= threads, (threads, threads2)
    assert fds2 <= fds, (fds, fds2)
    assert sockets2 <= sockets, (sockets, sockets2)
    assert rss2 - rss < 20 * 1024 * 1024, (rss, rss2)
    assert threading.active_count() == 1
