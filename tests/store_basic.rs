//! The store's append/read contract on real files: offsets, budgets, ranges, tags, time,
//! ids, segment rolling and restarts.

mod store_util;
use imago::store::{Store, StoreError, TagFilter};
use store_util::*;

#[test]
fn appends_get_consecutive_offsets_per_partition_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("orders", 3).unwrap();
    for i in 0..30u32 {
        let body = format!("m{i}");
        let a = store
            .append(&msg("orders", i % 3, body.as_bytes()))
            .unwrap();
        assert_eq!(a.partition, i % 3);
        assert_eq!(a.offset, (i / 3) as u64);
    }
    for p in 0..3 {
        let got = read_all(&store, "orders", p, 0);
        let want: Vec<(u64, Vec<u8>)> = (0..10)
            .map(|k| (k, format!("m{}", k * 3 + p as u64).into_bytes()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(store.offsets("orders", p).unwrap(), (0, 10));
    }
}

#[test]
fn a_record_larger_than_the_budget_is_still_delivered_whole_and_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 1).unwrap();
    store.append(&msg("t", 0, &[7u8; 5000])).unwrap();
    store.append(&msg("t", 0, b"small")).unwrap();
    let mut buf = Vec::new();
    let got = store.read_into("t", 0, 0, 10, None, &mut buf).unwrap();
    assert_eq!((got.records, got.next_offset), (1, 1));
    assert_eq!(records(&buf)[0].2, vec![7u8; 5000]);
}

#[test]
fn reads_outside_the_range_name_the_nearest_valid_offset_and_caught_up_reads_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 2).unwrap();
    for _ in 0..5 {
        store.append(&msg("t", 1, b"x")).unwrap();
    }
    let mut buf = Vec::new();
    let caught_up = store.read_into("t", 1, 5, 1000, None, &mut buf).unwrap();
    assert_eq!((caught_up.records, caught_up.next_offset), (0, 5));
    match store.read_into("t", 1, 9, 1000, None, &mut buf) {
        Err(StoreError::OffsetOutOfRange { valid: 5 }) => {}
        other => panic!("expected out of range with 5, got {other:?}"),
    }
    assert!(matches!(
        store.read_into("nope", 0, 0, 10, None, &mut buf),
        Err(StoreError::UnknownTopic)
    ));
    assert!(matches!(
        store.read_into("t", 2, 0, 10, None, &mut buf),
        Err(StoreError::PartitionOutOfRange { partitions: 2 })
    ));
    assert!(matches!(
        store.append(&msg("t", 2, b"x")),
        Err(StoreError::PartitionOutOfRange { .. })
    ));
    assert!(matches!(
        store.append(&msg("nope", 0, b"x")),
        Err(StoreError::UnknownTopic)
    ));
}

#[test]
fn tag_filter_delivers_only_matching_tags_and_moves_past_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 1).unwrap();
    for i in 0..20u32 {
        let tag: &[u8] = if i % 4 == 0 { b"paid" } else { b"created" };
        store
            .append(&tagged("t", 0, tag, format!("{i}").as_bytes()))
            .unwrap();
    }
    store.append(&tagged("t", 0, b"created", b"tail")).unwrap();
    let filter = TagFilter::new(&["paid"]);
    let mut buf = Vec::new();
    let got = store
        .read_into("t", 0, 0, 1 << 20, Some(&filter), &mut buf)
        .unwrap();
    let recs = records(&buf);
    assert_eq!(
        recs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 4, 8, 12, 16]
    );
    assert!(recs.iter().all(|r| r.1 == b"paid"));
    assert_eq!(
        got.next_offset, 21,
        "the reply moves the consumer past skipped records"
    );
}

#[test]
fn offset_for_time_finds_the_first_record_at_or_after_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 1).unwrap();
    for _ in 0..3 {
        store.append(&msg("t", 0, b"early")).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cut = imago::store::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    for _ in 0..2 {
        store.append(&msg("t", 0, b"late")).unwrap();
    }
    assert_eq!(store.offset_for_time("t", 0, cut).unwrap(), 3);
    assert_eq!(store.offset_for_time("t", 0, 0).unwrap(), 0);
    assert_eq!(store.offset_for_time("t", 0, i64::MAX).unwrap(), 5);
}

#[test]
fn a_message_id_finds_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 2).unwrap();
    let ids: Vec<_> = (0..50u32)
        .map(|i| {
            store
                .append(&msg("t", i % 2, format!("body{i}").as_bytes()))
                .unwrap()
                .msg_id
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let rec = store.get_by_id(*id).unwrap();
        assert_eq!(records(&rec)[0].2, format!("body{i}").into_bytes());
    }
    assert!(matches!(
        store.get_by_id(ids[3] + 1),
        Err(StoreError::NoSuchMessage)
    ));
}

