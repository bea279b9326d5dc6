//! Every error reply, byte for byte (header and text, as protocol.md documents them), and that
//! the connection resynchronises after it (or is closed when the contract says so).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A put body that is itself a valid command: if the broker failed to skip a body, the next
/// reply would answer `version 777` instead of the command we send next.
const TRAP: &[u8] = b"version 777\r\n";

/// The exact bytes of a `result` reply: `result <code> <len> <opaque>\r\n<text>`.
fn result_bytes(code: u16, opaque: i32, text: &str) -> Vec<u8> {
    format!("result {code} {} {opaque}\r\n{text}", text.len()).into_bytes()
}

/// Reads the next reply and asserts it is exactly `result <code> <len> <opaque>\r\n<text>`.
#[track_caller]
fn expect_error(conn: &mut Conn, code: u16, opaque: i32, text: &str) {
    conn.expect_bytes(&result_bytes(code, opaque, text));
}

/// Sends `line` (plus `\r\n`), then asserts the exact error reply and that the connection still
/// answers a follow-up request (`version <follow_up>`).
#[track_caller]
fn expect_line_error(conn: &mut Conn, line: &str, code: u16, opaque: i32, text: &str) {
    conn.send(format!("{line}\r\n").as_bytes());
    expect_error(conn, code, opaque, text);
    conn.version(opaque.wrapping_add(100_000));
}

const RANGE_INT32: &str = "an int32, -2147483648 to 2147483647";
const NAME_RULE: &str = "must be 1 to 255 bytes of [A-Za-z0-9_.-], not starting with '.' or '-'";

#[test]
fn unknown_verb_is_400_with_its_exact_text_and_the_connection_survives() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    expect_line_error(&mut conn, "foo 11", 400, 11, "unknown command 'foo'");
    // Case-sensitive.
    expect_line_error(&mut conn, "PUT t 0 0 0 2", 400, 2, "unknown command 'PUT'");
    expect_line_error(&mut conn, "Version 3", 400, 3, "unknown command 'Version'");
    // No parsable opaque: i32::MAX.
    expect_line_error(
        &mut conn,
        "foo bar",
        400,
        OPAQUE_NONE,
        "unknown command 'foo'",
    );
    expect_line_error(&mut conn, "foo", 400, OPAQUE_NONE, "unknown command 'foo'");
    // Bytes outside printable ASCII are written \xNN.
    conn.send(b"f\xffo 4\r\n");
    expect_error(&mut conn, 400, 4, "unknown command 'f\\xffo'");
    conn.version(5);
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
        expect_error(&mut conn, 400, opaque, &format!("unknown command '{word}'"));
    }
    // `quitt` did not close the connection.
    conn.version(1);
}

