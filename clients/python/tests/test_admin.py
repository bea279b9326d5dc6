"""Admin calls: stats, version, offsets, committed offsets, reset."""

from __future__ import annotations

import pytest

from imago import BadRequest, Client, Producer


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


def test_every_stats_item_is_a_dict(broker, addr) -> None:
    with Producer(addr) as p:
        for i in range(5):
            p.send("stats-topic", f"m{i}", partition=1)
        p.commit("stats-group", "stats-topic", 1, 3)

        general = p.stats()
        assert general["version"] == p.version() == broker.version
        assert int(general["cmd_put"]) >= 5 and int(general["curr_connections"]) >= 1
        topics = p.stats("topics")
        assert topics["topic:stats-topic:partitions"] == "4"
        assert topics["topic:stats-topic:messages"] == "5"
        assert p.stats("offsets")["stats-topic:1:max_offset"] == "5"
        topic = p.stats("stats-topic")
        assert len(topic) == 8 and topic["stats-topic:1:min_offset"] == "0"
        settings = p.stats("settings")
        assert settings["line_bytes_max"] == "1024" and settings["default_partitions"] == "4"
        assert any(k.endswith(":addr") for k in p.stats("conns"))
        assert p.stats("groups")["group:stats-group:stats-topic:1:committed"] == "3"
        group = p.stats("group:stats-group")
        assert group["group:stats-group:stats-topic:1:committed"] == "3"
        assert group["group:stats-group:stats-topic:1:lag"] == "2"
        assert "help:topics" in p.stats("help")
        assert all(isinstance(v, str) for v in general.values())

        assert p.stats("reset") == {}
        assert p.stats()["cmd_put"] == "0"  # the counters were reset
        with pytest.raises(BadRequest) as e:
            p.stats("no-such-item")
        assert (e.value.code, e.value.message) == (400, "unknown stats item no-such-item")