#[test]
fn records_roll_across_many_segments_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body = vec![b'z'; 1000];
    {
        let store = Store::open(small_config(dir.path())).unwrap();
        store.ensure_topic("t", 2).unwrap();
        for i in 0..400u32 {
            store.append(&msg("t", i % 2, &body)).unwrap();
        }
        assert!(
            store.stats().segments >= 6,
            "segments {}",
            store.stats().segments
        );
        store.close().unwrap();
    }
    let store = Store::open(small_config(dir.path())).unwrap();
    for p in 0..2 {
        let got = read_all(&store, "t", p, 0);
        assert_eq!(got.len(), 200);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (o, b))| *o == i as u64 && *b == body));
    }
    let a = store.append(&msg("t", 0, b"after")).unwrap();
    assert_eq!(a.offset, 200);
}

#[test]
fn a_record_that_cannot_fit_a_segment_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let huge = vec![0u8; 64 * 1024];
    assert!(matches!(
        store.append(&msg("t", 0, &huge)),
        Err(StoreError::RecordTooLarge { .. })
    ));
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 0));
    assert_eq!(store.append(&msg("t", 0, b"ok")).unwrap().offset, 0);
}

#[test]
fn sync_mode_shows_consumers_only_durable_records_and_one_fsync_covers_many() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = imago::store::FlushMode::Sync;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let mut last = None;
    for _ in 0..100 {
        last = Some(store.append(&msg("t", 0, b"x")).unwrap());
    }
    let last = last.unwrap();
    assert!(store.wait_durable(last.end_pos, std::time::Duration::from_secs(5)));
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 100));
    let s = store.stats();
    assert!(
        s.records_fsynced >= 100 && s.fsyncs < 100,
        "{} records over {} fsyncs",
        s.records_fsynced,
        s.fsyncs
    );
}

#[test]
fn a_second_process_cannot_open_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(small_config(dir.path())).unwrap();
    assert!(matches!(
        Store::open(small_config(dir.path())),
        Err(StoreError::Locked)
    ));
}

#[test]
fn a_reader_reading_while_the_writer_appends_gets_every_record_intact_and_in_order() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(small_config(dir.path())).unwrap());
    store.ensure_topic("t", 2).unwrap();
    let body_of = |i: u64| format!("rec-{i}-{}", "y".repeat((i % 97) as usize)).into_bytes();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let (mut next, mut got, mut empty_polls) = (0u64, 0u64, 0u64);
            let began = std::time::Instant::now();
            while got < N {
                assert!(began.elapsed().as_secs() < 60, "reader stuck at {next}");
                let mut buf = Vec::new();
                let r = store.read_into("t", 0, next, 8192, None, &mut buf).unwrap();
                if r.records == 0 {
                    empty_polls += 1;
                    std::thread::yield_now();
                    continue;
                }
                for (offset, _, body) in records(&buf) {
                    assert_eq!(offset, next, "offsets are contiguous");
                    assert_eq!(body, body_of(offset), "record {offset} intact");
                    next += 1;
                    got += 1;
                }
                assert_eq!(r.next_offset, next);
            }
            empty_polls
        })
    };
    for i in 0..N {
        store.append(&msg("t", 0, &body_of(i))).unwrap();
        store.append(&msg("t", 1, b"other")).unwrap(); // interleaved, rolls segments
    }
    let empty_polls = reader.join().unwrap();
    assert!(store.stats().segments > 10);
    println!("reader caught up {empty_polls} times while the writer appended");
}

#[test]
fn async_mode_flushes_on_the_interval_without_any_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush_interval_ms = 50;
    cfg.flush_dirty_bytes = u64::MAX;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let before = store.stats().fsyncs;
    let a = store.append(&msg("t", 0, b"tiny")).unwrap();
    let began = std::time::Instant::now();
    while store.durable_pos() < a.end_pos {
        assert!(began.elapsed().as_secs() < 5, "never flushed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(store.stats().fsyncs > before);
}

#[test]
fn async_mode_flushes_once_the_dirty_bytes_pass_the_threshold_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.segment_bytes = 1 << 20;
    cfg.flush_interval_ms = 3_600_000;
    cfg.checkpoint_interval_ms = 3_600_000;
    cfg.flush_dirty_bytes = 256 * 1024;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let wait_flushed = |pos: u64| {
        let began = std::time::Instant::now();
        while store.durable_pos() < pos && began.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait_flushed(store.stats().write_pos); // recovery's own position
    let (fsyncs, durable) = (store.stats().fsyncs, store.durable_pos());
    let body = vec![b'd'; 1000];
    let mut end = 0;
    while end - durable < 200 * 1024 {
        end = store.append(&msg("t", 0, &body)).unwrap().end_pos;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        store.stats().fsyncs,
        fsyncs,
        "under the threshold: no flush"
    );
    while end - durable < 256 * 1024 {
        end = store.append(&msg("t", 0, &body)).unwrap().end_pos;
    }
    wait_flushed(end);
    let s = store.stats();
    assert!(s.fsyncs > fsyncs, "over the threshold: flushed");
    assert!(s.durable_pos >= end, "durable {} < {end}", s.durable_pos);
}

#[test]
fn in_sync_mode_a_message_id_finds_only_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = imago::store::FlushMode::Sync;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let mut saw_pending = 0;
    for _ in 0..200 {
        let a = store.append(&msg("t", 0, b"pending")).unwrap();
        let got = store.get_by_id(a.msg_id);
        if store.durable_pos() < a.end_pos {
            // Not durable before, during or after the lookup: it must not be found.
            assert!(matches!(got, Err(StoreError::NoSuchMessage)), "{got:?}");
            saw_pending += 1;
        }
        assert!(store.wait_durable(a.end_pos, std::time::Duration::from_secs(5)));
        assert_eq!(
            records(&store.get_by_id(a.msg_id).unwrap())[0].2,
            b"pending"
        );
    }
    assert!(saw_pending > 0, "never caught a record before its flush");
}

