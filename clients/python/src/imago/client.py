"""The admin client: stats, version, offsets, low-level get, committed offsets, reset, and the
group membership commands. :class:`imago.Producer` builds on it."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from ._conn import Brokers, Link, Reply, wait_reply
from ._wire import U64_MAX, Message, check_name, decode_records
from .errors import BadRequest, NotFound, ProtocolError

__all__ = ["Client", "Admin", "Assignment", "DEFAULT_BROKERS"]

DEFAULT_BROKERS = "127.0.0.1:8123"
# stats items that take precedence over topic names (protocol.md "stats")
_STATS_WORDS = frozenset({"topics", "offsets", "settings", "conns", "groups", "reset", "help"})
_LOW_LEVEL_GROUP = "imago"
T = TypeVar("T", bound="Client")


@dataclass(frozen=True)
class Assignment:
    """A join or heartbeat reply: the group's generation, the session timeout, and the
    member's partitions with the offsets to start from."""

    generation: int
    session_timeout_ms: int
    partitions: Dict[int, int]

    @classmethod
    def parse(cls, text: str) -> "Assignment":
        tokens = text.split()
        try:
            parts: Dict[int, int] = {}
            for tok in tokens[2:]:
                p, _, o = tok.partition(":")
                parts[int(p)] = int(o)
            return cls(int(tokens[0]), int(tokens[1]), parts)
        except (ValueError, IndexError):
            raise ProtocolError(f"bad assignment reply {text!r}") from None


def tags_token(tags: Union[None, str, Iterable[str]]) -> Optional[str]:
    """``*`` or ``a||b``: the get ``<tags>`` token (None: no filter)."""
    if tags is None:
        return None
    if isinstance(tags, str):
        tags = [tags]
    tags = list(tags)
    if tags == ["*"]:
        return "*"
    if not 1 <= len(tags) <= 32:
        raise ValueError("tags: 1 to 32 tags, or '*'")
    for t in tags:
        if not isinstance(t, str) or not t or "|" in t or any(c.isspace() for c in t):
            raise ValueError(f"bad tag {t!r}: must be non-empty, without '|' or whitespace")
    return "||".join(tags)


def parse_stats(body: bytes) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in body.decode("utf-8", errors="replace").split("\r\n"):
        if line.startswith("STAT "):
            name, _, value = line[5:].partition(" ")
            out[name] = value
    return out


