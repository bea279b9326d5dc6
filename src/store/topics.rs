//! The topic registry: topic names, their partition counts (persisted in
//! `index/<topic>/topic.meta`), and each partition's index, loaded on first use so start-up
//! time does not grow with the number of idle partitions.

use super::fs;
use super::index::{Entry, MapBudget, PartIndex};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

const META_FILE: &str = "topic.meta";

pub struct Partition {
    dir: PathBuf,
    index: OnceLock<Arc<PartIndex>>,
    load_lock: Mutex<()>,
}

impl Partition {
    /// The loaded index, if it has been loaded.
    pub fn loaded(&self) -> Option<&Arc<PartIndex>> {
        self.index.get()
    }
}

pub struct Topic {
    pub name: String,
    dir: PathBuf,
    partitions: RwLock<Vec<Arc<Partition>>>,
    round_robin: AtomicU32,
}

impl Topic {
    pub fn partition_count(&self) -> u32 {
        self.partitions.read().expect("partitions lock").len() as u32
    }

    pub fn partition(&self, p: u32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock")
            .get(p as usize)
            .cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").clone()
    }

    /// The next partition for a put that let the broker choose.
    pub fn next_round_robin(&self) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partition_count().max(1)
    }
}

pub struct Topics {
    root: PathBuf,
    entries_per_segment: u64,
    pub budget: Arc<MapBudget>,
    map: RwLock<HashMap<String, Arc<Topic>>>,
    /// Entries pointing at or past this commitlog position are cut when an index loads:
    /// the end found by recovery. `u64::MAX` while recovery runs.
    log_end: AtomicU64,
    /// Entries pointing below this are gone (retention).
    log_min: AtomicU64,
    create_lock: Mutex<()>,
    /// Set once recovery is done: `(topic, partition, offset, entry)` -> the entry is stale
    /// (checked on the last entries of an index as it loads).
    stale_check: OnceLock<StaleCheck>,
}

pub type StaleCheck = Box<dyn Fn(&str, u32, u64, &Entry) -> bool + Send + Sync>;

impl Topics {
    /// Reads every topic's metadata under `root` (one file per topic, not per partition).
    pub fn open(root: &Path, entries_per_segment: u64, maps_max: usize) -> io::Result<Topics> {
        std::fs::create_dir_all(root)?;
        let topics = Topics {
            root: root.to_path_buf(),
            entries_per_segment,
            budget: Arc::new(MapBudget::new(maps_max)),
            map: RwLock::new(HashMap::new()),
            log_end: AtomicU64::new(u64::MAX),
            log_min: AtomicU64::new(0),
            create_lock: Mutex::new(()),
            stale_check: OnceLock::new(),
        };
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta = entry.path().join(META_FILE);
            let Ok(text) = std::fs::read_to_string(&meta) else {
                log::warn!(
                    "{}: no {META_FILE}; ignoring the directory",
                    entry.path().display()
                );
                continue;
            };
            let count = parse_meta(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad {}", meta.display()),
                )
            })?;
            topics.insert(&name, count);
        }
        Ok(topics)
    }

    fn insert(&self, name: &str, count: u32) -> Arc<Topic> {
        let dir = self.root.join(name);
        let partitions = (0..count)
            .map(|p| Arc::new(new_partition(&dir, p)))
            .collect();
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            dir,
            partitions: RwLock::new(partitions),
            round_robin: AtomicU32::new(0),
        });
        self.map
            .write()
            .expect("topics lock")
            .insert(name.to_owned(), topic.clone());
        topic
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.map.read().expect("topics lock").get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn count(&self) -> usize {
        self.map.read().expect("topics lock").len()
    }

    /// Creates `name` with `partitions`, or grows it to that many; the metadata is durable on
    /// return. Never shrinks a topic.
    pub fn ensure(&self, name: &str, partitions: u32) -> io::Result<Arc<Topic>> {
        if let Some(t) = self.get(name) {
            if t.partition_count() >= partitions {
                return Ok(t);
            }
        }
        let _guard = self.create_lock.lock().expect("create lock");
        let dir = self.root.join(name);
        let topic = match self.get(name) {
            Some(t) => t,
            None => {
                std::fs::create_dir_all(&dir)?;
                fs::write_atomic(&dir.join(META_FILE), meta_text(partitions).as_bytes())?;
                fs::sync_dir(&self.root)?;
                return Ok(self.insert(name, partitions));
            }
        };
        let have = topic.partition_count();
        if have < partitions {
            fs::write_atomic(&dir.join(META_FILE), meta_text(partitions).as_bytes())?;
            let mut parts = topic.partitions.write().expect("partitions lock");
            parts.extend((have..partitions).map(|p| Arc::new(new_partition(&topic.dir, p))));
        }
        Ok(topic)
    }

    /// The index of a partition, loading it on first use.
    pub fn index(&self, part: &Partition) -> io::Result<Arc<PartIndex>> {
        if let Some(idx) = part.index.get() {
            return Ok(idx.clone());
        }
        let _guard = part.load_lock.lock().expect("load lock");
        if let Some(idx) = part.index.get() {
            return Ok(idx.clone());
        }
        let idx = PartIndex::load(
            &part.dir,
            self.entries_per_segment,
            self.budget.clone(),
            self.log_end.load(Ordering::Acquire),
        )?;
        idx.trim_below(self.log_min.load(Ordering::Acquire))?;
        if let Some(check) = self.stale_check.get() {
            let topic = part.dir.parent().and_then(|t| t.file_name());
            let id = part.dir.file_name().and_then(|p| p.to_str()?.parse().ok());
            if let (Some(topic), Some(id)) = (topic.and_then(|t| t.to_str()), id) {
                let cut = idx.cut_stale(|n, e| check(topic, id, n, e))?;
                if cut > 0 {
                    log::warn!("{topic}/{id}: cut {cut} stale index entries at load");
                }
            }
        }
        let idx = Arc::new(idx);
        let _ = part.index.set(idx.clone());
        Ok(idx)
    }

    pub fn set_log_end(&self, end: u64) {
        self.log_end.store(end, Ordering::Release);
    }

    /// Installs the stale-entry check applied to indexes loaded from now on.
    pub fn set_stale_check(&self, check: StaleCheck) {
        let _ = self.stale_check.set(check);
    }

    pub fn set_log_min(&self, min: u64) {
        self.log_min.store(min, Ordering::Release);
    }

    /// Every partition index loaded so far.
    pub fn loaded(&self) -> Vec<Arc<PartIndex>> {
        let mut out = Vec::new();
        for t in self.all() {
            for p in t.partitions() {
                if let Some(idx) = p.loaded() {
                    out.push(idx.clone());
                }
            }
        }
        out
    }
}

fn new_partition(topic_dir: &Path, id: u32) -> Partition {
    Partition {
        dir: topic_dir.join(id.to_string()),
        index: OnceLock::new(),
        load_lock: Mutex::new(()),
    }
}

fn meta_text(partitions: u32) -> String {
    format!("version=1\npartitions={partitions}\n")
}

fn parse_meta(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("partitions="))
        .and_then(|v| v.trim().parse().ok())
}
