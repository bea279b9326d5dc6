//! The broker: turns parsed requests into store calls and replies. It owns the store, the
//! settings and the counters; it knows nothing of sockets (the server hands it a request, its
//! body and an output buffer, and acts on the returned [`Outcome`]).

mod groups;
mod put;
mod stats;

use crate::config::Config;
use crate::groups::offsets::OffsetStore;
use crate::groups::{self as group_state, Groups};
use crate::protocol::{self, Code, Get, OffsetReq, ParseError, Request};
use crate::store::{ReadOutcome, Store, StoreError, TagFilter};
use std::time::{Duration, Instant};

pub use stats::Counters;

/// What the server must do after a request was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply (if any) is in the output buffer.
    Done,
    /// A put stored its message (the reply is in the output buffer). In sync flush mode the
    /// reply may be sent only once the store's durable position reaches `end_pos`; long-poll
    /// gets parked on the partition can be woken once the message is visible.
    /// `tag_hash` is the stored tag's index hash (what tag-filtered waiters match).
    Stored {
        partition: u32,
        end_pos: u64,
        tag_hash: u32,
    },
    /// A long-poll get found nothing to send: no reply was written; park it.
    Park(Park),
    /// Send what is pending, then close the connection.
    Close,
    /// `stats conns`: the server writes it (it owns the connections).
    StatsConns(Option<i32>),
    /// The request's group rebalanced (reply written): parked gets of the group are answered.
    Rebalanced,
}

/// A long-poll get waiting for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Park {
    pub wait: Duration,
    /// Where to look next (past records a tag filter skipped).
    pub offset: u64,
    /// Whether records were skipped: a timeout then answers 301 with `offset`.
    pub skipped: bool,
}

pub struct Broker {
    store: Store,
    groups: Groups,
    offsets_flusher: Option<std::thread::JoinHandle<()>>,
    cfg: Config,
    pub counters: Counters,
    started: Instant,
    /// Reused buffer for get replies.
    scratch: Vec<u8>,
    /// Set by the server: connections open now and the most it accepts.
    pub curr_connections: usize,
    pub connections_max: usize,
    /// Set by the server: long-poll gets waiting now.
    pub parked_gets: usize,
    /// Parked gets woken by a put since start (the server's count; stats subtracts the base
    /// taken at `stats reset`).
    pub parked_wakeups: u64,
}

