//! Long-poll gets waiting for a message. Each is indexed by its (topic, partition) and, when it
//! has a tag filter, by the hash of each of its tags, so a put wakes only the waiters of its
//! partition whose filter can match it, and an idle waiter costs nothing but its entries.
//!
//! A put that can wake waiters is noted with its end position; the loop wakes those waiters
//! once the message is visible (at once in async mode, after the group commit in sync mode).
//! In sync mode the puts not yet durable are also remembered per partition (and tag hash), so
//! a get that parks after a put but before its group commit is woken by that commit.
//!
//! Waiters also end at their deadline, on a rebalance of their group, when their connection
//! closes, and at shutdown. A waiter due to be answered while its connection's output is over
//! `output_bytes_max` is deferred: kept, in order, until that output drains.
//!
//! Every removal is O(1) per waiter (hash sets), so waking thousands together is linear.

use crate::protocol::Get;
use crate::store::index::tag_hash;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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
    /// The store's hash of each tag of `tags` (what a put's tag is matched against).
    hashes: Option<Vec<u32>>,
    pub opaque: i32,
    pub deadline: Instant,
}

impl Parked {
    pub fn new(g: &Get<'_>, conn: usize, offset: u64, skipped: bool, deadline: Instant) -> Parked {
        let tags: Option<Vec<Vec<u8>>> = g
            .tags
            .as_ref()
            .map(|t| t.iter().map(|x| x.to_vec()).collect());
        let hashes = tags.as_ref().map(|t| {
            let mut h: Vec<u32> = t.iter().map(|x| tag_hash(x)).collect();
            h.sort_unstable();
            h.dedup();
            h
        });
        Parked {
            conn,
            topic: g.topic.to_owned(),
            group: g.group.to_owned(),
            partition: g.partition,
            asked: g.offset,
            offset,
            skipped,
            max_bytes: g.max_bytes,
            tags,
            hashes,
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

/// A map keyed by (topic, partition) that is looked up with a borrowed `&str` (no allocation
/// per put) and allocates a topic's key only when its first partition is inserted.
struct PartMap<T>(HashMap<String, HashMap<u32, T>>);

impl<T> Default for PartMap<T> {
    fn default() -> Self {
        PartMap(HashMap::new())
    }
}

impl<T: Default> PartMap<T> {
    fn get(&self, topic: &str, partition: u32) -> Option<&T> {
        self.0.get(topic)?.get(&partition)
    }

    fn get_mut(&mut self, topic: &str, partition: u32) -> Option<&mut T> {
        self.0.get_mut(topic)?.get_mut(&partition)
    }

    fn entry(&mut self, topic: &str, partition: u32) -> &mut T {
        if !self.0.contains_key(topic) {
            self.0.insert(topic.to_owned(), HashMap::new());
        }
        self.0
            .get_mut(topic)
            .expect("inserted above")
            .entry(partition)
            .or_default()
    }

    fn remove(&mut self, topic: &str, partition: u32) {
        if let Some(parts) = self.0.get_mut(topic) {
            parts.remove(&partition);
            if parts.is_empty() {
                self.0.remove(topic);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The waiters of one partition.
#[derive(Default)]
struct Waiters {
    /// Without a tag filter: any put wakes them.
    any: HashSet<u64>,
    /// With a tag filter, under the hash of each of their tags.
    by_tag: HashMap<u32, HashSet<u64>>,
}

impl Waiters {
    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.by_tag.is_empty()
    }
}

/// Wakes due on one partition once a position is visible: the end of the first put noted
/// since the last wake, for the unfiltered waiters and per tag hash.
#[derive(Default)]
struct Note {
    any: Option<u64>,
    tags: HashMap<u32, u64>,
}

impl Note {
    fn is_empty(&self) -> bool {
        self.any.is_none() && self.tags.is_empty()
    }
}

/// Sync mode: puts to one partition that may not be durable yet: the end of the last one,
/// and of the last one per tag hash.
#[derive(Default)]
struct Unseen {
    end: u64,
    tags: HashMap<u32, u64>,
}

/// The parked gets, by id, with indexes by partition and tag hash (wake on put), by deadline
/// (expiry pops the earliest, so thousands of idle waiters cost nothing per tick) and by
/// connection (drop on close), plus the deferred ones per connection.
#[derive(Default)]
pub struct Parking {
    parked: HashMap<u64, Parked>,
    next_id: u64,
    by_partition: PartMap<Waiters>,
    by_deadline: BTreeSet<(Instant, u64)>,
    by_conn: HashMap<usize, HashSet<u64>>,
    /// Partitions with new messages and waiters they can wake.
    notes: PartMap<Note>,
    /// Whether records become visible only once durable (sync flush mode).
    sync: bool,
    /// Sync mode: partitions with puts that may not be durable yet.
    unseen: PartMap<Unseen>,
    /// Due to be answered, waiting for their connection's output to drain: `(get, keep)`,
    /// `keep` meaning it may be parked again if it still finds nothing.
    deferred: HashMap<usize, VecDeque<(Parked, bool)>>,
    deferred_total: usize,
    /// Parked gets woken by a put (the `parked_wakeups` counter).
    wakeups: u64,
}

impl Parking {
    pub fn new(sync: bool) -> Parking {
        Parking {
            sync,
            ..Parking::default()
        }
    }

    /// Gets waiting now: parked, or due and deferred behind a full output.
    pub fn total(&self) -> usize {
        self.parked.len() + self.deferred_total
    }

    /// Gets waiting now on one connection (held to `parked_per_connection_max`).
    pub fn count(&self, conn: usize) -> usize {
        self.by_conn.get(&conn).map_or(0, HashSet::len)
            + self.deferred.get(&conn).map_or(0, VecDeque::len)
    }

    pub fn wakeups(&self) -> u64 {
        self.wakeups
    }

    /// Parks a get. `durable` is the store's durable position read before the get ran: in
    /// sync mode, puts to the partition (matching its filter) beyond it will wake it.
    pub fn park(&mut self, p: Parked, durable: u64) {
        let id = self.next_id;
        self.next_id += 1;
        let waiters = self.by_partition.entry(&p.topic, p.partition);
        match &p.hashes {
            None => {
                waiters.any.insert(id);
            }
            Some(hashes) => {
                for h in hashes {
                    waiters.by_tag.entry(*h).or_default().insert(id);
                }
            }
        }
        if self.sync {
            if let Some(u) = self.unseen.get(&p.topic, p.partition) {
                let mut wake = Note::default();
                match &p.hashes {
                    None if u.end > durable => wake.any = Some(u.end),
                    None => {}
                    Some(hashes) => {
                        for h in hashes {
                            if let Some(&end) = u.tags.get(h).filter(|&&end| end > durable) {
                                wake.tags.insert(*h, end);
                            }
                        }
                    }
                }
                if !wake.is_empty() {
                    let note = self.notes.entry(&p.topic, p.partition);
                    // A pending note is for an earlier put of the partition: its end is the
                    // sooner wake, and this get's first record is at or before it.
                    if let Some(end) = wake.any {
                        note.any = Some(note.any.map_or(end, |e| e.min(end)));
                    }
                    for (h, end) in wake.tags {
                        let e = note.tags.entry(h).or_insert(end);
                        *e = (*e).min(end);
                    }
                }
            }
        }
        self.by_deadline.insert((p.deadline, id));
        self.by_conn.entry(p.conn).or_default().insert(id);
        self.parked.insert(id, p);
    }

    /// Notes a put (`tag_hash`: its tag's index hash, 0 when untagged).
    /// Cheap when nobody waits on the partition, in async mode free.
    pub fn note_stored(&mut self, topic: &str, partition: u32, end_pos: u64, tag_hash: u32) {
        if !self.sync && self.parked.is_empty() {
            return;
        }
        let waiters = self.by_partition.get(topic, partition);
        if waiters.is_none() && !self.sync {
            return;
        }
        if self.sync {
            let u = self.unseen.entry(topic, partition);
            u.end = u.end.max(end_pos);
            if tag_hash != 0 {
                u.tags.insert(tag_hash, end_pos);
            }
        }
        let Some(w) = waiters else {
            return;
        };
        let wake_any = !w.any.is_empty();
        let wake_tag = tag_hash != 0 && w.by_tag.contains_key(&tag_hash);
        if wake_any || wake_tag {
            let note = self.notes.entry(topic, partition);
            if wake_any {
                note.any.get_or_insert(end_pos);
            }
            if wake_tag {
                note.tags.entry(tag_hash).or_insert(end_pos);
            }
        }
    }

    /// Sync mode: forgets the puts that are durable now (end <= `durable`).
    pub fn note_durable(&mut self, durable: u64) {
        if self.unseen.is_empty() {
            return;
        }
        self.unseen.0.retain(|_, parts| {
            parts.retain(|_, u| {
                u.tags.retain(|_, end| *end > durable);
                u.end > durable
            });
            !parts.is_empty()
        });
    }

    pub fn has_stored(&self) -> bool {
        !self.notes.is_empty()
    }

    /// Waiters of partitions whose new (matching) messages are visible (end <= `visible`).
    pub fn take_woken(&mut self, visible: u64) -> Vec<Parked> {
        let mut ids = Vec::new();
        let by_partition = &self.by_partition;
        self.notes.0.retain(|topic, parts| {
            parts.retain(|partition, note| {
                let waiters = by_partition.get(topic, *partition);
                if note.any.is_some_and(|end| end <= visible) {
                    note.any = None;
                    if let Some(w) = waiters {
                        ids.extend(w.any.iter().copied());
                    }
                }
                note.tags.retain(|h, end| {
                    if *end > visible {
                        return true;
                    }
                    if let Some(set) = waiters.and_then(|w| w.by_tag.get(h)) {
                        ids.extend(set.iter().copied());
                    }
                    false
                });
                !note.is_empty()
            });
            !parts.is_empty()
        });
        // Oldest first; a waiter whose several tags matched is woken once.
        ids.sort_unstable();
        ids.dedup();
        let woken = self.take_ids(ids);
        self.wakeups += woken.len() as u64;
        woken
    }

    /// Waiters whose get names `group` (a rebalance: rare, so a scan is fine).
    pub fn take_group(&mut self, group: &str) -> Vec<Parked> {
        let mut ids: Vec<u64> = self
            .parked
            .iter()
            .filter(|(_, p)| p.group == group)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        self.take_ids(ids)
    }

    /// Drops a connection's waiters, deferred ones included.
    pub fn take_conn(&mut self, conn: usize) -> Vec<Parked> {
        let mut ids: Vec<u64> = self
            .by_conn
            .get(&conn)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        let mut out: Vec<Parked> = self
            .deferred
            .remove(&conn)
            .map(|d| d.into_iter().map(|(p, _)| p).collect())
            .unwrap_or_default();
        self.deferred_total -= out.len();
        out.extend(self.take_ids(ids));
        out
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

    /// Every parked waiter (deferred ones stay deferred: they are answered as output drains).
    pub fn take_all(&mut self) -> Vec<Parked> {
        let mut ids: Vec<u64> = self.parked.keys().copied().collect();
        ids.sort_unstable();
        self.take_ids(ids)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Holds a waiter due to be answered until its connection's output drains.
    pub fn defer(&mut self, p: Parked, keep: bool) {
        self.deferred
            .entry(p.conn)
            .or_default()
            .push_back((p, keep));
        self.deferred_total += 1;
    }

    pub fn has_deferred(&self, conn: usize) -> bool {
        self.deferred.contains_key(&conn)
    }

    /// The oldest deferred waiter of a connection.
    pub fn pop_deferred(&mut self, conn: usize) -> Option<(Parked, bool)> {
        let queue = self.deferred.get_mut(&conn)?;
        let first = queue.pop_front();
        if queue.is_empty() {
            self.deferred.remove(&conn);
        }
        if first.is_some() {
            self.deferred_total -= 1;
        }
        first
    }

    /// Removes the given waiters from every index: O(1) per waiter (and per tag).
    fn take_ids(&mut self, ids: Vec<u64>) -> Vec<Parked> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(p) = self.parked.remove(&id) else {
                continue;
            };
            self.by_deadline.remove(&(p.deadline, id));
            if let Some(w) = self.by_partition.get_mut(&p.topic, p.partition) {
                match &p.hashes {
                    None => {
                        w.any.remove(&id);
                    }
                    Some(hashes) => {
                        for h in hashes {
                            if let Some(set) = w.by_tag.get_mut(h) {
                                set.remove(&id);
                                if set.is_empty() {
                                    w.by_tag.remove(h);
                                }
                            }
                        }
                    }
                }
                if w.is_empty() {
                    self.by_partition.remove(&p.topic, p.partition);
                    self.notes.remove(&p.topic, p.partition);
                }
            }
            if let Some(set) = self.by_conn.get_mut(&p.conn) {
                set.remove(&id);
                if set.is_empty() {
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
        tagged(conn, partition, group, deadline, None)
    }

    fn tagged(
        conn: usize,
        partition: u32,
        group: &str,
        deadline: Instant,
        tags: Option<&[&str]>,
    ) -> Parked {
        let tags: Option<Vec<Vec<u8>>> =
            tags.map(|t| t.iter().map(|x| x.as_bytes().to_vec()).collect());
        Parked {
            conn,
            topic: "t".into(),
            group: group.into(),
            partition,
            asked: 0,
            offset: 0,
            skipped: false,
            max_bytes: 100,
            hashes: tags
                .as_ref()
                .map(|t| t.iter().map(|x| tag_hash(x)).collect()),
            tags,
            opaque: 1,
            deadline,
        }
    }

    #[test]
    fn a_put_wakes_only_its_partition_once_visible() {
        let now = Instant::now();
        let mut p = Parking::new(false);
        p.park(parked(1, 0, "g", now + Duration::from_secs(5)), 0);
        p.park(parked(2, 1, "g", now + Duration::from_secs(5)), 0);
        p.note_stored("t", 0, 100, 0);
        p.note_stored("t", 7, 100, 0);
        assert!(p.take_woken(99).is_empty(), "not visible yet");
        let woken = p.take_woken(100);
        assert_eq!(woken.iter().map(|w| w.conn).collect::<Vec<_>>(), vec![1]);
        assert_eq!(p.total(), 1);
        assert_eq!(p.wakeups(), 1);
        assert!(!p.has_stored());
    }

    #[test]
    fn a_put_wakes_only_the_filters_its_tag_can_match() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mut p = Parking::new(false);
        p.park(tagged(1, 0, "g", later, Some(&["a", "b"])), 0);
        p.park(tagged(2, 0, "g", later, Some(&["c"])), 0);
        p.park(tagged(3, 0, "g", later, None), 0);
        p.note_stored("t", 0, 10, tag_hash(b"b"));
        let woken: Vec<usize> = p.take_woken(u64::MAX).iter().map(|w| w.conn).collect();
        assert_eq!(
            woken,
            vec![1, 3],
            "b wakes the a||b filter and the unfiltered get"
        );
        p.note_stored("t", 0, 20, 0);
        assert!(!p.has_stored(), "an untagged put matches no filter");
        p.note_stored("t", 0, 30, tag_hash(b"c"));
        assert_eq!(p.take_woken(u64::MAX).len(), 1);
        assert_eq!((p.total(), p.wakeups()), (0, 3));
    }

    #[test]
    fn sync_mode_wakes_a_get_parked_after_a_put_that_is_not_durable_yet() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut p = Parking::new(true);
        p.note_stored("t", 0, 100, tag_hash(b"x"));
        p.park(parked(1, 0, "g", later), 50);
        p.park(tagged(2, 0, "g", later, Some(&["y"])), 50);
        p.park(tagged(3, 0, "g", later, Some(&["x"])), 50);
        assert!(p.take_woken(99).is_empty());
        p.note_durable(100);
        let woken: Vec<usize> = p.take_woken(100).iter().map(|w| w.conn).collect();
        assert_eq!(woken, vec![1, 3]);
        // Durable puts are forgotten: a get parked now waits for the next put.
        p.park(parked(4, 0, "g", later), 100);
        assert!(!p.has_stored());
    }

    #[test]
    fn deferred_gets_count_against_their_connection_until_popped() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut p = Parking::new(false);
        p.park(parked(1, 0, "g", later), 0);
        p.defer(parked(1, 1, "g", later), true);
        p.defer(parked(1, 2, "g", later), false);
        assert_eq!((p.count(1), p.total()), (3, 3));
        assert_eq!(
            p.pop_deferred(1).map(|(w, keep)| (w.partition, keep)),
            Some((1, true))
        );
        assert!(p.has_deferred(1));
        assert_eq!(p.take_conn(1).len(), 2);
        assert_eq!((p.count(1), p.total()), (0, 0));
        assert!(!p.has_deferred(1));
    }

    #[test]
    fn waking_many_waiters_at_once_is_linear() {
        const N: u32 = 200_000;
        let later = Instant::now() + Duration::from_secs(5);
        let mut p = Parking::new(false);
        for i in 0..N {
            p.park(parked(i as usize % 4, 0, "g", later), 0);
        }
        let t0 = Instant::now();
        p.note_stored("t", 0, 1, 0);
        assert_eq!(p.take_woken(u64::MAX).len(), N as usize);
        // Quadratic removal (a Vec::retain per id) takes minutes here.
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(p.total(), 0);
    }

    #[test]
    fn expiry_takes_the_earliest_and_connections_and_groups_take_theirs() {
        let now = Instant::now();
        let mut p = Parking::new(false);
        for i in 0..1000u32 {
            p.park(
                parked(
                    i as usize % 3,
                    i % 7,
                    if i % 2 == 0 { "a" } else { "b" },
                    now + Duration::from_millis(i as u64),
                ),
                0,
            );
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
