"""Connections: one TCP connection with a reader thread that matches replies to requests by
opaque (pipelining, out-of-order long-poll replies), and a :class:`Link` that keeps one such
connection alive, reconnecting with exponential backoff."""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from ._wire import INT32_MAX, LINE_BYTES_MAX, parse_address
from .errors import (
    BrokerError,
    ImagoConnectionError,
    ImagoError,
    ImagoTimeout,
    ProtocolError,
    error_for,
)

log = logging.getLogger("imago")

Address = Union[str, Tuple[str, int]]
Brokers = Union[Address, Sequence[Address], Callable[[], Union[Address, Sequence[Address]]]]

_HEADER_MAX = 256  # reply header lines are short: "result <code> <len> <opaque>"
_TICK_S = 0.2  # how often the reader checks request deadlines


@dataclass
class Reply:
    """One reply: ``result <code> <len> <opaque>`` + text, or ``value <len> <opaque>`` +
    records (``code`` 200)."""

    kind: str
    code: int
    body: bytes
    opaque: int

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def error(self) -> BrokerError:
        return error_for(self.code, self.text)

    def ok(self) -> "Reply":
        """Returns self for a 200 ``result``; raises the matching :class:`BrokerError`
        otherwise."""
        if self.kind != "result" or self.code != 200:
            if self.kind == "value":
                raise ProtocolError("unexpected value reply")
            raise self.error()
        return self


