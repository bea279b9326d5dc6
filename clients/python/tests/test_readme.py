"""The README's examples run as written (against the test broker instead of 127.0.0.1:8123)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def examples():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_examples_run_as_written(broker, capsys) -> None:
    blocks = examples()
    assert len(blocks) == 4 and all("127.0.0.1:8123" in b for b in blocks)
    producer, consumer, poller, admin = (b.replace("127.0.0.1:8123", broker.address) for b in blocks)
    exec(compile(producer, "README producer", "exec"), {})
    out = capsys.readouterr().out
    assert "stored: partition" in out and "sent 1000 more" in out
    exec(compile(consumer, "README consumer", "exec"), {})
    first = capsys.readouterr().out.splitlines()
    exec(compile(consumer, "README consumer", "exec"), {})
    second = capsys.readouterr().out.splitlines()
    assert len(first) == len(second) == 10
    assert not set(first) & set(second), "the second run continues after the first"
    exec(compile(poller, "README poller", "exec"), {})
    assert "greeting: hello from user-1" in capsys.readouterr().out
    exec(compile(admin, "README admin", "exec"), {})
    out = capsys.readouterr().out
    assert "partitions of demo: 4" in out and "error 404 unknown topic no-such-topic" in out
