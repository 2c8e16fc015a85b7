"""dsm: Binance market data, correct and fast, as polars, pandas or pyarrow frames.

>>> import dsm
>>> with dsm.Manager() as m:                                     # doctest: +SKIP
...     r = m.get("BTCUSDT", "2024-01-01", "2024-02-01", interval="1m")
...     df = r.to_polars()            # or r.to_pandas(), r.to_arrow()
...     print(len(r), r.gaps, r.complete)

Every answer is sorted, de-duplicated and exact on ``[start, end)`` (open time, UTC). Gaps the
exchange confirmed are reported in ``.gaps``, never filled; an answer that lacks part of the range
raises :class:`IncompleteError` unless ``allow_partial=True``. ``aget`` is the same call for
asyncio; cancelling it (``task.cancel()``, ``asyncio.wait_for``) stops the download at once, and
so does Ctrl-C during ``get``. Interpreter exit never waits for, or crashes on, downloads in
flight: dsm cancels them first.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import numbers
import os
import threading
import time as _time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _dsm
from ._errors import (
    CancelledError,
    DsmError,
    IncompleteError,
    InputError,
    IntegrityError,
    LocalError,
    UnavailableError,
    UpstreamError,
)

__version__ = _dsm.__version__

__all__ = [
    "Manager",
    "Response",
    "get_data",
    "aget_data",
    "symbols",
    "DsmError",
    "InputError",
    "UnavailableError",
    "UpstreamError",
    "IntegrityError",
    "IncompleteError",
    "LocalError",
    "CancelledError",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
#: How long interpreter exit waits for cancelled downloads to stop (seconds).
_EXIT_TIMEOUT = 1.0

Time = Union[datetime, date, str, int, Any]


def _to_ms(value: Time, what: str) -> int:
    """Epoch milliseconds of a user's time: a datetime (naive means UTC), a pandas Timestamp, a
    date (midnight UTC), an ISO 8601 / RFC 3339 string or date, or epoch milliseconds."""
    if isinstance(value, bool):
        raise InputError(f"{what}: {value!r} is not a time")
    if isinstance(value, numbers.Integral):
        return _dsm.parse_instant(str(int(value)))
    if isinstance(value, str):
        return _dsm.parse_instant(value)
    if isinstance(value, datetime):  # pandas.Timestamp is one too
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return (value - _EPOCH) // _MS
    if isinstance(value, date):
        return (datetime(value.year, value.month, value.day, tzinfo=timezone.utc) - _EPOCH) // _MS
    if type(value).__name__ == "datetime64":  # numpy, without importing it
        return int(value.astype("datetime64[ms]").astype("int64"))
    raise InputError(
        f"{what}: cannot use {type(value).__name__} {value!r} as a time; give a datetime, a date, "
        "an ISO 8601 string (2024-01-01T00:00:00Z) or epoch milliseconds"
    )


def _utc(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def _ranges(pairs: Sequence[Tuple[int, int]]) -> List[Tuple[datetime, datetime]]:
    return [(_utc(a), _utc(b)) for a, b in pairs]


class Response:
    """One symbol's answer: its rows (as polars, pandas or pyarrow), gaps, and what it cost.

    It implements the Arrow PyCapsule interface (``__arrow_c_stream__``), so ``pyarrow.table(r)``,
    ``polars.DataFrame(r)`` or DuckDB read it without copying, as often as they like.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @property
    def symbol(self) -> str:
        return self._raw.symbol

    @property
    def time_column(self) -> str:
        """The time column: ``open_time`` (candles), ``funding_time``, ``time`` (trades), or an
        archive table's own (``create_time``, ``timestamp``, ``calc_time`` ...)."""
        return self._raw.time_column

    @property
    def gaps(self) -> List[Tuple[datetime, datetime]]:
        """``[start, end)`` UTC ranges the exchange confirmed have no data (never filled)."""
        return _ranges(self._raw.gaps)

    @property
    def missing(self) -> List[Tuple[datetime, datetime]]:
        """``[start, end)`` UTC ranges that could not be obtained (only with ``allow_partial``)."""
        return _ranges(self._raw.missing)

    @property
    def complete(self) -> bool:
        """Whether rows and confirmed gaps account for the whole range."""
        return self._raw.complete

    @property
    def summary(self) -> Dict[str, Any]:
        """The same document as ``dsm fetch --json`` prints: rows, bounds, gaps, missing ranges,
        failures, and per source (cache, vision, rest) requests, bytes and rows."""
        return json.loads(self._raw.report_json)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return repr(self._raw)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._raw.__arrow_c_stream__(requested_schema)

    def to_arrow(self) -> "pyarrow.Table":  # noqa: F821
        """The rows as a pyarrow Table (zero copy)."""
        import pyarrow

        return pyarrow.RecordBatchReader.from_stream(self._raw).read_all()

    def to_polars(self) -> "polars.DataFrame":  # noqa: F821
        """The rows as a polars DataFrame (zero copy)."""
        import polars

        return polars.DataFrame(self._raw)

    def to_pandas(self) -> "pandas.DataFrame":  # noqa: F821
        """The rows as a pandas DataFrame indexed by the time column (a UTC ``DatetimeIndex``)."""
        return self.to_arrow().to_pandas().set_index(self.time_column)


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name)
    return value if value else None


