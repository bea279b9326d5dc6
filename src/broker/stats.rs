//! The `stats` command: the broker's counters and every stats item, in the names and order
//! `protocol.md` ("Statistics") lists.

use super::{Broker, Outcome};
use crate::config::{Setting, SETTINGS};
use crate::protocol::{self, Code, StatsWriter};

/// Event counters of the general `stats` table; `stats reset` zeroes them.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub cmd_put: u64,
    pub cmd_get: u64,
    pub cmd_offset: u64,
    pub cmd_stats: u64,
    pub cmd_version: u64,
    pub cmd_commit: u64,
    pub cmd_join: u64,
    pub cmd_heartbeat: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub get_moved: u64,
    /// Gets whose records had to be read in from the disk first (off the event loop).
    pub get_cold: u64,
    pub put_errors: u64,
    pub bad_requests: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Store totals at the last reset, so the store's own counters need no reset.
    base_messages: u64,
    base_bytes: u64,
    base_fsyncs: u64,
    base_records_fsynced: u64,
    base_corrupt: u64,
    base_parked_wakeups: u64,
}

impl Counters {
    pub fn count_reply(&mut self, code: Code) {
        if matches!(
            code,
            Code::BadRequest | Code::PayloadTooLarge | Code::LineTooLong
        ) {
            self.bad_requests += 1;
        }
    }
}

/// `stats help`: one line per item, worded as protocol.md's table of stats items ("stats").
const HELP: &[(&str, &str)] = &[
    ("", "general counters"),
    ("topics", "per topic: partition and message counts"),
    (
        "offsets",
        "per partition of every topic: min and max offsets",
    ),
    (
        "<topic>",
        "per partition of that topic: min and max offsets",
    ),
    ("settings", "every limit and setting in force"),
    ("conns", "per connection: address, state, output bytes"),
    (
        "groups",
        "per consumer group, topic and partition: committed offset, max offset, lag, owner",
    ),
    ("group:<group>", "the same for one group"),
    ("reset", "resets the counters; no STAT lines"),
    ("help", "one line per item"),
];

impl Broker {
    pub(super) fn stats(&mut self, item: &str, opaque: Option<i32>, out: &mut Vec<u8>) -> Outcome {
        let mut w = StatsWriter::new();
        match item {
            "" => self.general(&mut w),
            "topics" => {
                for t in self.store.topic_names() {
                    let parts = self.store.partitions(&t).unwrap_or(0);
                    let held: u64 = (0..parts)
                        .filter_map(|p| self.store.offsets(&t, p).ok())
                        .map(|(min, max)| max - min)
                        .sum();
                    w.stat(&format!("topic:{t}:partitions"), parts);
                    w.stat(&format!("topic:{t}:messages"), held);
                }
            }
            "offsets" => {
                for t in self.store.topic_names() {
                    self.topic_offsets(&t, &mut w);
                }
            }
            "settings" => {
                for s in SETTINGS {
                    w.stat(s.name, self.setting_in_force(s));
                }
            }
            "conns" => return Outcome::StatsConns(opaque),
            "groups" => self.groups_stats(None, &mut w),
            item if item.starts_with("group:") => self.groups_stats(Some(&item[6..]), &mut w),
            "reset" => {
                self.reset_counters();
                protocol::write_stats_reset(out, opaque);
                return Outcome::Done;
            }
            "help" => {
                for (name, what) in HELP {
                    w.stat(&format!("help:{name}"), what);
                }
            }
            topic if self.store.partitions(topic).is_some() => self.topic_offsets(topic, &mut w),
            unknown => {
                if opaque.is_some() {
                    self.counters.count_reply(Code::BadRequest);
                }
                protocol::write_stats_error(out, &format!("unknown stats item {unknown}"), opaque);
                return Outcome::Done;
            }
        }
        w.finish(out, opaque);
        Outcome::Done
    }

    /// A setting's value as `stats settings` shows it: the value in force, which for
    /// `connections_max` is what the server kept after fitting it to the open-file limit.
    fn setting_in_force(&self, s: &Setting) -> String {
        match s.name {
            "connections_max" => self.connections_max.to_string(),
            _ => (s.get)(&self.cfg),
        }
    }

