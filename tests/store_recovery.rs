//! Recovery on real files: a record cut at every byte position, bit flips in headers and
//! bodies (after a crash and after a clean shutdown), an index rebuilt from the log alone,
//! damage below the durable mark, stale index entries, time search across holes.

mod store_util;
use imago::store::{inspect, FlushMode, Store, StoreConfig, StoreError};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use store_util::*;

/// `small_config` with no background flush or checkpoint: nothing written becomes durable
/// (and no durable mark advances) until the test says so.
fn quiet_config(dir: &Path) -> StoreConfig {
    let mut cfg = small_config(dir);
    cfg.flush_interval_ms = 3_600_000;
    cfg.checkpoint_interval_ms = 3_600_000;
    cfg
}

/// Writes `n` records to two partitions (alternating), crashes (nothing flushed), and returns
/// each record's position and size.
fn write_and_crash(dir: &Path, n: u32) -> Vec<(u64, usize)> {
    let store = Store::open(quiet_config(dir)).unwrap();
    store.ensure_topic("t", 2).unwrap();
    let mut spots = Vec::new();
    for i in 0..n {
        let body = format!("record-{i:04}-{}", "x".repeat(40));
        let a = store.append(&msg("t", i % 2, body.as_bytes())).unwrap();
        let len = store.get_by_id(a.msg_id).unwrap().len();
        spots.push((a.end_pos - len as u64, len));
    }
    store.abandon();
    spots
}

fn segment_file(dir: &Path) -> std::path::PathBuf {
    dir.join("commitlog").join(format!("{:020}", 0))
}

fn patch(dir: &Path, pos: u64, f: impl FnOnce(&mut [u8]), len: usize) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_file(dir))
        .unwrap();
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(pos)).unwrap();
    file.read_exact(&mut buf).unwrap();
    f(&mut buf);
    file.seek(SeekFrom::Start(pos)).unwrap();
    file.write_all(&buf).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dst).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.file_name().unwrap() != "lock" {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_last_record_cut_at_every_byte_position_is_dropped_and_the_rest_kept() {
    let original = tempfile::tempdir().unwrap();
    let spots = write_and_crash(original.path(), 9);
    let (last_pos, last_len) = *spots.last().unwrap();
    for cut in 0..last_len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        patch(
            dir.path(),
            last_pos + cut as u64,
            |b| b.fill(0),
            last_len - cut,
        );
        let store = Store::open(small_config(dir.path())).unwrap();
        assert_eq!(
            store.offsets("t", 0).unwrap(),
            (0, 4),
            "cut at byte {cut}: the torn record (t/0 offset 4) is gone"
        );
        assert_eq!(read_all(&store, "t", 0, 0).len(), 4);
        assert_eq!(read_all(&store, "t", 1, 0).len(), 4);
        assert_eq!(
            store.stats().corrupt_records,
            0,
            "a torn tail is not corruption"
        );
        let a = store.append(&msg("t", 0, b"after-recovery")).unwrap();
        assert_eq!(a.offset, 4);
        assert_eq!(
            a.msg_id & ((1 << 48) - 1),
            last_pos,
            "the new record takes the torn one's place"
        );
        store.close().unwrap();
        let store = Store::open(small_config(dir.path())).unwrap();
        assert_eq!(
            read_all(&store, "t", 0, 0).last().unwrap().1,
            b"after-recovery".to_vec()
        );
    }
}

#[test]
fn a_bit_flipped_in_a_middle_record_is_reported_and_everything_else_is_served() {
    let original = tempfile::tempdir().unwrap();
    let spots = write_and_crash(original.path(), 9);
    let (pos, len) = spots[4]; // t/0 offset 2
    for byte in 0..len {
        for clean_restart_first in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(original.path(), dir.path());
            if clean_restart_first {
                Store::open(small_config(dir.path()))
                    .unwrap()
                    .close()
                    .unwrap();
            }
            patch(dir.path(), pos + byte as u64, |b| b[0] ^= 0x10, 1);
            let store = Store::open(small_config(dir.path())).unwrap();
            let mut buf = Vec::new();
            match store.read_into("t", 0, 2, 1 << 20, None, &mut buf) {
                Err(StoreError::Corrupt { offset: 2, next: 3 }) => {}
                other => panic!("flip at byte {byte} (clean={clean_restart_first}): {other:?}"),
            }
            if !clean_restart_first {
                assert_eq!(
                    store.stats().corrupt_records,
                    1,
                    "flip at byte {byte} counted"
                );
            }
            let before = read_all(&store, "t", 0, 0);
            assert_eq!(
                before.iter().map(|r| r.0).collect::<Vec<_>>(),
                vec![0, 1],
                "byte {byte}"
            );
            let after = read_all(&store, "t", 0, 3);
            assert_eq!(
                after.iter().map(|r| r.0).collect::<Vec<_>>(),
                vec![3, 4],
                "byte {byte}"
            );
            assert_eq!(read_all(&store, "t", 1, 0).len(), 4);
            assert_eq!(store.append(&msg("t", 0, b"new")).unwrap().offset, 5);
        }
    }
}

