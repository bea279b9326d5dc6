//! The consumer-group commands (`join`, `heartbeat`, `leave`, `commit`, `fetch`, `reset`) and
//! the `stats groups` item: requests to [`crate::groups`] and store calls.

use super::{Broker, Outcome};
use crate::groups::{offset_key, Assignment, GroupError};
use crate::protocol::{
    self, Code, Commit, Fetch, Join, Member, Reset, ResetTarget, Start, StatsWriter,
};
use crate::store::{self, StoreError};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

fn group_error(e: &GroupError) -> Code {
    match e {
        GroupError::LimitReached(_) => Code::Forbidden,
        _ => Code::Conflict,
    }
}

impl Broker {
    fn topic_partitions(&mut self, topic: &str, opaque: i32, out: &mut Vec<u8>) -> Option<u32> {
        let n = self.store.partitions(topic);
        if n.is_none() {
            self.reply(
                out,
                Code::NotFound,
                &format!("unknown topic {topic}"),
                opaque,
            );
        }
        n
    }

    /// `<generation> <sessionTimeoutMs>[ <p>:<offset>]...`, resolving (and committing) the start
    /// of partitions that have no committed offset yet.
    fn assignment_reply(
        &mut self,
        group: &str,
        topic: &str,
        member: &str,
        a: &Assignment,
    ) -> String {
        let mut body = format!(
            "{} {}",
            a.generation,
            self.groups.session_timeout().as_millis()
        );
        for &p in &a.partitions {
            let key = self.groups.member_key(group, topic, member, p);
            let (min, max) = self.store.offsets(topic, p).unwrap_or((0, 0));
            let offset = match self.groups.offsets.get(&key) {
                Some(c) => c.offset.clamp(min, max),
                None => {
                    let o = if a.start == Start::Earliest { min } else { max };
                    self.groups.commit(key, o, store::now_ms());
                    o
                }
            };
            let _ = write!(body, " {p}:{offset}");
        }
        body
    }

    pub(super) fn join(&mut self, j: &Join<'_>, out: &mut Vec<u8>) -> Outcome {
        let Some(partitions) = self.topic_partitions(j.topic, j.opaque, out) else {
            return Outcome::Done;
        };
        let before = self
            .groups
            .membership(j.group, j.topic)
            .map(|m| m.generation);
        match self.groups.join(j, partitions, Instant::now()) {
            Ok(a) => {
                let body = self.assignment_reply(j.group, j.topic, j.member, &a);
                protocol::write_result(out, Code::Ok, body.as_bytes(), j.opaque);
                if before != Some(a.generation) {
                    Outcome::Rebalanced
                } else {
                    Outcome::Done
                }
            }
            Err(e) => {
                self.reply(out, group_error(&e), &e.to_string(), j.opaque);
                Outcome::Done
            }
        }
    }

    pub(super) fn heartbeat(&mut self, h: &Member<'_>, out: &mut Vec<u8>) -> Outcome {
        let Some(partitions) = self.topic_partitions(h.topic, h.opaque, out) else {
            return Outcome::Done;
        };
        match self
            .groups
            .heartbeat(h.group, h.topic, h.member, partitions, Instant::now())
        {
            Ok(a) => {
                let body = self.assignment_reply(h.group, h.topic, h.member, &a);
                protocol::write_result(out, Code::Ok, body.as_bytes(), h.opaque);
            }
            Err(e) => self.reply(out, group_error(&e), &e.to_string(), h.opaque),
        }
        Outcome::Done
    }

    pub(super) fn leave(&mut self, l: &Member<'_>, out: &mut Vec<u8>) -> Outcome {
        let left = self.groups.leave(l.group, l.topic, l.member);
        protocol::write_result(out, Code::Ok, b"", l.opaque);
        if left {
            Outcome::Rebalanced
        } else {
            Outcome::Done
        }
    }

    pub(super) fn commit(&mut self, c: &Commit<'_>, out: &mut Vec<u8>) {
        let (min, max) = match self.store.offsets(c.topic, c.partition) {
            Ok(r) => r,
            Err(e) => return self.read_error(&e, c.topic, c.partition, c.opaque, out),
        };
        if c.offset > max {
            let text = format!("offset {} beyond max offset {max}", c.offset);
            return self.reply(out, Code::BadRequest, &text, c.opaque);
        }
        let _ = min;
        match self.groups.authorize_commit(
            c.group,
            c.topic,
            c.partition,
            c.member,
            c.generation,
            Instant::now(),
        ) {
            Ok(key) => {
                self.groups.commit(key, c.offset, store::now_ms());
                protocol::write_result(out, Code::Ok, b"", c.opaque);
            }
            Err(e) => self.reply(out, group_error(&e), &e.to_string(), c.opaque),
        }
    }

    pub(super) fn fetch(&mut self, f: &Fetch<'_>, out: &mut Vec<u8>) {
        if let Err(e) = self.store.offsets(f.topic, f.partition) {
            return self.read_error(&e, f.topic, f.partition, f.opaque, out);
        }
        let key = match f.member {
            Some(m) => self.groups.member_key(f.group, f.topic, m, f.partition),
            None => offset_key(f.group, None, f.topic, f.partition),
        };
        match self.groups.offsets.get(&key) {
            Some(c) => {
                protocol::write_result(out, Code::Ok, c.offset.to_string().as_bytes(), f.opaque)
            }
            None => self.reply(out, Code::NotFound, "no committed offset", f.opaque),
        }
    }

