//! Long-poll gets waiting for a message. Each is indexed by its (topic, partition), so a put
//! wakes only the waiters of its partition, and an idle waiter costs nothing but its entry.
//! A put on a partition with waiters is noted with its end position; the loop wakes those
//! waiters once the message is visible (at once in async mode, after the group commit in sync
//! mode). Waiters also end at their deadline, on a rebalance of their group, when their
//! connection closes, and at shutdown.

use crate::protocol::Get;
use std::collections::{BTreeSet, HashMap};
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

/// The parked gets, by id, with three indexes: by partition (wake on put), by deadline
/// (expiry pops the earliest, so thousands of idle waiters cost nothing per tick) and by
/// connection (drop on close).
#[derive(Default)]
pub struct Parking {
    parked: HashMap<u64, Parked>,
    next_id: u64,
    by_partition: HashMap<(String, u32), Vec<u64>>,
    by_deadline: BTreeSet<(Instant, u64)>,
    by_conn: HashMap<usize, Vec<u64>>,
    /// Partitions with new messages and waiters: the end position to be visible first.
    stored: HashMap<(String, u32), u64>,
}

impl Parking {
    pub fn total(&self) -> usize {
        self.parked.len()
    }

    pub fn count(&self, conn: usize) -> usize {
        self.by_conn.get(&conn).map_or(0, Vec::len)
    }

    pub fn park(&mut self, p: Parked) {
        let id = self.next_id;
        self.next_id += 1;
        self.by_partition
            .entry((p.topic.clone(), p.partition))
            .or_default()
            .push(id);
        self.by_deadline.insert((p.deadline, id));
        self.by_conn.entry(p.conn).or_default().push(id);
        self.parked.insert(id, p);
    }

    /// Notes a put; cheap when nobody waits on the partition.
    pub fn note_stored(&mut self, topic: &str, partition: u32, end_pos: u64) {
        if self.parked.is_empty() {
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
        let mut ids = Vec::new();
        for key in ready {
            self.stored.remove(&key);
            ids.extend(self.by_partition.get(&key).cloned().unwrap_or_default());
        }
        self.take_ids(ids)
    }

    /// Waiters whose get names `group` (a rebalance: rare, so a scan is fine).
    pub fn take_group(&mut self, group: &str) -> Vec<Parked> {
        let ids: Vec<u64> = self
            .parked
            .iter()
            .filter(|(_, p)| p.group == group)
            .map(|(id, _)| *id)
            .collect();
        self.take_ids(ids)
    }

    pub fn take_conn(&mut self, conn: usize) -> Vec<Parked> {
        let ids = self.by_conn.get(&conn).cloned().unwrap_or_default();
        self.take_ids(ids)
    }

    /// Waiters past their deadline.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Parked> {
        let ids: Vec<u64> = self
            .by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        self.take_ids(ids)
    }

    pub fn take_all(&mut self) -> Vec<Parked> {
        let ids: Vec<u64> = self.parked.keys().copied().collect();
        self.take_ids(ids)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    fn take_ids(&mut self, ids: Vec<u64>) -> Vec<Parked> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(p) = self.parked.remove(&id) else {
                continue;
            };
            self.by_deadline.remove(&(p.deadline, id));
            let key = (p.topic.clone(), p.partition);
            if let Some(list) = self.by_partition.get_mut(&key) {
                list.retain(|&x| x != id);
                if list.is_empty() {
                    self.by_partition.remove(&key);
                    self.stored.remove(&key);
                }
            }
            if let Some(list) = self.by_conn.get_mut(&p.conn) {
                list.retain(|&x| x != id);
                if list.is_empty() {
                    self.by_conn.remove(&p.conn);
                }
            }
            out.push(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parked(conn: usize, partition: u32, group: &str, deadline: Instant) -> Parked {
        Parked {
            conn,
            topic: "t".into(),
            group: group.into(),
            partition,
            asked: 0,
            offset: 0,
            skipped: false,
            max_bytes: 100,
            tags: None,
            opaque: 1,
            deadline,
        }
    }

    #[test]
    fn a_put_wakes_only_its_partition_once_visible() {
        let now = Instant::now();
        let mut p = Parking::default();
        p.park(parked(1, 0, "g", now + Duration::from_secs(5)));
        p.park(parked(2, 1, "g", now + Duration::from_secs(5)));
        p.note_stored("t", 0, 100);
        p.note_stored("t", 7, 100);
        assert!(p.take_woken(99).is_empty(), "not visible yet");
        let woken = p.take_woken(100);
        assert_eq!(woken.iter().map(|w| w.conn).collect::<Vec<_>>(), vec![1]);
        assert_eq!(p.total(), 1);
        assert!(!p.has_stored());
    }

    #[test]
    fn expiry_takes_the_earliest_and_connections_and_groups_take_theirs() {
        let now = Instant::now();
        let mut p = Parking::default();
        for i in 0..1000u32 {
            p.park(parked(
                i as usize % 3,
                i % 7,
                if i % 2 == 0 { "a" } else { "b" },
                now + Duration::from_millis(i as u64),
            ));
        }
        assert_eq!(p.take_expired(now + Duration::from_millis(9)).len(), 10);
        assert_eq!(p.next_deadline(), Some(now + Duration::from_millis(10)));
        let conn0 = p.take_conn(0);
        assert!(conn0.iter().all(|w| w.conn == 0));
        assert_eq!(p.count(0), 0);
        let a = p.take_group("a");
        assert!(!a.is_empty() && a.iter().all(|w| w.group == "a"));
        assert_eq!(p.total() + 10 + conn0.len() + a.len(), 1000);
        let left = p.total();
        assert_eq!(p.take_all().len(), left);
        assert_eq!(p.total(), 0);
    }
}