#[test]
fn the_index_is_rebuilt_from_the_commitlog_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(small_config(dir.path())).unwrap();
        store.ensure_topic("a", 3).unwrap();
        store.ensure_topic("b", 1).unwrap();
        for i in 0..300u32 {
            store
                .append(&msg("a", i % 3, format!("a{i}").as_bytes()))
                .unwrap();
            store
                .append(&msg("b", 0, format!("b{i}").as_bytes()))
                .unwrap();
        }
        store.close().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.partitions("a"), Some(3));
    for p in 0..3 {
        let got = read_all(&store, "a", p, 0);
        assert_eq!(got.len(), 100);
        assert_eq!(got[7].1, format!("a{}", 7 * 3 + p).into_bytes());
    }
    assert_eq!(read_all(&store, "b", 0, 0).len(), 300);
}

#[test]
fn a_corrupt_record_with_a_lost_index_entry_becomes_a_hole_that_reads_report() {
    let original = tempfile::tempdir().unwrap();
    let spots = write_and_crash(original.path(), 9);
    let (pos, _) = spots[4]; // t/0 offset 2
    patch(original.path(), pos, |b| b[0] ^= 0xff, 1); // its length field
    std::fs::remove_dir_all(original.path().join("index")).unwrap();
    let store = Store::open(small_config(original.path())).unwrap();
    assert_eq!(store.stats().corrupt_records, 1);
    let mut buf = Vec::new();
    assert!(matches!(
        store.read_into("t", 0, 2, 1 << 20, None, &mut buf),
        Err(StoreError::Corrupt { offset: 2, next: 3 })
    ));
    assert_eq!(read_all(&store, "t", 0, 3).len(), 2);
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 5));
}

/// Zeroes the last `entries` entries of every index file of `topic`/`partition`'s last file.
fn zero_index_tail(dir: &Path, topic: &str, partition: u32, entries: u64) {
    let pdir = dir.join("index").join(topic).join(partition.to_string());
    let mut files: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut zeroed = 0;
    for f in files.iter().rev() {
        let bytes = std::fs::read(f).unwrap();
        let used = bytes
            .chunks_exact(24)
            .take_while(|c| c.iter().any(|&b| b != 0))
            .count() as u64;
        let n = used.min(entries - zeroed);
        patch_file(f, (used - n) * 24, |b| b.fill(0), (n * 24) as usize);
        zeroed += n;
        if zeroed == entries {
            return;
        }
    }
    panic!("{topic}/{partition} has fewer than {entries} entries");
}

fn patch_file(path: &Path, pos: u64, f: impl FnOnce(&mut [u8]), len: usize) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(pos)).unwrap();
    file.read_exact(&mut buf).unwrap();
    f(&mut buf);
    file.seek(SeekFrom::Start(pos)).unwrap();
    file.write_all(&buf).unwrap();
}

#[test]
fn after_a_crash_with_no_index_flush_every_written_record_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    write_and_crash(dir.path(), 200);
    // The index pages of a crashed writer may never have reached the disk: lose their tails.
    zero_index_tail(dir.path(), "t", 0, 70);
    zero_index_tail(dir.path(), "t", 1, 30);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(read_all(&store, "t", 0, 0).len(), 100);
    assert_eq!(read_all(&store, "t", 1, 0).len(), 100);
    let inspect = imago::store::inspect::verify(dir.path()).unwrap();
    assert!(inspect.ok(), "{inspect:?}");
    assert_eq!(inspect.records, 200);
}