    pub(super) fn reset(&mut self, r: &Reset<'_>, out: &mut Vec<u8>) -> Outcome {
        let Some(partitions) = self.topic_partitions(r.topic, r.opaque, out) else {
            return Outcome::Done;
        };
        let chosen: Vec<u32> = match r.partition {
            Some(p) if p < partitions => vec![p],
            Some(p) => {
                let e = StoreError::PartitionOutOfRange { partitions };
                self.read_error(&e, r.topic, p, r.opaque, out);
                return Outcome::Done;
            }
            None => (0..partitions).collect(),
        };
        let members = self.groups.broadcast_members(r.group, r.topic);
        let now = store::now_ms();
        let mut body = String::new();
        for p in chosen {
            let target = self
                .store
                .offsets(r.topic, p)
                .and_then(|(min, max)| match r.target {
                    ResetTarget::Earliest => Ok(min),
                    ResetTarget::Latest => Ok(max),
                    ResetTarget::Offset(o) => Ok(o.clamp(min, max)),
                    ResetTarget::Time(ms) => self.store.offset_for_time(r.topic, p, ms),
                });
            let offset = match target {
                Ok(o) => o,
                Err(e) => {
                    self.read_error(&e, r.topic, p, r.opaque, out);
                    return Outcome::Done;
                }
            };
            self.groups
                .commit(offset_key(r.group, None, r.topic, p), offset, now);
            for m in &members {
                self.groups
                    .commit(offset_key(r.group, Some(m), r.topic, p), offset, now);
            }
            if !body.is_empty() {
                body.push(' ');
            }
            let _ = write!(body, "{p}:{offset}");
        }
        self.groups.bump(r.group, r.topic);
        protocol::write_result(out, Code::Ok, body.as_bytes(), r.opaque);
        Outcome::Rebalanced
    }

    /// `stats groups` (every group) or `stats group:<g>` (one).
    pub(super) fn groups_stats(&self, only: Option<&str>, w: &mut StatsWriter) {
        let wanted = |key: &str| match only {
            None => true,
            Some(g) => {
                key == g
                    || key
                        .strip_prefix(g)
                        .is_some_and(|rest| rest.starts_with('@'))
            }
        };
        // (key, topic) pairs with offsets or members.
        let snapshot = self.groups.offsets.snapshot();
        let mut pairs: BTreeSet<(String, String)> = snapshot
            .iter()
            .map(|((k, t, _), _)| (k.clone(), t.clone()))
            .collect();
        for (g, t, m) in self.groups.memberships() {
            match m.mode {
                protocol::Mode::Cluster => {
                    pairs.insert((g.to_owned(), t.to_owned()));
                }
                protocol::Mode::Broadcast => {
                    for member in self.groups.broadcast_members(g, t) {
                        pairs.insert((format!("{g}@{member}"), t.to_owned()));
                    }
                }
            }
        }
        // Per (group, topic): the keys holding its offsets (the group, or its broadcast members).
        let mut by_group: std::collections::BTreeMap<(String, String), Vec<String>> =
            Default::default();
        for (key, topic) in pairs.into_iter().filter(|(k, _)| wanted(k)) {
            let group = key
                .split_once('@')
                .map_or(key.as_str(), |(g, _)| g)
                .to_owned();
            by_group.entry((group, topic)).or_default().push(key);
        }
        for ((group, topic), keys) in by_group {
            let membership = self.groups.membership(&group, &topic);
            let partitions = self.store.partitions(&topic).unwrap_or(0);
            let mut group_lag = 0u64;
            for key in keys {
                let member = key.split_once('@').map(|(_, m)| m);
                let mut key_lag = 0u64;
                for p in 0..partitions {
                    let committed = self.groups.offsets.get(&(key.clone(), topic.clone(), p));
                    let owner = match (member, membership) {
                        (Some(m), _) => Some(m.to_owned()),
                        (None, Some(ms)) => ms.owner(p).map(str::to_owned),
                        (None, None) => None,
                    };
                    if committed.is_none() && owner.is_none() {
                        continue;
                    }
                    let (min, max) = self.store.offsets(&topic, p).unwrap_or((0, 0));
                    let lag = max - committed.map_or(min, |c| c.offset.clamp(min, max));
                    key_lag += lag;
                    let at = format!("group:{key}:{topic}:{p}");
                    w.stat(
                        &format!("{at}:committed"),
                        committed.map_or(-1, |c| c.offset as i64),
                    );
                    w.stat(&format!("{at}:max_offset"), max);
                    w.stat(&format!("{at}:lag"), lag);
                    w.stat(&format!("{at}:owner"), owner.as_deref().unwrap_or("-"));
                    w.stat(
                        &format!("{at}:commit_time"),
                        committed.map_or(0, |c| c.at_ms),
                    );
                }
                if member.is_some() {
                    w.stat(&format!("group:{key}:{topic}:lag"), key_lag);
                }
                group_lag += key_lag;
            }
            let at = format!("group:{group}:{topic}");
            w.stat(
                &format!("{at}:mode"),
                membership.map_or("none", |m| m.mode.name()),
            );
            w.stat(
                &format!("{at}:generation"),
                membership.map_or(0, |m| m.generation),
            );
            w.stat(
                &format!("{at}:members"),
                membership.map_or(0, |m| m.member_count()),
            );
            w.stat(&format!("{at}:lag"), group_lag);
        }
    }

    /// Expires silent members; returns the groups that rebalanced.
    pub fn expire_members(&mut self) -> Vec<String> {
        self.groups.expire(Instant::now())
    }
}