def _env_number(name: str, kind: type) -> Any:
    value = _env(name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InputError(f"{name}={value!r} is not a number") from None


def _settle(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if fut.done():  # cancelled meanwhile: the result is dropped
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _await_rust(start: Any) -> Any:
    """Starts Rust work with ``start(deliver)`` and awaits its result; cancelling the awaiting
    task cancels the work."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:  # runs on a dsm thread
        try:
            loop.call_soon_threadsafe(_settle, fut, ok, value)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    pending = start(deliver)
    if pending is None:
        return None
    try:
        return await fut
    except BaseException:
        pending.cancel()
        raise


class Manager:
    """Fetches Binance market data from the cheapest source that is right: dsm's cache, the
    Binance Vision archive, the REST API.

    Arguments default to the environment, as for the CLI: ``DSM_CACHE_DIR``, ``DSM_CACHE_URL``,
    ``DSM_VISION_URL``, ``DSM_REST_URL``, ``DSM_CONCURRENCY``, ``DSM_WEIGHT_LIMIT``,
    ``DSM_TIMEOUT``.

    ``cache_url="s3://BUCKET/PREFIX"`` keeps the cache on S3-compatible storage that many
    machines share (credentials, region and endpoint from the standard ``AWS_*`` variables);
    ``cache_dir`` then only keeps this machine's REST weight and bans.

    Use it as ``with dsm.Manager() as m:`` or ``async with``; ``close()`` / ``await aclose()``
    cancel what is still running and are idempotent. One manager shares one cache, one
    connection pool and one REST weight budget between every call, thread and task using it.
    """

    def __init__(
        self,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        cache: bool = True,
        vision_url: Optional[str] = None,
        rest_url: Optional[str] = None,
        source: str = "auto",
        *,
        concurrency: Optional[int] = None,
        weight_limit: Optional[int] = None,
        timeout: Optional[float] = None,
        wait_on_ban: bool = False,
        cache_url: Optional[str] = None,
    ) -> None:
        cache_dir = cache_dir if cache_dir is not None else _env("DSM_CACHE_DIR")
        self._raw = _dsm.RawManager(
            {
                "cache_dir": os.fspath(cache_dir) if cache_dir is not None else None,
                "cache_url": cache_url or _env("DSM_CACHE_URL"),
                "cache": bool(cache),
                "vision_url": vision_url or _env("DSM_VISION_URL"),
                "rest_url": rest_url or _env("DSM_REST_URL"),
                "source": source,
                "concurrency": concurrency
                if concurrency is not None
                else _env_number("DSM_CONCURRENCY", int),
                "weight_limit": weight_limit
                if weight_limit is not None
                else _env_number("DSM_WEIGHT_LIMIT", int),
                "timeout": timeout if timeout is not None else _env_number("DSM_TIMEOUT", float),
                "wait_on_ban": bool(wait_on_ban),
            }
        )

    @staticmethod
    def _query(
        symbol: Union[str, Sequence[str]],
        start: Time,
        end: Optional[Time],
        market: str,
        interval: Optional[str],
        kind: str,
        source: Optional[str],
        include_open: bool,
        allow_partial: bool,
    ) -> Tuple[Dict[str, Any], bool]:
        single = isinstance(symbol, str)
        symbols = [symbol] if single else list(symbol)
        if not all(isinstance(s, str) for s in symbols):
            raise InputError(f"symbol: give a string or a list of strings, not {symbol!r}")
        query = {
            "symbols": symbols,
            "start": _to_ms(start, "start"),
            "end": _to_ms(end, "end") if end is not None else int(_time.time() * 1000),
            "market": market,
            "kind": kind,
            "interval": interval,
            "source": source,
            "include_open": bool(include_open),
            "allow_partial": bool(allow_partial),
        }
        return query, single

    @staticmethod
    def _wrap(raws: List[Any], single: bool) -> Union[Response, Dict[str, Response]]:
        responses = [Response(r) for r in raws]
        if single:
            return responses[0]
        return {r.symbol: r for r in responses}

    def get(
        self,
        symbol: Union[str, Sequence[str]],
        start: Time,
        end: Optional[Time] = None,
        *,
        market: str = "spot",
        interval: Optional[str] = None,
        kind: str = "klines",
        source: Optional[str] = None,
        include_open: bool = False,
        allow_partial: bool = False,
    ) -> Union[Response, Dict[str, Response]]:
        """Rows of ``symbol`` (or of each symbol of a list: one request, one budget, a dict of
        responses) with open time in ``[start, end)``; ``end`` defaults to now.

        ``market`` is ``spot``, ``um`` (USD-M futures), ``cm`` (COIN-M) or ``option``; ``kind``
        is ``klines``, ``mark-klines``, ``index-klines``, ``premium-klines``, ``funding``,
        ``aggtrades`` or ``trades``, or one of the archive's tables: ``metrics``, ``book-depth``,
        ``book-ticker`` (um, cm), ``liquidations`` (cm), ``bvol-index`` and ``eoh-summary``
        (option); ``interval`` (``1s``, ``1m`` … ``1M``) is required for
        candles. Times are datetimes (naive means UTC), dates, ISO strings or epoch milliseconds.
        The GIL is released while dsm works, so threads calling ``get`` run in parallel.
        """
        query, single = self._query(
            symbol, start, end, market, interval, kind, source, include_open, allow_partial
        )
        return self._wrap(self._raw.get(query), single)

    async def aget(
        self,
        symbol: Union[str, Sequence[str]],
        start: Time,
        end: Optional[Time] = None,
        *,
        market: str = "spot",
        interval: Optional[str] = None,
        kind: str = "klines",
        source: Optional[str] = None,
        include_open: bool = False,
        allow_partial: bool = False,
    ) -> Union[Response, Dict[str, Response]]:
        """:meth:`get` for asyncio. Cancelling the awaiting task cancels the download."""
        query, single = self._query(
            symbol, start, end, market, interval, kind, source, include_open, allow_partial
        )
        raws = await _await_rust(lambda deliver: self._raw.start_get(deliver, query))
        return self._wrap(raws, single)

    @staticmethod
    def _sync_query(
        symbols: Union[str, Sequence[str]],
        start: Time,
        end: Optional[Time],
        market: str,
        interval: Optional[str],
        kind: str,
        source: Optional[str],
        shard: Optional[str],
    ) -> Dict[str, Any]:
        if not isinstance(symbols, str):
            symbols = ",".join(symbols)
        return {
            "symbols": symbols,
            "start": _to_ms(start, "start"),
            "end": _to_ms(end, "end") if end is not None else int(_time.time() * 1000),
            "market": market,
            "kind": kind,
            "interval": interval,
            "source": source,
            "shard": shard,
        }

    @staticmethod
    def _sync_progress(progress: Optional[Any]) -> Optional[Any]:
        """Adapts the user's callback: one dict per event, with the running counts."""
        if progress is None:
            return None
        state = {"units": 0, "done": 0}

        def event(what: str, *args: Any) -> None:
            if what == "planned":
                state["units"] = sum(args[0].values())
                progress({"event": "planned", "symbols": dict(args[0]), "units": state["units"]})
            else:
                state["done"] += 1
                symbol, rows, nbytes, complete = args
                progress(
                    {
                        "event": "unit",
                        "symbol": symbol,
                        "rows": rows,
                        "bytes": nbytes,
                        "complete": complete,
                        "done": state["done"],
                        "units": state["units"],
                    }
                )

        return event

    @staticmethod
    def _sync_result(text: str, allow_partial: bool) -> Dict[str, Any]:
        report = json.loads(text)
        if report["complete"] or allow_partial:
            return report
        failures = [f for s in report["symbols"] for f in s["failures"]]
        upstream = any(f["category"] == "upstream" for f in failures)
        incomplete = report["total"]["incomplete"]
        message = (
            f"{len(incomplete)} of {report['total']['symbols']} symbol(s) incomplete "
            f"({', '.join(incomplete[:10])}{f' and {len(incomplete) - 10} more' if len(incomplete) > 10 else ''}); "
            "sync again to fetch only what is missing"
        )
        if failures:
            message += f"; first failure: {failures[0]['message']}"
        error = UpstreamError if upstream else IncompleteError
        raise error(message, report=report)

    def sync(
        self,
        symbols: Union[str, Sequence[str]],
        start: Time,
        end: Optional[Time] = None,
        *,
        market: str = "spot",
        interval: Optional[str] = None,
        kind: str = "klines",
        source: Optional[str] = None,
        shard: Optional[str] = None,
        allow_partial: bool = False,
        progress: Optional[Any] = None,
    ) -> Dict[str, Any]:
        """Fills the cache for a whole set of symbols over ``[start, end)`` and returns the report
        ``dsm sync --json`` prints (per symbol: rows, files, bytes, gaps, missing, failures; and
        totals); the rows themselves stay in the cache, for :meth:`get` or any Parquet reader.

        ``symbols`` is ``"all"`` (delisted symbols included), a glob (``"*USDT"``), a list or
        a comma list (either may mix globs and symbols), or ``"@FILE"``. Each symbol's range is
        clipped to its life; the work is cut into (symbol, month) units, and ``shard="K/N"``
        runs a stable K-th of N of them, so N workers sharing one cache
        (``cache_url="s3://..."``) split a universe with no coordinator. A rerun downloads only
        what is missing. ``progress(event)`` gets a dict per event (``{"event": "planned",
        "units": N, ...}``, then ``{"event": "unit", "symbol": S, "done": k, "units": N,
        ...}``) on a dsm thread. A failing symbol never stops the others;
        if any is incomplete this raises :class:`UpstreamError` (an upstream failed) or
        :class:`IncompleteError`, with the report as ``.report``, unless ``allow_partial``.
        """
        query = self._sync_query(symbols, start, end, market, interval, kind, source, shard)
        text = self._raw.sync(query, self._sync_progress(progress))
        return self._sync_result(text, allow_partial)

    async def async_sync(
        self,
        symbols: Union[str, Sequence[str]],
        start: Time,
        end: Optional[Time] = None,
        *,
        market: str = "spot",
        interval: Optional[str] = None,
        kind: str = "klines",
        source: Optional[str] = None,
        shard: Optional[str] = None,
        allow_partial: bool = False,
        progress: Optional[Any] = None,
    ) -> Dict[str, Any]:
        """:meth:`sync` for asyncio. Cancelling the awaiting task stops the sync; the units
        already cached stay, and the next sync resumes from them."""
        query = self._sync_query(symbols, start, end, market, interval, kind, source, shard)
        callback = self._sync_progress(progress)
        text = await _await_rust(lambda deliver: self._raw.start_sync(deliver, query, callback))
        return self._sync_result(text, allow_partial)

    def symbols(self, market: str = "spot", status: str = "all") -> List[Dict[str, Any]]:
        """The symbols of ``market`` (``spot``, ``um``, ``cm``) with ``status`` ``trading``,
        ``delisted`` or ``all`` (pending ones too): dicts with ``symbol``, ``status``
        (``trading``, ``pending`` or ``delisted``), ``exchange_status`` (``None``
        once exchangeInfo has dropped the symbol), ``listed`` and ``ended`` (UTC datetimes, or
        ``None`` where unknown), from exchangeInfo and the Vision archive's listing."""
        entries = json.loads(self._raw.symbols(market, status))
        for e in entries:
            for key in ("listed", "ended"):
                if e[key] is not None:
                    e[key] = _utc(_dsm.parse_instant(e[key]))
        return entries

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        """Cancels this manager's work and waits (at most 2 s) for it to stop. Idempotent."""
        self._raw.close()

    async def aclose(self) -> None:
        """:meth:`close` for asyncio. Idempotent."""
        await _await_rust(self._raw.start_close)

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Manager":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<dsm.Manager{' (closed)' if self.closed else ''}>"


_default: Optional[Manager] = None
_default_lock = threading.Lock()


def _default_manager() -> Manager:
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Manager()
        return _default


_CONVERT = {"polars": Response.to_polars, "pandas": Response.to_pandas, "arrow": Response.to_arrow}


def _converter(output: str) -> Any:
    """The conversion for ``output``, checked before anything is fetched."""
    convert = _CONVERT.get(output)
    if convert is None:
        raise InputError(f"output={output!r}: use 'polars', 'pandas' or 'arrow'")
    return convert


def _output(response: Union[Response, Dict[str, Response]], convert: Any) -> Any:
    if isinstance(response, dict):
        return {s: convert(r) for s, r in response.items()}
    return convert(response)


def get_data(
    symbol: Union[str, Sequence[str]],
    start: Time,
    end: Optional[Time] = None,
    *,
    output: str = "polars",
    **kwargs: Any,
) -> Any:
    """One call, one frame: :meth:`Manager.get` on a module-wide manager (configured from the
    environment), converted to ``output`` (``polars``, ``pandas`` or ``arrow``)."""
    convert = _converter(output)
    return _output(_default_manager().get(symbol, start, end, **kwargs), convert)


def symbols(market: str = "spot", status: str = "all", **manager_args: Any) -> List[Dict[str, Any]]:
    """:meth:`Manager.symbols` with a short-lived manager (``manager_args`` as for
    :class:`Manager`)."""
    with Manager(**manager_args) as m:
        return m.symbols(market, status)


async def aget_data(
    symbol: Union[str, Sequence[str]],
    start: Time,
    end: Optional[Time] = None,
    *,
    output: str = "polars",
    **kwargs: Any,
) -> Any:
    """:func:`get_data` for asyncio."""
    convert = _converter(output)
    return _output(await _default_manager().aget(symbol, start, end, **kwargs), convert)


def _at_exit() -> None:
    """Cancels every download and stops dsm's runtime before the interpreter finalises."""
    _dsm.shutdown(_EXIT_TIMEOUT)


# `threading`'s hook runs before the interpreter joins non-daemon threads (so threads blocked in
# `get` are released, not waited for); `atexit` covers an interpreter that skips it.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_at_exit)
atexit.register(_at_exit)
