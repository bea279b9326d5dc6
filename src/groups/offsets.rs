//! Committed offsets: an in-memory map (a commit is one insert, it never touches the
//! commitlog) made durable by a background thread that rewrites `<data-dir>/offsets`
//! atomically (temp file, fsync, rename) at most every `flush_interval`, only when something
//! changed, and once more at shutdown. A crash loses at most the last interval's commits;
//! consumers then re-read those messages (at-least-once).
//!
//! The writer never formats or writes under the lock that commits, fetches and joins take on
//! the event loop: a commit also records its entry in `pending` (one entry per key, so it holds
//! at most as many entries as the map), and the writer swaps `pending` out under that lock
//! (O(1)), merges it into its own copy of every offset and formats and writes that copy with the
//! lock released. A write that fails keeps the copy marked unwritten, so the next interval
//! retries it even when nothing new was committed. The cost is memory: up to three entries per
//! offset (the map, `pending`, the writer's copy).
//!
//! File format, one line per offset: `<key> <topic> <partition> <offset> <commit unix ms>`,
//! where key is the group, or `group@member` for a broadcast member's own offsets.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
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
    /// Commits the writer has not taken yet (the latest per key).
    pending: HashMap<OffsetKey, Committed>,
    stop: bool,
}

/// The writer's side, locked only by [`OffsetStore::flush`] (which it also serialises).
#[derive(Default)]
struct Writer {
    /// Every offset as of the last time `pending` was taken.
    copy: BTreeMap<OffsetKey, Committed>,
    /// `copy` holds commits the file does not: nothing written yet, or the last write failed.
    unwritten: bool,
    /// An empty map swapped in for `pending`, so neither side reallocates every interval.
    spare: HashMap<OffsetKey, Committed>,
}

pub struct OffsetStore {
    path: PathBuf,
    state: Mutex<State>,
    writer: Mutex<Writer>,
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
        let writer = Writer {
            copy: map.clone(),
            ..Writer::default()
        };
        Ok(Arc::new(OffsetStore {
            path,
            state: Mutex::new(State {
                map,
                keys,
                ..State::default()
            }),
            writer: Mutex::new(writer),
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
        s.pending.insert(key.clone(), c);
        let group = key.0.clone();
        if s.map.insert(key, c).is_none() {
            *s.keys.entry(group).or_default() += 1;
        }
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

    /// Writes the file now if anything changed since the last successful write (a failed write
    /// is tried again by the next call). Holds the commit lock only to swap `pending` out.
    pub fn flush(&self) -> io::Result<()> {
        let mut w = self.writer.lock().expect("offsets writer lock");
        let w = &mut *w;
        {
            let mut s = self.state.lock().expect("offsets lock");
            std::mem::swap(&mut s.pending, &mut w.spare);
        }
        if !w.spare.is_empty() {
            w.copy.extend(w.spare.drain());
            w.unwritten = true;
        }
        if !w.unwritten {
            return Ok(());
        }
        let mut text = String::new();
        for ((key, topic, p), c) in &w.copy {
            let _ = writeln!(text, "{key} {topic} {p} {} {}", c.offset, c.at_ms);
        }
        self.write_file(text.as_bytes())?;
        w.unwritten = false;
        Ok(())
    }

    /// Replaces the file atomically: temp file, fsync, rename, fsync of the directory.
    fn write_file(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
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
            .spawn(move || {
                let mut failing = false;
                loop {
                    let stop = {
                        let s = me.state.lock().expect("offsets lock");
                        let (s, _) = me.wake.wait_timeout(s, interval).expect("offsets lock");
                        s.stop
                    };
                    match me.flush() {
                        Err(e) if !failing => {
                            log::error!(
                                "writing committed offsets (retried every {interval:?}): {e}"
                            );
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) if failing => {
                            log::info!("committed offsets written again");
                            failing = false;
                        }
                        Ok(()) => {}
                    }
                    if stop {
                        return;
                    }
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

    fn key(g: &str, p: u32) -> OffsetKey {
        (g.into(), "t".into(), p)
    }

    fn at(offset: u64) -> Committed {
        Committed { offset, at_ms: 1 }
    }

    #[test]
    fn a_failed_write_is_retried_by_the_next_flush_without_a_new_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        // A directory where the temp file goes makes the write fail.
        let blocker = dir.path().join("offsets.tmp");
        std::fs::create_dir(&blocker).unwrap();
        s.set(key("g", 0), at(42));
        assert!(s.flush().is_err(), "the write must fail while blocked");
        assert!(!dir.path().join("offsets").exists());
        std::fs::remove_dir(&blocker).unwrap();
        s.flush().unwrap();
        let again = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(again.get(&key("g", 0)), Some(at(42)), "the retry wrote it");
    }

    #[test]
    fn commits_and_lookups_do_not_wait_for_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        s.set(key("g", 0), at(1));
        // Hold the writer's lock as a slow flush (formatting, fsync) would.
        let writing = s.writer.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let store = s.clone();
        let committer = std::thread::spawn(move || {
            store.set(key("g", 1), at(2));
            let _ = tx.send((store.get(&key("g", 1)), store.key_count()));
        });
        let got = rx.recv_timeout(Duration::from_secs(10));
        drop(writing);
        committer.join().unwrap();
        assert_eq!(
            got,
            Ok((Some(at(2)), 1)),
            "the commit waited for the writer"
        );
    }

    #[test]
    fn a_commit_after_a_flush_is_written_by_the_next_one_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        s.set(key("g", 0), at(1));
        s.flush().unwrap();
        s.set(key("g", 0), at(5));
        s.set(key("h", 2), at(7));
        s.flush().unwrap();
        let again = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(again.get(&key("g", 0)), Some(at(5)));
        assert_eq!(again.get(&key("h", 2)), Some(at(7)));
        assert_eq!(again.key_count(), 2);
        // Reloaded offsets are the writer's starting copy: one more commit rewrites them all.
        again.set(key("g", 1), at(9));
        again.flush().unwrap();
        let third = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(third.snapshot().len(), 3, "{:?}", third.snapshot());
    }
}
