//! Long-poll gets waiting for a message. Each is indexed by its (topic, partition), so a put
//! wakes only the waiters of its partition, and an idle waiter costs nothing but its entry.
//! A put on a partition with waiters is noted with its end position; the loop wakes those
//! waiters once the message is visible (at once in async mode, after the group commit in sync
//! mode). Waiters also end at their deadline, on a rebalance of their group, when their
//! connection closes, and at shutdown.

use crate::protocol::Get;
use std::collections::HashMap;
use std::time::Instant;

/// An owned copy of a parked get.
#[derive(Debug, Clone)]
pub struct Parked {
    pub conn: usize,
    pub topic: String,
    pub group: String,
    pub partition: u32,
    /// The offset the client asked for (the 404 reply names it).
    pub asked: u64,
    /// Where to look next (past records a tag filter skipped).
    pub offset: u64,
    pub skipped: bool,
    pub max_bytes: u32,
    pub tags: Option<Vec<Vec<u8>>>,
    pub opaque: i32,
    pub deadline: Instant,
}

impl Parked {
    pub fn new(g: &Get<'_>, conn: usize, offset: u64, skipped: bool, deadline: Instant) -> Parked {
        Parked {
            conn,
            topic: g.topic.to_owned(),
            group: g.group.to_owned(),
            partition: g.partition,
            asked: g.offset,
            offset,
            skipped,
            max_bytes: g.max_bytes,
            tags: g
                .tags
                .as_ref()
                .map(|t| t.iter().map(|x| x.to_vec()).collect()),
            opaque: g.opaque,
            deadline,
        }
    }

    /// The get to run again: from where it stopped, still a long poll.
    pub fn retry(&self) -> Get<'_> {
        Get {
            topic: &self.topic,
            group: &self.group,
            partition: self.partition,
            offset: self.offset,
            max_bytes: self.max_bytes,
            wait_ms: 1,
            tags: self
                .tags
                .as_ref()
                .map(|t| t.iter().map(Vec::as_slice).collect()),
            opaque: self.opaque,
        }
    }

    /// The get as the client sent it, for the reply when the wait ends empty.
    pub fn asked(&self) -> Get<'_> {
        Get {
            offset: self.asked,
            ..self.retry()
        }
    }
}

#[derive(Default)]
pub struct Parking {
    by_partition: HashMap<(String, u32), Vec<Parked>>,
    per_conn: HashMap<usize, usize>,
    total: usize,
    /// Partitions with new messages and waiters: the end position to be visible first.
    stored: HashMap<(String, u32), u64>,
    next_deadline: Option<Instant>,
}

impl Parking {
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn count(&self, conn: usize) -> usize {
        self.per_conn.get(&conn).copied().unwrap_or(0)
    }

    pub fn park(&mut self, p: Parked) {
        self.next_deadline = Some(self.next_deadline.map_or(p.deadline, |d| d.min(p.deadline)));
        *self.per_conn.entry(p.conn).or_default() += 1;
        self.total += 1;
        self.by_partition
            .entry((p.topic.clone(), p.partition))
            .or_default()
            .push(p);
    }

    /// Notes a put; cheap when nobody waits on the partition.
    pub fn note_stored(&mut self, topic: &str, partition: u32, end_pos: u64) {
        if self.total == 0 {
            return;
        }
        let key = (topic.to_owned(), partition);
        if self.by_partition.contains_key(&key) {
            let e = self.stored.entry(key).or_insert(end_pos);
            *e = (*e).max(end_pos);
        }
    }

    pub fn has_stored(&self) -> bool {
        !self.stored.is_empty()
    }

    /// Waiters of partitions whose new messages are visible (end position <= `visible`).
    pub fn take_woken(&mut self, visible: u64) -> Vec<Parked> {
        let ready: Vec<(String, u32)> = self
            .stored
            .iter()
            .filter(|(_, &end)| end <= visible)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in ready {
            self.stored.remove(&key);
            out.extend(self.by_partition.remove(&key).unwrap_or_default());
        }
        self.forget(&out);
        out
    }

    /// Waiters whose get names `group`.
    pub fn take_group(&mut self, group: &str) -> Vec<Parked> {
        self.take_where(|p| p.group == group)
    }

    pub fn take_conn(&mut self, conn: usize) -> Vec<Parked> {
        if self.count(conn) == 0 {
            return Vec::new();
        }
        self.take_where(|p| p.conn == conn)
    }

    /// Waiters past their deadline.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Parked> {
        if self.next_deadline.is_none_or(|d| d > now) {
            return Vec::new();
        }
        let out = self.take_where(|p| p.deadline <= now);
        self.next_deadline = self
            .by_partition
            .values()
            .flatten()
            .map(|p| p.deadline)
            .min();
        out
    }

    pub fn take_all(&mut self) -> Vec<Parked> {
        self.take_where(|_| true)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_deadline
    }

    fn take_where(&mut self, mut pred: impl FnMut(&Parked) -> bool) -> Vec<Parked> {
        let mut out = Vec::new();
        self.by_partition.retain(|_, list| {
            let mut i = 0;
            while i < list.len() {
                if pred(&list[i]) {
                    out.push(list.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !list.is_empty()
        });
        let by_partition = &self.by_partition;
        self.stored.retain(|k, _| by_partition.contains_key(k));
        self.forget(&out);
        out
    }

    fn forget(&mut self, gone: &[Parked]) {
        for p in gone {
            self.total -= 1;
            if let Some(n) = self.per_conn.get_mut(&p.conn) {
                *n -= 1;
                if *n == 0 {
                    self.per_conn.remove(&p.conn);
                }
            }
        }
    }
}