#[test]
fn transaction_is_501_with_its_exact_text() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    expect_line_error(
        &mut conn,
        "transaction TX:10.0.0.5-1362990000000-1:1 10.0.0.5-1362990000000-1 BEGIN 11",
        501,
        11,
        "transactions are not implemented",
    );
    expect_line_error(
        &mut conn,
        "transaction TX:h-1-1:1 h-1-1 BEGIN 10 12",
        501,
        12,
        "transactions are not implemented",
    );
    // A put with a transaction key: its body is read, then the same 501.
    conn.send(format!("put tx 0 {} 0 TX:h-1-1:1 13\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 501, 13, "transactions are not implemented");
    conn.version(14);
}

#[test]
fn sync_is_501_with_its_exact_text_and_its_body_is_skipped_even_over_body_bytes_max() {
    let broker = Broker::start(&["--body-bytes-max", "8"]);
    let mut conn = broker.connect();
    // protocol.md: the sync body is read and discarded by <len>, not held to body_bytes_max.
    conn.send(format!("sync meta-test 0 {} 0 4097 907060870 20\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 501, 20, "sync is not implemented");
    conn.version(21);
    conn.send(format!("sync meta-test 0 {} 0 4097 22\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 501, 22, "sync is not implemented");
    conn.version(23);
    expect_line_error(
        &mut conn,
        "sync a b",
        400,
        OPAQUE_NONE,
        "sync takes 7 or 8 tokens, got 3",
    );
}

#[test]
fn wrong_token_count_is_400_naming_the_verb_and_both_counts() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("tok", 0, b"x", 1);
    let cases: &[(&str, i32, &str)] = &[
        ("get tok g 0 0 7", 7, "get takes 7 to 9 tokens, got 6"),
        (
            "get tok g 0 0 100 1 * x 8",
            8,
            "get takes 7 to 9 tokens, got 10",
        ),
        ("get", OPAQUE_NONE, "get takes 7 to 9 tokens, got 1"),
        ("offset tok g 0 9", 9, "offset takes 6 tokens, got 5"),
        ("offset tok g 0 0 1 10", 10, "offset takes 6 tokens, got 7"),
        ("put tok 11", 11, "put takes 6 to 8 tokens, got 3"),
        ("put", OPAQUE_NONE, "put takes 6 to 8 tokens, got 1"),
        ("version 1 12", 12, "version takes 1 or 2 tokens, got 3"),
        ("quit 5", 5, "quit takes 1 token, got 2"),
        ("stats a b 6", 6, "stats takes 1 to 3 tokens, got 4"),
    ];
    for (line, opaque, text) in cases {
        expect_line_error(&mut conn, line, 400, *opaque, text);
    }
    // Too many tokens but a readable length (always the fourth token): the body is skipped.
    conn.send(format!("put tok 0 {} 0 1 k 2 3\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 400, 3, "put takes 6 to 8 tokens, got 9");
    conn.version(13);
    assert_eq!(conn.read_partition("tok", 0).len(), 1, "only the valid put");
}

#[test]
fn bad_numbers_are_400_naming_the_field_token_and_range() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("num", 0, b"x", 1);
    let offset_range = "must be 0 to 18446744073709551615";
    let cases: &[(&str, i32, String)] = &[
        (
            "get num g 0 x 100 5",
            5,
            format!("bad offset 'x': {offset_range}"),
        ),
        (
            "get num g 0 -1 100 6",
            6,
            format!("bad offset '-1': {offset_range}"),
        ),
        (
            "get num g 0 18446744073709551616 100 7",
            7,
            format!("bad offset '18446744073709551616': {offset_range}"),
        ),
        (
            "get num g 0 0 1e3 9",
            9,
            "bad maxSize '1e3': must be 1 to 2147483647".into(),
        ),
        (
            "get num g 0 0 2147483648 10",
            10,
            "bad maxSize '2147483648': must be 1 to 2147483647".into(),
        ),
        ("get num g 0 0 0 15", 15, "bad maxSize 0".into()),
        ("get num g 0 0 -3 16", 16, "bad maxSize -3".into()),
        (
            "get num g 0 0 100 x 17",
            17,
            "bad waitMs 'x': must be 0 to 2147483647".into(),
        ),
        (
            "get num g 0 0 100 x",
            OPAQUE_NONE,
            format!("bad opaque 'x': must be {RANGE_INT32}"),
        ),
        (
            "get num g 0 0 100 2147483648",
            OPAQUE_NONE,
            format!("bad opaque '2147483648': must be {RANGE_INT32}"),
        ),
        (
            "version abc",
            OPAQUE_NONE,
            format!("bad opaque 'abc': must be {RANGE_INT32}"),
        ),
        (
            "version 0x10",
            OPAQUE_NONE,
            format!("bad opaque '0x10': must be {RANGE_INT32}"),
        ),
        (
            "offset num g 0 abc 11",
            11,
            format!("bad offset 'abc': {offset_range}"),
        ),
        // Length: no body can follow.
        (
            "put num 0 five 0 12",
            12,
            "bad length 'five': must be 0 to 2147483647".into(),
        ),
        (
            "put num 0 -1 0 13",
            13,
            "bad length '-1': must be 0 to 2147483647".into(),
        ),
        (
            "put num 0 2147483648 0 14",
            14,
            "bad length '2147483648': must be 0 to 2147483647".into(),
        ),
    ];
    for (line, opaque, text) in cases {
        expect_line_error(&mut conn, line, 400, *opaque, text);
    }
    // Bad numbers of a put with a readable length: the body is skipped.
    let put_cases: &[(&str, i32, String)] = &[
        (
            "put num x {len} 0 20",
            20,
            "bad partition 'x': must be -1 or 0 to 2147483647".into(),
        ),
        (
            "put num 0 {len} x 21",
            21,
            format!("bad flag 'x': must be {RANGE_INT32}"),
        ),
        (
            "put num 0 {len} 0 -5 22",
            22,
            "bad checksum '-5': must be -1 or 0 to 2147483647".into(),
        ),
    ];
    for (line, opaque, text) in put_cases {
        let line = line.replace("{len}", &TRAP.len().to_string());
        conn.send(format!("{line}\r\n").as_bytes());
        conn.send(TRAP);
        expect_error(&mut conn, 400, *opaque, text);
        conn.version(100 + opaque);
    }
    assert_eq!(conn.read_partition("num", 0).len(), 1, "only the valid put");
}

#[test]
fn bad_partition_numbers_on_get_and_offset_are_400_with_the_non_negative_range() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("bp", 0, b"x", 1);
    let range = "must be 0 to 2147483647";
    for (line, opaque, token) in [
        ("get bp g x 0 100 2", 2, "x"),
        ("get bp g -1 0 100 3", 3, "-1"),
        ("offset bp g 2147483648 0 4", 4, "2147483648"),
        ("offset bp g -1 0 5", 5, "-1"),
    ] {
        expect_line_error(
            &mut conn,
            line,
            400,
            opaque,
            &format!("bad partition '{token}': {range}"),
        );
    }
}

#[test]
fn bad_topic_name_on_put_is_400_with_the_name_rule_and_the_body_is_skipped() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let bad = ["bad/name", ".dot", "-dash", "a*b", "a:b"];
    for (i, name) in bad.iter().enumerate() {
        let opaque = 10 + i as i32;
        conn.send(format!("put {name} 0 {} 0 {opaque}\r\n", TRAP.len()).as_bytes());
        conn.send(TRAP);
        expect_error(
            &mut conn,
            400,
            opaque,
            &format!("bad topic name '{name}': {NAME_RULE}"),
        );
        // The next reply answers the next command, not the body.
        conn.version(100 + i as i32);
    }
    let long = "a".repeat(256);
    conn.send(format!("put {long} 0 {} 0 20\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(
        &mut conn,
        400,
        20,
        "topic name of 256 bytes exceeds name_bytes_max 255",
    );
    conn.version(21);
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
fn non_ascii_topic_name_is_400_with_the_bytes_escaped_and_the_body_is_skipped() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.send(format!("put caf\u{e9} 0 {} 0 1\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(
        &mut conn,
        400,
        1,
        &format!("bad topic name 'caf\\xc3\\xa9': {NAME_RULE}"),
    );
    // Not even UTF-8.
    let mut line = b"put t\xff 0 ".to_vec();
    line.extend_from_slice(format!("{} 0 2\r\n", TRAP.len()).as_bytes());
    conn.send(&line);
    conn.send(TRAP);
    expect_error(
        &mut conn,
        400,
        2,
        &format!("bad topic name 't\\xff': {NAME_RULE}"),
    );
    conn.version(3);
}

#[test]
fn bad_group_or_topic_name_on_get_and_offset_is_400_with_the_name_rule() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("grp", 0, b"x", 1);
    let cases = [
        ("get grp bad/group 0 0 100 2", 2, "group", "bad/group"),
        ("get grp .g 0 0 100 3", 3, "group", ".g"),
        ("get bad/topic g 0 0 100 4", 4, "topic", "bad/topic"),
        ("offset grp -g 0 0 5", 5, "group", "-g"),
        ("offset a:b g 0 0 6", 6, "topic", "a:b"),
    ];
    for (line, opaque, kind, name) in cases {
        expect_line_error(
            &mut conn,
            line,
            400,
            opaque,
            &format!("bad {kind} name '{name}': {NAME_RULE}"),
        );
    }
    let long = "g".repeat(256);
    expect_line_error(
        &mut conn,
        &format!("get grp {long} 0 0 100 7"),
        400,
        7,
        "group name of 256 bytes exceeds name_bytes_max 255",
    );
    conn.get_records("grp", 0, 0, 100);
}

#[test]
fn partition_out_of_range_is_400_naming_the_partition_count_on_put_get_and_offset() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("parts", 0, b"create", 1);
    conn.send(format!("put parts 4 {} 0 2\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(
        &mut conn,
        400,
        2,
        "partition 4 out of range, topic parts has 4 partitions",
    );
    conn.version(3);
    conn.send(format!("put parts {} {} 0 4\r\n", i32::MAX, TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(
        &mut conn,
        400,
        4,
        "partition 2147483647 out of range, topic parts has 4 partitions",
    );
    conn.version(5);
    // Negative partitions other than -1 are bad numbers.
    for (p, opaque) in [(-2, 6), (i32::MIN, 7)] {
        conn.send(format!("put parts {p} {} 0 {opaque}\r\n", TRAP.len()).as_bytes());
        conn.send(TRAP);
        expect_error(
            &mut conn,
            400,
            opaque,
            &format!("bad partition '{p}': must be -1 or 0 to 2147483647"),
        );
        conn.version(100 + opaque);
    }
    expect_line_error(
        &mut conn,
        "get parts g 4 0 100 8",
        400,
        8,
        "partition 4 out of range, topic parts has 4 partitions",
    );
    expect_line_error(
        &mut conn,
        "get parts g 9 0 100 1000 9",
        400,
        9,
        "partition 9 out of range, topic parts has 4 partitions",
    );
    expect_line_error(
        &mut conn,
        "offset parts g 4 0 10",
        400,
        10,
        "partition 4 out of range, topic parts has 4 partitions",
    );
    assert_eq!(conn.read_partition("parts", 0).len(), 1);
}

#[test]
fn checksum_mismatch_is_400_with_its_exact_text_and_nothing_is_stored() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("crc", 0, b"first", 1);
    let wrong = (checksum(b"hello") + 1) & 0x7FFF_FFFF;
    conn.send(format!("put crc 0 5 0 {wrong} 2\r\nhello").as_bytes());
    expect_error(&mut conn, 400, 2, "checksum mismatch");
    conn.version(3);
    // The checksum covers the whole body, attribute included.
    let body = attr_body(b"tag1", b"hello");
    conn.send(format!("put crc 0 {} 1 {} 4\r\n", body.len(), checksum(b"hello")).as_bytes());
    conn.send(&body);
    expect_error(&mut conn, 400, 4, "checksum mismatch");
    conn.version(5);
    let records = conn.read_partition("crc", 0);
    assert_eq!(
        records.len(),
        1,
        "no mismatched put was stored: {records:?}"
    );
    assert_eq!(records[0].body, b"first");
}

#[test]
fn put_attribute_or_properties_overrunning_the_body_is_400_saying_what_overran() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    // Attribute length 100 in a 10-byte body.
    let mut body = 100i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"abcdef");
    conn.send(&put_cmd("over", 0, 1, &body, 1));
    expect_error(
        &mut conn,
        400,
        1,
        "attribute of 100 bytes overruns the body (6 bytes left after its length)",
    );
    // Body shorter than the attribute's length prefix.
    conn.send(&put_cmd("over", 0, 1, b"\x00\x00", 2));
    expect_error(
        &mut conn,
        400,
        2,
        "attribute length needs 4 bytes, the body has 2 left",
    );
    // Negative attribute length.
    let mut body = (-1i32).to_be_bytes().to_vec();
    body.extend_from_slice(b"abcdef");
    conn.send(&put_cmd("over", 0, 1, &body, 3));
    expect_error(&mut conn, 400, 3, "attribute length -1 is negative");
    // Tag over tag_bytes_max (255).
    conn.send(&put_cmd("over", 0, 1, &attr_body(&[b't'; 256], b"x"), 4));
    conn.read_reply().expect_result(400, 4);
    // Properties block overrunning the body.
    let mut body = attr_body(b"t", b"");
    body.extend_from_slice(&50i32.to_be_bytes());
    body.extend_from_slice(b"k\x01v\x02");
    conn.send(&put_cmd("over", 0, 3, &body, 5));
    expect_error(
        &mut conn,
        400,
        5,
        "properties block of 50 bytes overruns the body (4 bytes left after its length)",
    );
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
    conn.version(7);

    // At the limits: accepted.
    conn.put_flag("over", 0, 1, &attr_body(&[b't'; 255], b"x"), 8);
    let records = conn.read_partition("over", 0);
    assert_eq!(
        records.len(),
        1,
        "only the valid put was stored: {records:?}"
    );
    assert_eq!(records[0].tag.len(), 255);
}

#[test]
fn line_over_line_bytes_max_is_414_with_the_limit_in_its_text_then_the_next_command_works() {
    let broker = Broker::start(&["--line-bytes-max", "128"]);
    let mut conn = broker.connect();
    // The text holds the four characters `\r\n` (backslash, r, backslash, n), not a line end.
    let text = "line exceeds line_bytes_max 128 (including its \\r\\n)";

    // A get on an unknown topic whose line (with \r\n) is exactly `len` bytes.
    let line_of = |len: usize| {
        let fixed = "get  g 0 0 100 5\r\n".len();
        format!("get {} g 0 0 100 5\r\n", "t".repeat(len - fixed))
    };
    assert_eq!(line_of(128).len(), 128);
    conn.send(line_of(128).as_bytes());
    // At the limit: parsed (unknown topic).
    let topic = "t".repeat(128 - "get  g 0 0 100 5\r\n".len());
    expect_error(&mut conn, 404, 5, &format!("unknown topic {topic}"));

    conn.send(line_of(129).as_bytes());
    // The line is not parsed: its opaque is not read.
    expect_error(&mut conn, 414, OPAQUE_NONE, text);
    conn.version(6);

    // A bare `\n` line end: the limit counts the line with its `\n`.
    let bare = format!(
        "get {} g 0 0 100 5\n",
        "t".repeat(129 - "get  g 0 0 100 5\n".len())
    );
    assert_eq!(bare.len(), 129);
    conn.send(bare.as_bytes());
    expect_error(&mut conn, 414, OPAQUE_NONE, text);
    conn.version(7);

    // Far over the limit, in several writes.
    let huge = format!("put {} 0 5 0 7\r\n", "x".repeat(100_000));
    let (a, b) = huge.as_bytes().split_at(50_000);
    conn.send(a);
    std::thread::sleep(Duration::from_millis(100));
    conn.send(b);
    expect_error(&mut conn, 414, OPAQUE_NONE, text);
    // The 414 line was a put: its body is NOT skipped (the line was not parsed), so we send
    // none and the next command is answered.
    conn.version(8);
}

#[test]
fn body_over_body_bytes_max_is_413_with_both_sizes_and_skipped_by_its_length() {
    let broker = Broker::start(&["--body-bytes-max", "1000"]);
    let mut conn = broker.connect();
    conn.put("big", 0, &vec![b'a'; 1000], 1);

    // 1001 bytes ending in a command-looking tail.
    let mut body = vec![b'b'; 1001 - TRAP.len()];
    body.extend_from_slice(TRAP);
    conn.send(&put_cmd_old("big", 0, 0, &body, 2));
    expect_error(
        &mut conn,
        413,
        2,
        "body of 1001 bytes exceeds body_bytes_max 1000",
    );
    conn.version(3);

    // 1 MiB over, arriving in pieces.
    let body: Vec<u8> = TRAP.iter().copied().cycle().take(1 << 20).collect();
    let cmd = put_cmd_old("big", 0, 0, &body, 4);
    for chunk in cmd.chunks(100_000) {
        conn.send(chunk);
    }
    expect_error(
        &mut conn,
        413,
        4,
        "body of 1048576 bytes exceeds body_bytes_max 1000",
    );
    conn.version(5);

    let records = conn.read_partition("big", 0);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body.len(), 1000);
}

#[test]
fn half_sent_line_or_body_times_out_with_408_then_close() {
    let broker = Broker::start(&["--half-command-timeout-ms", "300"]);
    let text = "command not completed within half_command_timeout_ms 300";

    // Half a line.
    let mut conn = broker.connect();
    let start = Instant::now();
    conn.send(b"vers");
    expect_error(&mut conn, 408, OPAQUE_NONE, text);
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
    expect_error(&mut conn, 408, 1, text);
    conn.expect_eof();
    assert!(start.elapsed() >= Duration::from_millis(250));

    // An idle connection with nothing pending is not a half command.
    let mut idle = broker.connect();
    idle.version(1);
    std::thread::sleep(Duration::from_millis(900));
    idle.version(2);

    // Nothing of the half put was stored.
    let reply = idle.get("half", GROUP, 0, 0, 100, 3);
    assert_eq!(
        reply,
        Reply::Result {
            code: 404,
            body: b"unknown topic half".to_vec(),
            opaque: 3
        },
        "the half put must store nothing"
    );
}

/// protocol.md ("Errors common to all commands"): the 408 carries opaque 2147483647 for a
/// partial line and the put's opaque for a partial body.
#[test]
fn half_sent_408_opaque_is_none_for_a_line_and_the_puts_for_a_body() {
    let broker = Broker::start(&["--half-command-timeout-ms", "200"]);
    let text = "command not completed within half_command_timeout_ms 200";
    let mut line = broker.connect();
    let mut body = broker.connect();
    line.send(b"get t g 0 0 100 5");
    body.send(b"put half 0 10 0 7\r\nhel");
    expect_error(&mut line, 408, OPAQUE_NONE, text);
    expect_error(&mut body, 408, 7, text);
    line.expect_eof();
    body.expect_eof();
}

#[test]
fn connections_over_connections_max_get_503_and_others_keep_working() {
    let broker = Broker::start(&["--connections-max", "3"]);
    let mut held: Vec<Conn> = (0..3).map(|_| broker.connect()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        c.version(i as i32);
    }

    let mut extra = broker.connect();
    expect_error(&mut extra, 503, OPAQUE_NONE, "too many connections");
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
            Ok(Some(r))
                if r == Reply::Result {
                    code: 503,
                    body: b"too many connections".to_vec(),
                    opaque: OPAQUE_NONE,
                } => {}
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
    let text = "unknown topic fresh and auto_create_topics is off";
    conn.send(format!("put fresh 0 {} 0 1\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 403, 1, text);
    conn.send(format!("put fresh -1 {} 0 {} 2\r\n", TRAP.len(), checksum(TRAP)).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 403, 2, text);
    conn.version(3);
    expect_line_error(
        &mut conn,
        &format!("get fresh {GROUP} 0 0 100 4"),
        404,
        4,
        "unknown topic fresh",
    );
    expect_line_error(
        &mut conn,
        &format!("offset fresh {GROUP} 0 0 5"),
        404,
        5,
        "unknown topic fresh",
    );
}

#[test]
fn put_creating_a_topic_beyond_topics_max_is_403_and_existing_topics_keep_working() {
    let broker = Broker::start(&["--topics-max", "2"]);
    let mut conn = broker.connect();
    conn.put("one", 0, b"x", 1);
    conn.put("two", 0, b"x", 2);
    conn.send(format!("put three 0 {} 0 3\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 403, 3, "topics_max 2 reached");
    conn.version(4);
    conn.send(format!("put three -1 {} 0 5\r\n", TRAP.len()).as_bytes());
    conn.send(TRAP);
    expect_error(&mut conn, 403, 5, "topics_max 2 reached");
    conn.put("one", 0, b"y", 6);
    expect_line_error(
        &mut conn,
        &format!("get three {GROUP} 0 0 100 7"),
        404,
        7,
        "unknown topic three",
    );
    let stats = conn.stats(None);
    assert_eq!(stat(&stats, "topics"), Some("2"), "{stats:?}");
    assert_eq!(conn.read_partition("one", 0).len(), 2);
}
