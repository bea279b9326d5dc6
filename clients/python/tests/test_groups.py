"""Consumer groups against the real broker: sharing, rebalances, restarts, tags, broadcast,
commits, rewinds."""

from __future__ import annotations

import time

import pytest

from helpers import Collector, counts, settle, wait_for
from imago import Client, Consumer, Producer

N = 4000


def produce(addr, topic: str, bodies, **kw) -> None:
    with Producer(addr) as p:
        for b in bodies:
            p.send_async(topic, b, **kw)
        p.flush(30)


def test_two_consumers_share_a_group_and_consume_each_message_exactly_once(addr) -> None:
    produce(addr, "shared", [b"warm-up"])
    a = Consumer(addr, "workers", "shared", member_id="worker-a", poll_wait_ms=300)
    b = Consumer(addr, "workers", "shared", member_id="worker-b", poll_wait_ms=300)
    try:
        early = settle([a, b], 4)
        assert a.assignment() == [0, 1] and b.assignment() == [2, 3]  # sorted ids, ranges
        ca, cb = Collector(a), Collector(b)
        ca.got += early
        ca.start()
        cb.start()
        expected = {b"warm-up"} | {f"m{i}".encode() for i in range(N)}
        produce(addr, "shared", [f"m{i}".encode() for i in range(N)])
        wait_for(lambda: len(ca.got) + len(cb.got) >= len(expected), 30, "every message")
        time.sleep(0.3)  # nothing more may arrive
        ca.stop()
        cb.stop()
        got = ca.got + cb.got
        assert len(got) == len(expected), "a message was delivered twice"
        assert {m.body for m in got} == expected
        assert {m.partition for m in ca.got} <= {0, 1} and {m.partition for m in cb.got} <= {2, 3}
        assert ca.got and cb.got
        for col in (ca, cb):  # offsets increase per partition
            for part in range(4):
                offs = [m.offset for m in col.got if m.partition == part]
                assert offs == sorted(offs)
    finally:
        a.close()
        b.close()
    with Client(addr) as c:
        st = c.stats("group:workers")
    assert st["group:workers:shared:lag"] == "0"
    assert st["group:workers:shared:members"] == "0"


def test_close_after_another_member_left_commits_what_was_consumed(addr) -> None:
    # a's leave bumps the generation just before b closes: b's final commit (old generation)
    # is refused with 409, b must fetch its new assignment and commit again what it consumed
    produce(addr, "stale", [f"s{i}".encode() for i in range(200)])
    a = Consumer(addr, "stalers", "stale", member_id="a", poll_wait_ms=200)
    b = Consumer(addr, "stalers", "stale", member_id="b", poll_wait_ms=200,
                 auto_commit_interval_s=3600)
    try:
        got = settle([a, b], 4)
        assert b.assignment() == [2, 3]
        want = sum(b.client.offsets("stale", q)[1] for q in (2, 3))
        deadline = time.monotonic() + 10
        while sum(b.position(q) for q in (2, 3)) < want and time.monotonic() < deadline:
            got += b.poll(0.2)
        assert [b.position(q) for q in (2, 3)] == [b.client.offsets("stale", q)[1]
                                                   for q in (2, 3)]
    finally:
        a.close()
        b.close()
    with Client(addr) as c:
        for q in (2, 3):
            assert c.fetch_committed("stalers", "stale", q) == c.offsets("stale", q)[1]


