//! Helpers shared by the store's integration tests: small configurations, message builders
//! and a reader that walks a partition.
#![allow(dead_code)]

use imago::store::{record, FlushMode, Message, Store, StoreConfig, StoreError};
use std::path::Path;

/// A configuration with tiny segments so tests roll files, and no background surprises.
pub fn small_config(dir: &Path) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_bytes = 64 * 1024;
    cfg.index_segment_entries = 64;
    cfg.index_maps_max = 64;
    cfg.flush = FlushMode::Async;
    cfg.retention_ms = None;
    cfg.disk_used_ratio_max = 1.0;
    cfg.disk_free_reserve_bytes = 0;
    cfg.maintenance_interval_ms = 3_600_000;
    cfg
}

pub fn msg<'a>(topic: &'a str, partition: u32, body: &'a [u8]) -> Message<'a> {
    Message {
        topic,
        partition,
        flag: 0,
        tag: b"",
        props: b"",
        body,
        born_ts_ms: 1,
    }
}

pub fn tagged<'a>(topic: &'a str, partition: u32, tag: &'a [u8], body: &'a [u8]) -> Message<'a> {
    Message {
        topic,
        partition,
        flag: 1,
        tag,
        props: b"",
        body,
        born_ts_ms: 1,
    }
}

/// Every (offset, body) of a partition from `from`, following next offsets, up to the end
/// or the first corrupt record.
pub fn read_all(store: &Store, topic: &str, partition: u32, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let mut buf = Vec::new();
        let got = match store.read_into(topic, partition, offset, 4096, None, &mut buf) {
            Err(StoreError::Corrupt { .. }) => return out,
            other => other.unwrap(),
        };
        if got.records == 0 {
            return out;
        }
        out.extend(records(&buf).into_iter().map(|(o, _, b)| (o, b)));
        offset = got.next_offset;
    }
}

/// (offset, tag, body) of every record in a value body, verifying each CRC.
pub fn records(mut buf: &[u8]) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = record::total_len(buf).unwrap();
        let r = record::decode(&buf[..len]).expect("valid record");
        out.push((r.offset, r.tag.to_vec(), r.body.to_vec()));
        buf = &buf[len..];
    }
    out
}

pub fn is_corrupt(e: &StoreError) -> bool {
    matches!(e, StoreError::Corrupt { .. })
}