    fn topic_offsets(&self, topic: &str, w: &mut StatsWriter) {
        for p in 0..self.store.partitions(topic).unwrap_or(0) {
            if let Ok((min, max)) = self.store.offsets(topic, p) {
                w.stat(&format!("{topic}:{p}:min_offset"), min);
                w.stat(&format!("{topic}:{p}:max_offset"), max);
            }
        }
    }

    fn reset_counters(&mut self) {
        let s = self.store.stats();
        self.counters = Counters {
            base_messages: s.appended_records,
            base_bytes: s.appended_bytes,
            base_fsyncs: s.fsyncs,
            base_records_fsynced: s.records_fsynced,
            base_corrupt: s.corrupt_records,
            base_parked_wakeups: self.parked_wakeups,
            ..Counters::default()
        };
    }

    fn general(&self, w: &mut StatsWriter) {
        let s = self.store.stats();
        let c = &self.counters;
        let fsyncs = s.fsyncs - c.base_fsyncs;
        let fsynced = s.records_fsynced - c.base_records_fsynced;
        w.stat("pid", std::process::id());
        w.stat("uptime", self.uptime_s());
        w.stat("time", store_now_s());
        w.stat("version", env!("CARGO_PKG_VERSION"));
        w.stat("pointer_size", usize::BITS);
        w.stat("curr_connections", self.curr_connections);
        w.stat("total_connections", c.total_connections);
        w.stat("rejected_connections", c.rejected_connections);
        w.stat("connections_max", self.connections_max);
        w.stat("cmd_put", c.cmd_put);
        w.stat("cmd_get", c.cmd_get);
        w.stat("cmd_offset", c.cmd_offset);
        w.stat("cmd_stats", c.cmd_stats);
        w.stat("cmd_version", c.cmd_version);
        w.stat("cmd_commit", c.cmd_commit);
        w.stat("cmd_join", c.cmd_join);
        w.stat("cmd_heartbeat", c.cmd_heartbeat);
        w.stat("get_hits", c.get_hits);
        w.stat("get_misses", c.get_misses);
        w.stat("get_moved", c.get_moved);
        w.stat("get_cold", c.get_cold);
        w.stat("put_errors", c.put_errors);
        w.stat("bad_requests", c.bad_requests);
        w.stat("bytes_read", c.bytes_read);
        w.stat("bytes_written", c.bytes_written);
        w.stat("messages_stored", s.appended_records - c.base_messages);
        w.stat("bytes_stored", s.appended_bytes - c.base_bytes);
        w.stat("topics", s.topics);
        w.stat("partitions", s.partitions);
        w.stat("commitlog_segments", s.segments);
        w.stat("commitlog_min_pos", s.min_pos);
        w.stat("commitlog_max_pos", s.write_pos);
        w.stat("commitlog_durable_pos", s.durable_pos);
        w.stat("flush_mode", self.cfg.flush.name());
        w.stat("fsyncs", fsyncs);
        w.stat("fsync_last_us", s.fsync_last_us);
        w.stat("records_per_fsync_last", s.records_per_fsync_last);
        w.stat(
            "records_per_fsync_avg",
            format!("{:.2}", fsynced as f64 / fsyncs.max(1) as f64),
        );
        w.stat("disk_free_bytes", s.disk_free_bytes);
        w.stat("disk_full", s.disk_full as u8);
        w.stat("corrupt_records", s.corrupt_records - c.base_corrupt);
        w.stat("index_maps_open", s.index_maps_open);
        w.stat("index_loads", s.index_loads);
        w.stat("index_load_probes", s.index_load_probes);
        w.stat("cache_evicted_bytes", s.cache_evicted_bytes);
        w.stat("groups", self.groups.offsets.key_count());
        w.stat("parked_gets", self.parked_gets);
        w.stat(
            "parked_wakeups",
            self.parked_wakeups - c.base_parked_wakeups,
        );
    }
}

fn store_now_s() -> i64 {
    crate::store::now_ms() / 1000
}
