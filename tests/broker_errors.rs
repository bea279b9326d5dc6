//! Every error reply, and that the connection resynchronises after it (or is closed when the
//! contract says so).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A put body that is itself a valid command: if the broker failed to skip a body, the next
/// reply would answer `version 777` instead of the command we send next.
const TRAP: &[u8] = b"version 777\r\n";

#[test]
fn unknown_verb_is_400_and_the_connection_survives() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.send(b"foo 1\r\n");
    conn.read_reply().expect_result(400, 1);
    // Case-sensitive.
    conn.send(b"PUT t 0 0 0 2\r\n");
    conn.read_reply().expect_result(400, 2);
    conn.send(b"Version 3\r\n");
    conn.read_reply().expect_result(400, 3);
    // No parsable opaque: i32::MAX.
    conn.send(b"foo bar\r\n");
    conn.read_reply().expect_result(400, OPAQUE_NONE);
    conn.send(b"foo\r\n");
    conn.read_reply().expect_result(400, OPAQUE_NONE);
    conn.version(4);
}

#[test]
fn verbs_are_matched_as_whole_words_not_by_first_letter() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let words = [
        "p", "pu", "putt", "g", "ge", "gets", "o", "offsets", "q", "qu", "quitt", "v", "ver",
        "versions", "value", "s", "stat", "statsx", "sy", "t", "result",
    ];
    for (i, word) in words.iter().enumerate() {
        let opaque = 1000 + i as i32;
        conn.send(format!("{word} {opaque}\r\n").as_bytes());
        let reply = conn.read_reply();
        assert_eq!(
            reply.code(),
            Some(400),
            "`{word} {opaque}` must be an unknown verb, got {reply:?}"
        );
        assert_eq!(reply.opaque(), opaque, "{word}: {reply:?}");
    }
    // `quitt` did not close the connection.
    conn.version(1);
}

#[test]
fn transaction_and_sync_are_501() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.send(b"transaction TX:10.0.0.5-1362990000000-1:1 10.0.0.5-1362990000000-1 BEGIN 11\r\n");
    conn.read_reply().expect_result(501, 11);
    conn.send(b"transaction TX:h-1-1:1 h-1-1 BEGIN 10 12\r\n");
    conn.read_reply().expect_result(501, 12);
    conn.version(13);

    // sync carries a body; whether it is skipped is not in the contract, so use a fresh
    // connection and only check the reply.
    let mut conn = broker.connect();
    conn.send(b"sync meta-test 0 5 0 4097 907060870 20\r\nhello");
    conn.read_reply().expect_result(501, 20);
}

#[test]
fn wrong_token_count_is_400() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("tok", 0, b"x", 1);
    let cases: &[(&str, i32)] = &[
        ("get tok g 0 0 7", 7),           // 5 arguments
        ("get tok g 0 0 100 1 * x 8", 8), // 9 arguments
        ("get", OPAQUE_NONE),             // none
        ("offset tok g 0 9", 9),          // 4 arguments
        ("offset tok g 0 0 1 10", 10),    // 6 arguments
        ("put tok 11", 11),               // 2 arguments, no length token
        ("put", OPAQUE_NONE),             // none
        ("version 1 12", 12),             // 2 arguments
    ];
    for (line, opaque) in cases {
        conn.send(format!("{line}\r\n").as_bytes());
        let reply = conn.read_reply();
        assert_eq!(reply.code(), Some(400), "`{line}`: {reply:?}");
        assert_eq!(reply.opaque(), *opaque, "`{line}`: {reply:?}");
    }
    conn.version(13);
}

