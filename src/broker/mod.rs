//! The broker: turns parsed requests into store calls and replies. It owns the store, the
//! settings and the counters; it knows nothing of sockets (the server hands it a request, its
//! body and an output buffer, and acts on the returned [`Outcome`]).

mod stats;

use crate::config::Config;
use crate::protocol::{self, Code, Get, OffsetReq, ParseError, Put, Request};
use crate::store::{self, Message, Store, StoreError};
use std::time::Instant;

pub use stats::Counters;

/// What the server must do after a request was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply (if any) is in the output buffer.
    Done,
    /// The reply is in the output buffer but may be sent only once the store's durable
    /// position reaches this (sync flush mode).
    HoldUntilDurable(u64),
    /// Send what is pending, then close the connection.
    Close,
    /// `stats conns`: the server writes it (it owns the connections).
    StatsConns(Option<i32>),
}

pub struct Broker {
    store: Store,
    cfg: Config,
    pub counters: Counters,
    started: Instant,
    /// Reused buffer for get replies.
    scratch: Vec<u8>,
    /// Set by the server: connections open now and the most it accepts.
    pub curr_connections: usize,
    pub connections_max: usize,
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
        let connections_max = cfg.connections_max;
        Ok(Broker {
            store,
            cfg,
            counters: Counters::default(),
            started: Instant::now(),
            scratch: Vec::new(),
            curr_connections: 0,
            connections_max,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Flushes and checkpoints the store.
    pub fn close(self) -> Result<(), StoreError> {
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
                self.get(g, out);
                Outcome::Done
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
        }
    }

    fn reply(&mut self, out: &mut Vec<u8>, code: Code, text: &str, opaque: i32) {
        self.counters.count_reply(code);
        protocol::write_result(out, code, text.as_bytes(), opaque);
    }

    fn put(&mut self, p: &Put<'_>, body: &[u8], out: &mut Vec<u8>) -> Outcome {
        match self.try_put(p, body) {
            Ok(a) => {
                protocol::write_put_ok(out, a.msg_id, a.partition, a.offset, p.opaque);
                match self.cfg.flush {
                    store::FlushMode::Sync => Outcome::HoldUntilDurable(a.end_pos),
                    store::FlushMode::Async => Outcome::Done,
                }
            }
            Err((code, text)) => {
                self.counters.put_errors += 1;
                self.reply(out, code, &text, p.opaque);
                Outcome::Done
            }
        }
    }

    fn try_put(&mut self, p: &Put<'_>, body: &[u8]) -> Result<store::Appended, (Code, String)> {
        if p.tx_key.is_some() {
            return Err((
                Code::NotImplemented,
                "transactions are not implemented".into(),
            ));
        }
        if let Some(sum) = p.checksum {
            let actual = protocol::checksum(body);
            if actual != sum {
                return Err((Code::BadRequest, "checksum mismatch".into()));
            }
        }
        let parts = protocol::split_put_body(p.flag, body, &self.cfg.limits)?;
        let count = match self.store.partitions(p.topic) {
            Some(n) => n,
            None => self.create_topic(p.topic)?,
        };
        let partition = match p.partition {
            None => self
                .store
                .choose_partition(p.topic)
                .map_err(|e| store_error(&e))?,
            Some(n) if n < count => n,
            Some(n) => {
                let text = format!(
                    "partition {n} out of range, topic {} has {count} partitions",
                    p.topic
                );
                return Err((Code::BadRequest, text));
            }
        };
        let msg = Message {
            topic: p.topic,
            partition,
            flag: p.flag,
            tag: parts.tag,
            props: parts.props,
            body: parts.payload,
            born_ts_ms: store::now_ms(),
        };
        self.store.append(&msg).map_err(|e| store_error(&e))
    }

    fn create_topic(&mut self, topic: &str) -> Result<u32, (Code, String)> {
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

    fn get(&mut self, g: &Get<'_>, out: &mut Vec<u8>) {
        let max = (g.max_bytes as usize).min(self.cfg.get_bytes_max);
        self.scratch.clear();
        let got =
            self.store
                .read_into(g.topic, g.partition, g.offset, max, None, &mut self.scratch);
        match got {
            Ok(r) if r.records > 0 => {
                self.counters.get_hits += 1;
                protocol::write_value_header(out, self.scratch.len(), g.opaque);
                out.extend_from_slice(&self.scratch);
            }
            Ok(_) => {
                self.counters.get_misses += 1;
                let text = format!("no message at offset {}", g.offset);
                self.reply(out, Code::NotFound, &text, g.opaque);
            }
            Err(e) => self.read_error(&e, g.topic, g.partition, g.opaque, out),
        }
        if self.scratch.capacity() > 4 * self.cfg.get_bytes_max {
            self.scratch = Vec::new();
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
