//! Consumer groups: membership per (group, topic), partition assignment with a generation
//! number, ownership-checked commits, and the committed offsets themselves ([`offsets`]).
//!
//! The generation increases on every membership change (a new member, a leave, an expiry) and
//! on `reset`. A commit from a cluster member is accepted only for a partition it owns in the
//! current generation, so a member that lost a partition in a rebalance cannot commit over its
//! new owner (fewer duplicates than Metamorphosis and RocketMQ, whose stale owners could).
//! Membership lives in memory: after a restart members get `409 unknown member` and join again.

pub mod assign;
pub mod offsets;

use crate::protocol::{Join, Mode, Start};
use offsets::{Committed, OffsetKey, OffsetStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a group operation was refused; each maps onto a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// 409
    UnknownMember(String),
    /// 409
    NotOwner {
        topic: String,
        partition: u32,
        generation: u64,
    },
    /// 409
    ModeClash {
        group: String,
        topic: String,
        mode: Mode,
    },
    /// 403
    LimitReached(&'static str),
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupError::UnknownMember(m) => write!(f, "unknown member {m}"),
            GroupError::NotOwner {
                topic,
                partition,
                generation,
            } => {
                write!(
                    f,
                    "not the owner of {topic}/{partition} in generation {generation}"
                )
            }
            GroupError::ModeClash { group, topic, mode } => {
                write!(f, "group {group} on topic {topic} is {}", mode.name())
            }
            GroupError::LimitReached(what) => write!(f, "{what} reached"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub session_timeout: Duration,
    pub members_per_group_max: usize,
    pub groups_max: usize,
}

struct MemberState {
    last_seen: Instant,
    start: Start,
}

/// The members of one group on one topic.
pub struct Membership {
    pub mode: Mode,
    pub generation: u64,
    members: BTreeMap<String, MemberState>,
    /// Partitions per member in the current generation (cluster mode).
    owned: BTreeMap<String, Vec<u32>>,
    partitions: u32,
}

impl Membership {
    fn rebalance(&mut self, partitions: u32) {
        self.generation += 1;
        self.partitions = partitions;
        let ids: Vec<&str> = self.members.keys().map(String::as_str).collect();
        self.owned = match self.mode {
            Mode::Cluster => ids
                .iter()
                .map(|m| m.to_string())
                .zip(assign::ranges(&ids, partitions))
                .collect(),
            Mode::Broadcast => ids
                .iter()
                .map(|m| (m.to_string(), (0..partitions).collect()))
                .collect(),
        };
    }

    /// The member that owns `partition` now (cluster mode).
    pub fn owner(&self, partition: u32) -> Option<&str> {
        self.owned
            .iter()
            .find(|(_, ps)| ps.contains(&partition))
            .map(|(m, _)| m.as_str())
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }
}

/// A member's view after join or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub generation: u64,
    pub partitions: Vec<u32>,
    pub start: Start,
    pub mode: Mode,
}

pub struct Groups {
    limits: Limits,
    by_topic: HashMap<(String, String), Membership>,
    pub offsets: Arc<OffsetStore>,
}

/// The key committed offsets are stored under.
pub fn offset_key(
    group: &str,
    broadcast_member: Option<&str>,
    topic: &str,
    partition: u32,
) -> OffsetKey {
    let key = match broadcast_member {
        Some(m) => format!("{group}@{m}"),
        None => group.to_owned(),
    };
    (key, topic.to_owned(), partition)
}

impl Groups {
    pub fn new(limits: Limits, offsets: Arc<OffsetStore>) -> Groups {
        Groups {
            limits,
            by_topic: HashMap::new(),
            offsets,
        }
    }

    pub fn session_timeout(&self) -> Duration {
        self.limits.session_timeout
    }

    pub fn membership(&self, group: &str, topic: &str) -> Option<&Membership> {
        self.by_topic.get(&(group.to_owned(), topic.to_owned()))
    }

    /// Every (group, topic) with live members, sorted.
    pub fn memberships(&self) -> Vec<(&str, &str, &Membership)> {
        let mut v: Vec<_> = self
            .by_topic
            .iter()
            .map(|((g, t), m)| (g.as_str(), t.as_str(), m))
            .collect();
        v.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        v
    }

    pub fn join(
        &mut self,
        j: &Join<'_>,
        partitions: u32,
        now: Instant,
    ) -> Result<Assignment, GroupError> {
        let Join {
            group,
            topic,
            member,
            mode,
            start,
            ..
        } = *j;
        self.check_new_group(group)?;
        let key = (group.to_owned(), topic.to_owned());
        let m = self.by_topic.entry(key).or_insert_with(|| Membership {
            mode,
            generation: 0,
            members: BTreeMap::new(),
            owned: BTreeMap::new(),
            partitions,
        });
        if m.mode != mode {
            if !m.members.is_empty() {
                return Err(GroupError::ModeClash {
                    group: group.into(),
                    topic: topic.into(),
                    mode: m.mode,
                });
            }
            m.mode = mode;
        }
        let new = !m.members.contains_key(member);
        if new && m.members.len() >= self.limits.members_per_group_max {
            return Err(GroupError::LimitReached("members_per_group_max"));
        }
        m.members.insert(
            member.to_owned(),
            MemberState {
                last_seen: now,
                start,
            },
        );
        if new || m.partitions != partitions {
            m.rebalance(partitions);
        }
        Ok(assignment(m, member))
    }

    pub fn heartbeat(
        &mut self,
        group: &str,
        topic: &str,
        member: &str,
        partitions: u32,
        now: Instant,
    ) -> Result<Assignment, GroupError> {
        let m = self.touch(group, topic, member, now)?;
        if m.partitions != partitions {
            m.rebalance(partitions);
        }
        Ok(assignment(m, member))
    }

    /// The membership of a live member, whose session is refreshed.
    fn touch(
        &mut self,
        group: &str,
        topic: &str,
        member: &str,
        now: Instant,
    ) -> Result<&mut Membership, GroupError> {
        let m = self
            .by_topic
            .get_mut(&(group.to_owned(), topic.to_owned()))
            .ok_or_else(|| GroupError::UnknownMember(member.to_owned()))?;
        let s = m
            .members
            .get_mut(member)
            .ok_or_else(|| GroupError::UnknownMember(member.to_owned()))?;
        s.last_seen = now;
        Ok(m)
    }

    /// Refuses a group that does not exist yet (no members, no offsets) when `groups_max`
    /// groups exist. Counting is O(groups) but happens only when a new group appears.
    fn check_new_group(&self, group: &str) -> Result<(), GroupError> {
        let exists = self.offsets.has_key(group) || self.by_topic.keys().any(|(g, _)| g == group);
        if exists {
            return Ok(());
        }
        let mut names = self.offsets.group_names();
        names.extend(self.by_topic.keys().map(|(g, _)| g.clone()));
        if names.len() >= self.limits.groups_max {
            return Err(GroupError::LimitReached("groups_max"));
        }
        Ok(())
    }

    /// Returns true when the member was there (and the group rebalanced).
    pub fn leave(&mut self, group: &str, topic: &str, member: &str) -> bool {
        let key = (group.to_owned(), topic.to_owned());
        let Some(m) = self.by_topic.get_mut(&key) else {
            return false;
        };
        if m.members.remove(member).is_none() {
            return false;
        }
        let partitions = m.partitions;
        m.rebalance(partitions);
        true
    }

    /// Expires members silent for longer than the session timeout; returns the groups that
    /// rebalanced.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.limits.session_timeout;
        let mut changed = Vec::new();
        for ((group, topic), m) in self.by_topic.iter_mut() {
            let before = m.members.len();
            m.members.retain(|id, s| {
                let alive = now.duration_since(s.last_seen) < timeout;
                if !alive {
                    log::info!("group {group} on {topic}: member {id} expired");
                }
                alive
            });
            if m.members.len() != before {
                let partitions = m.partitions;
                m.rebalance(partitions);
                changed.push(group.clone());
            }
        }
        changed
    }

    /// Bumps the generation (after `reset`) so members re-read their start offsets.
    pub fn bump(&mut self, group: &str, topic: &str) {
        if let Some(m) = self.by_topic.get_mut(&(group.to_owned(), topic.to_owned())) {
            let partitions = m.partitions;
            m.rebalance(partitions);
        }
    }

    /// Checks a commit and returns the key to store it under.
    pub fn authorize_commit(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        member: Option<&str>,
        generation: i64,
        now: Instant,
    ) -> Result<OffsetKey, GroupError> {
        let Some(member) = member else {
            self.check_new_group(group)?;
            return Ok(offset_key(group, None, topic, partition));
        };
        let m = self.touch(group, topic, member, now)?;
        let owns = m
            .owned
            .get(member)
            .is_some_and(|ps| ps.contains(&partition));
        if generation != m.generation as i64 || !owns {
            return Err(GroupError::NotOwner {
                topic: topic.into(),
                partition,
                generation: m.generation,
            });
        }
        Ok(match m.mode {
            Mode::Cluster => offset_key(group, None, topic, partition),
            Mode::Broadcast => offset_key(group, Some(member), topic, partition),
        })
    }

    /// The broadcast members of a group on a topic (their own offsets move on `reset`).
    pub fn broadcast_members(&self, group: &str, topic: &str) -> Vec<String> {
        match self.membership(group, topic) {
            Some(m) if m.mode == Mode::Broadcast => m.members.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    pub fn commit(&self, key: OffsetKey, offset: u64, at_ms: i64) {
        self.offsets.set(key, Committed { offset, at_ms });
    }

    /// The key a member's offsets live under: its own in broadcast mode, the group's otherwise.
    pub fn member_key(&self, group: &str, topic: &str, member: &str, partition: u32) -> OffsetKey {
        let broadcast = self
            .membership(group, topic)
            .is_some_and(|m| m.mode == Mode::Broadcast);
        offset_key(group, broadcast.then_some(member), topic, partition)
    }
}

fn assignment(m: &Membership, member: &str) -> Assignment {
    let start = m.members.get(member).map_or(Start::Earliest, |s| s.start);
    Assignment {
        generation: m.generation,
        partitions: m.owned.get(member).cloned().unwrap_or_default(),
        start,
        mode: m.mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join<'a>(
        group: &'a str,
        topic: &'a str,
        member: &'a str,
        mode: Mode,
        start: Start,
    ) -> Join<'a> {
        Join {
            group,
            topic,
            member,
            mode,
            start,
            opaque: 0,
        }
    }

    fn groups() -> Groups {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            session_timeout: Duration::from_millis(100),
            members_per_group_max: 8,
            groups_max: 8,
        };
        Groups::new(limits, OffsetStore::open(dir.path()).unwrap())
    }

    #[test]
    fn joins_rebalance_and_a_stale_owner_cannot_commit() {
        let mut g = groups();
        let now = Instant::now();
        let a = g
            .join(
                &join("g", "t", "m1", Mode::Cluster, Start::Earliest),
                4,
                now,
            )
            .unwrap();
        assert_eq!((a.generation, a.partitions.clone()), (1, vec![0, 1, 2, 3]));
        let b = g
            .join(
                &join("g", "t", "m2", Mode::Cluster, Start::Earliest),
                4,
                now,
            )
            .unwrap();
        assert_eq!((b.generation, b.partitions), (2, vec![2, 3]));
        assert!(matches!(
            g.authorize_commit("g", "t", 3, Some("m1"), 1, now),
            Err(GroupError::NotOwner { .. })
        ));
        assert!(g.authorize_commit("g", "t", 3, Some("m2"), 2, now).is_ok());
        assert!(g.authorize_commit("g", "t", 1, Some("m1"), 2, now).is_ok());
        let again = g
            .join(
                &join("g", "t", "m1", Mode::Cluster, Start::Earliest),
                4,
                now,
            )
            .unwrap();
        assert_eq!(
            again.generation, 2,
            "re-joining as a live member changes nothing"
        );
    }

    #[test]
    fn silent_members_expire_and_the_survivor_takes_everything() {
        let mut g = groups();
        let t0 = Instant::now();
        g.join(&join("g", "t", "m1", Mode::Cluster, Start::Earliest), 4, t0)
            .unwrap();
        g.join(&join("g", "t", "m2", Mode::Cluster, Start::Earliest), 4, t0)
            .unwrap();
        let later = t0 + Duration::from_millis(80);
        g.heartbeat("g", "t", "m2", 4, later).unwrap();
        assert_eq!(
            g.expire(t0 + Duration::from_millis(150)),
            vec!["g".to_string()]
        );
        let a = g.heartbeat("g", "t", "m2", 4, later).unwrap();
        assert_eq!((a.generation, a.partitions), (3, vec![0, 1, 2, 3]));
        assert!(matches!(
            g.heartbeat("g", "t", "m1", 4, later),
            Err(GroupError::UnknownMember(_))
        ));
    }

    #[test]
    fn broadcast_members_get_every_partition_and_their_own_offset_keys() {
        let mut g = groups();
        let now = Instant::now();
        g.join(&join("g", "t", "a", Mode::Broadcast, Start::Latest), 3, now)
            .unwrap();
        let b = g
            .join(&join("g", "t", "b", Mode::Broadcast, Start::Latest), 3, now)
            .unwrap();
        assert_eq!(b.partitions, vec![0, 1, 2]);
        let key = g
            .authorize_commit("g", "t", 1, Some("b"), b.generation as i64, now)
            .unwrap();
        assert_eq!(key.0, "g@b");
        assert!(matches!(
            g.join(&join("g", "t", "c", Mode::Cluster, Start::Latest), 3, now),
            Err(GroupError::ModeClash { .. })
        ));
    }
}
