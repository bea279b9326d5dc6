"""Broker errors surface as typed exceptions carrying the broker's code and message."""

from __future__ import annotations

import pytest

from imago import (
    BadRequest,
    BrokerError,
    Client,
    Conflict,
    Consumer,
    Moved,
    NotFound,
    PayloadTooLarge,
    Producer,
)
from imago.errors import error_for


def test_get_on_an_unknown_topic_raises_not_found(addr) -> None:
    with Client(addr) as c:
        with pytest.raises(NotFound) as e:
            c.get("no-such-topic", 0, 0)
    assert e.value.code == 404 and e.value.message == "unknown topic no-such-topic"
    assert isinstance(e.value, BrokerError)


def test_a_bad_name_raises_bad_request_from_the_broker(addr) -> None:
    # the client checks names itself; send the raw line to see the broker's answer
    with Client(addr) as c:
        reply = c._call(["get", ".bad", "g", "0", "0", "100"])
        with pytest.raises(BadRequest) as e:
            reply.ok()
        assert e.value.code == 400 and "bad topic name '.bad'" in e.value.message
        with pytest.raises(ValueError):
            c.get(".bad", 0, 0)


def test_partition_out_of_range_and_bad_stats_item_raise_bad_request(addr) -> None:
    with Producer(addr) as p:
        p.send("small", b"x", partition=0)
        with pytest.raises(BadRequest) as e:
            p.send("small", b"x", partition=9)
        assert "out of range" in e.value.message
        with pytest.raises(BadRequest):
            p.get("small", 9, 0)
        with pytest.raises(BadRequest):
            p.stats("nosuch-item")


def test_an_offset_beyond_the_end_raises_moved_with_the_valid_offset(addr) -> None:
    with Producer(addr) as p:
        p.send("moved", b"a", partition=1)
        p.send("moved", b"b", partition=1)
        with pytest.raises(Moved) as e:
            p.get("moved", 1, 7)
        assert (e.value.code, e.value.offset) == (301, 2)
        assert p.get("moved", 1, 2) == []  # caught up is not an error


def test_an_oversized_body_raises_payload_too_large(addr) -> None:
    with Producer(addr, retries=0) as p:
        with pytest.raises(PayloadTooLarge) as e:
            p.send("big", b"x" * (4 * 1024 * 1024 + 1))
        assert e.value.code == 413
        assert p.send("big", b"fine").offset == 0  # the connection is still in sync


def test_group_errors_raise_conflict(addr) -> None:
    with Producer(addr) as p:
        p.send("conflicts", b"x")
        with pytest.raises(Conflict) as e:
            p.commit("g1", "conflicts", 0, 0, member="stranger", generation=1)
        assert e.value.code == 409 and "unknown member stranger" in e.value.message
        with pytest.raises(Conflict):
            p.heartbeat("g1", "conflicts", "stranger")
        with Consumer(addr, "g1", "conflicts", mode="cluster"):
            with pytest.raises(Conflict) as e:
                Consumer(addr, "g1", "conflicts", mode="broadcast")
            assert "is cluster" in e.value.message
        with pytest.raises(NotFound):
            p.join("g1", "never-created", "m1")


def test_error_classes_map_every_code() -> None:
    assert type(error_for(507, "disk full")).__name__ == "InsufficientStorage"
    assert error_for(520, "corrupt record at offset 3; next offset 4").next_offset == 4
    assert type(error_for(599, "?")) is BrokerError


def test_puts_carry_a_checksum_and_the_broker_refuses_a_wrong_one(addr) -> None:
    from imago._wire import checksum
    from imago.producer import _Put

    put = _Put("sums", 0, b"hello", 0)
    assert put.tokens() == ("put", "sums", "0", "5", "0", str(checksum(b"hello")))
    assert checksum(b"hello") == 907060870  # protocol.md's example
    with Producer(addr) as p:
        assert p.send("sums", b"hello", partition=0).offset == 0  # checked by the broker
        reply = p._call(["put", "sums", "0", "5", "0", "123"], b"hello")
        with pytest.raises(BadRequest) as e:
            reply.ok()
        assert (e.value.code, e.value.message) == (400, "checksum mismatch")
        assert p.offsets("sums", 0) == (0, 1)  # nothing stored
