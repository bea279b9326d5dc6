//! 10,000 partitions in one store: maps stay bounded, file descriptors do not grow with
//! partitions, and a restart loads no partition until it is used.

mod store_util;
use imago::store::Store;
use store_util::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn ten_thousand_partitions_are_written_read_and_reopened_lazily_within_bounds() {
    const PARTITIONS: u32 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.segment_bytes = 4 << 20;
    cfg.index_segment_entries = 1024;
    cfg.index_maps_max = 512;
    let fds_before = open_fds();
    {
        let store = Store::open(cfg.clone()).unwrap();
        store.ensure_topic("wide", PARTITIONS).unwrap();
        for round in 0..2u32 {
            for p in 0..PARTITIONS {
                let a = store
                    .append(&msg("wide", p, format!("{p}:{round}").as_bytes()))
                    .unwrap();
                assert_eq!(a.offset, round as u64);
            }
            assert!(
                store.stats().index_maps_open <= 513,
                "maps {}",
                store.stats().index_maps_open
            );
        }
        assert!(
            open_fds() < fds_before + 32,
            "fds grew from {fds_before} to {}",
            open_fds()
        );
        store.close().unwrap();
    }
    let store = Store::open(cfg).unwrap();
    assert_eq!(
        store.stats().index_maps_open,
        0,
        "no partition index is loaded at start-up"
    );
    assert_eq!(store.stats().partitions, PARTITIONS as u64);
    assert_eq!(store.stats().index_loads, 0);
    for p in (0..PARTITIONS).step_by(997) {
        let got = read_all(&store, "wide", p, 0);
        assert_eq!(
            got,
            vec![
                (0, format!("{p}:0").into_bytes()),
                (1, format!("{p}:1").into_bytes())
            ]
        );
    }
    assert_eq!(
        store.append(&msg("wide", 9_999, b"more")).unwrap().offset,
        2
    );
    // Each use loaded its own partition only.
    assert_eq!(store.stats().index_loads, 12, "11 read, then 9,999 written");
}
