"""dsm's exceptions: one class per error category, each carrying the Rust error's message.

The category decides what a caller does, as the CLI's exit codes do:

============================  =========  =================================================
class                         CLI exit   meaning
============================  =========  =================================================
:class:`InputError`           2          bad input, rejected before any request
:class:`UnavailableError`     3          the data does not exist upstream
:class:`UpstreamError`        4          the network or Binance failed (after retries)
:class:`IntegrityError`       5          data failed a checksum or a consistency check
:class:`IncompleteError`      6          part of the range could not be obtained
:class:`LocalError`           1          the cache directory or a local file failed
:class:`CancelledError`       130        the work was cancelled
============================  =========  =================================================
"""

from __future__ import annotations

from datetime import datetime, timezone


class DsmError(Exception):
    """Base class of every error dsm raises."""

    category = "error"

    def __init__(self, message: str, **fields) -> None:
        super().__init__(message)
        self.message = message
        for name, value in fields.items():
            setattr(self, name, value)


class InputError(DsmError, ValueError):
    """Bad input (a symbol, a market, a time, a range): rejected before any request."""

    category = "input"


class UnavailableError(DsmError):
    """The data does not exist upstream: an unknown symbol, a range before listing or in the future.

    Attribute ``symbol`` when the error is about one symbol's range.
    """

    category = "unavailable"


class UpstreamError(DsmError):
    """The network, the archive or the API failed after retries (including a rate-limit ban)."""

    category = "upstream"


class IntegrityError(DsmError):
    """Data failed an integrity check (checksum, row count); none of it was used or cached."""

    category = "integrity"


class IncompleteError(DsmError):
    """Part of the range could not be obtained, and ``allow_partial`` was not set.

    Attributes: ``symbol``; ``missing``, the ``(start, end)`` UTC datetimes not obtained;
    ``reasons``, what failed.
    """

    category = "incomplete"

    @property
    def missing(self) -> list[tuple[datetime, datetime]]:
        return [(_utc(a), _utc(b)) for a, b in getattr(self, "missing_ms", [])]


class LocalError(DsmError):
    """A local failure: the cache directory, the disk."""

    category = "local"


class CancelledError(DsmError):
    """The work was cancelled (the manager was closed while it ran)."""

    category = "cancelled"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