/// Polls until the durable mark in `dir` covers `pos`.
fn wait_for_mark(dir: &Path, pos: u64) {
    let began = Instant::now();
    while inspect::durable_mark(dir).unwrap_or(0) < pos {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "durable mark {:?} never reached {pos}",
            inspect::durable_mark(dir)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sync_config(dir: &Path) -> StoreConfig {
    let mut cfg = quiet_config(dir);
    cfg.flush = FlushMode::Sync;
    cfg
}

#[test]
fn a_damaged_last_durable_record_is_reported_corrupt_and_its_offset_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (pos, len, last) = {
        let store = Store::open(sync_config(dir.path())).unwrap();
        store.ensure_topic("t", 1).unwrap();
        let mut last = None;
        for i in 0..6 {
            last = Some(
                store
                    .append(&msg("t", 0, format!("acked-{i}").as_bytes()))
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        assert!(store.wait_durable(last.end_pos, Duration::from_secs(5)));
        let len = store.get_by_id(last.msg_id).unwrap().len();
        wait_for_mark(dir.path(), last.end_pos);
        store.abandon();
        (last.end_pos - len as u64, len, last)
    };
    // Damage in the body of the last acknowledged record: nothing valid follows it.
    patch(dir.path(), pos + len as u64 - 2, |b| b[0] ^= 0x04, 1);
    let store = Store::open(sync_config(dir.path())).unwrap();
    assert_eq!(store.stats().corrupt_records, 1, "reported by recovery");
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 6), "offset 5 is kept");
    let mut buf = Vec::new();
    assert!(matches!(
        store.read_into("t", 0, 5, 1 << 20, None, &mut buf),
        Err(StoreError::Corrupt { offset: 5, next: 6 })
    ));
    assert_eq!(read_all(&store, "t", 0, 0).len(), 5);
    let a = store.append(&msg("t", 0, b"after")).unwrap();
    assert_eq!(a.offset, 6, "the damaged record's offset is not reused");
    assert!(
        a.end_pos - (64 + 1 + 5) as u64 >= last.end_pos,
        "nor its position"
    );
    assert!(store.wait_durable(a.end_pos, Duration::from_secs(5)));
    assert_eq!(read_all(&store, "t", 0, 6).len(), 1);
}

#[test]
fn damage_at_read_time_is_counted_once_and_a_message_id_lookup_answers_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let spots = write_and_crash(dir.path(), 9);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.stats().corrupt_records, 0);
    store.close().unwrap();
    let (read_pos, read_len) = spots[4]; // t/0 offset 2
    let (id_pos, id_len) = spots[7]; // t/1 offset 3
    patch(
        dir.path(),
        read_pos + read_len as u64 - 1,
        |b| b[0] ^= 0x01,
        1,
    );
    patch(dir.path(), id_pos + id_len as u64 - 1, |b| b[0] ^= 0x01, 1);
    let store = Store::open(small_config(dir.path())).unwrap(); // clean: no scan
    let mut buf = Vec::new();
    for _ in 0..2 {
        assert!(matches!(
            store.read_into("t", 0, 2, 1 << 20, None, &mut buf),
            Err(StoreError::Corrupt { offset: 2, next: 3 })
        ));
    }
    assert_eq!(store.stats().corrupt_records, 1, "one damaged record");
    match store.get_by_id(id_pos) {
        Err(StoreError::Corrupt { offset: 3, next: 4 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.stats().corrupt_records, 2);
    assert!(matches!(
        store.get_by_id(id_pos + 1),
        Err(StoreError::NoSuchMessage)
    ));
    assert!(store.get_by_id(spots[5].0).is_ok());
}

#[test]
fn offset_for_time_stays_correct_across_a_hole_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = Vec::new();
    let mut spots = Vec::new();
    {
        let store = Store::open(quiet_config(dir.path())).unwrap();
        store.ensure_topic("t", 1).unwrap();
        for i in 0..7 {
            std::thread::sleep(Duration::from_millis(3));
            let a = store
                .append(&msg("t", 0, format!("r{i}").as_bytes()))
                .unwrap();
            let rec = store.get_by_id(a.msg_id).unwrap();
            ts.push(i64::from_be_bytes(rec[32..40].try_into().unwrap()));
            spots.push(a.end_pos - rec.len() as u64);
        }
        store.abandon();
    }
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    patch(dir.path(), spots[3], |b| b[0] ^= 0xff, 1); // offset 3: its length field
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 7));
    let mut buf = Vec::new();
    assert!(matches!(
        store.read_into("t", 0, 3, 1 << 20, None, &mut buf),
        Err(StoreError::Corrupt { offset: 3, .. })
    ));
    for (i, &t) in ts.iter().enumerate() {
        let want = if i == 4 { 3 } else { i as u64 }; // the hole takes offset 4's time
        assert_eq!(store.offset_for_time("t", 0, t).unwrap(), want, "ts of {i}");
        assert_eq!(
            store.offset_for_time("t", 0, t - 1).unwrap(),
            want,
            "before {i}"
        );
    }
    assert_eq!(store.offset_for_time("t", 0, ts[6] + 1).unwrap(), 7);
}