#[test]
fn sync_mode_batches_read_back_whole_across_segment_rolls_and_a_reopen() {
    // Sync mode stages a batch's records and writes them with one pwrite (append.rs); every
    // record must read back intact, at its offset, live and after a reopen, across rolls.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = imago::store::FlushMode::Sync;
    let body_of = |p: u32, i: u64| format!("p{p}-{i}-{}", "z".repeat((i % 301) as usize));
    let mut next = [0u64; 3];
    {
        let store = Store::open(cfg.clone()).unwrap();
        store.ensure_topic("t", 3).unwrap();
        let mut end = 0;
        for batch in 0..400u64 {
            let bodies: Vec<(u32, String)> = (0..1 + batch % 50)
                .map(|k| {
                    let p = ((batch + k) % 3) as u32;
                    let b = body_of(p, next[p as usize]);
                    next[p as usize] += 1;
                    (p, b)
                })
                .collect();
            let msgs: Vec<_> = bodies
                .iter()
                .map(|(p, b)| msg("t", *p, b.as_bytes()))
                .collect();
            let mut results = Vec::new();
            store.append_batch(&msgs, &mut results);
            for r in results {
                end = r.unwrap().end_pos;
            }
        }
        assert!(store.wait_durable(end, std::time::Duration::from_secs(10)));
        assert!(store.stats().segments > 3, "the batches rolled segments");
        check_partitions(&store, &next, body_of);
    }
    let store = Store::open(cfg).unwrap();
    check_partitions(&store, &next, body_of);
}

fn check_partitions(store: &Store, next: &[u64; 3], body_of: impl Fn(u32, u64) -> String) {
    for p in 0..3u32 {
        assert_eq!(store.offsets("t", p).unwrap(), (0, next[p as usize]));
        let mut at = 0;
        while at < next[p as usize] {
            let mut buf = Vec::new();
            let r = store.read_into("t", p, at, 16384, None, &mut buf).unwrap();
            assert!(r.records > 0, "partition {p} stops at {at}");
            for (offset, _, body) in records(&buf) {
                assert_eq!(offset, at);
                assert_eq!(
                    body,
                    body_of(p, offset).into_bytes(),
                    "p{p} record {offset}"
                );
                at += 1;
            }
        }
    }
}

#[test]
fn sync_mode_a_batch_of_large_puts_reads_back_whole() {
    // The staged records are written once they pass 1 MiB: a batch of 12 puts of 200 KB
    // crosses that bound twice inside one segment.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = imago::store::FlushMode::Sync;
    cfg.segment_bytes = 8 << 20;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let bodies: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'a' + i; 200_000]).collect();
    let msgs: Vec<_> = bodies.iter().map(|b| msg("t", 0, b)).collect();
    let mut results = Vec::new();
    store.append_batch(&msgs, &mut results);
    let end = results
        .iter()
        .map(|r| r.as_ref().unwrap().end_pos)
        .max()
        .unwrap();
    assert!(store.wait_durable(end, std::time::Duration::from_secs(10)));
    assert_eq!(
        store.stats().segments,
        1,
        "one segment: no roll wrote the stage"
    );
    let mut at = 0;
    while at < 12 {
        let mut buf = Vec::new();
        let r = store
            .read_into("t", 0, at, 1 << 20, None, &mut buf)
            .unwrap();
        assert!(r.records > 0);
        for (offset, _, body) in records(&buf) {
            assert_eq!(offset, at);
            assert_eq!(body, bodies[offset as usize], "record {offset}");
            at += 1;
        }
    }
}
