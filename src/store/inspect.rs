//! Offline verification and dumping of a data directory, for operators (`imago-inspect`):
//! record CRCs, index entries against records, records against index entries (lost entries).
//! Read-only: it never writes, so it is safe on a copy or a stopped broker's directory.

use super::fs;
use super::index::{Entry, ENTRY_BYTES};
use super::record::{self, RecordView, Slot};
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub records: u64,
    pub log_start: u64,
    pub log_end: u64,
    /// Corrupt commitlog ranges followed by valid records: `(from, to, why)`.
    pub corrupt: Vec<(u64, u64, String)>,
    pub partitions: u64,
    pub index_entries: u64,
    pub holes: u64,
    /// Index entries that do not point at their record.
    pub index_errors: Vec<String>,
    /// Valid records that no index entry points at (lost entries: a consumer never sees them).
    pub lost_entries: Vec<String>,
    /// The durable mark (`<dir>/durable`), if one was written.
    pub durable_mark: Option<u64>,
    /// After an unclean stop: records at or past the checkpoint's index-durable position
    /// whose offset lies past the end of their index. The writer keeps a partition's newest
    /// entries in memory (`super::stage`), so a crash loses them; the next start's recovery
    /// scans from that position and indexes these records. Not a problem.
    pub unindexed_for_recovery: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty() && self.index_errors.is_empty() && self.lost_entries.is_empty()
    }
}

/// The durable mark persisted in a data directory: every commitlog byte below it was on
/// stable storage when it was written.
pub fn durable_mark(dir: &Path) -> Option<u64> {
    super::recovery::read_durable_mark(dir)
}

struct Log {
    segs: Vec<(u64, memmap2::Mmap)>,
}

impl Log {
    fn open(dir: &Path) -> io::Result<Log> {
        let mut segs = Vec::new();
        for e in std::fs::read_dir(dir.join("commitlog"))? {
            let e = e?;
            if let Some(base) = e.file_name().to_str().and_then(fs::parse_name) {
                let f = std::fs::File::open(e.path())?;
                // SAFETY: read-only map; the tool's contract is a directory no process writes.
                segs.push((base, unsafe { memmap2::Mmap::map(&f)? }));
            }
        }
        segs.sort_by_key(|s| s.0);
        Ok(Log { segs })
    }

    fn record_at(&self, pos: u64, len: usize) -> Option<&[u8]> {
        let i = self
            .segs
            .partition_point(|(b, m)| b + m.len() as u64 <= pos);
        let (base, map) = self.segs.get(i).filter(|(b, _)| *b <= pos)?;
        let at = (pos - base) as usize;
        map.get(at..at + len)
    }
}

