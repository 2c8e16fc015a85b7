"""Set-up shared by the Python tests: the project's emulator (a real server on loopback, started
from the binary cargo built) and managers pointed at it.

The suite runs under ``python -X dev -W error`` (see scripts/test.sh): a warning of any kind, a
coroutine never awaited, an unclosed resource, fails it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import http.client
import urllib.parse
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[3]
EMULATOR = os.environ.get("DSM_EMULATOR", str(ROOT / "target" / "debug" / "dsm-emulator"))
#: The emulator's clock: mid-July 2024, so 2024's first half is published on its archive.
NOW = "2024-07-15T00:00:00Z"
#: Children of the lifecycle tests use this interpreter, with the same flags as the suite.
PYTHON = [sys.executable, "-X", "dev", "-W", "error"]


def ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class Emulator:
    """A ``dsm-emulator`` process; ``url`` serves both the Vision archive and the REST API."""

    def __init__(self, faults: Sequence[str] = (), now: str = NOW) -> None:
        if not Path(EMULATOR).exists():
            pytest.fail(f"no emulator binary at {EMULATOR}: run `cargo build -p dsm-emulator` first")
        args = [EMULATOR, "--port", "0", "--now", now]
        for f in faults:
            args += ["--fault", f]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=20):
                self.close()
                pytest.fail("the emulator did not print its URL within 20 s")
        self.url = self.proc.stdout.readline().strip()
        # One kept-alive connection for the tests' own calls: it is the one connection the
        # emulator counts that is not dsm's.
        parts = urllib.parse.urlsplit(self.url)
        self._http = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def _call(self, path: str, data: Optional[bytes] = None, method: str = "GET") -> bytes:
        self._http.request(method, path, body=data)
        r = self._http.getresponse()
        body = r.read()
        if r.status >= 400:
            raise RuntimeError(f"emulator: {method} {path}: HTTP {r.status}: {body[:200]!r}")
        return body

    def stats(self) -> dict:
        return json.loads(self._call("/_emulator/stats"))

    def requests(self) -> int:
        return len(json.loads(self._call("/_emulator/log")))

    def faults(self, *faults: str) -> None:
        """Replaces the active faults."""
        self._call("/_emulator/faults", method="DELETE")
        if faults:
            self._call("/_emulator/faults", "\n".join(faults).encode(), method="POST")

    def klines(self, symbol: str, interval: str, start: int, end: int, market: str = "spot") -> List[list]:
        """The truth, straight from the emulator's REST API (1000 candles a page)."""
        path = {"spot": "/api/v3/klines", "um": "/fapi/v1/klines", "cm": "/dapi/v1/klines"}[market]
        rows: List[list] = []
        while start < end:
            page = json.loads(
                self._call(
                    f"{path}?symbol={symbol}&interval={interval}&startTime={start}"
                    f"&endTime={end - 1}&limit=1000"
                )
            )
            if not page:
                break
            rows += page
            start = page[-1][0] + 1
        return rows

    def connections(self) -> int:
        """Connections open now, other than the tests' own."""
        return self.stats()["open_connections"] - 1

    def wait_open_connections(self, want: int, timeout: float = 5.0) -> int:
        """Waits until dsm has `want` connections open to the emulator (or the timeout); returns
        the count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.connections()
            if n == want or time.monotonic() > deadline:
                return n
            time.sleep(0.02)

    def close(self) -> None:
        self._http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One fault-free emulator for the tests that do not change it."""
    emu = Emulator()
    yield emu
    emu.close()


@pytest.fixture
def fresh_emulator() -> Iterator[Emulator]:
    """An emulator of the test's own (for faults and request counts)."""
    emu = Emulator()
    yield emu
    emu.close()


def settings(emu: Emulator, cache_dir: Path, **extra) -> dict:
    """Manager arguments for `emu`: its URLs, a cache of the test's own, a fixed weight limit."""
    return dict(
        cache_dir=cache_dir,
        vision_url=emu.url,
        rest_url=emu.url,
        weight_limit=2000,
        **extra,
    )


def temp_files(cache_dir: Path) -> List[Path]:
    """Files a write in progress leaves (dsm names them `.tmp-*`)."""
    if not cache_dir.exists():
        return []
    return [p for p in cache_dir.rglob("*") if p.name.startswith(".tmp-")]
