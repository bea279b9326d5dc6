//! The few libc calls std does not wrap (declared here: std already links libc), and /proc
//! readers for a process's CPU time and memory.

use std::time::Duration;

#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn sysconf(name: i32) -> i64;
    fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
}

const POSIX_FADV_DONTNEED: i32 = 4;

const SC_CLK_TCK: i32 = 2;
const RLIMIT_NOFILE: i32 = 7;
const PR_SET_TIMERSLACK: i32 = 29;
pub const SIGTERM: i32 = 15;

pub fn signal(pid: u32, sig: i32) {
    unsafe {
        kill(pid as i32, sig);
    }
}

/// Raises this process's open-file limit to its hard limit; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    let mut r = RLimit { cur: 0, max: 0 };
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.cur < r.max {
            let want = RLimit {
                cur: r.max,
                max: r.max,
            };
            if setrlimit(RLIMIT_NOFILE, &want) == 0 {
                return r.max;
            }
        }
    }
    r.cur
}

/// Makes sleeps of the calling thread wake within 1 us of their deadline (default slack: 50 us),
/// for the paced producer of the latency run.
pub fn tight_timer_slack() {
    unsafe {
        prctl(PR_SET_TIMERSLACK, 1_000, 0, 0, 0);
    }
}

fn clock_ticks() -> f64 {
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a whole process (all threads), in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

pub fn self_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat").unwrap_or(0.0)
}

fn cpu_seconds_of(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')' comes field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Bytes a process has caused to be read from storage (`read_bytes` of /proc/<pid>/io):
/// its reads and its page faults on files that missed the page cache, readahead included.
pub fn read_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Memory of a process from /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub vm_rss_kib: u64,
    pub threads: u64,
}

pub fn mem(pid: u32) -> Option<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut m = Mem::default();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let key = it.next().unwrap_or("");
        let val: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match key {
            "RssAnon:" => m.rss_anon_kib = val,
            "RssFile:" => m.rss_file_kib = val,
            "VmRSS:" => m.vm_rss_kib = val,
            "Threads:" => m.threads = val,
            _ => {}
        }
    }
    Some(m)
}

/// Bytes a directory tree occupies on disk (allocated blocks, so sparse files count what
/// they use).
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for_each_file(dir, &mut |_, md| total += md.blocks() * 512);
    total
}

/// Writes back and drops from the page cache every file under `dir`, so the next read of them
/// comes from the disk (pages a running process still maps stay: call it with the broker
/// stopped). Returns the files advised.
pub fn evict_page_cache(dir: &std::path::Path) -> u64 {
    use std::os::fd::AsRawFd;
    let mut files = 0;
    for_each_file(dir, &mut |path, _| {
        if let Ok(f) = std::fs::File::open(path) {
            // DONTNEED skips dirty pages: write them back first.
            let _ = f.sync_data();
            // SAFETY: an advice call on a descriptor we own; it touches no memory of ours.
            unsafe {
                posix_fadvise(f.as_raw_fd(), 0, 0, POSIX_FADV_DONTNEED);
            }
            files += 1;
        }
    });
    files
}

/// Calls `f` with every file (not directory) under `dir`, recursively; unreadable entries are
/// skipped.
fn for_each_file(dir: &std::path::Path, f: &mut dyn FnMut(&std::path::Path, &std::fs::Metadata)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            for_each_file(&e.path(), f);
        } else {
            f(&e.path(), &md);
        }
    }
}

/// The machine's page cache (`Cached:` of /proc/meminfo), KiB.
pub fn page_cache_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Cached:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// CPU seconds per thread name of a process (threads with the same name are summed).
pub fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let Some(cpu) = cpu_seconds_of(&p.join("stat").to_string_lossy()) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 += cpu,
            None => out.push((name, cpu)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The 1-minute load average: other work on the machine skews every figure.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// (busy, total) jiffies over all CPUs from /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Busy fraction of the whole machine (0..1) over `ms` milliseconds.
pub fn machine_busy(ms: u64) -> f64 {
    let Some((b0, t0)) = cpu_jiffies() else {
        return 0.0;
    };
    sleep_ms(ms);
    let Some((b1, t1)) = cpu_jiffies() else {
        return 0.0;
    };
    if t1 <= t0 {
        return 0.0;
    }
    (b1 - b0) as f64 / (t1 - t0) as f64
}

/// Waits (at most `max_wait_s`) until the machine is mostly idle before a measurement starts:
/// on a shared 2-core machine other work skews every figure. Returns the busy fraction seen
/// last.
pub fn wait_quiet(threshold: f64, max_wait_s: f64) -> f64 {
    let start = std::time::Instant::now();
    let mut warned = false;
    loop {
        let b = machine_busy(500);
        if b <= threshold || start.elapsed().as_secs_f64() >= max_wait_s {
            if b > threshold && max_wait_s > 0.0 {
                eprintln!(
                    "  (machine still {:.0}% busy after {:.0} s; measuring anyway)",
                    b * 100.0,
                    max_wait_s
                );
            }
            return b;
        }
        if !warned {
            eprintln!(
                "  waiting for the machine to calm down ({:.0}% busy)...",
                b * 100.0
            );
            warned = true;
        }
    }
}
