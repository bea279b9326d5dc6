"""The producer: puts with checksums, tags, keys and properties; partition by round-robin, key
hash or explicitly; many puts in flight on one connection."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Dict, Mapping, Optional, Set, Tuple

from ._conn import Brokers
from ._wire import Body, SendResult, check_name, checksum, put_body, to_bytes
from .client import DEFAULT_BROKERS, Client
from .errors import (
    BadRequest,
    ImagoConnectionError,
    ImagoError,
    ImagoTimeout,
    NotFound,
    ProtocolError,
    Unavailable,
)

__all__ = ["Producer", "partition_for_key"]

log = logging.getLogger("imago")


def partition_for_key(key: str, partitions: int) -> int:
    """The partition a key maps to: ``crc32(utf-8 key) % partitions`` (stable across
    processes, clients and languages)."""
    return zlib.crc32(key.encode("utf-8")) % partitions


class _Put:
    __slots__ = ("topic", "partition", "body", "flag", "tries", "not_before")

    def __init__(self, topic: str, partition: int, body: bytes, flag: int) -> None:
        self.topic = topic
        self.partition = partition
        self.body = body
        self.flag = flag
        self.tries = 0
        self.not_before = 0.0

    def tokens(self) -> Tuple[str, ...]:
        return ("put", self.topic, str(self.partition), str(len(self.body)), str(self.flag),
                str(checksum(self.body)))


class Producer(Client):
    """Sends messages. Every put carries the body's checksum (the broker verifies it).

    Partition choice per message: ``partition`` if given; else by ``key``
    (:func:`partition_for_key` over the topic's partition count, learned from ``stats
    <topic>`` and cached for ``metadata_max_age_s``), so messages with one key stay in order
    in one partition; else round-robin (partition ``-1``: the broker rotates per topic).

    :meth:`send_async` pipelines puts on one connection (at most ``max_in_flight`` unanswered;
    further calls block). A put that fails because the connection was lost, timed out, or the
    broker was shutting down (503) is sent again up to ``retries`` times (at-least-once: a
    retried put may be stored twice, and puts retried after a connection loss may be stored
    after later ones; use ``retries=0`` for at-most-once).

    Also has every :class:`imago.Client` method (stats, offsets, ...).
    """

    def __init__(
        self,
        brokers: Brokers = DEFAULT_BROKERS,
        *,
        retries: int = 5,
        retry_backoff_s: float = 0.1,
        max_in_flight: int = 10000,
        metadata_max_age_s: float = 60.0,
        request_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        reconnect_backoff_s: float = 0.05,
        reconnect_backoff_max_s: float = 2.0,
    ) -> None:
        super().__init__(
            brokers,
            request_timeout_s=request_timeout_s,
            connect_timeout_s=connect_timeout_s,
            reconnect_backoff_s=reconnect_backoff_s,
            reconnect_backoff_max_s=reconnect_backoff_max_s,
        )
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.metadata_max_age_s = metadata_max_age_s
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._outstanding: Set[Future] = set()
        self._out_lock = threading.Lock()
        self._idle = threading.Condition(self._out_lock)
        self._meta: Dict[str, Tuple[int, float]] = {}
        self._default_partitions: Optional[int] = None
        self._retry_pool: Optional[ThreadPoolExecutor] = None

    # -- public ------------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        body: Body,
        tag: Optional[str] = None,
        key: Optional[str] = None,
        properties: Optional[Mapping[str, str]] = None,
        partition: Optional[int] = None,
        *,
        flag: int = 0,
        timeout_s: Optional[float] = None,
    ) -> SendResult:
        """Sends one message and waits for the broker's acknowledgement."""
        fut = self.send_async(topic, body, tag, key, properties, partition, flag=flag)
        limit = (self.request_timeout_s + self._link.connect_timeout_s) * (self.retries + 1)
        try:
            return fut.result(limit if timeout_s is None else timeout_s)
        except FutureTimeout:
            raise ImagoTimeout(f"send to {topic} not acknowledged in time") from None

    def send_async(
        self,
        topic: str,
        body: Body,
        tag: Optional[str] = None,
        key: Optional[str] = None,
        properties: Optional[Mapping[str, str]] = None,
        partition: Optional[int] = None,
        *,
        flag: int = 0,
    ) -> "Future[SendResult]":
        """Sends one message without waiting: the future gets the :class:`SendResult` or the
        error. Puts from one thread are written in call order (replies are matched by
        opaque)."""
        if self._closed:
            raise ImagoConnectionError("producer closed")
        check_name("topic", topic)
        data, wire_flag = put_body(to_bytes(body), tag, key, properties, flag)
        if partition is None:
            if key is not None:
                partition = partition_for_key(key, self._partition_count(topic))
            else:
                partition = -1
        elif partition < 0:
            raise ValueError("partition must be >= 0 (None chooses)")
        put = _Put(topic, int(partition), data, wire_flag)
        user: Future = Future()
        user.set_running_or_notify_cancel()
        self._slots.acquire()
        with self._out_lock:
            self._outstanding.add(user)
        user.add_done_callback(self._finished)
        self._dispatch(put, user)
        return user

    def flush(self, timeout_s: Optional[float] = None) -> None:
        """Waits until every message sent so far is acknowledged or failed
        (:class:`ImagoTimeout` if that takes longer than ``timeout_s``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            while self._outstanding:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ImagoTimeout(f"{len(self._outstanding)} sends still in flight")
                self._idle.wait(left)

    def in_flight(self) -> int:
        """Messages sent and not yet acknowledged or failed."""
        with self._out_lock:
            return len(self._outstanding)

    def close(self, timeout_s: Optional[float] = 30.0) -> None:
        """Waits (up to ``timeout_s``) for messages in flight, then closes the connection."""
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        except ImagoError:
            log.warning("imago producer closed with %d sends in flight", self.in_flight())
        super().close()
        if self._retry_pool is not None:
            self._retry_pool.shutdown(wait=False)

    def partitions(self, topic: str) -> int:
        """The partition count of ``topic`` (fresh from the broker; see also the cache used
        for key hashing)."""
        n = super().partitions(topic)
        self._meta[topic] = (n, time.monotonic())
        return n

    # -- internals ---------------------------------------------------------------------------

    def _partition_count(self, topic: str) -> int:
        cached = self._meta.get(topic)
        if cached is not None and time.monotonic() - cached[1] < self.metadata_max_age_s:
            return cached[0]
        try:
            return self.partitions(topic)
        except NotFound:
            # not created yet: the first put creates it with default_partitions
            if self._default_partitions is None:
                self._default_partitions = int(self.stats("settings")["default_partitions"])
            return self._default_partitions

    def _finished(self, fut: Future) -> None:
        with self._idle:
            self._outstanding.discard(fut)
            if not self._outstanding:
                self._idle.notify_all()
        self._slots.release()

    def _dispatch(self, put: _Put, user: Future) -> None:
        try:
            fut = self._link.submit(put.tokens(), put.body)
        except (ImagoConnectionError, ValueError) as e:
            self._failed(put, user, e)
            return
        fut.add_done_callback(lambda f: self._on_reply(f, put, user))

    def _on_reply(self, fut: Future, put: _Put, user: Future) -> None:
        exc = fut.exception()
        if exc is not None:
            self._failed(put, user, exc)
            return
        reply = fut.result()
        if reply.kind == "result" and reply.code == 200:
            try:
                msg_id, partition, offset = (int(x) for x in reply.text.split())
            except ValueError:
                user.set_exception(ProtocolError(f"bad put reply {reply.text!r}"))
                return
            user.set_result(SendResult(msg_id, partition, offset))
            return
        err = reply.error()
        if isinstance(err, BadRequest) and "out of range" in err.message:
            self._meta.pop(put.topic, None)
        self._failed(put, user, err)

    def _failed(self, put: _Put, user: Future, exc: BaseException) -> None:
        retriable = isinstance(exc, (ImagoConnectionError, ImagoTimeout, Unavailable))
        if retriable and put.tries < self.retries and not self._closed:
            put.tries += 1
            delay = min(2.0, self.retry_backoff_s * (2 ** (put.tries - 1)))
            put.not_before = time.monotonic() + delay
            if self._retry_pool is None:
                self._retry_pool = ThreadPoolExecutor(1, thread_name_prefix="imago-retry")
            try:
                self._retry_pool.submit(self._retry, put, user)
                return
            except RuntimeError:
                pass  # pool shut down
        if not user.done():
            user.set_exception(exc)

    def _retry(self, put: _Put, user: Future) -> None:
        delay = put.not_before - time.monotonic()
        log.debug("imago: retrying put to %s (try %d)", put.topic, put.tries)
        if delay > 0:
            time.sleep(delay)
        self._dispatch(put, user)