/// Verifies every record's CRC along the log, every index entry against its record, and that
/// every valid record has its index entry.
pub fn verify(dir: &Path) -> io::Result<Report> {
    let log = Log::open(dir)?;
    let mut rep = Report {
        segments: log.segs.len(),
        durable_mark: durable_mark(dir),
        ..Report::default()
    };
    rep.log_start = log.segs.first().map_or(0, |s| s.0);
    // Past this position a missing tail entry is recovery's to make (see the field's doc).
    let recovery_from = match super::recovery::Checkpoint::read(dir) {
        Some(c) if c.clean => u64::MAX,
        Some(c) => c.index_durable,
        None => 0,
    };
    let mut indexes = HashMap::new();
    for (topic, part, dir) in partition_dirs(dir)? {
        indexes.insert((topic.into_bytes(), part), read_index(&dir)?);
    }
    let mut check_indexed = |r: &RecordView<'_>, pos: u64| {
        let key = (r.topic.to_vec(), r.partition);
        let problem = match indexes.get(&key) {
            None => Some("its partition has no index".to_owned()),
            Some(entries) => match entries.first() {
                Some(&(first, _)) if r.offset < first => None, // index trimmed by retention
                _ => match entries
                    .first()
                    .and_then(|&(first, _)| entries.get(usize::try_from(r.offset - first).ok()?))
                {
                    None if pos >= recovery_from => {
                        rep.unindexed_for_recovery += 1;
                        None
                    }
                    None => Some("no index entry".to_owned()),
                    Some((_, e)) if e.pos == pos => None,
                    Some((_, e)) if e.is_hole() => Some("its offset is a hole".to_owned()),
                    Some((_, e)) => Some(format!("its offset is indexed at position {}", e.pos)),
                },
            },
        };
        if let Some(p) = problem {
            rep.lost_entries.push(format!(
                "{}/{} offset {} (position {pos}): {p}",
                String::from_utf8_lossy(r.topic),
                r.partition,
                r.offset
            ));
        }
    };
    'segments: for (i, (base, map)) in log.segs.iter().enumerate() {
        let mut at = 0usize;
        while at < map.len() {
            match record::read_slot(&map[at..]) {
                Ok(Slot::Record(r)) => {
                    rep.records += 1;
                    check_indexed(&r, base + at as u64);
                    at += r.bytes.len();
                    rep.log_end = base + at as u64;
                }
                Ok(Slot::End) => {
                    rep.log_end = base + map.len() as u64;
                    continue 'segments;
                }
                Err(why) => {
                    let later = (at + 1..map.len().saturating_sub(8))
                        .find(|&j| matches!(record::read_slot(&map[j..]), Ok(Slot::Record(_))));
                    match later {
                        Some(j) => {
                            rep.corrupt.push((
                                base + at as u64,
                                base + j as u64,
                                format!("{why:?}"),
                            ));
                            at = j;
                        }
                        None if i + 1 < log.segs.len() && !blank(&map[at..]) => {
                            rep.corrupt.push((
                                base + at as u64,
                                base + map.len() as u64,
                                format!("{why:?}"),
                            ));
                            continue 'segments;
                        }
                        None => break 'segments,
                    }
                }
            }
        }
    }
    let mut indexes: Vec<_> = indexes.into_iter().collect();
    indexes.sort_by(|a, b| a.0.cmp(&b.0));
    for ((topic, part), entries) in indexes {
        let topic = String::from_utf8_lossy(&topic).into_owned();
        rep.partitions += 1;
        for (n, e) in entries {
            rep.index_entries += 1;
            if e.is_hole() {
                rep.holes += 1;
                continue;
            }
            let problem = match log.record_at(e.pos, e.size as usize).map(record::decode) {
                None if e.pos < rep.log_start => continue, // deleted by retention
                None => Some("points outside the log".to_owned()),
                Some(Err(why)) => Some(format!("record {why:?}")),
                Some(Ok(r))
                    if r.offset != n || r.partition != part || r.topic != topic.as_bytes() =>
                {
                    Some(format!(
                        "points at {}/{}@{}",
                        String::from_utf8_lossy(r.topic),
                        r.partition,
                        r.offset
                    ))
                }
                Some(Ok(_)) => None,
            };
            if let Some(p) = problem {
                rep.index_errors.push(format!(
                    "{topic}/{part} offset {n} (position {}): {p}",
                    e.pos
                ));
            }
        }
    }
    Ok(rep)
}

fn blank(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn partition_dirs(dir: &Path) -> io::Result<Vec<(String, u32, PathBuf)>> {
    let mut out = Vec::new();
    let root = dir.join("index");
    if !root.exists() {
        return Ok(out);
    }
    for t in std::fs::read_dir(root)? {
        let t = t?;
        let Some(topic) = t.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !t.path().is_dir() {
            continue;
        }
        for p in std::fs::read_dir(t.path())? {
            let p = p?;
            if let Some(id) = p.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push((topic.clone(), id, p.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every written entry of a partition's index, with its offset.
fn read_index(dir: &Path) -> io::Result<Vec<(u64, Entry)>> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(fs::parse_name)
                .map(|b| (b, e.path()))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for (base, path) in files {
        let bytes = std::fs::read(path)?;
        for (i, chunk) in bytes.chunks_exact(ENTRY_BYTES as usize).enumerate() {
            let e = Entry::decode(chunk);
            if e.is_empty() {
                break;
            }
            out.push((base + i as u64, e));
        }
    }
    Ok(out)
}

/// Prints the records of one partition from `from`, at most `count`, one line each.
pub fn dump(
    dir: &Path,
    topic: &str,
    partition: u32,
    from: u64,
    count: u64,
    out: &mut impl Write,
) -> io::Result<()> {
    let log = Log::open(dir)?;
    let idx = read_index(&dir.join("index").join(topic).join(partition.to_string()))?;
    for (n, e) in idx
        .into_iter()
        .filter(|(n, _)| *n >= from)
        .take(count as usize)
    {
        if e.is_hole() {
            writeln!(out, "{n}\tHOLE (record lost to corruption)")?;
            continue;
        }
        match log.record_at(e.pos, e.size as usize).map(record::decode) {
            Some(Ok(r)) => writeln!(out, "{}", describe(&r))?,
            Some(Err(why)) => writeln!(out, "{n}\tCORRUPT {why:?} at position {}", e.pos)?,
            None => writeln!(out, "{n}\tGONE (position {} deleted)", e.pos)?,
        }
    }
    Ok(())
}

/// One human-readable line for a record.
pub fn describe(r: &RecordView<'_>) -> String {
    let body = String::from_utf8_lossy(&r.body[..r.body.len().min(64)]);
    format!(
        "{}\tid={} ts={} flag={} tag={:?} props={:?} body[{}]={:?}",
        r.offset,
        r.msg_id,
        r.store_ts_ms,
        r.flag,
        String::from_utf8_lossy(r.tag),
        String::from_utf8_lossy(r.props),
        r.body.len(),
        body
    )
}