impl Broker {
    pub fn open(cfg: Config) -> Result<Broker, StoreError> {
        for w in cfg.warnings() {
            log::warn!("{w}");
        }
        let store = Store::open(cfg.store_config())?;
        for (topic, t) in &cfg.topics {
            if let Some(p) = t.partitions {
                store.ensure_topic(topic, p)?;
            }
        }
        let offsets = OffsetStore::open(&cfg.data_dir)?;
        let offsets_flusher = Some(
            offsets.start_flusher(Duration::from_millis(cfg.offsets_flush_interval_ms.max(1))),
        );
        let limits = group_state::Limits {
            session_timeout: Duration::from_millis(cfg.session_timeout_ms),
            members_per_group_max: cfg.members_per_group_max,
            groups_max: cfg.groups_max,
        };
        let connections_max = cfg.connections_max;
        Ok(Broker {
            store,
            groups: Groups::new(limits, offsets),
            offsets_flusher,
            cfg,
            counters: Counters::default(),
            started: Instant::now(),
            scratch: Vec::new(),
            curr_connections: 0,
            connections_max,
            parked_gets: 0,
            parked_wakeups: 0,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Writes the committed offsets, flushes and checkpoints the store.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.groups.offsets.stop();
        if let Some(t) = self.offsets_flusher.take() {
            let _ = t.join();
        }
        self.groups.offsets.flush()?;
        self.store.close()
    }

    /// Answers a line that did not parse.
    pub fn reject(&mut self, e: &ParseError, out: &mut Vec<u8>) {
        self.counters.count_reply(e.code);
        protocol::write_error(out, e);
    }

    /// Handles one request; `body` is the put body (empty otherwise).
    pub fn handle(&mut self, req: &Request<'_>, body: &[u8], out: &mut Vec<u8>) -> Outcome {
        let c = &mut self.counters;
        match req {
            Request::Put(p) => {
                c.cmd_put += 1;
                self.put(p, body, out)
            }
            Request::Get(g) => {
                c.cmd_get += 1;
                self.get(g, out)
            }
            Request::Offset(o) => {
                c.cmd_offset += 1;
                self.offset(o, out);
                Outcome::Done
            }
            Request::Stats { item, opaque } => {
                c.cmd_stats += 1;
                self.stats(item.unwrap_or(""), *opaque, out)
            }
            Request::Version { opaque } => {
                c.cmd_version += 1;
                let opaque = opaque.unwrap_or(protocol::OPAQUE_NONE);
                protocol::write_result(out, Code::Ok, env!("CARGO_PKG_VERSION").as_bytes(), opaque);
                Outcome::Done
            }
            Request::Quit => Outcome::Close,
            Request::Transaction { opaque } => {
                self.reply(
                    out,
                    Code::NotImplemented,
                    "transactions are not implemented",
                    *opaque,
                );
                Outcome::Done
            }
            Request::Sync { opaque, .. } => {
                self.reply(
                    out,
                    Code::NotImplemented,
                    "sync is not implemented",
                    *opaque,
                );
                Outcome::Done
            }
            Request::Commit(r) => {
                c.cmd_commit += 1;
                self.commit(r, out);
                Outcome::Done
            }
            Request::Fetch(r) => {
                self.fetch(r, out);
                Outcome::Done
            }
            Request::Join(r) => {
                c.cmd_join += 1;
                self.join(r, out)
            }
            Request::Heartbeat(r) => {
                c.cmd_heartbeat += 1;
                self.heartbeat(r, out)
            }
            Request::Leave(r) => self.leave(r, out),
            Request::Reset(r) => self.reset(r, out),
        }
    }

    pub(super) fn reply(&mut self, out: &mut Vec<u8>, code: Code, text: &str, opaque: i32) {
        self.counters.count_reply(code);
        protocol::write_result(out, code, text.as_bytes(), opaque);
    }

    pub(super) fn create_topic(&mut self, topic: &str) -> Result<u32, (Code, String)> {
        if !self.cfg.auto_create_topics {
            return Err((
                Code::Forbidden,
                format!("unknown topic {topic} and auto_create_topics is off"),
            ));
        }
        if self.store.topic_names().len() >= self.cfg.topics_max {
            return Err((
                Code::Forbidden,
                format!("topics_max {} reached", self.cfg.topics_max),
            ));
        }
        let n = self.cfg.partitions_for(topic);
        self.store
            .ensure_topic(topic, n)
            .map_err(|e| store_error(&e))?;
        log::info!("created topic {topic} with {n} partitions");
        Ok(n)
    }

    /// Answers a get, or (long poll, nothing to send) returns [`Outcome::Park`] without a reply.
    pub fn get(&mut self, g: &Get<'_>, out: &mut Vec<u8>) -> Outcome {
        let max = (g.max_bytes as usize).min(self.cfg.get_bytes_max);
        let filter = g.tags.as_ref().map(|tags| TagFilter::new(tags));
        let mut records = std::mem::take(&mut self.scratch);
        records.clear();
        let got = self.store.read_into(
            g.topic,
            g.partition,
            g.offset,
            max,
            filter.as_ref(),
            &mut records,
        );
        let outcome = self.answer_get(g, got, &records, out);
        if records.capacity() <= 4 * self.cfg.get_bytes_max {
            self.scratch = records;
        }
        outcome
    }

    /// The reply to a get from its read (`got`, and the `records` it appended): the records, a
    /// park (long poll), 301/404, or the error. The fetch thread's reads are answered here too
    /// (see [`Broker::get_is_cold`]).
    pub fn answer_get(
        &mut self,
        g: &Get<'_>,
        got: Result<ReadOutcome, StoreError>,
        records: &[u8],
        out: &mut Vec<u8>,
    ) -> Outcome {
        match got {
            Ok(r) if r.records > 0 => {
                self.counters.get_hits += 1;
                protocol::write_value_header(out, records.len(), g.opaque);
                out.extend_from_slice(records);
                Outcome::Done
            }
            Ok(r) if g.wait_ms > 0 => Outcome::Park(Park {
                wait: Duration::from_millis(g.wait_ms.min(self.cfg.wait_ms_max) as u64),
                offset: r.next_offset,
                skipped: r.next_offset > g.offset,
            }),
            Ok(r) => {
                self.answer_empty(g, r.next_offset, r.next_offset > g.offset, out);
                Outcome::Done
            }
            Err(e) => {
                self.read_error(&e, g.topic, g.partition, g.opaque, out);
                Outcome::Done
            }
        }
    }

    /// Whether `g` reads the backlog (see `store::residency`), to be read by the fetch thread:
    /// then its byte budget, and the get is counted (`cmd_get`, `get_cold`); its reply comes
    /// from [`Broker::answer_get`].
    pub fn get_is_cold(&mut self, g: &Get<'_>) -> Option<usize> {
        let cold = self.store.read_is_cold(g.topic, g.partition, g.offset);
        if cold {
            self.counters.cmd_get += 1;
            self.counters.get_cold += 1;
        }
        cold.then(|| (g.max_bytes as usize).min(self.cfg.get_bytes_max))
    }

    /// The reply to a get with nothing to send: 301 past skipped records, else 404.
    pub fn answer_empty(&mut self, g: &Get<'_>, next: u64, skipped: bool, out: &mut Vec<u8>) {
        if skipped {
            self.counters.get_moved += 1;
            self.reply(out, Code::Moved, &next.to_string(), g.opaque);
        } else {
            self.counters.get_misses += 1;
            self.reply(
                out,
                Code::NotFound,
                &format!("no message at offset {}", g.offset),
                g.opaque,
            );
        }
    }

    fn read_error(
        &mut self,
        e: &StoreError,
        topic: &str,
        partition: u32,
        opaque: i32,
        out: &mut Vec<u8>,
    ) {
        match e {
            StoreError::OffsetOutOfRange { valid } => {
                self.counters.get_moved += 1;
                self.reply(out, Code::Moved, &valid.to_string(), opaque);
            }
            StoreError::UnknownTopic => self.reply(
                out,
                Code::NotFound,
                &format!("unknown topic {topic}"),
                opaque,
            ),
            StoreError::PartitionOutOfRange { partitions } => {
                let text = format!(
                    "partition {partition} out of range, topic {topic} has {partitions} partitions"
                );
                self.reply(out, Code::BadRequest, &text, opaque);
            }
            other => {
                let (code, text) = store_error(other);
                self.reply(out, code, &text, opaque);
            }
        }
    }

    fn offset(&mut self, o: &OffsetReq<'_>, out: &mut Vec<u8>) {
        match self.store.offsets(o.topic, o.partition) {
            Ok((min, max)) => {
                let v = o.offset.clamp(min, max).to_string();
                protocol::write_result(out, Code::Ok, v.as_bytes(), o.opaque);
            }
            Err(e) => self.read_error(&e, o.topic, o.partition, o.opaque, out),
        }
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// The reply code and text for a store error.
fn store_error(e: &StoreError) -> (Code, String) {
    let code = match e {
        StoreError::DiskFull => Code::InsufficientStorage,
        StoreError::UnknownTopic | StoreError::NoSuchMessage => Code::NotFound,
        StoreError::PartitionOutOfRange { .. } | StoreError::BadName => Code::BadRequest,
        StoreError::OffsetOutOfRange { .. } => Code::Moved,
        StoreError::Corrupt { .. } => Code::Corrupt,
        StoreError::RecordTooLarge { .. } => Code::PayloadTooLarge,
        StoreError::LimitReached(_) => Code::Forbidden,
        StoreError::Io(_) | StoreError::Locked | StoreError::BadDataDir(_) => Code::Internal,
    };
    if code == Code::Internal {
        log::error!("{e}");
    }
    (code, e.to_string())
}