class Connection:
    """One TCP connection to a broker. Thread-safe: any thread may submit; a reader thread
    resolves the futures. Once closed (by either side, an error, or a request deadline
    passing), every pending future fails and the connection is not used again."""

    def __init__(self, address: Tuple[str, int], connect_timeout_s: float, name: str) -> None:
        self.address = address
        sock = socket.create_connection(address, timeout=connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # blocking; the reader uses select() and closes on deadlines
        self.sock = sock
        self._lock = threading.Lock()  # _pending, _closed
        self._wlock = threading.Lock()  # opaque order = write order
        self._pending: Dict[int, Tuple[Future, float]] = {}
        self._next_opaque = 1
        self._closed = False
        self._stray: Optional[BrokerError] = None
        self._reader = threading.Thread(
            target=self._read_loop, name=f"{name}-reader-{address[0]}:{address[1]}", daemon=True
        )
        self._reader.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def submit(self, tokens: Sequence[str], body: Optional[bytes], deadline: float) -> Future:
        """Sends ``tokens... <opaque>\\r\\n`` + body. The returned future gets the Reply, or
        ImagoConnectionError / ImagoTimeout (``deadline`` is a time.monotonic() value)."""
        fut: Future = Future()
        head = " ".join(tokens)
        if len(head) + 13 > LINE_BYTES_MAX:
            raise ValueError(f"request line longer than {LINE_BYTES_MAX} bytes: {head[:80]}...")
        with self._wlock:
            with self._lock:
                if self._closed:
                    fut.set_exception(ImagoConnectionError(f"connection to {self._addr()} closed"))
                    return fut
                opaque = self._next_opaque
                self._next_opaque = 1 if opaque >= INT32_MAX - 1 else opaque + 1
                self._pending[opaque] = (fut, deadline)
            line = f"{head} {opaque}\r\n".encode("utf-8")
            try:
                if body:
                    self.sock.sendall(line + body if len(body) < 65536 else line)
                    if len(body) >= 65536:
                        self.sock.sendall(body)
                else:
                    self.sock.sendall(line)
            except OSError as e:
                err = e
            else:
                return fut
        self.close(ImagoConnectionError(f"connection to {self._addr()} lost: {err}"))
        return fut

    def close(self, reason: Optional[BaseException] = None) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = self._pending
            self._pending = {}
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        if pending:
            log.debug("connection to %s closed with %d pending: %s", self._addr(), len(pending),
                      reason)
        for opaque in sorted(pending):
            fut, _ = pending[opaque]
            if isinstance(reason, ImagoTimeout):
                exc: BaseException = ImagoTimeout(str(reason))
            else:
                text = f"connection to {self._addr()} lost"
                if self._stray is not None:
                    text += f": {self._stray}"
                elif reason is not None:
                    text += f": {reason}"
                exc = ImagoConnectionError(text)
                exc.__cause__ = self._stray or reason
            _set_exception(fut, exc)

    def _addr(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    # -- reader --------------------------------------------------------------------------

    def _read_loop(self) -> None:
        reason: Optional[BaseException] = None
        buf = bytearray()
        pos = 0
        last_check = time.monotonic()
        sock = self.sock

        def fill() -> None:
            nonlocal last_check
            while True:
                now = time.monotonic()
                if now - last_check >= _TICK_S:
                    last_check = now
                    self._check_deadlines(now)
                if self._closed:
                    raise ImagoConnectionError("closed")
                r, _, _ = select.select([sock], [], [], _TICK_S)
                if r:
                    data = sock.recv(262144)
                    if not data:
                        raise ImagoConnectionError("closed by the broker")
                    buf.extend(data)
                    return

        try:
            while True:
                # header line
                while True:
                    nl = buf.find(b"\n", pos)
                    if nl >= 0:
                        break
                    if len(buf) - pos > _HEADER_MAX:
                        raise ProtocolError(f"reply line too long: {bytes(buf[pos:pos+80])!r}")
                    if pos:
                        del buf[:pos]
                        pos = 0
                    fill()
                line = bytes(buf[pos:nl]).rstrip(b"\r")
                pos = nl + 1
                parts = line.split(b" ")
                try:
                    if parts[0] == b"result" and len(parts) == 4:
                        kind, code, n, opaque = "result", int(parts[1]), int(parts[2]), int(parts[3])
                    elif parts[0] == b"value" and len(parts) == 3:
                        kind, code, n, opaque = "value", 200, int(parts[1]), int(parts[2])
                    else:
                        raise ValueError
                except ValueError:
                    raise ProtocolError(f"unexpected reply line {line[:80]!r}") from None
                while len(buf) - pos < n:
                    if pos:
                        del buf[:pos]
                        pos = 0
                    fill()
                body = bytes(buf[pos:pos + n])
                pos += n
                if pos == len(buf):
                    buf.clear()
                    pos = 0
                self._dispatch(Reply(kind, code, body, opaque))
        except ImagoError as e:
            reason = e
        except OSError as e:
            reason = ImagoConnectionError(str(e))
        except Exception as e:  # pragma: no cover - a bug; do not leave futures hanging
            log.exception("imago reader failed")
            reason = e
        self.close(reason)

    def _dispatch(self, reply: Reply) -> None:
        with self._lock:
            entry = self._pending.pop(reply.opaque, None)
        if entry is None:
            if reply.kind == "result" and reply.code != 200:
                # e.g. 503 too many connections, 408, 414: opaque 2147483647
                self._stray = reply.error()
                log.warning("imago broker %s: %s", self._addr(), self._stray)
            return
        fut, _ = entry
        if not fut.done():
            try:
                fut.set_result(reply)
            except Exception:  # InvalidStateError when cancelled meanwhile
                pass

    def _check_deadlines(self, now: float) -> None:
        with self._lock:
            late = [o for o, (_, d) in self._pending.items() if d <= now]
        if late:
            self.close(ImagoTimeout(
                f"no reply from {self._addr()} within the request timeout "
                f"({len(late)} request(s) late); connection closed"
            ))


def _set_exception(fut: Future, exc: BaseException) -> None:
    if not fut.done():
        try:
            fut.set_exception(exc)
        except Exception:
            pass


def _resolve(brokers: Brokers) -> List[Tuple[str, int]]:
    b = brokers() if callable(brokers) else brokers
    if isinstance(b, (str, tuple)):
        if isinstance(b, tuple) and len(b) == 2 and isinstance(b[1], int):
            return [parse_address(b)]
        if isinstance(b, str):
            return [parse_address(x) for x in b.split(",") if x.strip()]
    return [parse_address(x) for x in b]  # type: ignore[union-attr]


class Link:
    """Keeps one :class:`Connection` to the first reachable broker of ``brokers`` (re-read on
    every connect, so a callable can point the client at a moved broker). A lost connection
    is replaced on the next request, after an exponential backoff between failed attempts."""

    def __init__(
        self,
        brokers: Brokers,
        *,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
        backoff_s: float = 0.05,
        backoff_max_s: float = 2.0,
        name: str = "imago",
    ) -> None:
        self._brokers = brokers
        _resolve(brokers)  # fail early on a malformed address
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.name = name
        self._lock = threading.Lock()
        self._conn: Optional[Connection] = None
        self._failures = 0
        self._next_attempt = 0.0
        self._last_error: Optional[BaseException] = None
        self._closed = False
        self.connects = 0  # successful connects so far

    @property
    def brokers(self) -> Brokers:
        return self._brokers

    @brokers.setter
    def brokers(self, value: Brokers) -> None:
        _resolve(value)
        self._brokers = value

    @property
    def current(self) -> Optional[Connection]:
        """The connection in use (None before the first request or after a loss)."""
        c = self._conn
        return c if c is not None and not c.closed else None

    def connection(self, timeout_s: Optional[float] = None) -> Connection:
        with self._lock:
            if self._closed:
                raise ImagoConnectionError("client closed")
            c = self._conn
            if c is not None and not c.closed:
                return c
            limit = self.connect_timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + limit
            last: Optional[BaseException] = None
            while True:
                now = time.monotonic()
                if self._next_attempt > now:
                    if self._next_attempt > deadline:
                        time.sleep(max(0.0, deadline - now))
                        raise ImagoConnectionError(
                            f"cannot connect to {self._brokers} (backing off): {self._last_error}"
                        )
                    time.sleep(self._next_attempt - now)
                try:
                    addrs = _resolve(self._brokers)
                except Exception as e:
                    addrs, last = [], e
                for addr in addrs:
                    if self._closed:
                        raise ImagoConnectionError("client closed")
                    try:
                        conn = Connection(addr, max(0.1, min(5.0, deadline - time.monotonic())),
                                          self.name)
                    except OSError as e:
                        last = e
                        continue
                    if self._failures:
                        log.info("imago: reconnected to %s:%s", addr[0], addr[1])
                    self._conn = conn
                    self._failures = 0
                    self._next_attempt = 0.0
                    self.connects += 1
                    return conn
                self._failures += 1
                self._last_error = last
                delay = min(self.backoff_max_s, self.backoff_s * (2 ** min(self._failures - 1, 20)))
                self._next_attempt = time.monotonic() + delay * random.uniform(0.8, 1.2)
                if time.monotonic() >= deadline:
                    raise ImagoConnectionError(
                        f"cannot connect to {addrs or self._brokers}: {last}"
                    ) from last

    def submit(
        self,
        tokens: Sequence[str],
        body: Optional[bytes] = None,
        timeout_s: Optional[float] = None,
        connect_timeout_s: Optional[float] = None,
    ) -> Future:
        """Sends one request (reconnecting first if needed, for up to ``connect_timeout_s``,
        default the link's). The future gets the Reply, or fails with ImagoConnectionError /
        ImagoTimeout."""
        conn = self.connection(connect_timeout_s)
        t = self.request_timeout_s if timeout_s is None else timeout_s
        fut = conn.submit(tokens, body, time.monotonic() + t)
        fut.imago_conn = conn  # type: ignore[attr-defined]
        return fut

    def call(
        self,
        tokens: Sequence[str],
        body: Optional[bytes] = None,
        timeout_s: Optional[float] = None,
    ) -> Reply:
        """One request, waiting for its reply (not checked: see Reply.ok())."""
        t = self.request_timeout_s if timeout_s is None else timeout_s
        fut = self.submit(tokens, body, t)
        return wait_reply(fut, t)

    def drop(self, conn: Optional[Connection] = None, reason: Optional[BaseException] = None) -> None:
        """Closes the current connection (or ``conn`` if it is still the current one)."""
        c = self._conn
        if c is not None and (conn is None or c is conn):
            c.close(reason or ImagoConnectionError("dropped by the client"))

    def close(self) -> None:
        self._closed = True
        c = self._conn
        if c is not None:
            c.close(ImagoConnectionError("client closed"))


def wait_reply(fut: Future, timeout_s: float) -> Reply:
    try:
        return fut.result(timeout_s + 1.0)
    except FutureTimeout:
        conn = getattr(fut, "imago_conn", None)
        err = ImagoTimeout(f"no reply within {timeout_s:.3g} s")
        if conn is not None:
            conn.close(err)
        raise err from None
