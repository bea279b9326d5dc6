//! Committed offsets: an in-memory map (a commit is one insert, it never touches the
//! commitlog) made durable by a background thread that rewrites `<data-dir>/offsets`
//! atomically (temp file, fsync, rename) at most every `flush_interval`, only when something
//! changed, and once more at shutdown. A crash loses at most the last interval's commits;
//! consumers then re-read those messages (at-least-once).
//!
//! File format, one line per offset: `<key> <topic> <partition> <offset> <commit unix ms>`,
//! where key is the group, or `group@member` for a broadcast member's own offsets.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// (key, topic, partition)
pub type OffsetKey = (String, String, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub at_ms: i64,
}

#[derive(Default)]
struct State {
    map: BTreeMap<OffsetKey, Committed>,
    /// Entries per key (group, or group@member).
    keys: HashMap<String, usize>,
    dirty: bool,
    stop: bool,
}

pub struct OffsetStore {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

impl OffsetStore {
    /// Loads `<dir>/offsets` if present.
    pub fn open(dir: &Path) -> io::Result<Arc<OffsetStore>> {
        let path = dir.join("offsets");
        let mut map = BTreeMap::new();
        let mut keys: HashMap<String, usize> = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let f: Vec<&str> = line.split(' ').collect();
                    let parsed = (f.len() == 5)
                        .then(|| {
                            Some((
                                (f[0].to_owned(), f[1].to_owned(), f[2].parse().ok()?),
                                Committed {
                                    offset: f[3].parse().ok()?,
                                    at_ms: f[4].parse().ok()?,
                                },
                            ))
                        })
                        .flatten();
                    match parsed {
                        Some((k, c)) => {
                            *keys.entry(k.0.clone()).or_default() += 1;
                            map.insert(k, c);
                        }
                        None => {
                            log::warn!("{}: line {} unreadable, skipped", path.display(), n + 1)
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Arc::new(OffsetStore {
            path,
            state: Mutex::new(State {
                map,
                keys,
                ..State::default()
            }),
            wake: Condvar::new(),
        }))
    }

    pub fn get(&self, key: &OffsetKey) -> Option<Committed> {
        self.state
            .lock()
            .expect("offsets lock")
            .map
            .get(key)
            .copied()
    }

    pub fn set(&self, key: OffsetKey, c: Committed) {
        let mut s = self.state.lock().expect("offsets lock");
        let group = key.0.clone();
        if s.map.insert(key, c).is_none() {
            *s.keys.entry(group).or_default() += 1;
        }
        s.dirty = true;
    }

    /// Whether any offset is stored under `key` (a group, or group@member).
    pub fn has_key(&self, key: &str) -> bool {
        self.state
            .lock()
            .expect("offsets lock")
            .keys
            .contains_key(key)
    }

    /// Every committed offset (for stats).
    pub fn snapshot(&self) -> Vec<(OffsetKey, Committed)> {
        let s = self.state.lock().expect("offsets lock");
        s.map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Distinct keys (groups and broadcast members) with offsets.
    pub fn key_count(&self) -> usize {
        self.state.lock().expect("offsets lock").keys.len()
    }

    /// The groups with offsets (broadcast members' keys count as their group).
    pub fn group_names(&self) -> std::collections::HashSet<String> {
        let s = self.state.lock().expect("offsets lock");
        s.keys
            .keys()
            .map(|k| k.split_once('@').map_or(k.as_str(), |(g, _)| g).to_owned())
            .collect()
    }

    /// Writes the file now if anything changed.
    pub fn flush(&self) -> io::Result<()> {
        let text = {
            let mut s = self.state.lock().expect("offsets lock");
            if !s.dirty {
                return Ok(());
            }
            s.dirty = false;
            let mut text = String::new();
            for ((key, topic, p), c) in &s.map {
                text.push_str(&format!("{key} {topic} {p} {} {}\n", c.offset, c.at_ms));
            }
            text
        };
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Starts the thread that flushes every `interval`.
    pub fn start_flusher(self: &Arc<Self>, interval: Duration) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("imago-offsets".into())
            .spawn(move || loop {
                let stop = {
                    let s = me.state.lock().expect("offsets lock");
                    let (s, _) = me.wake.wait_timeout(s, interval).expect("offsets lock");
                    s.stop
                };
                if let Err(e) = me.flush() {
                    log::error!("writing committed offsets: {e}");
                }
                if stop {
                    return;
                }
            })
            .expect("spawn offsets thread")
    }

    pub fn stop(&self) {
        self.state.lock().expect("offsets lock").stop = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_a_flush_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        s.set(
            ("g".into(), "t".into(), 3),
            Committed {
                offset: 42,
                at_ms: 7,
            },
        );
        s.set(
            ("g@m1".into(), "t".into(), 0),
            Committed {
                offset: 5,
                at_ms: 8,
            },
        );
        s.flush().unwrap();
        let again = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(
            again.get(&("g".into(), "t".into(), 3)),
            Some(Committed {
                offset: 42,
                at_ms: 7
            })
        );
        assert_eq!(again.key_count(), 2);
    }
}