#[test]
fn bad_numbers_are_400_with_the_opaque_recovered_when_possible() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("num", 0, b"x", 1);
    let cases: &[(&str, i32)] = &[
        ("get num g 0 x 100 5", 5),                    // offset
        ("get num g 0 -1 100 6", 6),                   // offset is u64
        ("get num g 0 18446744073709551616 100 7", 7), // offset overflows u64
        ("get num g x 0 100 8", 8),                    // partition
        ("get num g 0 0 1e3 9", 9),                    // maxSize
        ("get num g 0 0 2147483648 10", 10),           // maxSize overflows i32
        ("get num g 0 0 100 x", OPAQUE_NONE),          // opaque
        ("get num g 0 0 100 2147483648", OPAQUE_NONE), // opaque overflows i32
        ("version abc", OPAQUE_NONE),
        ("version 0x10", OPAQUE_NONE),
        ("offset num g 0 abc 11", 11),
        ("put num 0 five 0 12", 12),       // length: no body can follow
        ("put num 0 -1 0 13", 13),         // negative length
        ("put num 0 2147483648 0 14", 14), // length overflows i32
    ];
    for (line, opaque) in cases {
        conn.send(format!("{line}\r\n").as_bytes());
        let reply = conn.read_reply();
        assert_eq!(reply.code(), Some(400), "`{line}`: {reply:?}");
        assert_eq!(reply.opaque(), *opaque, "`{line}`: {reply:?}");
    }
    conn.version(15);
}

#[test]
fn bad_topic_name_on_put_is_400_and_the_body_is_skipped() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let long = "a".repeat(256);
    let bad = ["bad/name", ".dot", "-dash", "a*b", "a:b", long.as_str()];
    for (i, name) in bad.iter().enumerate() {
        let opaque = 10 + i as i32;
        conn.send(format!("put {name} 0 {} 0 {opaque}\r\n", TRAP.len()).as_bytes());
        conn.send(TRAP);
        let reply = conn.read_reply();
        assert_eq!(reply.code(), Some(400), "topic {name:?}: {reply:?}");
        assert_eq!(reply.opaque(), opaque, "topic {name:?}: {reply:?}");
        // The next reply answers the next command, not the body.
        conn.version(100 + i as i32);
    }
    // Names at the edges of the grammar are fine.
    let max = format!("Z{}", "9".repeat(254));
    for name in ["a", "A_b.c-d", "0starts-with-digit", "_x", max.as_str()] {
        conn.put(name, 0, b"ok", 1);
        assert_eq!(conn.read_partition(name, 0).len(), 1, "topic {name}");
    }
}

/// Assumption: a non-ASCII byte inside a token is a bad name like any other (the line is
/// still tokenised, its length token read and the body skipped), not a framing error.
#[test]
fn non_ascii_topic_name_is_400_and_the_body_is_skipped() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.send(format!("put caf\u{e9} 0 {} 0 1\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    conn.read_reply().expect_result(400, 1);
    // Not even UTF-8.
    let mut line = b"put t\xff 0 ".to_vec();
    line.extend_from_slice(format!("{} 0 2\r\n", TRAP.len()).as_bytes());
    conn.send(&line);
    conn.send(TRAP);
    conn.read_reply().expect_result(400, 2);
    conn.version(3);
}

#[test]
fn bad_group_or_topic_name_on_get_and_offset_is_400() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("grp", 0, b"x", 1);
    conn.send(b"get grp bad/group 0 0 100 2\r\n");
    conn.read_reply().expect_result(400, 2);
    conn.send(b"get grp .g 0 0 100 3\r\n");
    conn.read_reply().expect_result(400, 3);
    conn.send(b"get bad/topic g 0 0 100 4\r\n");
    conn.read_reply().expect_result(400, 4);
    conn.send(b"offset grp -g 0 0 5\r\n");
    conn.read_reply().expect_result(400, 5);
    conn.get_records("grp", 0, 0, 100);
}

#[test]
fn put_partition_out_of_range_is_400_with_its_message_and_the_body_is_skipped() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("parts", 0, b"create", 1);
    conn.send(format!("put parts 4 {} 0 2\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    assert_eq!(
        conn.read_reply().expect_result(400, 2),
        "partition 4 out of range, topic parts has 4 partitions"
    );
    conn.version(3);
    for (p, opaque) in [(-2, 4), (i32::MIN, 5), (i32::MAX, 6)] {
        conn.send(format!("put parts {p} {} 0 {opaque}\r\n", TRAP.len()).as_bytes());
        conn.send(TRAP);
        conn.read_reply().expect_result(400, opaque);
    }
    conn.version(7);
    assert_eq!(conn.read_partition("parts", 0).len(), 1);
}

