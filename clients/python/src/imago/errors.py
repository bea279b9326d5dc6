"""Exceptions raised by the imago client.

Every error the broker answers with a ``result <code>`` reply becomes a :class:`BrokerError`
subclass carrying the broker's ``code`` and ``message``. Problems on the client side of the
wire are :class:`ImagoConnectionError` (the connection failed or was lost),
:class:`ImagoTimeout` (no reply in time) and :class:`ProtocolError` (the client could not make
sense of what it received, e.g. a record failing its CRC).
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Type

__all__ = [
    "ImagoError",
    "ImagoConnectionError",
    "ImagoTimeout",
    "ProtocolError",
    "RecordCorrupt",
    "BrokerError",
    "Moved",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "RequestTimeout",
    "Conflict",
    "PayloadTooLarge",
    "LineTooLong",
    "InternalError",
    "Unimplemented",
    "Unavailable",
    "InsufficientStorage",
    "CorruptRecord",
    "error_for",
]


class ImagoError(Exception):
    """Base class of every exception this package raises."""


class ImagoConnectionError(ImagoError, ConnectionError):
    """The connection to the broker could not be made, or was lost with the request pending.

    A request that failed this way may or may not have been carried out by the broker.
    """


class ImagoTimeout(ImagoError, TimeoutError):
    """No reply arrived within the call's timeout. The connection is closed (the next call
    reconnects), so a late reply cannot be mistaken for another one."""


class ProtocolError(ImagoError):
    """The client and the broker disagree on the wire format."""


class RecordCorrupt(ProtocolError):
    """A record received from the broker failed verification (magic, length or CRC)."""

    def __init__(self, message: str, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.offset = offset


class BrokerError(ImagoError):
    """The broker answered ``result <code> <len> <opaque>`` with a code other than 200.

    ``code`` is the broker's code, ``message`` the reply's text body (for humans: act on the
    code and the exception type, not on the wording).
    """

    code: int = 0

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (error_for, (self.code, self.message))


class Moved(BrokerError):
    """301: the offset asked for is outside [min, max] (or a tag filter skipped records).
    ``offset`` is where to continue."""

    code = 301

    @property
    def offset(self) -> int:
        try:
            return int(self.message.strip())
        except ValueError:
            return -1


class BadRequest(BrokerError):
    """400: malformed line, bad name, partition out of range, checksum mismatch, ..."""

    code = 400


class Forbidden(BrokerError):
    """403: auto-create is off, or a broker limit (topics, groups, members) is reached."""

    code = 403


class NotFound(BrokerError):
    """404: unknown topic, no committed offset, or (low-level get) no message at the offset."""

    code = 404


class RequestTimeout(BrokerError):
    """408: the broker timed out a half-sent request and closed the connection."""

    code = 408


class Conflict(BrokerError):
    """409: stale generation, not the owner of a partition, unknown member, or mode clash."""

    code = 409


class PayloadTooLarge(BrokerError):
    """413: put body longer than the broker's ``body_bytes_max``."""

    code = 413


class LineTooLong(BrokerError):
    """414: request line longer than the broker's ``line_bytes_max``."""

    code = 414


class InternalError(BrokerError):
    """500: an I/O error in the broker."""

    code = 500


class Unimplemented(BrokerError):
    """501: transactions and ``sync`` are not implemented by the broker."""

    code = 501


class Unavailable(BrokerError):
    """503: too many connections, or the broker is shutting down."""

    code = 503


class InsufficientStorage(BrokerError):
    """507: the broker's disk is under its free-space reserve; nothing was written."""

    code = 507


class CorruptRecord(BrokerError):
    """520: the record at the requested offset failed its CRC on the broker.
    ``next_offset`` is where the broker says to resume (-1 if it could not be read)."""

    code = 520

    @property
    def next_offset(self) -> int:
        m = re.search(r"next offset (\d+)", self.message)
        return int(m.group(1)) if m else -1


_BY_CODE: Dict[int, Type[BrokerError]] = {
    cls.code: cls
    for cls in (
        Moved,
        BadRequest,
        Forbidden,
        NotFound,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        LineTooLong,
        InternalError,
        Unimplemented,
        Unavailable,
        InsufficientStorage,
        CorruptRecord,
    )
}


def error_for(code: int, message: str) -> BrokerError:
    """The exception for a broker reply code (a plain :class:`BrokerError` for unknown codes)."""
    return _BY_CODE.get(code, BrokerError)(code, message)
