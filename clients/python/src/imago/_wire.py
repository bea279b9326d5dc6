"""Encoding and decoding of imago's wire formats (protocol.md): names, put bodies, properties
blocks, records of ``value`` replies."""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import ProtocolError, RecordCorrupt

MAGIC = 0x494D4701
HEADER = struct.Struct(">IIIIQQqqIIHHHH")  # 64 bytes
assert HEADER.size == 64
FLAG_TAG = 1
FLAG_PROPS = 2
KEY_PROPERTY = "KEYS"
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
LINE_BYTES_MAX = 1024
U64_MAX = (1 << 64) - 1
INT32_MAX = 2147483647

Body = Union[bytes, bytearray, memoryview, str]


class SendResult(NamedTuple):
    """The broker's acknowledgement of a put."""

    msg_id: int
    partition: int
    offset: int


@dataclass(frozen=True)
class Message:
    """One record read from the broker (its CRC verified)."""

    topic: str
    partition: int
    offset: int
    msg_id: int
    store_ts_ms: int
    born_ts_ms: int
    flag: int
    tag: Optional[str]
    properties: Dict[str, str] = field(hash=False)
    body: bytes

    @property
    def key(self) -> Optional[str]:
        """The message key (the ``KEYS`` property), if it was sent with one."""
        return self.properties.get(KEY_PROPERTY)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")


def check_name(kind: str, name: str) -> str:
    """Validates a topic, group or member name client-side (the broker would answer 400)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"bad {kind} name {name!r}: must be 1 to 255 characters of [A-Za-z0-9_.-], "
            "not starting with '.' or '-'"
        )
    return name


def to_bytes(body: Body) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, not {type(body).__name__}")


def encode_properties(props: Sequence[Tuple[str, str]]) -> bytes:
    out = bytearray()
    for k, v in props:
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("property keys and values must be str")
        if not k:
            raise ValueError("a property key may not be empty")
        if any(c in k or c in v for c in ("\x01", "\x02")):
            raise ValueError("property keys and values may not contain \\x01 or \\x02")
        out += k.encode("utf-8") + b"\x01" + v.encode("utf-8") + b"\x02"
    return bytes(out)


def decode_properties(block: bytes) -> Dict[str, str]:
    props: Dict[str, str] = {}
    if not block:
        return props
    text = block.decode("utf-8", errors="replace")
    for entry in text.split("\x02"):
        if not entry:
            continue
        k, _, v = entry.partition("\x01")
        props[k] = v
    return props


def put_body(
    payload: bytes,
    tag: Optional[str],
    key: Optional[str],
    properties: Optional[Mapping[str, str]],
    flag: int,
) -> Tuple[bytes, int]:
    """The put body and flag for a message: [tag][properties]payload, bits 0 and 1 set
    accordingly (other bits of ``flag`` are kept)."""
    flag &= ~(FLAG_TAG | FLAG_PROPS)
    parts: List[bytes] = []
    if tag is not None:
        if not isinstance(tag, str) or not tag:
            raise ValueError("a tag must be a non-empty str (None for no tag)")
        t = tag.encode("utf-8")
        parts.append(struct.pack(">i", len(t)) + t)
        flag |= FLAG_TAG
    if key is not None or properties:
        pairs: List[Tuple[str, str]] = []
        if key is not None:
            if not isinstance(key, str):
                raise TypeError("key must be a str")
            pairs.append((KEY_PROPERTY, key))
        for k, v in (properties or {}).items():
            if key is not None and k == KEY_PROPERTY:
                continue
            pairs.append((k, v))
        block = encode_properties(pairs)
        parts.append(struct.pack(">i", len(block)) + block)
        flag |= FLAG_PROPS
    if flag >= 1 << 31:
        flag -= 1 << 32  # the flag is an int32 on the wire
    parts.append(payload)
    return b"".join(parts), flag


def checksum(body: bytes) -> int:
    """The put ``<checksum>``: CRC32 (IEEE) of the whole put body, masked to 31 bits."""
    return zlib.crc32(body) & 0x7FFFFFFF


def decode_records(data: bytes, verify: bool = True) -> List[Message]:
    """Walks a ``value`` body (protocol.md "Walking a value body")."""
    out: List[Message] = []
    view = memoryview(data)
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 64:
            raise ProtocolError(f"value body ends with a {n - pos}-byte partial record header")
        (total_len, magic, crc, partition, offset, msg_id, store_ts, born_ts, flag, body_len,
         topic_len, tag_len, props_len, _sysflag) = HEADER.unpack_from(data, pos)
        if total_len < 64 or pos + total_len > n:
            raise ProtocolError(
                f"record at byte {pos} has total_len {total_len}, body has {n - pos} bytes left"
            )
        rec = view[pos:pos + total_len]
        if verify:
            if magic != MAGIC:
                raise RecordCorrupt(f"record at offset {offset}: magic {magic:#x}", offset)
            if total_len != 64 + topic_len + tag_len + props_len + body_len:
                raise RecordCorrupt(f"record at offset {offset}: lengths disagree", offset)
            if zlib.crc32(rec[12:], zlib.crc32(rec[0:8])) != crc:
                raise RecordCorrupt(f"record at offset {offset}: CRC mismatch", offset)
        p = 64
        topic = bytes(rec[p:p + topic_len]).decode("utf-8", errors="replace")
        p += topic_len
        tag = bytes(rec[p:p + tag_len]).decode("utf-8", errors="replace") if tag_len else None
        p += tag_len
        props = decode_properties(bytes(rec[p:p + props_len]))
        p += props_len
        body = bytes(rec[p:p + body_len])
        out.append(Message(topic, partition, offset, msg_id, store_ts, born_ts, flag, tag,
                           props, body))
        pos += total_len
    return out


def parse_address(addr: Union[str, Tuple[str, int]]) -> Tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a ``(host, port)`` tuple."""
    if isinstance(addr, tuple):
        return (str(addr[0]), int(addr[1]))
    s = addr.strip()
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad broker address {addr!r}: expected host:port")
    return (host, int(port))