#[test]
fn put_attribute_or_properties_overrunning_the_body_is_400() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    // Attribute length 100 in a 10-byte body.
    let mut body = 100i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"abcdef");
    conn.send(&put_cmd("over", 0, 1, &body, 1));
    conn.read_reply().expect_result(400, 1);
    // Body shorter than the attribute's length prefix.
    conn.send(&put_cmd("over", 0, 1, b"\x00\x00", 2));
    conn.read_reply().expect_result(400, 2);
    // Negative attribute length.
    let mut body = (-1i32).to_be_bytes().to_vec();
    body.extend_from_slice(b"abcdef");
    conn.send(&put_cmd("over", 0, 1, &body, 3));
    conn.read_reply().expect_result(400, 3);
    // Tag over tag_bytes_max (255).
    conn.send(&put_cmd("over", 0, 1, &attr_body(&[b't'; 256], b"x"), 4));
    conn.read_reply().expect_result(400, 4);
    // Properties block overrunning the body.
    let mut body = attr_body(b"t", b"");
    body.extend_from_slice(&50i32.to_be_bytes());
    body.extend_from_slice(b"k\x01v\x02");
    conn.send(&put_cmd("over", 0, 3, &body, 5));
    conn.read_reply().expect_result(400, 5);
    // Properties over props_bytes_max (16384).
    let props = vec![b'p'; 16_385];
    conn.send(&put_cmd(
        "over",
        0,
        3,
        &attr_props_body(b"t", &props, b"x"),
        6,
    ));
    conn.read_reply().expect_result(400, 6);

    // At the limits: accepted.
    conn.put_flag("over", 0, 1, &attr_body(&[b't'; 255], b"x"), 7);
    let records = conn.read_partition("over", 0);
    assert_eq!(
        records.len(),
        1,
        "only the valid put was stored: {records:?}"
    );
    assert_eq!(records[0].tag.len(), 255);
}

#[test]
fn line_over_line_bytes_max_is_414_then_the_next_command_works() {
    let broker = Broker::start(&["--line-bytes-max", "128"]);
    let mut conn = broker.connect();

    // A get on an unknown topic whose line (with \r\n) is exactly `len` bytes.
    let line_of = |len: usize| {
        let fixed = "get  g 0 0 100 5\r\n".len();
        format!("get {} g 0 0 100 5\r\n", "t".repeat(len - fixed))
    };
    assert_eq!(line_of(128).len(), 128);
    conn.send(line_of(128).as_bytes());
    conn.read_reply().expect_result(404, 5); // at the limit: parsed (unknown topic)

    conn.send(line_of(129).as_bytes());
    // The line is not parsed: its opaque is not read.
    conn.read_reply().expect_result(414, OPAQUE_NONE);
    conn.version(6);

    // Far over the limit, in several writes.
    let huge = format!("put {} 0 5 0 7\r\n", "x".repeat(100_000));
    let (a, b) = huge.as_bytes().split_at(50_000);
    conn.send(a);
    std::thread::sleep(Duration::from_millis(100));
    conn.send(b);
    conn.read_reply().expect_code(414);
    // The 414 line was a put: its body is NOT skipped (the line was not parsed), so we send
    // none and the next command is answered.
    conn.version(8);
}