def test_a_rebalance_in_the_middle_loses_nothing(addr) -> None:
    produce(addr, "rebal", [b"warm-up"])
    a = Consumer(addr, "rb", "rebal", member_id="a", poll_wait_ms=300)
    b = Consumer(addr, "rb", "rebal", member_id="b", poll_wait_ms=300)
    c = None
    try:
        early = settle([a, b], 4)
        ca, cb = Collector(a), Collector(b)
        ca.got += early
        ca.start()
        cb.start()
        with Producer(addr) as p:
            for i in range(N):
                p.send_async("rebal", f"m{i}".encode())
                if i == N // 3:
                    p.flush(10)
                    wait_for(lambda: len(ca.got) + len(cb.got) > N // 6, 10, "some progress")
                    cb.stop()
                    b.close()  # commits, leaves: a takes over every partition
                if i == 2 * N // 3:
                    p.flush(10)
                    c = Consumer(addr, "rb", "rebal", member_id="c", poll_wait_ms=300)
                    cc = Collector(c)
                    cc.start()
            p.flush(30)
        expected = {b"warm-up"} | {f"m{i}".encode() for i in range(N)}
        wait_for(lambda: {m.body for m in ca.got + cb.got + cc.got} >= expected, 30,
                 "every message despite the rebalances")
        ca.stop()
        cc.stop()
        assert c.assignment() and a.assignment()
        got = counts(ca.got + cb.got + cc.got)
        assert set(got) == expected
        dups = sum(v - 1 for v in got.values())
        assert dups < N // 2, f"{dups} duplicates"
    finally:
        a.close()
        b.close()
        if c is not None:
            c.close()


def test_producers_and_consumers_carry_on_across_a_broker_restart(broker, addr) -> None:
    produce(addr, "restart", [b"warm-up"])
    a = Consumer(addr, "rs", "restart", member_id="a", poll_wait_ms=300)
    b = Consumer(addr, "rs", "restart", member_id="b", poll_wait_ms=300)
    p = Producer(addr)
    try:
        early = settle([a, b], 4)
        ca, cb = Collector(a), Collector(b)
        ca.got += early
        ca.start()
        cb.start()
        half = N // 2
        for i in range(half):
            p.send_async("restart", f"m{i}".encode())
        p.flush(10)
        wait_for(lambda: len(ca.got) + len(cb.got) > half // 2, 10, "progress before restart")
        old = broker.address
        broker.restart()  # SIGTERM (exit 0), same data dir, a new port
        assert broker.address != old
        for i in range(half, N):
            p.send_async("restart", f"m{i}".encode())
        p.flush(30)
        expected = {b"warm-up"} | {f"m{i}".encode() for i in range(N)}
        wait_for(lambda: {m.body for m in ca.got + cb.got} >= expected, 40,
                 "every message after the restart")
        ca.stop()
        cb.stop()
        got = counts(ca.got + cb.got)
        assert set(got) == expected
        assert p._link.connects >= 2
        # offsets continue after the restart: nothing was stored twice by the producer
        with Client(addr) as c:
            assert sum(c.offsets("restart", q)[1] for q in range(4)) == N + 1
    finally:
        p.close()
        a.close()
        b.close()


def test_a_tag_filter_delivers_only_matching_tags(addr) -> None:
    tags = ["red", "green", "blue", None]
    with Producer(addr) as p:
        for i in range(800):
            p.send_async("tagged", f"{i}".encode(), tag=tags[i % 4])
        # a long run without a match: the broker skips it (301) and the consumer follows
        for i in range(300):
            p.send_async("tagged", b"skip", tag="green", partition=0)
        p.send_async("tagged", b"last-red", tag="red", partition=0)
        p.flush(10)
    want = {f"{i}".encode() for i in range(800) if tags[i % 4] in ("red", "blue")} | {b"last-red"}
    with Consumer(addr, "tags", "tagged", tags=["red", "blue"], poll_wait_ms=200) as c:
        got = []
        deadline = time.monotonic() + 20
        while {m.body for m in got} != want and time.monotonic() < deadline:
            got += c.poll(0.5)
        assert {m.tag for m in got} == {"red", "blue"}
        assert len(got) == len(want) and {m.body for m in got} == want
        c.commit()
        assert c.position(0) == 800 // 4 + 300 + 1  # past the skipped run
    with Client(addr) as admin:
        # the skipped tail of partition 0 is committed too: nothing left to scan
        assert admin.fetch_committed("tags", "tagged", 0) == admin.offsets("tagged", 0)[1]


def test_broadcast_delivers_every_message_to_each_consumer(addr) -> None:
    produce(addr, "news", [b"warm-up"])
    a = Consumer(addr, "screens", "news", mode="broadcast", member_id="s1", poll_wait_ms=300)
    b = Consumer(addr, "screens", "news", mode="broadcast", member_id="s2", poll_wait_ms=300)
    try:
        for c in (a, b):
            wait_for(lambda: (c.poll(0.05) or True) and c.generation == 2, 10, "generation 2")
        ca, cb = Collector(a), Collector(b)
        ca.start()
        cb.start()
        produce(addr, "news", [f"n{i}".encode() for i in range(1000)])
        expected = {f"n{i}".encode() for i in range(1000)}
        wait_for(lambda: len(ca.got) >= 1000 and len(cb.got) >= 1000, 20, "both copies")
        time.sleep(0.2)
        ca.stop()
        cb.stop()
        for col in (ca, cb):
            bodies = [m.body for m in col.got if m.body != b"warm-up"]
            assert len(bodies) == 1000 and set(bodies) == expected
        a.commit()
        with Client(addr) as admin:
            # each broadcast member has its own offsets
            assert admin.fetch_committed("screens", "news", 0, member="s1") == a.position(0)
    finally:
        a.close()
        b.close()


def test_committed_offsets_let_another_member_resume_where_the_first_stopped(addr) -> None:
    produce(addr, "resume", [f"r{i}".encode() for i in range(400)])
    first = Consumer(addr, "resumers", "resume", auto_commit=False, poll_wait_ms=200)
    got1 = []
    while len(got1) < 100:
        got1 += first.poll(1.0)
    committed = first.commit()
    assert committed and all(first.committed(q) == o for q, o in committed.items())
    first.close(commit=False)
    with Client(addr) as admin:
        for q, o in committed.items():
            assert admin.fetch_committed("resumers", "resume", q) == o
    with Consumer(addr, "resumers", "resume", poll_wait_ms=200) as second:
        got2 = []
        deadline = time.monotonic() + 10
        while len(got1) + len(got2) < 400 and time.monotonic() < deadline:
            got2 += second.poll(0.5)
    assert sorted(m.body for m in got1 + got2) == sorted(f"r{i}".encode() for i in range(400))


def test_iterating_stops_at_close_and_auto_commit_resumes_the_next_run(addr) -> None:
    produce(addr, "iter", [f"i{i}".encode() for i in range(50)], partition=2)
    seen = []
    with Consumer(addr, "iters", "iter", poll_wait_ms=200) as c:
        for msg in c:
            seen.append(msg.body)
            if len(seen) == 20:
                break
    assert seen == [f"i{i}".encode() for i in range(20)]
    with Consumer(addr, "iters", "iter", poll_wait_ms=200) as c:
        for msg in c:
            seen.append(msg.body)
            if len(seen) == 50:
                c.close()  # iteration ends
        assert c.closed
    assert seen == [f"i{i}".encode() for i in range(50)]


def test_start_offset_start_time_and_latest_choose_where_a_group_begins(addr) -> None:
    produce(addr, "starts", [f"a{i}".encode() for i in range(10)], partition=0)
    time.sleep(0.05)
    t = int(time.time() * 1000)
    time.sleep(0.05)
    produce(addr, "starts", [f"b{i}".encode() for i in range(5)], partition=0)

    def drain(c: Consumer, n: int):
        got = []
        deadline = time.monotonic() + 5
        while len(got) < n and time.monotonic() < deadline:
            got += c.poll(0.3)
        got += c.poll(0.3)
        return [m.body for m in got]

    with Consumer(addr, "from-offset", "starts", start_offset=7, poll_wait_ms=100) as c:
        assert drain(c, 8) == [b"a7", b"a8", b"a9"] + [f"b{i}".encode() for i in range(5)]
    with Consumer(addr, "from-time", "starts", start_time_ms=t, poll_wait_ms=100) as c:
        assert drain(c, 5) == [f"b{i}".encode() for i in range(5)]
    with Consumer(addr, "from-latest", "starts", start="latest", poll_wait_ms=100) as c:
        assert c.poll(0.5) == []
        produce(addr, "starts", [b"new"], partition=0)
        assert drain(c, 1) == [b"new"]
    with Consumer(addr, "bc-offset", "starts", mode="broadcast", start_offset=13,
                  poll_wait_ms=100) as c:
        assert drain(c, 3) == [b"b3", b"b4", b"new"]


def test_a_reset_by_an_admin_rewinds_live_members(addr) -> None:
    produce(addr, "rewind", [f"w{i}".encode() for i in range(30)], partition=3)
    with Consumer(addr, "rewinders", "rewind", poll_wait_ms=200) as c:
        got = []
        while len(got) < 30:
            got += c.poll(1.0)
        c.commit()
        with Client(addr) as admin:
            assert admin.reset("rewinders", "rewind", 10, partition=3) == {3: 10}
        again = []
        deadline = time.monotonic() + 10
        while len(again) < 20 and time.monotonic() < deadline:
            again += c.poll(0.5)
    assert [m.body for m in again] == [f"w{i}".encode() for i in range(10, 30)]


def test_a_consumer_waits_for_a_topic_that_does_not_exist_yet(addr) -> None:
    with Consumer(addr, "patient", "later", poll_wait_ms=200) as c:
        assert c.poll(0.3) == [] and c.assignment() == []
        produce(addr, "later", [b"finally"])
        got = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got += c.poll(0.5)
        assert [m.body for m in got] == [b"finally"]


def test_auto_commit_commits_at_the_interval_while_the_consumer_runs(addr) -> None:
    produce(addr, "auto", [f"a{i}".encode() for i in range(300)])
    auto = Consumer(addr, "auto-g", "auto", auto_commit_interval_s=0.2, poll_wait_ms=100)
    manual = Consumer(addr, "manual-g", "auto", auto_commit=False, poll_wait_ms=100)
    try:
        got_a, got_m = [], []
        deadline = time.monotonic() + 15
        while (len(got_a) < 300 or len(got_m) < 300) and time.monotonic() < deadline:
            got_a += auto.poll(0.1)
            got_m += manual.poll(0.1)
        assert len(got_a) == len(got_m) == 300
        with Client(addr) as admin:
            ends = [admin.offsets("auto", q)[1] for q in range(4)]

            def committed(group):
                return [admin.fetch_committed(group, "auto", q) for q in range(4)]

            # still open: the interval commits, driven by further polls
            wait_for(lambda: (auto.poll(0.1) or True) and committed("auto-g") == ends, 10,
                     "the interval commit")
            manual.poll(0.3)
            assert committed("manual-g") == [0, 0, 0, 0]  # only the join's start offsets
            assert manual.commit() == dict(enumerate(ends))
            assert committed("manual-g") == ends
    finally:
        auto.close()
        manual.close()
