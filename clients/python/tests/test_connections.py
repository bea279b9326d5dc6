"""Connection handling: killed sockets, broker restarts, timeouts, unreachable brokers."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from helpers import wait_for
from imago import Client, Consumer, ImagoConnectionError, ImagoTimeout, Producer


def kill_socket(client) -> None:
    conn = client._link.current
    assert conn is not None
    conn.sock.shutdown(socket.SHUT_RDWR)


def test_a_killed_connection_is_reestablished_and_sends_continue(addr) -> None:
    with Producer(addr) as p:
        assert p.send("kill", b"before", partition=0).offset == 0
        kill_socket(p)
        wait_for(lambda: p._link.current is None, 5, "the client to notice")
        assert p.send("kill", b"after", partition=0).offset == 1
        assert p._link.connects == 2
        assert [m.body for m in p.get("kill", 0, 0)] == [b"before", b"after"]


def test_sends_in_flight_when_the_connection_dies_are_retried(addr) -> None:
    n = 3000
    with Producer(addr) as p:
        futs = []
        for i in range(n):
            futs.append(p.send_async("inflight", f"m{i}".encode(), partition=1))
            if i == n // 2:
                kill_socket(p)
        p.flush(30)
        results = [f.result() for f in futs]  # none failed
        assert p._link.connects >= 2
        stored = []
        off = 0
        while True:
            batch = p.get("inflight", 1, off)
            if not batch:
                break
            stored += [m.body for m in batch]
            off = batch[-1].offset + 1
    # at-least-once: every message stored, those in flight at the kill possibly twice
    assert set(stored) == {f"m{i}".encode() for i in range(n)}
    assert len(stored) == off and off >= n
    assert len({r.offset for r in results}) == n


def test_sends_continue_across_a_broker_restart_on_the_same_port(broker) -> None:
    with Producer(broker.address) as p:  # a fixed address, no callable
        p.send("same-port", b"one", partition=0)
        broker.restart(same_port=True)
        assert p.send("same-port", b"two", partition=0).offset == 1


def test_a_client_can_be_pointed_at_a_new_address(broker) -> None:
    with Producer(broker.address) as p:
        p.send("moved-broker", b"one", partition=0)
        broker.restart()  # new port
        p.brokers = broker.address
        assert p.send("moved-broker", b"two", partition=0).offset == 1


def test_a_consumer_carries_on_after_its_connections_are_killed(addr) -> None:
    with Producer(addr) as p, Consumer(addr, "killers", "ckill", poll_wait_ms=200) as c:
        for i in range(100):
            p.send_async("ckill", f"a{i}".encode())
        p.flush(10)
        got = []
        while len(got) < 100:
            got += c.poll(1.0)
        assert c.commit()  # the commit connection is open now
        kill_socket(c._data)
        kill_socket(c._ctl)
        kill_socket(c._hbc)
        for i in range(100):
            p.send_async("ckill", f"b{i}".encode())
        p.flush(10)
        deadline = time.monotonic() + 15
        while len(got) < 200 and time.monotonic() < deadline:
            got += c.poll(0.5)
        assert sorted(m.body for m in got) == sorted(
            [f"a{i}".encode() for i in range(100)] + [f"b{i}".encode() for i in range(100)])
        assert c.commit()
        assert c._data._link.connects >= 2 and c._ctl._link.connects >= 2
        wait_for(lambda: c._hbc._link.connects >= 2, 10, "a heartbeat on a new connection")


def test_an_unreachable_broker_raises_a_connection_error_after_the_connect_timeout() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    with Client(f"127.0.0.1:{port}", connect_timeout_s=0.5) as c:
        with pytest.raises(ImagoConnectionError):
            c.version()
    assert time.monotonic() - t0 < 5


def test_a_broker_that_does_not_answer_raises_a_timeout() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(srv.accept()), daemon=True).start()
    try:
        with Client("127.0.0.1:%d" % srv.getsockname()[1], request_timeout_s=0.5) as c:
            t0 = time.monotonic()
            with pytest.raises(ImagoTimeout):
                c.version()
            assert time.monotonic() - t0 < 3
            t0 = time.monotonic()
            with pytest.raises(ImagoTimeout):  # the next call (a new connection) times out too
                c.stats()
            assert time.monotonic() - t0 < 3
    finally:
        srv.close()
        for conn, _ in accepted:
            conn.close()
