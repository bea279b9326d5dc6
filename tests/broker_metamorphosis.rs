//! The example exchanges of metamorphosis.md section 1.6, adapted to imago's logical offsets
//! and record layout: a Metamorphosis client's bytes must work unchanged.

mod common;

use common::*;

/// `put meta-test 0 13 1 1184113660 2` body: int32 BE 4, "tag1", "hello".
const ATTR_BODY: [u8; 13] = [
    0x00, 0x00, 0x00, 0x04, 0x74, 0x61, 0x67, 0x31, 0x68, 0x65, 0x6C, 0x6C, 0x6F,
];

#[test]
fn reference_checksums_match_the_masked_crc32() {
    assert_eq!(checksum(b"hello"), 907_060_870);
    assert_eq!(checksum(b"hello"), 0x3610_A686);
    assert_eq!(checksum(&ATTR_BODY), 1_184_113_660);
    assert_eq!(attr_body(b"tag1", b"hello"), ATTR_BODY);
}

#[test]
fn metamorphosis_example_session_adapted() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();

    // 1.6.1 put, modern client, no attribute.
    conn.send(b"put meta-test 0 5 0 907060870 1\r\nhello");
    // The strict reply parser checks `result 200 <len> 1\r\n` with canonical numbers and
    // single spaces; the body is then checked exactly.
    let body = conn.read_reply().expect_result(200, 1);
    let (id1, _, _) = parse_put_ack(&body);
    assert_eq!(body, format!("{id1} 0 0"));

    // 1.6.2 put with attribute `tag1`: offset 1 (logical, not bytes).
    conn.send(b"put meta-test 0 13 1 1184113660 2\r\n");
    conn.send(&ATTR_BODY);
    let body = conn.read_reply().expect_result(200, 2);
    let (id2, _, _) = parse_put_ack(&body);
    assert_eq!(body, format!("{id2} 0 1"));

    // 1.6.3 old-style put (Python/Ruby clients): no checksum, not verified.
    conn.send(b"put meta-test 0 5 0 3\r\nhello");
    let body = conn.read_reply().expect_result(200, 3);
    let (id3, _, _) = parse_put_ack(&body);
    assert_eq!(body, format!("{id3} 0 2"));
    assert!(id1 < id2 && id2 < id3);

    // 1.6.4 get of all records with a large maxSize.
    conn.send(b"get meta-test meta-example 0 0 1048576 4\r\n");
    let reply = conn.read_reply();
    let records = reply.expect_value(4);
    assert_eq!(records.len(), 3);
    let expected: [(u64, u32, &[u8], &[u8]); 3] = [
        (id1, 0, b"", b"hello"),
        (id2, 1, b"tag1", b"hello"),
        (id3, 0, b"", b"hello"),
    ];
    for (i, (r, (id, flag, tag, payload))) in records.iter().zip(expected).enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.msg_id, id);
        assert_eq!(r.flag, flag);
        assert_eq!(r.tag, tag);
        assert_eq!(r.body, payload);
        assert_eq!(r.topic, "meta-test");
        assert_eq!(r.partition, 0);
    }
    let total: usize = expected
        .iter()
        .map(|(_, _, tag, payload)| record_size("meta-test", tag, b"", payload))
        .sum();
    assert_eq!(
        reply.body().len(),
        total,
        "value length = sum of whole records"
    );

    // 1.6.5 adapted: a maxSize that cuts the second record delivers only whole records.
    let first = record_size("meta-test", b"", b"", b"hello") as i32;
    conn.send(format!("get meta-test meta-example 0 0 {} 5\r\n", first + 15).as_bytes());
    let records = conn.read_reply().expect_value(5);
    assert_eq!(records.len(), 1, "no partial trailing record");

    // 1.6.6 caught up.
    let text = "no message at offset 3";
    conn.send(b"get meta-test meta-example 0 3 1048576 6\r\n");
    conn.expect_bytes(format!("result 404 {} 6\r\n{text}", text.len()).as_bytes());

    // 1.6.7 past the end.
    conn.send(b"get meta-test meta-example 0 9223372036854775807 1048576 7\r\n");
    conn.expect_bytes(b"result 301 1 7\r\n3");

    // 1.6.8 unknown topic.
    conn.send(b"get foo meta-example 0 0 1048576 8\r\n");
    assert_eq!(conn.read_reply().expect_result(404, 8), "unknown topic foo");

    // 1.6.9 offset: clamped into [min, max] (imago has no byte segments to round down to).
    conn.send(b"offset meta-test meta-example 0 30 9\r\n");
    conn.expect_bytes(b"result 200 1 9\r\n3");
    conn.send(b"offset meta-test meta-example 0 1 10\r\n");
    conn.expect_bytes(b"result 200 1 10\r\n1");

    // 1.6.10 version.
    let v = broker.version().to_string();
    conn.send(b"version 10\r\n");
    conn.expect_bytes(format!("result 200 {} 10\r\n{v}", v.len()).as_bytes());

    // 1.6.11 stats as the Java client sends it (empty item).
    conn.send(b"stats  11\r\n");
    let body = conn.read_reply().expect_result(200, 11);
    assert!(body.ends_with("END\r\n"), "{body:?}");

    // 1.6.12 transactions: recognised, not implemented.
    conn.send(b"transaction TX:10.0.0.5-1362990000000-1:1 10.0.0.5-1362990000000-1 BEGIN 12\r\n");
    conn.read_reply().expect_result(501, 12);

    // 1.6.15 quit.
    conn.send(b"quit\r\n");
    conn.expect_eof();
}

#[test]
fn wrong_checksum_is_400_and_the_connection_still_works() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    // checksum of "hellp", body "hello".
    conn.send(b"put meta-test 0 5 0 907060871 1\r\nhello");
    let text = conn.read_reply().expect_result(400, 1);
    assert!(text.contains("checksum mismatch"), "{text:?}");

    // Attribute put whose checksum covers only the payload (it must cover the whole body).
    conn.send(format!("put meta-test 0 13 1 {} 2\r\n", checksum(b"hello")).as_bytes());
    conn.send(&ATTR_BODY);
    conn.read_reply().expect_result(400, 2);

    conn.send(b"put meta-test 0 5 0 907060870 3\r\nhello");
    let body = conn.read_reply().expect_result(200, 3);
    assert!(
        body.ends_with(" 0 0"),
        "nothing was stored by the bad puts: {body:?}"
    );
    let records = conn.read_partition("meta-test", 0);
    assert_eq!(records.len(), 1);
}