#[test]
fn body_over_body_bytes_max_is_413_and_skipped_by_its_length() {
    let broker = Broker::start(&["--body-bytes-max", "1000"]);
    let mut conn = broker.connect();
    conn.put("big", 0, &vec![b'a'; 1000], 1);

    // 1001 bytes ending in a command-looking tail.
    let mut body = vec![b'b'; 1001 - TRAP.len()];
    body.extend_from_slice(TRAP);
    conn.send(&put_cmd_old("big", 0, 0, &body, 2));
    assert_eq!(
        conn.read_reply().expect_result(413, 2),
        "body of 1001 bytes exceeds body_bytes_max 1000"
    );
    conn.version(3);

    // 1 MiB over, arriving in pieces.
    let body: Vec<u8> = TRAP.iter().copied().cycle().take(1 << 20).collect();
    let cmd = put_cmd_old("big", 0, 0, &body, 4);
    for chunk in cmd.chunks(100_000) {
        conn.send(chunk);
    }
    conn.read_reply().expect_result(413, 4);
    conn.version(5);

    let records = conn.read_partition("big", 0);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body.len(), 1000);
}

#[test]
fn half_sent_line_or_body_times_out_with_408_then_close() {
    let broker = Broker::start(&["--half-command-timeout-ms", "300"]);

    // Half a line.
    let mut conn = broker.connect();
    let start = Instant::now();
    conn.send(b"vers");
    conn.read_reply().expect_code(408);
    conn.expect_eof();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "408 after only {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "408 after {waited:?}");

    // Half a body.
    let mut conn = broker.connect();
    let start = Instant::now();
    conn.send(b"put half 0 10 0 1\r\nhel");
    conn.read_reply().expect_code(408);
    conn.expect_eof();
    assert!(start.elapsed() >= Duration::from_millis(250));

    // An idle connection with nothing pending is not a half command.
    let mut idle = broker.connect();
    idle.version(1);
    std::thread::sleep(Duration::from_millis(900));
    idle.version(2);

    // Nothing of the half put was stored.
    let reply = idle.get("half", GROUP, 0, 0, 100, 3);
    assert!(
        matches!(reply.code(), Some(404)),
        "the half put must store nothing: {reply:?}"
    );
}

/// protocol.md ("Errors common to all commands"): the 408 carries opaque 2147483647 for a
/// partial line and the put's opaque for a partial body.
#[test]
fn half_sent_408_opaque_is_none_for_a_line_and_the_puts_for_a_body() {
    let broker = Broker::start(&["--half-command-timeout-ms", "200"]);
    let mut line = broker.connect();
    let mut body = broker.connect();
    line.send(b"get t g 0 0 100 5");
    body.send(b"put half 0 10 0 7\r\nhel");
    line.read_reply().expect_result(408, OPAQUE_NONE);
    body.read_reply().expect_result(408, 7);
}

#[test]
fn connections_over_connections_max_get_503_and_others_keep_working() {
    let broker = Broker::start(&["--connections-max", "3"]);
    let mut held: Vec<Conn> = (0..3).map(|_| broker.connect()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        c.version(i as i32);
    }

    let mut extra = broker.connect();
    extra.read_reply().expect_code(503);
    extra.expect_eof();

    for (i, c) in held.iter_mut().enumerate() {
        c.version(10 + i as i32);
        c.put("conns", 0, b"still working", i as i32);
    }

    // Closing one frees a slot (the broker notices the close asynchronously: retry briefly).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = broker.connect();
        c.send(b"version 99\r\n");
        match c.try_read_reply() {
            Ok(Some(r)) if r.code() == Some(200) && r.opaque() == 99 => break,
            Ok(Some(r)) if r.code() == Some(503) => {}
            Ok(None) | Err(_) => {}
            Ok(Some(r)) => panic!("unexpected reply {r:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed after closing a connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn auto_create_off_put_is_403_and_unknown_topics_stay_unknown() {
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    let mut conn = broker.connect();
    conn.send(format!("put fresh 0 {} 0 1\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    conn.read_reply().expect_result(403, 1);
    conn.send(format!("put fresh -1 {} 0 {} 2\r\n", TRAP.len(), checksum(TRAP)).as_bytes());
    conn.send(TRAP);
    conn.read_reply().expect_result(403, 2);
    conn.version(3);
    conn.get("fresh", GROUP, 0, 0, 100, 4).expect_result(404, 4);
    conn.offset("fresh", 0, 0, 5).expect_result(404, 5);
}
