from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Sequence

from imago import Consumer, Message


def settle(consumers: Sequence[Consumer], partitions: int, timeout_s: float = 15.0) -> List[Message]:
    """Polls until the consumers agree on one generation and split every partition among
    themselves (cluster) -- i.e. the rebalance is over. Returns what the polls delivered."""
    deadline = time.monotonic() + timeout_s
    got: List[Message] = []
    while time.monotonic() < deadline:
        for c in consumers:
            got += c.poll(0.05)
        gens = {c.generation for c in consumers}
        owned = [p for c in consumers for p in c.assignment()]
        if len(gens) == 1 and sorted(owned) == list(range(partitions)):
            return got
    raise AssertionError(
        f"no stable assignment: {[(c.member_id, c.generation, c.assignment()) for c in consumers]}"
    )


class Collector(threading.Thread):
    """Polls a consumer in a thread, recording (partition, offset, body) until stopped."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__(daemon=True)
        self.consumer = consumer
        self.got: List[Message] = []
        self.stop_flag = threading.Event()
        self.error: BaseException = None  # type: ignore[assignment]

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                self.got += self.consumer.poll(0.2)
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(10)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def bodies(msgs: Sequence[Message]) -> List[bytes]:
    return [m.body for m in msgs]


def counts(msgs: Sequence[Message]) -> Dict[bytes, int]:
    out: Dict[bytes, int] = {}
    for m in msgs:
        out[m.body] = out.get(m.body, 0) + 1
    return out
