"""Fixtures: the real broker binary (IMAGO_BIN, default <repo>/target/debug/imago) started on a
free port of 127.0.0.1 in a temporary data directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
IMAGO_BIN = os.environ.get("IMAGO_BIN", str(REPO / "target" / "debug" / "imago"))
LISTENING = re.compile(r"^imago (\S+) listening on (\S+)$")


class Broker:
    """One broker process; ``restart()`` stops it with SIGTERM and starts it again on the
    same data directory (on a new port unless one is given)."""

    def __init__(self, data_dir: Path, extra: Optional[List[str]] = None) -> None:
        self.data_dir = data_dir
        self.extra = list(extra or [])
        self.proc: Optional[subprocess.Popen] = None
        self.address = ""
        self.version = ""
        self.starts = 0

    def start(self, port: int = 0) -> "Broker":
        if not os.path.exists(IMAGO_BIN):
            pytest.fail(f"broker binary {IMAGO_BIN} not found: build it or set IMAGO_BIN")
        log = open(self.data_dir.parent / f"broker-{self.starts}.log", "wb")
        self.starts += 1
        self.proc = subprocess.Popen(
            [IMAGO_BIN, "--listen", f"127.0.0.1:{port}", "--data-dir", str(self.data_dir),
             "--segment-bytes", "8388608", "--disk-free-reserve-bytes", "1048576", *self.extra],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        first: List[bytes] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(15)
        line = first[0].decode().strip() if first else ""
        m = LISTENING.match(line)
        if not m:
            self.proc.kill()
            pytest.fail(f"broker did not start: first stdout line {line!r}")
        self.version, self.address = m.group(1), m.group(2)
        stdout = self.proc.stdout
        threading.Thread(target=lambda: stdout.read(), daemon=True).start()  # drain
        return self

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def stop(self) -> int:
        """SIGTERM; returns the exit code (0 for a clean stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc

    def restart(self, same_port: bool = False) -> "Broker":
        port = self.port if same_port else 0
        assert self.stop() == 0
        if not same_port:
            return self.start(0)
        deadline = time.monotonic() + 10
        while True:  # the old socket may linger briefly
            try:
                return self.start(port)
            except BaseException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    data = tmp_path / "data"
    data.mkdir()
    b = Broker(data).start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        rc = b.stop()
        assert rc == 0, f"broker exited with {rc} on SIGTERM"


@pytest.fixture
def addr(broker: Broker):
    """A callable giving the broker's current address (follows restarts on a new port)."""
    return lambda: broker.address
