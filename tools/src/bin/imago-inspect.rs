//! imago-inspect: verifies a data directory (every record's CRC, every index entry against its
//! record, every record against its index entry) and dumps a partition's records. Read-only; run it on a stopped broker's directory
//! or a copy.
//!
//! ```text
//! imago-inspect verify DIR
//! imago-inspect dump DIR TOPIC PARTITION [FROM_OFFSET] [COUNT]
//! ```
//! `verify` exits 0 when everything checks out, 1 when it found problems, 2 on bad usage.

use imago::store::inspect;
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: imago-inspect verify DIR\n       imago-inspect dump DIR TOPIC PARTITION [FROM_OFFSET] [COUNT]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["verify", dir] => verify(Path::new(dir)),
        ["dump", dir, topic, partition, rest @ ..] if rest.len() <= 2 => {
            let num = |s: Option<&&str>, d: u64| s.map_or(Ok(d), |v| v.parse::<u64>());
            match (
                partition.parse::<u32>(),
                num(rest.first(), 0),
                num(rest.get(1), 100),
            ) {
                (Ok(p), Ok(from), Ok(count)) => inspect::dump(
                    Path::new(dir),
                    topic,
                    p,
                    from,
                    count,
                    &mut std::io::stdout().lock(),
                )
                .map(|()| true),
                _ => return usage(),
            }
        }
        _ => return usage(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("imago-inspect: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn verify(dir: &Path) -> std::io::Result<bool> {
    let r = inspect::verify(dir)?;
    println!(
        "commitlog: {} segments, positions {}..{}, {} records",
        r.segments, r.log_start, r.log_end, r.records
    );
    println!(
        "indexes:   {} partitions, {} entries, {} holes",
        r.partitions, r.index_entries, r.holes
    );
    for (from, to, why) in &r.corrupt {
        println!("CORRUPT commitlog bytes [{from}, {to}): {why}");
    }
    if let Some(m) = r.durable_mark {
        println!("durable mark: {m}");
    }
    for e in &r.index_errors {
        println!("BAD INDEX {e}");
    }
    if r.unindexed_for_recovery > 0 {
        println!(
            "unclean stop: {} records past the checkpoint await their index entries (the next start's recovery makes them)",
            r.unindexed_for_recovery
        );
    }
    for e in &r.lost_entries {
        println!("LOST INDEX ENTRY {e}");
    }
    println!("{}", if r.ok() { "OK" } else { "PROBLEMS FOUND" });
    Ok(r.ok())
}
