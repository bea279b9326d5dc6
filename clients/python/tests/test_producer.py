"""Producing: round trips, pipelining, partition choice."""

from __future__ import annotations

import time
import zlib
from collections import Counter

from imago import Client, Consumer, Producer, SendResult, partition_for_key


def test_send_and_receive_round_trip_with_tag_key_and_properties(addr) -> None:
    before_ms = int(time.time() * 1000)
    with Producer(addr) as p:
        r = p.send("orders", b"payload-1", tag="created", key="order-17",
                   properties={"trace": "abc", "empty": ""})
        plain = p.send("orders", "plain text", partition=r.partition)
        assert isinstance(r, SendResult)
        assert (plain.partition, plain.offset) == (r.partition, r.offset + 1)
        assert plain.msg_id > r.msg_id
        msgs = p.get("orders", r.partition, r.offset)
    m, n = msgs
    assert (m.topic, m.partition, m.offset, m.msg_id) == ("orders", r.partition, r.offset, r.msg_id)
    assert m.body == b"payload-1" and m.tag == "created" and m.key == "order-17"
    assert m.properties == {"KEYS": "order-17", "trace": "abc", "empty": ""}
    assert m.flag & 3 == 3
    assert before_ms - 1000 <= m.born_ts_ms <= m.store_ts_ms <= int(time.time() * 1000) + 1000
    assert (n.body, n.tag, n.properties, n.key, n.flag) == (b"plain text", None, {}, None, 0)
    assert n.text == "plain text"

    with Consumer(addr, "round-trip", "orders", poll_wait_ms=200) as c:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += c.poll(0.5)
    assert [(g.body, g.tag, g.key, g.properties) for g in got] == [
        (b"payload-1", "created", "order-17", {"KEYS": "order-17", "trace": "abc", "empty": ""}),
        (b"plain text", None, None, {}),
    ]


def test_pipelined_async_sends_are_stored_in_send_order(addr) -> None:
    n = 5000
    with Producer(addr) as p:
        futures = [p.send_async("pipe", f"m{i}".encode(), partition=0) for i in range(n)]
        p.flush(30)
        assert p.in_flight() == 0
        results = [f.result() for f in futures]
        assert [r.offset for r in results] == list(range(n))
        assert all(r.partition == 0 for r in results)
        assert [r.msg_id for r in results] == sorted(r.msg_id for r in results)
        bodies = []
        offset = 0
        while offset < n:
            batch = p.get("pipe", 0, offset, max_bytes=1 << 20)
            assert batch, "caught up too early"
            bodies += [m.body for m in batch]
            offset = batch[-1].offset + 1
    assert bodies == [f"m{i}".encode() for i in range(n)]


def test_round_robin_spreads_messages_over_every_partition(addr) -> None:
    with Producer(addr) as p:
        results = [p.send_async("rr", b"x") for _ in range(400)]
        p.flush(10)
        counts = Counter(f.result().partition for f in results)
        assert p.partitions("rr") == 4
    assert set(counts) == {0, 1, 2, 3}
    assert all(v == 100 for v in counts.values()), counts


def test_partition_by_key_is_stable_and_keeps_a_key_in_order(addr) -> None:
    keys = [f"user-{i}" for i in range(40)]
    with Producer(addr) as p:
        # the topic does not exist yet: the default partition count is used
        first = {k: p.send("keyed", f"{k}:0", key=k).partition for k in keys}
        assert p.partitions("keyed") == 4
        futs = [(k, j, p.send_async("keyed", f"{k}:{j}", key=k)) for j in range(1, 6) for k in keys]
        p.flush(10)
    for k, _, f in futs:
        assert f.result().partition == first[k] == zlib.crc32(k.encode()) % 4
    assert len(set(first.values())) == 4, "40 keys should use every partition"
    with Producer(addr) as other:  # another producer maps keys the same way
        assert all(other.send("keyed", "again", key=k).partition == first[k] for k in keys[:8])
        assert all(partition_for_key(k, 4) == first[k] for k in keys)
    # per key, the bodies come back in send order
    with Client(addr) as c:
        seen = {}
        for part in range(4):
            off = 0
            while True:
                batch = c.get("keyed", part, off)
                if not batch:
                    break
                for m in batch:
                    assert m.partition == first[m.key]
                    seen.setdefault(m.key, []).append(m.text)
                off = batch[-1].offset + 1
    for k in keys:
        assert seen[k][:6] == [f"{k}:{j}" for j in range(6)]
