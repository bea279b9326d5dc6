"""Admin calls: stats, version, offsets, committed offsets, reset."""

from __future__ import annotations

from imago import Client, Producer


def test_version_and_general_stats(broker, addr) -> None:
    with Client(addr) as c:
        assert c.version() == broker.version
        st = c.stats()
        assert st["version"] == broker.version and int(st["pid"]) == broker.proc.pid
        assert c.stats("") .keys() == st.keys()
        assert "default_partitions" in c.stats("settings")
        assert c.stats("reset") == {}


def test_offsets_follow_the_partitions(addr) -> None:
    with Producer(addr) as p:
        for i in range(5):
            p.send("offs", b"x", partition=2)
        assert p.offsets("offs", 2) == (0, 5)
        assert p.offsets("offs", 0) == (0, 0)
        assert p.valid_offset("offs", 2, 99) == 5
        assert p.partitions("offs") == 4
        assert p.stats("offs")["offs:2:max_offset"] == "5"
        assert p.stats("topics")["topic:offs:messages"] == "5"


def test_a_topic_named_like_a_stats_item_is_looked_up_safely(addr) -> None:
    with Producer(addr) as p:
        p.send("reset", b"x", key="k")  # key hashing asks for the partition count
        p.send("stats-check", b"x")
        before = int(p.stats()["cmd_put"])
        assert p.partitions("reset") == 4
        assert int(p.stats()["cmd_put"]) == before  # the counters were not reset


def test_commit_fetch_and_reset_of_group_offsets(addr) -> None:
    with Producer(addr) as p:
        for i in range(10):
            p.send("committed", b"x", partition=0)
        assert p.fetch_committed("ops", "committed", 0) is None
        p.commit("ops", "committed", 0, 4)
        assert p.fetch_committed("ops", "committed", 0) == 4
        assert p.reset("ops", "committed", "earliest") == {0: 0, 1: 0, 2: 0, 3: 0}
        assert p.reset("ops", "committed", "latest", partition=0) == {0: 10}
        assert p.reset("ops", "committed", 99, partition=0) == {0: 10}  # clamped
        assert p.reset("ops", "committed", time_ms=0, partition=0) == {0: 0}
        assert p.fetch_committed("ops", "committed", 0) == 0
        st = p.stats("group:ops")
        assert st["group:ops:committed:0:committed"] == "0"