class Client:
    """A connection to one imago broker, with the administrative commands.

    ``brokers`` is ``"host:port"``, a list of them (the first reachable one is used), or a
    callable returning either; it is read again on every reconnect, and can be changed with
    :attr:`brokers`. Every call has a timeout (``request_timeout_s``, plus the wait of a long
    poll); a lost connection is re-made on the next call with exponential backoff (up to
    ``connect_timeout_s`` per call). Errors are :mod:`imago.errors` exceptions.

    Thread-safe. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        brokers: Brokers = DEFAULT_BROKERS,
        *,
        request_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        reconnect_backoff_s: float = 0.05,
        reconnect_backoff_max_s: float = 2.0,
    ) -> None:
        self._link = Link(
            brokers,
            connect_timeout_s=connect_timeout_s,
            request_timeout_s=request_timeout_s,
            backoff_s=reconnect_backoff_s,
            backoff_max_s=reconnect_backoff_max_s,
            name=type(self).__name__.lower(),
        )
        self._closed = False
        self._close_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def brokers(self) -> Brokers:
        """Where to connect: read on every (re)connect; assign to point the client elsewhere."""
        return self._link.brokers

    @brokers.setter
    def brokers(self, value: Brokers) -> None:
        self._link.brokers = value

    @property
    def request_timeout_s(self) -> float:
        return self._link.request_timeout_s

    def close(self) -> None:
        """Closes the connection. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._link.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def _call(self, tokens: Sequence[str], body: Optional[bytes] = None,
              timeout_s: Optional[float] = None) -> Reply:
        return self._link.call(tokens, body, timeout_s)

    # -- information -------------------------------------------------------------------------

    def version(self) -> str:
        """The broker's version string."""
        return self._call(["version"]).ok().text

    def stats(self, item: Optional[str] = None) -> Dict[str, str]:
        """``stats <item>`` as a dict of STAT names to values (general counters when ``item``
        is None or empty). Unknown item: :class:`BadRequest`. ``stats("reset")`` returns {}."""
        item = item or ""
        if " " in item or "\n" in item:
            raise ValueError(f"bad stats item {item!r}")
        return parse_stats(self._call(["stats", item]).ok().body)

    def partitions(self, topic: str) -> int:
        """The partition count of ``topic`` (:class:`NotFound` if it does not exist)."""
        check_name("topic", topic)
        if topic in _STATS_WORDS:
            st = self.stats("topics")
            n = st.get(f"topic:{topic}:partitions")
            if n is None:
                raise NotFound(404, f"unknown topic {topic}")
            return int(n)
        try:
            st = self.stats(topic)
        except BadRequest as e:
            if "unknown stats item" in e.message:
                raise NotFound(404, f"unknown topic {topic}") from None
            raise
        return sum(1 for k in st if k.endswith(":min_offset"))

    def valid_offset(self, topic: str, partition: int, offset: int) -> int:
        """The ``offset`` command: ``offset`` clamped into [min, max] of the partition."""
        check_name("topic", topic)
        r = self._call(["offset", topic, _LOW_LEVEL_GROUP, str(int(partition)), str(int(offset))])
        return int(r.ok().text)

    def offsets(self, topic: str, partition: int) -> Tuple[int, int]:
        """(min_offset, max_offset) of a partition: the oldest offset held and the offset
        the next message will get."""
        check_name("topic", topic)
        base = ["offset", topic, _LOW_LEVEL_GROUP, str(int(partition))]
        t = self._link.request_timeout_s
        lo = self._link.submit(base + ["0"], None, t)
        hi = self._link.submit(base + [str(U64_MAX)], None, t)
        return int(wait_reply(lo, t).ok().text), int(wait_reply(hi, t).ok().text)

    # -- reading -----------------------------------------------------------------------------

    def get(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1048576,
        wait_ms: Optional[int] = None,
        tags: Union[None, str, Iterable[str]] = None,
        group: str = _LOW_LEVEL_GROUP,
        verify: bool = True,
    ) -> List[Message]:
        """One ``get``: the records from ``offset`` on (at least one whole record, then up to
        ``max_bytes``), CRC-verified. Returns [] when caught up (after waiting up to
        ``wait_ms`` for a message). Raises :class:`Moved` (``.offset``: where to continue)
        when ``offset`` is out of range or a tag filter skipped every record scanned,
        :class:`NotFound` for an unknown topic, :class:`BadRequest` for a bad partition."""
        check_name("topic", topic)
        check_name("group", group)
        tokens = ["get", topic, group, str(int(partition)), str(int(offset)), str(int(max_bytes))]
        tag_tok = tags_token(tags)
        if wait_ms is not None or tag_tok is not None:
            tokens.append(str(int(wait_ms or 0)))
        if tag_tok is not None:
            tokens.append(tag_tok)
        timeout = self._link.request_timeout_s + (wait_ms or 0) / 1000.0
        reply = self._call(tokens, None, timeout)
        return _get_result(reply, verify)

    # -- committed offsets and groups ----------------------------------------------------------

    def commit(
        self,
        group: str,
        topic: str,
        partition: int,
        offset: int,
        member: Optional[str] = None,
        generation: int = -1,
    ) -> None:
        """Stores ``offset`` (the next offset to consume) as the committed offset. Without a
        ``member`` it is the group-level offset (no ownership check)."""
        check_name("group", group)
        check_name("topic", topic)
        m = "-" if member is None else check_name("member", member)
        self._call(["commit", group, topic, str(int(partition)), str(int(offset)), m,
                    str(int(generation))]).ok()

    def fetch_committed(
        self, group: str, topic: str, partition: int, member: Optional[str] = None
    ) -> Optional[int]:
        """The committed offset (the group's, or a broadcast member's own), or None when
        nothing is committed. Unknown topic: :class:`NotFound`."""
        check_name("group", group)
        check_name("topic", topic)
        m = "-" if member is None else check_name("member", member)
        r = self._call(["fetch", group, topic, str(int(partition)), m])
        if r.code == 404 and r.text.startswith("no committed offset"):
            return None
        return int(r.ok().text)

    def reset(
        self,
        group: str,
        topic: str,
        target: Union[int, str] = "earliest",
        partition: Optional[int] = None,
        *,
        time_ms: Optional[int] = None,
    ) -> Dict[int, int]:
        """Rewinds (or advances) a group's committed offsets: ``target`` is ``"earliest"``,
        ``"latest"``, an offset (clamped into [min, max]) or ``"@<unix ms>"``; or give
        ``time_ms`` (the first message stored at or after it). All partitions unless
        ``partition`` is given. Live members pick the new offsets up at their next heartbeat.
        Returns {partition: offset}."""
        check_name("group", group)
        check_name("topic", topic)
        if time_ms is not None:
            tgt = f"@{int(time_ms)}"
        elif isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            tgt = str(int(target))
        elif target in ("earliest", "latest") or (
            isinstance(target, str) and target.startswith("@") and target[1:].isdigit()
        ):
            tgt = target
        else:
            raise ValueError(f"bad reset target {target!r}")
        p = -1 if partition is None else int(partition)
        text = self._call(["reset", group, topic, str(p), tgt]).ok().text
        return _pairs(text)

    def join(
        self,
        group: str,
        topic: str,
        member: str,
        mode: str = "cluster",
        start: str = "earliest",
    ) -> Assignment:
        """Low-level ``join`` (see :class:`imago.Consumer` for a consumer that does it all)."""
        if mode not in ("cluster", "broadcast"):
            raise ValueError("mode must be 'cluster' or 'broadcast'")
        if start not in ("earliest", "latest"):
            raise ValueError("start must be 'earliest' or 'latest'")
        r = self._call(["join", check_name("group", group), check_name("topic", topic),
                        check_name("member", member), mode, start])
        return Assignment.parse(r.ok().text)

    def heartbeat(self, group: str, topic: str, member: str) -> Assignment:
        """Low-level ``heartbeat``: the member's current assignment (:class:`Conflict` when
        the broker does not know the member)."""
        r = self._call(["heartbeat", check_name("group", group), check_name("topic", topic),
                        check_name("member", member)])
        return Assignment.parse(r.ok().text)

    def leave(self, group: str, topic: str, member: str) -> None:
        """Low-level ``leave``."""
        self._call(["leave", check_name("group", group), check_name("topic", topic),
                    check_name("member", member)]).ok()

    def _submit(self, tokens: Sequence[str], body: Optional[bytes] = None,
                timeout_s: Optional[float] = None) -> Future:
        return self._link.submit(tokens, body, timeout_s)


Admin = Client


def _pairs(text: str) -> Dict[int, int]:
    out: Dict[int, int] = {}
    for tok in text.split():
        p, _, o = tok.partition(":")
        out[int(p)] = int(o)
    return out


def _get_result(reply: Reply, verify: bool) -> List[Message]:
    if reply.kind == "value":
        return decode_records(reply.body, verify)
    if reply.code == 404 and reply.text.startswith("no message at offset"):
        return []
    raise reply.error()
