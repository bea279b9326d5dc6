//! Retention on tiny segments (by age, by disk watermark, per topic) and a full disk on a
//! real, small tmpfs.

mod store_util;
use imago::store::{Store, StoreError};
use std::time::Duration;
use store_util::*;

fn fill(store: &Store, topic: &str, n: u32) {
    let body = vec![b'r'; 1000];
    for _ in 0..n {
        store.append(&msg(topic, 0, &body)).unwrap();
    }
}

#[test]
fn segments_older_than_retention_are_deleted_and_min_offset_moves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.retention_ms = Some(300);
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    fill(&store, "t", 300);
    let before = store.stats().segments;
    std::thread::sleep(Duration::from_millis(400));
    fill(&store, "t", 70);
    store.run_maintenance().unwrap();
    let (min, max) = store.offsets("t", 0).unwrap();
    assert!(
        store.stats().segments < before,
        "{} segments before, {} after",
        before,
        store.stats().segments
    );
    assert!(min > 0 && min <= 300, "min offset {min}");
    assert_eq!(max, 370);
    let mut buf = Vec::new();
    match store.read_into("t", 0, 0, 1000, None, &mut buf) {
        Err(StoreError::OffsetOutOfRange { valid }) => assert_eq!(valid, min),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_all(&store, "t", 0, min).len() as u64, 370 - min);
}

#[test]
fn over_the_disk_watermark_old_segments_go_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.disk_used_ratio_max = 0.0;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    fill(&store, "t", 300);
    store.run_maintenance().unwrap();
    assert_eq!(store.stats().segments, 1);
    let (min, max) = store.offsets("t", 0).unwrap();
    assert_eq!(max, 300);
    assert_eq!(read_all(&store, "t", 0, min).len() as u64, 300 - min);
    assert_eq!(
        store
            .append(&msg("t", 0, b"still writable"))
            .unwrap()
            .offset,
        300
    );
}

#[test]
fn a_topic_with_shorter_retention_hides_its_old_records_while_others_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.topic_retention_ms.insert("short".into(), 100);
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("short", 1).unwrap();
    store.ensure_topic("long", 1).unwrap();
    fill(&store, "short", 5);
    fill(&store, "long", 5);
    std::thread::sleep(Duration::from_millis(200));
    fill(&store, "short", 2);
    store.run_maintenance().unwrap();
    assert_eq!(store.offsets("short", 0).unwrap(), (5, 7));
    assert_eq!(store.offsets("long", 0).unwrap(), (0, 5));
}

struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the disk-full test runs on a real, small filesystem)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_refuses_appends_cleanly_and_they_resume_once_space_is_freed() {
    let fs = Tmpfs::mount("2m");
    let data = fs.0.path().join("data");
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![1u8; 1200 * 1024]).unwrap();
    let mut cfg = small_config(&data);
    cfg.index_segment_entries = 256;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    let body = vec![b'f'; 900];
    let mut stored = 0u64;
    let refused = loop {
        match store.append(&msg("t", 0, &body)) {
            Ok(a) => {
                assert_eq!(a.offset, stored);
                stored += 1;
            }
            Err(e) => break e,
        }
        assert!(stored < 10_000, "the disk never filled");
    };
    assert!(matches!(refused, StoreError::DiskFull), "{refused:?}");
    assert!(stored > 100, "only {stored} records fit");
    assert!(matches!(
        store.append(&msg("t", 0, b"x")),
        Err(StoreError::DiskFull)
    ));
    assert_eq!(
        store.offsets("t", 0).unwrap(),
        (0, stored),
        "nothing half-written"
    );
    assert_eq!(read_all(&store, "t", 0, 0).len() as u64, stored);
    std::fs::remove_file(&filler).unwrap();
    store.run_maintenance().unwrap();
    let a = store.append(&msg("t", 0, &body)).unwrap();
    assert_eq!(a.offset, stored);
    store.close().unwrap();
    let store = Store::open(small_config(&data)).unwrap();
    assert_eq!(read_all(&store, "t", 0, 0).len() as u64, stored + 1);
}

#[test]
fn free_space_under_the_reserve_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.disk_free_reserve_bytes = u64::MAX;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    assert!(matches!(
        store.append(&msg("t", 0, b"x")),
        Err(StoreError::DiskFull)
    ));
    assert!(store.stats().disk_full);
    assert_eq!(store.offsets("t", 0).unwrap(), (0, 0));
}

#[test]
fn age_retention_goes_on_when_the_first_record_of_the_next_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.retention_ms = Some(300);
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("t", 1).unwrap();
    fill(&store, "t", 300);
    let second = dir
        .path()
        .join("commitlog")
        .join(format!("{:020}", 64 * 1024));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&second)
            .unwrap();
        f.write_all_at(b"X", 100).unwrap(); // the body of its first record
    }
    std::thread::sleep(Duration::from_millis(400));
    fill(&store, "t", 70);
    store.run_maintenance().unwrap();
    let s = store.stats();
    assert!(
        s.min_pos > 0,
        "the oldest segment is deleted (min_pos {})",
        s.min_pos
    );
    assert!(s.segments_deleted >= 1);
}
