//! Puts that arrive together are stored as one batch: the replies must be exactly those of
//! the same puts sent one at a time (codes, texts, message ids, partitions, offsets, order),
//! refusals stay confined to their own put, and sync mode still answers only after the
//! group commit.

mod common;

use common::{attr_body, get_cmd, put_cmd, put_cmd_old, Broker, Conn, Reply};

/// Good and bad puts mixed: a checksum mismatch, a transaction put, a topic created on first
/// use, partition -1, a partition out of range, an attribute, an oversized attribute.
fn mixed_puts() -> Vec<Vec<u8>> {
    let mut bad_sum = put_cmd("orders", 0, 0, b"tampered", 2);
    let at = bad_sum.len() - 1;
    bad_sum[at] ^= 1; // the body no longer matches its checksum
    let mut bad_attr = b"put orders 1 6 1 9\r\n".to_vec();
    bad_attr.extend_from_slice(&[0, 0, 0, 9, b'a', b'b']); // attribute longer than the body
    vec![
        put_cmd("orders", 0, 0, b"first", 1),
        bad_sum,
        b"put orders 0 4 0 TX:1 3\r\nnope".to_vec(),
        put_cmd_old("fresh", 2, 0, b"new topic", 4),
        put_cmd("orders", -1, 0, b"any partition", 5),
        put_cmd("orders", 99, 0, b"out of range", 6),
        put_cmd("orders", 0, 1, &attr_body(b"tagA", b"tagged"), 7),
        bad_attr,
        put_cmd("orders", 0, 0, b"last", 10),
    ]
}

fn replies(conn: &mut Conn, n: usize) -> Vec<Reply> {
    (0..n).map(|_| conn.read_reply()).collect()
}

#[test]
fn pipelined_puts_get_exactly_the_replies_of_puts_sent_one_at_a_time() {
    let puts = mixed_puts();
    let one_by_one = Broker::start(&[]);
    let mut conn = one_by_one.connect();
    let mut expected = Vec::new();
    for put in &puts {
        conn.send(put);
        expected.push(conn.read_reply());
    }
    let pipelined = Broker::start(&[]);
    let mut conn = pipelined.connect();
    conn.send(&puts.concat()); // one write: the broker reads them as one run
    let got = replies(&mut conn, puts.len());
    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    // The refusals are the ones sent one at a time; spot-check they are refusals at all.
    let codes: Vec<Option<u16>> = got.iter().map(Reply::code).collect();
    assert_eq!(
        codes,
        vec![
            Some(200),
            Some(400),
            Some(501),
            Some(200),
            Some(200),
            Some(400),
            Some(200),
            Some(400),
            Some(200)
        ]
    );
    // What was stored reads back in order, the tag kept (partition -1 on a new round-robin
    // counter picks partition 0 first).
    conn.send(&get_cmd("orders", 0, 0, 1 << 20, 20));
    let records = conn.read_reply().expect_value(20);
    let bodies: Vec<&[u8]> = records.iter().map(|r| r.body.as_slice()).collect();
    let want: Vec<&[u8]> = vec![b"first", b"any partition", b"tagged", b"last"];
    assert_eq!(bodies, want);
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert_eq!(records[2].tag, b"tagA");
}

#[test]
fn a_long_pipelined_run_spanning_many_batches_keeps_every_offset_in_order() {
    let broker = Broker::start(&["--default-partitions", "3"]);
    let mut conn = broker.connect();
    let n = 1000;
    let mut all = Vec::new();
    for i in 0..n {
        all.extend(put_cmd("runs", i % 3, 0, format!("m{i}").as_bytes(), i));
    }
    conn.send(&all);
    let mut next = [0u64; 3];
    for (i, reply) in replies(&mut conn, n as usize).into_iter().enumerate() {
        let text = reply.expect_result(200, i as i32);
        let (_, partition, offset) = common::parse_put_ack(&text);
        assert_eq!(partition, i as i32 % 3);
        assert_eq!(offset, next[partition as usize], "put {i}");
        next[partition as usize] += 1;
    }
}

#[test]
fn sync_mode_pipelined_puts_are_acknowledged_only_when_durable() {
    let broker = Broker::start(&["--flush", "sync"]);
    let mut conn = broker.connect();
    let n = 200;
    let mut all = Vec::new();
    for i in 0..n {
        all.extend(put_cmd("durable", 0, 0, &[b'x'; 100], i));
    }
    conn.send(&all);
    let mut last_end = 0;
    for i in 0..n {
        let text = conn.read_reply().expect_result(200, i);
        let (msg_id, _, _) = common::parse_put_ack(&text);
        last_end = (msg_id & ((1 << 48) - 1))
            + common::record_size("durable", b"", b"", &[b'x'; 100]) as u64;
    }
    // Every ack came after a group commit covering it: the durable position is past the last.
    conn.send(b"stats\r\n");
    let mut durable = None;
    loop {
        let line = conn.read_line();
        if line == "END" {
            break;
        }
        if let Some(v) = line.strip_prefix("STAT commitlog_durable_pos ") {
            durable = Some(v.parse::<u64>().unwrap());
        }
    }
    let durable = durable.expect("stats has commitlog_durable_pos");
    assert!(
        durable >= last_end,
        "durable {durable} < last acked end {last_end}"
    );
}
