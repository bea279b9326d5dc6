"""The group consumer: join, heartbeat, rebalance, long-poll gets pipelined over the owned
partitions, offsets committed to the broker."""

from __future__ import annotations

import collections
import logging
import os
import queue
import random
import re
import socket
import threading
import time
from concurrent.futures import Future
from types import TracebackType
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Type, Union

from ._conn import Brokers
from ._wire import Message, check_name, decode_records
from .client import Assignment, Client, tags_token
from .errors import (
    BrokerError,
    Conflict,
    CorruptRecord,
    ImagoConnectionError,
    ImagoError,
    ImagoTimeout,
    NotFound,
    ProtocolError,
)

__all__ = ["Consumer", "default_member_id"]

log = logging.getLogger("imago")

_epochs = iter(range(1, 1 << 62))


def default_member_id() -> str:
    """``<host>-<pid>-<random>``, made to fit the name grammar."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "host").lstrip(".-") or "host"
    return f"{host[:200]}-{os.getpid()}-{random.getrandbits(32):08x}"


class _Part:
    """Consumption state of one owned partition (touched by the polling thread only)."""

    __slots__ = ("partition", "position", "consumed", "committed", "epoch", "inflight",
                 "paused", "not_before", "corrupt_tries")

    def __init__(self, partition: int, offset: int) -> None:
        self.partition = partition
        self.position = offset  # next offset to fetch
        self.consumed = offset  # next offset after the last message handed over
        self.committed = offset  # what the broker holds, as far as we know
        self.epoch = next(_epochs)  # changes whenever the position is moved from outside
        self.inflight: Optional[Future] = None
        self.paused = False
        self.not_before = 0.0
        self.corrupt_tries = 0


class Consumer:
    """A member of consumer group ``group`` on ``topic``.

    ``mode="cluster"`` shares the topic's partitions among the group's members (each message
    goes to one member); ``mode="broadcast"`` gives every member every partition with its own
    offsets. On construction the consumer joins the group (``start`` says where partitions
    without a committed offset begin; ``start_offset`` / ``start_time_ms`` first rewind the
    group with ``reset``), then a background thread heartbeats every third of the session
    timeout and re-joins when the broker forgot the member (e.g. after a broker restart).

    Read with ``for msg in consumer:`` (runs until :meth:`close`) or :meth:`poll`. A message
    counts as consumed once handed to you; with ``auto_commit`` the consumed offsets are
    committed every ``auto_commit_interval_s`` (inside poll/iteration), on a rebalance, and on
    :meth:`close` -- except when a ``with`` block exits with an exception, so the messages of
    a failed batch are delivered again (at-least-once). Or call :meth:`commit` yourself.

    Rebalances are applied between polls: partitions kept continue where they were (their
    progress is committed under the new generation), partitions lost are dropped (their
    progress since the last commit is re-delivered to the new owner), new partitions start
    at the committed offset. A rewind (``reset``) by someone else is picked up the same way.

    Not thread-safe, except :meth:`close` and :meth:`wakeup`, which may be called from
    another thread.
    """

    def __init__(
        self,
        brokers: Brokers,
        group: str,
        topic: str,
        mode: str = "cluster",
        member_id: Optional[str] = None,
        tags: Union[None, str, Iterable[str]] = None,
        start: str = "earliest",
        start_offset: Optional[int] = None,
        start_time_ms: Optional[int] = None,
        auto_commit: bool = True,
        auto_commit_interval_s: float = 1.0,
        poll_wait_ms: int = 1000,
        *,
        max_bytes: int = 262144,
        request_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        reconnect_backoff_s: float = 0.05,
        reconnect_backoff_max_s: float = 2.0,
    ) -> None:
        self.group = check_name("group", group)
        self.topic = check_name("topic", topic)
        if mode not in ("cluster", "broadcast"):
            raise ValueError("mode must be 'cluster' or 'broadcast'")
        if start not in ("earliest", "latest"):
            raise ValueError("start must be 'earliest' or 'latest'")
        if start_offset is not None and start_time_ms is not None:
            raise ValueError("give start_offset or start_time_ms, not both")
        self.mode = mode
        self.start = start
        self.member_id = check_name("member", member_id or default_member_id())
        self._tags = tags_token(tags)
        self.auto_commit = auto_commit
        self.auto_commit_interval_s = auto_commit_interval_s
        self.poll_wait_ms = int(poll_wait_ms)
        self.max_bytes = int(max_bytes)
        kw = dict(
            request_timeout_s=request_timeout_s,
            connect_timeout_s=connect_timeout_s,
            reconnect_backoff_s=reconnect_backoff_s,
            reconnect_backoff_max_s=reconnect_backoff_max_s,
        )
        # three connections: membership (heartbeat thread), commits and admin, gets
        self._hbc = Client(brokers, **kw)  # type: ignore[arg-type]
        self._ctl = Client(brokers, **kw)  # type: ignore[arg-type]
        self._data = Client(brokers, **kw)  # type: ignore[arg-type]

        self._lock = threading.Lock()
        self._latest: Optional[Assignment] = None
        self._latest_seq = 0
        self._applied_seq = 0
        self._need_join = True
        self._error: Optional[BaseException] = None
        self._hb_error: Optional[BaseException] = None
        self._events: "queue.Queue[tuple]" = queue.Queue()
        self._parts: Dict[int, _Part] = {}
        self._generation = -1
        self._buffer: Deque[Tuple[int, Message]] = collections.deque()
        self._last_commit = time.monotonic()
        self._closed = False
        self._stop = threading.Event()
        self._hb_wake = threading.Event()
        self._poll_lock = threading.RLock()
        self.rebalances = 0  # assignments applied (the first included)

        try:
            target: Optional[str] = None
            if start_offset is not None:
                target = str(int(start_offset))
            elif start_time_ms is not None:
                target = f"@{int(start_time_ms)}"
            if target is not None and mode == "cluster":
                self._ctl.reset(self.group, self.topic, target)
            try:
                self._beat()
            except NotFound:
                log.warning("imago consumer %s: topic %s does not exist yet; waiting for it",
                            self.member_id, self.topic)
            if target is not None and mode == "broadcast" and not self._need_join:
                # a broadcast member's own offsets exist once it has joined
                self._ctl.reset(self.group, self.topic, target)
                self._beat()
        except BaseException:
            self._hbc.close()
            self._ctl.close()
            self._data.close()
            raise
        self._hb = threading.Thread(target=self._heartbeat_loop,
                                    name=f"imago-heartbeat-{self.member_id}", daemon=True)
        self._hb.start()

    # -- public ------------------------------------------------------------------------------

    @property
    def brokers(self) -> Brokers:
        return self._ctl.brokers

    @brokers.setter
    def brokers(self, value: Brokers) -> None:
        """Points the consumer at another address (used from the next reconnect on)."""
        self._hbc.brokers = value
        self._ctl.brokers = value
        self._data.brokers = value

    @property
    def client(self) -> Client:
        """The consumer's control connection, for admin calls (stats, offsets, ...)."""
        return self._ctl

    @property
    def generation(self) -> int:
        """The group generation of the assignment in use (-1 before the first)."""
        return self._generation

    def assignment(self) -> List[int]:
        """The partitions this consumer reads now (as of the last poll)."""
        return sorted(self._parts)

    def position(self, partition: int) -> Optional[int]:
        """The next offset to be handed over from ``partition`` (None if not owned)."""
        st = self._parts.get(partition)
        return None if st is None else st.consumed

    def committed(self, partition: int) -> Optional[int]:
        """The offset of ``partition`` known to be committed (None if not owned)."""
        st = self._parts.get(partition)
        return None if st is None else st.committed

    def seek(self, partition: int, offset: int) -> None:
        """Continues ``partition`` (owned) from ``offset``; committed like any progress."""
        with self._poll_lock:
            st = self._parts.get(partition)
            if st is None:
                raise ValueError(f"partition {partition} is not assigned to this consumer")
            st.position = st.consumed = int(offset)
            st.epoch = next(_epochs)
            st.inflight = None
            st.not_before = 0.0
            st.paused = False
            self._filter_buffer()

    def poll(self, timeout_s: float = 1.0) -> List[Message]:
        """Waits up to ``timeout_s`` for messages and returns those that arrived (possibly
        several partitions', each in offset order), [] on timeout or after :meth:`close`."""
        with self._poll_lock:
            out: List[Message] = []
            while self._buffer:
                self._hand_over(out, *self._buffer.popleft())
            if out or self._closed:
                return out
            for epoch, m in self._fetch(timeout_s):
                self._hand_over(out, epoch, m)
            return out

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        """The next message; blocks (long-polling) until one arrives. Stops after close()."""
        with self._poll_lock:
            while True:
                while self._buffer:
                    got: List[Message] = []
                    self._hand_over(got, *self._buffer.popleft())
                    if got:
                        return got[0]
                if self._closed:
                    raise StopIteration
                batch = self._fetch(max(1.0, self.poll_wait_ms / 1000.0))
                self._buffer.extend(batch)

    def commit(self) -> Dict[int, int]:
        """Commits the consumed offsets that changed since the last commit; returns
        {partition: offset} of those the broker accepted. A partition refused with 409 (it
        moved to another member) is paused until the next assignment. Connection problems
        raise."""
        with self._poll_lock:
            return self._commit_refreshing(raise_errors=True)

    def wakeup(self) -> None:
        """Makes a poll blocked in another thread return early."""
        self._events.put(("wake",))

    def close(self, commit: Optional[bool] = None, timeout_s: float = 5.0) -> None:
        """Commits (when ``commit``, default ``auto_commit``), leaves the group and closes
        the connections. Idempotent; may be called from another thread."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._hb_wake.set()
        self.wakeup()
        got = self._poll_lock.acquire(timeout=timeout_s + self.poll_wait_ms / 1000.0)
        try:
            if self._hb.is_alive():
                self._hb.join(timeout_s)
            self._hbc.close()
            # from here on the control connection does everything (the final commit, the
            # assignment refresh it may need, the leave), within timeout_s per request
            self._ctl._link.request_timeout_s = min(self._ctl.request_timeout_s, timeout_s)
            self._ctl._link.connect_timeout_s = min(self._ctl._link.connect_timeout_s,
                                                    timeout_s)
            want_commit = self.auto_commit if commit is None else commit
            if want_commit and got:
                try:
                    self._apply()
                    self._commit_refreshing(raise_errors=False, connect_timeout_s=timeout_s)
                except ImagoError as e:
                    log.warning("imago consumer %s: final commit failed: %s", self.member_id, e)
                left = {p: st.consumed for p, st in sorted(self._parts.items())
                        if st.consumed != st.committed}
                if left:
                    log.warning("imago consumer %s: closing with uncommitted progress %s "
                                "(generation %d): those messages will be delivered again",
                                self.member_id, left, self._generation)
            elif want_commit:
                log.warning("imago consumer %s: a poll in another thread did not return within "
                            "%.1f s: closing without the final commit", self.member_id,
                            timeout_s + self.poll_wait_ms / 1000.0)
            try:
                self._ctl.leave(self.group, self.topic, self.member_id)
            except ImagoError as e:
                log.info("imago consumer %s: leave failed: %s", self.member_id, e)
        finally:
            self._hbc.close()
            self._ctl.close()
            self._data.close()
            self._parts = {}
            self._buffer.clear()
            if got:
                self._poll_lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close(commit=False if exc_type is not None else None)

    # -- membership (heartbeat thread, and the constructor) ----------------------------------

    def _beat(self) -> Assignment:
        """One join or heartbeat; publishes the assignment. Raises on errors."""
        if self._need_join:
            a = self._hbc.join(self.group, self.topic, self.member_id, self.mode, self.start)
            self._need_join = False
        else:
            try:
                a = self._hbc.heartbeat(self.group, self.topic, self.member_id)
            except Conflict:
                log.info("imago consumer %s: broker forgot the member; joining again",
                         self.member_id)
                self._need_join = True
                a = self._hbc.join(self.group, self.topic, self.member_id, self.mode,
                                   self.start)
                self._need_join = False
        self._publish(a)
        return a

    def _publish(self, a: Assignment) -> None:
        """Makes ``a`` the latest assignment, for the polling thread to apply."""
        with self._lock:
            changed = (
                self._latest is None
                or a.generation != self._generation
                or set(a.partitions) != set(self._parts)
                or any(st.paused for st in list(self._parts.values()))
            )
            self._latest = a
            self._latest_seq += 1
        if changed:
            self._events.put(("assignment",))

    def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        delay = 0.0
        while not self._stop.is_set():
            a = self._latest
            interval = (a.session_timeout_ms / 3000.0) if a is not None else 1.0
            wait = max(delay, interval - (time.monotonic() - last))
            if self._hb_wake.wait(max(0.0, wait)):
                self._hb_wake.clear()
                # an early beat was asked for; keep at least 50 ms between beats
                time.sleep(max(0.0, 0.05 - (time.monotonic() - last)))
            if self._stop.is_set():
                break
            last = time.monotonic()
            try:
                self._beat()
                delay = 0.0
                self._hb_error = None
            except NotFound:
                self._need_join = True
                delay = 1.0
            except Conflict as e:  # join refused: mode clash
                self._hb_error = e
                self._need_join = True
                delay = 1.0
            except BrokerError as e:
                log.warning("imago consumer %s: heartbeat: %s", self.member_id, e)
                delay = 1.0
            except ImagoError as e:  # connection lost or timeout: the link backs off
                log.debug("imago consumer %s: heartbeat: %s", self.member_id, e)
                delay = 0.2
            except Exception:  # pragma: no cover
                log.exception("imago consumer heartbeat failed")
                delay = 1.0

    # -- polling (caller's thread) -----------------------------------------------------------

    def _hand_over(self, out: List[Message], epoch: int, m: Message) -> None:
        st = self._parts.get(m.partition)
        if st is None or st.epoch != epoch:
            return  # partition lost or moved since the fetch
        st.consumed = m.offset + 1
        out.append(m)

    def _filter_buffer(self) -> None:
        """Drops buffered messages of partitions lost or moved (in place)."""
        keep = [(e, m) for e, m in self._buffer
                if m.partition in self._parts and self._parts[m.partition].epoch == e]
        self._buffer.clear()
        self._buffer.extend(keep)

    def _apply(self, commit_kept: bool = True) -> None:
        """Switches to the latest published assignment, if it is new."""
        with self._lock:
            a, seq = self._latest, self._latest_seq
        if a is None or seq == self._applied_seq:
            return
        self._applied_seq = seq
        same = a.generation == self._generation and set(a.partitions) == set(self._parts)
        if same:
            for st in self._parts.values():
                st.paused = False
            return
        parts: Dict[int, _Part] = {}
        keep: List[int] = []
        for p, offset in sorted(a.partitions.items()):
            st = self._parts.get(p)
            if st is not None and offset in (st.committed, st.consumed):
                # ours before and nobody moved it (the broker holds what we committed, or
                # what we consumed: a commit whose reply we missed): continue where we are
                st.committed = offset
                st.paused = False
                keep.append(p)
            else:
                st = _Part(p, offset)
            parts[p] = st
        lost = sorted(set(self._parts) - set(parts))
        log.info("imago consumer %s: generation %d, partitions %s (kept %s, lost %s)",
                 self.member_id, a.generation, sorted(parts), keep, lost)
        self._parts = parts
        self._generation = a.generation
        self.rebalances += 1
        self._filter_buffer()
        if self.auto_commit and keep and commit_kept:
            try:
                self._commit(raise_errors=False, connect_timeout_s=1.0)
            except ImagoError as e:
                log.debug("imago consumer %s: commit after rebalance: %s", self.member_id, e)

    def _commit_refreshing(self, raise_errors: bool,
                           connect_timeout_s: Optional[float] = None) -> Dict[int, int]:
        """Commits; when the broker refuses a partition (409: the generation moved on, e.g.
        another member left), fetches the current assignment and commits again what is still
        ours."""
        done = self._commit(raise_errors, connect_timeout_s)
        if not any(st.paused for st in self._parts.values()):
            return done
        try:
            if not self._refresh_assignment():
                return done
        except ImagoError as e:
            log.info("imago consumer %s: refreshing the assignment: %s", self.member_id, e)
            return done
        self._apply(commit_kept=False)
        done.update(self._commit(raise_errors, connect_timeout_s))
        return done

    def _refresh_assignment(self) -> bool:
        """Asks the broker for this member's current assignment now and publishes it; False
        when the member must join again first (left to the heartbeat thread; after close
        there is nothing to join). Uses the control connection: the heartbeat connection
        belongs to the heartbeat thread and is already closed during close()."""
        if self._need_join:
            self._hb_wake.set()
            return False
        try:
            a = self._ctl.heartbeat(self.group, self.topic, self.member_id)
        except Conflict as e:  # unknown member: it expired, or the broker restarted
            log.info("imago consumer %s: refreshing the assignment: %s", self.member_id, e)
            if not self._closed:
                self._need_join = True
                self._hb_wake.set()
            return False
        self._publish(a)
        return True

    def _commit(self, raise_errors: bool, connect_timeout_s: Optional[float] = None) -> Dict[int, int]:
        self._last_commit = time.monotonic()
        todo = [(st, st.consumed) for st in self._parts.values()
                if st.consumed != st.committed and not st.paused]
        if not todo or self._generation < 0:
            return {}
        gen = str(self._generation)
        futs = []
        first_error: Optional[BaseException] = None
        for st, offset in todo:
            try:
                f = self._ctl._link.submit(
                    ["commit", self.group, self.topic, str(st.partition), str(offset),
                     self.member_id, gen],
                    None, None, connect_timeout_s,
                )
            except ImagoError as e:
                first_error = e
                break
            futs.append((st, offset, f))
        done: Dict[int, int] = {}
        ask_assignment = False
        for st, offset, f in futs:
            try:
                reply = f.result(self._ctl.request_timeout_s + 1.0)
            except ImagoError as e:
                first_error = first_error or e
                continue
            except Exception as e:  # futures.TimeoutError
                first_error = first_error or ImagoTimeout(str(e) or "commit timed out")
                continue
            if reply.code == 200:
                st.committed = offset
                done[st.partition] = offset
            elif reply.code == 409:
                log.info("imago consumer %s: commit of %d refused (%s); waiting for the new "
                         "assignment", self.member_id, st.partition, reply.text)
                st.paused = True
                ask_assignment = True
            else:
                err = reply.error()
                log.warning("imago consumer %s: commit of partition %d: %s",
                            self.member_id, st.partition, err)
                first_error = first_error or err
        if ask_assignment:
            self._hb_wake.set()
        if first_error is not None and raise_errors:
            raise first_error
        if first_error is not None:
            log.debug("imago consumer %s: auto-commit: %s", self.member_id, first_error)
        return done

    def _issue_gets(self, deadline: float) -> None:
        now = time.monotonic()
        wait_ms = self.poll_wait_ms
        for st in self._parts.values():
            if st.inflight is not None or st.paused or st.not_before > now:
                continue
            tokens = ["get", self.topic, self.group, str(st.partition), str(st.position),
                      str(self.max_bytes), str(wait_ms)]
            if self._tags is not None:
                tokens.append(self._tags)
            try:
                fut = self._data._link.submit(
                    tokens, None, self._data.request_timeout_s + wait_ms / 1000.0,
                    max(0.05, min(deadline - now, self._data._link.connect_timeout_s)),
                )
            except ImagoError as e:
                log.debug("imago consumer %s: get: %s", self.member_id, e)
                for other in self._parts.values():
                    other.not_before = time.monotonic() + 0.1
                return
            st.inflight = fut
            sent = time.monotonic()
            epoch = st.epoch
            p = st.partition
            fut.add_done_callback(
                lambda f, p=p, epoch=epoch, sent=sent: self._events.put(("reply", p, epoch, f, sent))
            )

    def _fetch(self, timeout_s: float) -> List[Tuple[int, Message]]:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self._closed:
                return []
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            if self._hb_error is not None:
                err, self._hb_error = self._hb_error, None
                raise err
            self._apply()
            if self.auto_commit and time.monotonic() - self._last_commit >= self.auto_commit_interval_s:
                try:
                    self._commit(raise_errors=False, connect_timeout_s=0.5)
                except ImagoError as e:  # pragma: no cover - raise_errors=False
                    log.debug("imago auto-commit: %s", e)
            self._issue_gets(deadline)
            now = time.monotonic()
            left = deadline - now
            wake_at = min((st.not_before for st in self._parts.values()
                           if st.inflight is None and st.not_before > now), default=None)
            wait = left if wake_at is None else min(left, wake_at - now)
            events = []
            try:
                events.append(self._events.get(timeout=max(0.0, wait)))
                while True:
                    events.append(self._events.get_nowait())
            except queue.Empty:
                pass
            out: List[Tuple[int, Message]] = []
            for ev in events:
                if ev[0] == "reply":
                    self._on_reply(out, *ev[1:])
            if out:
                return out
            if time.monotonic() >= deadline:
                return []

    def _on_reply(self, out: List[Tuple[int, Message]], p: int, epoch: int, fut: Future,
                  sent: float) -> None:
        st = self._parts.get(p)
        if st is None or st.epoch != epoch:
            return
        st.inflight = None
        now = time.monotonic()
        exc = fut.exception()
        if exc is not None:
            log.debug("imago consumer %s: get on %d: %s", self.member_id, p, exc)
            st.not_before = now + 0.1
            return
        reply = fut.result()
        if reply.kind == "value":
            try:
                msgs = decode_records(reply.body)
            except ProtocolError as e:
                st.corrupt_tries += 1
                log.warning("imago consumer %s: partition %d: %s; fetching again",
                            self.member_id, p, e)
                if st.corrupt_tries >= 3:
                    # raised by the next poll; seek() past it to go on
                    st.corrupt_tries = 0
                    st.paused = True
                    self._error = e
                return
            st.corrupt_tries = 0
            msgs = [m for m in msgs if m.offset >= st.position]
            if msgs:
                st.position = msgs[-1].offset + 1
                out.extend((epoch, m) for m in msgs)
            return
        code = reply.code
        if code == 404:
            if reply.text.startswith("no message at offset"):
                if self.poll_wait_ms > 0 and (now - sent) * 1000 < self.poll_wait_ms * 0.8:
                    # answered before the wait was over: maybe a rebalance of the group
                    self._hb_wake.set()
                    st.not_before = now + 0.05
            else:  # unknown topic (broker lost it?): try again later
                log.warning("imago consumer %s: %s", self.member_id, reply.text)
                st.not_before = now + 1.0
                self._hb_wake.set()
        elif code == 301:
            try:
                new = int(reply.text.strip())
            except ValueError:
                st.not_before = now + 1.0
                return
            if st.consumed == st.position:
                st.consumed = new  # everything before it was handed over or skipped
            st.position = new
        elif code == 520:
            err = CorruptRecord(code, reply.text)
            nxt = err.next_offset
            log.error("imago consumer %s: partition %d: %s; skipping to %d", self.member_id, p,
                      reply.text, nxt)
            if nxt > st.position:
                if st.consumed == st.position:
                    st.consumed = nxt
                st.position = nxt
            else:
                st.not_before = now + 1.0
        elif code in (500, 503):
            st.not_before = now + 0.5
        elif code == 400:
            # partition out of range: the topic changed; ask for a new assignment
            log.warning("imago consumer %s: get on %d: %s", self.member_id, p, reply.text)
            st.paused = True
            self._hb_wake.set()
        else:
            st.not_before = now + 1.0
            self._error = reply.error()
