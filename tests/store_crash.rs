//! kill -9 of a real writer process in `sync` mode: every acknowledged record must be there,
//! intact, after restart. The writer is this test binary re-executed with an environment
//! variable, so it runs the real store in a separate process.

mod store_util;
use imago::store::{FlushMode, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use store_util::*;

const CHILD_DIR_ENV: &str = "IMAGO_TEST_WRITER_DIR";
const PARTITIONS: u32 = 4;

fn body_of(partition: u32, seq: u64) -> Vec<u8> {
    format!("p{partition}-s{seq}-{}", "d".repeat((seq % 200) as usize)).into_bytes()
}

/// Entry point of the child process (does nothing unless started by the crash test).
#[test]
#[ignore = "entry point of the writer process that sync_mode_writer_killed_with_sigkill_loses_no_acknowledged_record starts"]
fn sync_writer_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mut cfg = small_config(std::path::Path::new(&dir));
    cfg.flush = FlushMode::Sync;
    let store = std::sync::Arc::new(Store::open(cfg).unwrap());
    store.ensure_topic("crash", PARTITIONS).unwrap();
    let threads: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let store = store.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut seq = 0u64;
                loop {
                    let mut acked = Vec::new();
                    let mut last = None;
                    for _ in 0..16 {
                        let a = store.append(&msg("crash", p, &body_of(p, seq))).unwrap();
                        acked.push(format!("ack {p} {} {seq}\n", a.offset));
                        last = Some(a);
                        seq += 1;
                    }
                    assert!(store.wait_durable(last.unwrap().end_pos, Duration::from_secs(10)));
                    let mut out = std::io::stdout().lock();
                    out.write_all(acked.concat().as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sync_mode_writer_killed_with_sigkill_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sync_writer_child_process",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let began = Instant::now();
    while acked.len() < 3000 && began.elapsed() < Duration::from_secs(20) {
        let Some(Ok(line)) = lines.next() else { break };
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() == 4 && f[0] == "ack" {
            acked.push((
                f[1].parse::<u32>().unwrap(),
                f[2].parse::<u64>().unwrap(),
                f[3].parse::<u64>().unwrap(),
            ));
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acked.len() >= 500,
        "the writer acknowledged only {} records",
        acked.len()
    );

    let mut cfg = small_config(dir.path());
    cfg.flush = FlushMode::Sync;
    let store = Store::open(cfg).unwrap();
    let mut partitions: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    for p in 0..PARTITIONS {
        partitions.push(read_all(&store, "crash", p, 0));
    }
    for (p, offset, seq) in &acked {
        let got = partitions[*p as usize].get(*offset as usize);
        assert_eq!(
            got,
            Some(&(*offset, body_of(*p, *seq))),
            "acknowledged {p}@{offset} missing or damaged"
        );
    }
    let report = imago::store::inspect::verify(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    println!(
        "{} acknowledged records verified after kill -9",
        acked.len()
    );
}
