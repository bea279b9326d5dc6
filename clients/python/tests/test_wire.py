"""Encodings against the examples of protocol.md (no broker needed)."""

from __future__ import annotations

import pytest

from imago import ProtocolError, RecordCorrupt, partition_for_key
from imago._wire import checksum, decode_records, encode_properties, put_body

RECORD_0 = bytes.fromhex(
    "0000004e494d4701c5b652aa00000000"
    "00000000000000000001000000000000"
    "0000018bcfe568000000018bcfe56800"
    "00000000000000050009000000000000"
    "6d6574612d7465737468656c6c6f"
)
RECORD_1 = bytes.fromhex(
    "00000052494d47016ac8b02400000000"
    "0000000000000001000100000000004e"
    "0000018bcfe568fa0000018bcfe568fa"
    "00000001000000050009000400000000"
    "6d6574612d746573747461673168656c"
    "6c6f"
)


def test_put_checksums_match_the_protocol_examples() -> None:
    assert checksum(b"hello") == 907060870
    body, flag = put_body(b"hello", "tag1", None, None, 0)
    assert body == bytes.fromhex("00000004746167316865 6c6c6f".replace(" ", ""))
    assert flag == 1
    assert checksum(body) == 1184113660


def test_properties_block_matches_the_protocol_example() -> None:
    assert encode_properties([("k", "v"), ("trace", "")]) == bytes.fromhex("6b0176027472616365 0102".replace(" ", ""))
    body, flag = put_body(b"x", None, "K1", {"a": "b"}, 0)
    assert flag == 2
    block = b"KEYS\x01K1\x02a\x01b\x02"
    assert body == len(block).to_bytes(4, "big") + block + b"x"


def test_user_flag_bits_are_kept_and_shaping_bits_are_set_by_the_client() -> None:
    _, flag = put_body(b"x", "t", None, None, 0x100 | 2)
    assert flag == 0x101


def test_records_of_the_protocol_example_decode_and_verify() -> None:
    msgs = decode_records(RECORD_0 + RECORD_1)
    assert [m.offset for m in msgs] == [0, 1]
    a, b = msgs
    assert (a.topic, a.partition, a.msg_id, a.store_ts_ms, a.flag, a.tag, a.body) == (
        "meta-test", 0, 281474976710656, 1700000000000, 0, None, b"hello")
    assert (b.msg_id, b.flag, b.tag, b.body, b.properties, b.key) == (
        281474976710734, 1, "tag1", b"hello", {}, None)


def test_a_flipped_bit_fails_the_record_crc() -> None:
    bad = bytearray(RECORD_0)
    bad[-1] ^= 1
    with pytest.raises(RecordCorrupt):
        decode_records(bytes(bad))
    assert decode_records(bytes(bad), verify=False)[0].body == b"helln"


def test_a_truncated_value_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_records(RECORD_0[:-1])


def test_key_partitioning_is_crc32_modulo_partitions() -> None:
    # crc32("user-42") is fixed; the mapping must never change between releases
    import zlib
    assert partition_for_key("user-42", 4) == zlib.crc32(b"user-42") % 4
    assert partition_for_key("é", 7) == zlib.crc32("é".encode()) % 7


def test_bad_tags_and_properties_are_refused_before_sending() -> None:
    with pytest.raises(ValueError):
        put_body(b"x", "", None, None, 0)
    with pytest.raises(ValueError):
        put_body(b"x", None, None, {"": "v"}, 0)
    with pytest.raises(ValueError):
        put_body(b"x", None, None, {"a\x01": "v"}, 0)