#[test]
fn stale_index_entries_of_a_partition_not_loaded_during_recovery_are_cut_when_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(quiet_config(dir.path())).unwrap();
        store.ensure_topic("q", 1).unwrap();
        store.ensure_topic("p", 1).unwrap();
        for i in 0..5 {
            store
                .append(&msg("q", 0, format!("q{i}").as_bytes()))
                .unwrap();
        }
        store.close().unwrap();
    }
    let torn_from = {
        let store = Store::open(quiet_config(dir.path())).unwrap();
        let mut first = None;
        for i in 0..3 {
            let a = store
                .append(&msg("p", 0, format!("p{i}").as_bytes()))
                .unwrap();
            let len = store.get_by_id(a.msg_id).unwrap().len() as u64;
            first.get_or_insert(a.end_pos - len);
        }
        let end = store.durable_pos().max(store.stats().write_pos);
        store.abandon();
        let from = first.unwrap();
        patch(dir.path(), from, |b| b.fill(0), (end - from) as usize); // p's records torn
        from
    };
    let q_last = {
        // Recovery cuts p's torn records without loading p; q then writes over their place.
        let store = Store::open(quiet_config(dir.path())).unwrap();
        assert_eq!(store.stats().write_pos, torn_from);
        let mut last = None;
        for i in 0..6 {
            last = Some(
                store
                    .append(&msg("q", 0, format!("q-again-{i}").as_bytes()))
                    .unwrap(),
            );
        }
        store.close().unwrap();
        last.unwrap().end_pos
    };
    // And q's own last record (past the cut too) is damaged: corruption, not a stale entry.
    patch(dir.path(), q_last - 1, |b| b[0] ^= 0x20, 1);
    let store = Store::open(quiet_config(dir.path())).unwrap(); // clean: no scan
    assert_eq!(
        store.offsets("p", 0).unwrap(),
        (0, 0),
        "p's stale entries are cut"
    );
    assert_eq!(store.append(&msg("p", 0, b"p-new")).unwrap().offset, 0);
    assert_eq!(
        store.offsets("q", 0).unwrap(),
        (0, 11),
        "q's damaged entry is kept"
    );
    assert_eq!(read_all(&store, "q", 0, 0).len(), 10);
    let mut buf = Vec::new();
    assert!(matches!(
        store.read_into("q", 0, 10, 1 << 20, None, &mut buf),
        Err(StoreError::Corrupt { offset: 10, .. })
    ));
    store.close().unwrap();
    let report = inspect::verify(dir.path()).unwrap();
    assert!(report.lost_entries.is_empty(), "{report:?}");
    assert_eq!(report.index_errors.len(), 1, "{report:?}");
    assert!(
        report.index_errors[0].starts_with("q/0 offset 10"),
        "{report:?}"
    );
}

#[test]
fn a_segment_whose_rename_from_spare_was_lost_is_adopted_with_its_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let seg_bytes = small_config(dir.path()).segment_bytes;
    let mut acked = Vec::new();
    {
        let store = Store::open(sync_config(dir.path())).unwrap();
        store.ensure_topic("t", 1).unwrap();
        let body = [b's'; 1000];
        while acked.len() < 100 {
            let a = store.append(&msg("t", 0, &body)).unwrap();
            assert!(store.wait_durable(a.end_pos, Duration::from_secs(5)));
            acked.push(a);
        }
        assert!(
            acked.last().unwrap().end_pos > seg_bytes,
            "rolled into a second segment"
        );
        store.abandon();
    }
    // What a power loss can leave without the directory fsync: the second segment still
    // under its spare name.
    let log = dir.path().join("commitlog");
    let live = log.join(format!("{seg_bytes:020}"));
    std::fs::rename(&live, log.join(format!("{seg_bytes:020}.spare"))).unwrap();
    let store = Store::open(sync_config(dir.path())).unwrap();
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 100));
    assert_eq!(read_all(&store, "t", 0, 0).len(), 100);
    assert!(live.exists());
}
