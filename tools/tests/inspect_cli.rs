//! imago-inspect against real data directories: a clean one verifies, a damaged one is
//! reported with exit code 1, and dump prints the records.

use imago::store::{Message, Store, StoreConfig};
use std::process::Command;

fn write_store(dir: &std::path::Path) -> u64 {
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_bytes = 64 * 1024;
    cfg.disk_free_reserve_bytes = 0;
    let store = Store::open(cfg).unwrap();
    store.ensure_topic("orders", 2).unwrap();
    let mut third = 0;
    for i in 0..50u32 {
        let body = format!("order-{i}");
        let m = Message {
            topic: "orders",
            partition: i % 2,
            flag: 0,
            tag: b"",
            props: b"",
            body: body.as_bytes(),
            born_ts_ms: 0,
        };
        let a = store.append(&m).unwrap();
        if i == 2 {
            third = a.msg_id & ((1 << 48) - 1);
        }
    }
    store.close().unwrap();
    third
}

fn inspect(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imago-inspect"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_passes_a_clean_directory_and_dump_prints_records() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let d = dir.path().to_str().unwrap();
    let (code, text) = inspect(&["verify", d]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("50 records") && text.contains("OK"), "{text}");
    let (code, text) = inspect(&["dump", d, "orders", "1", "3", "2"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("3\t") && lines[0].contains("order-7"),
        "{text}"
    );
}

#[test]
fn verify_reports_a_damaged_record_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let pos = write_store(dir.path());
    let seg = dir.path().join("commitlog").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[pos as usize + 70] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let (code, text) = inspect(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CORRUPT") && text.contains("BAD INDEX orders/0 offset 1"),
        "{text}"
    );
}

#[test]
fn bad_usage_exits_two() {
    assert_eq!(inspect(&["frobnicate"]).0, 2);
}

#[test]
fn verify_reports_a_record_whose_index_entry_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    // orders/1 holds offsets 0..25 in one index file: lose the entry of its last record.
    let index = dir.path().join("index/orders/1").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[24 * 24..25 * 24].fill(0);
    std::fs::write(&index, bytes).unwrap();
    let (code, text) = inspect(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("LOST INDEX ENTRY orders/1 offset 24")
            && text.matches("LOST").count() == 1
            && !text.contains("BAD INDEX"),
        "{text}"
    );
}
