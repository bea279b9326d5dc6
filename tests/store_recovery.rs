//! Recovery on real files: a record cut at every byte position, bit flips in headers and
//! bodies (after a crash and after a clean shutdown), an index rebuilt from the log alone.

mod store_util;
use imago::store::{Store, StoreError};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use store_util::*;

/// Writes `n` records to one partition, crashes, and returns each record's position and size.
fn write_and_crash(dir: &Path, n: u32) -> Vec<(u64, usize)> {
    let store = Store::open(small_config(dir)).unwrap();
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

#[test]
fn after_a_crash_with_no_index_flush_every_written_record_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    write_and_crash(dir.path(), 200);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(read_all(&store, "t", 0, 0).len(), 100);
    assert_eq!(read_all(&store, "t", 1, 0).len(), 100);
    let inspect = imago::store::inspect::verify(dir.path()).unwrap();
    assert!(inspect.ok(), "{inspect:?}");
    assert_eq!(inspect.records, 200);
}
