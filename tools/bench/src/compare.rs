//! The standard comparison set: the targets (1) to (5), each peer measured in the same
//! invocation so the ratios compare like with like on this machine at this moment.

use crate::json::{Obj, J};
use crate::report::{rate_str, thousands};
use crate::runs::{self, Consumers, Drain, Latency, Load, Opts};
use crate::servers::Target;
use crate::Out;

pub struct Settings {
    pub seconds: f64,
    pub drain_count: u64,
    pub peer_drain_count: u64,
    pub latency_seconds: f64,
    pub peers: bool,
}

struct Row {
    name: String,
    figure: String,
    check: String,
    pass: Option<bool>,
}

fn rate(j: &Obj) -> f64 {
    j.num("msgs_per_s").unwrap_or(0.0)
}

fn with_sync(o: &Opts, sync: bool) -> Opts {
    let mut o = o.clone();
    o.servers.sync = sync;
    o
}

/// Runs a measurement; a failure is reported and the set goes on.
fn attempt(out: &Out, what: &str, f: impl FnOnce() -> Result<Obj, String>) -> Option<Obj> {
    match f() {
        Ok(j) => {
            out.emit(&j);
            Some(j)
        }
        Err(e) => {
            eprintln!("  {what} FAILED: {e}");
            None
        }
    }
}

pub fn run(o: &Opts, s: &Settings, out: &Out) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let base = Load {
        seconds: Some(s.seconds),
        count: None,
        ..crate::default_load()
    };
    let peers: Vec<Target> = if s.peers {
        vec![Target::Redis, Target::Beanstalkd]
    } else {
        vec![]
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut summary = Obj::new();
    summary.s("bench", "compare-summary");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };

    // (1) async, 128 B, 1 connection, depth 100.
    let oa = with_sync(o, false);
    let l1 = Load {
        connections: 1,
        depth: 100,
        ..base.clone()
    };
    let im1 = attempt(out, "(1) imago async", || runs::produce(&oa, &l1));
    let mut peer1 = Vec::new();
    for &t in &peers {
        peer1.push((
            t,
            attempt(out, "(1) peer", || {
                runs::produce(
                    &oa,
                    &Load {
                        target: t,
                        ..l1.clone()
                    },
                )
            }),
        ));
    }
    if let Some(im) = &im1 {
        let r = rate(im);
        rows.push(Row {
            name: "(1) async 128 B, 1 conn x depth 100".into(),
            figure: format!("imago {}msg/s", rate_str(r)),
            check: ">= 1,000,000/s".into(),
            pass: Some(r >= 1e6),
        });
        summary.f("t1_imago_async_msgs_per_s", r.round());
        for (t, pj) in &peer1 {
            if let Some(pj) = pj {
                let x = ratio(r, rate(pj));
                summary.f(
                    &format!("t1_ratio_vs_{}", t.name()),
                    (x * 100.0).round() / 100.0,
                );
                rows.push(Row {
                    name: format!("    vs {} ({})", t.name(), oa.servers.mode_name(*t)),
                    figure: format!("{}msg/s, imago/peer = {x:.2}x", rate_str(rate(pj))),
                    check: if *t == Target::Redis {
                        ">= 3x".into()
                    } else {
                        "(reported)".into()
                    },
                    pass: (*t == Target::Redis).then_some(x >= 3.0),
                });
            }
        }
    }

    // (2) sync, 128 B, 8 connections x depth 16.
    let os = with_sync(o, true);
    let l2 = Load {
        connections: 8,
        depth: 16,
        ..base.clone()
    };
    let im2 = attempt(out, "(2) imago sync", || runs::produce(&os, &l2));
    let mut peer2 = Vec::new();
    for &t in &peers {
        peer2.push((
            t,
            attempt(out, "(2) peer", || {
                runs::produce(
                    &os,
                    &Load {
                        target: t,
                        ..l2.clone()
                    },
                )
            }),
        ));
    }
    if let Some(im) = &im2 {
        let r = rate(im);
        let rpf = im.num("records_per_fsync").unwrap_or(f64::NAN);
        rows.push(Row {
            name: "(2) sync 128 B, 8 conns x depth 16".into(),
            figure: format!(
                "imago {}msg/s, {rpf:.1} records/fsync (broker avg {:.1})",
                rate_str(r),
                im.num("records_per_fsync_avg").unwrap_or(f64::NAN)
            ),
            check: "(reported)".into(),
            pass: None,
        });
        summary
            .f("t2_imago_sync_msgs_per_s", r.round())
            .f("t2_records_per_fsync", rpf);
        for (t, pj) in &peer2 {
            if let Some(pj) = pj {
                let x = ratio(r, rate(pj));
                let need = if *t == Target::Redis { 2.0 } else { 30.0 };
                summary.f(
                    &format!("t2_ratio_vs_{}", t.name()),
                    (x * 100.0).round() / 100.0,
                );
                rows.push(Row {
                    name: format!("    vs {} ({})", t.name(), os.servers.mode_name(*t)),
                    figure: format!("{}msg/s, imago/peer = {x:.2}x", rate_str(rate(pj))),
                    check: format!(">= {need}x"),
                    pass: Some(x >= need),
                });
            }
        }
    }

    // (3) 10,240 partitions round-robin vs 1 partition (async, 1 x 100), both warmed up.
    let warm = 2 * 10_240;
    let l3a = Load {
        partitions: 1,
        warmup: warm,
        ..l1.clone()
    };
    let l3b = Load {
        partitions: 10_240,
        warmup: warm,
        ..l1.clone()
    };
    let p1 = attempt(out, "(3) 1 partition", || runs::produce(&oa, &l3a));
    let p2 = attempt(out, "(3) 10240 partitions", || runs::produce(&oa, &l3b));
    if let (Some(a), Some(b)) = (&p1, &p2) {
        let x = ratio(rate(b), rate(a));
        summary.f("t3_partitions_ratio", (x * 1000.0).round() / 1000.0);
        rows.push(Row {
            name: "(3) 10,240 partitions round-robin / 1 partition".into(),
            figure: format!(
                "{}msg/s / {}msg/s = {:.0}%",
                rate_str(rate(b)),
                rate_str(rate(a)),
                x * 100.0
            ),
            check: ">= 90%".into(),
            pass: Some(x >= 0.9),
        });
    }

    // (4) drain a backlog as one group; side by side at a smaller backlog.
    let cons = Consumers {
        connections: 2,
        max_size: 1 << 20,
        wait_ms: 1000,
        batch: 1000,
        depth: 64,
        filter: None,
        plain: false,
        verify: false,
    };
    let fill = Load {
        connections: 2,
        depth: 100,
        partitions: 8,
        count: Some(s.drain_count),
        seconds: None,
        ..base.clone()
    };
    let d4 = attempt(out, "(4) imago drain", || {
        runs::drain(
            &oa,
            &Drain {
                fill: fill.clone(),
                consumers: cons.clone(),
            },
        )
    });
    if let Some(j) = &d4 {
        let r = rate(j);
        summary.f("t4_imago_drain_msgs_per_s", r.round());
        rows.push(Row {
            name: format!(
                "(4) drain {} backlog, 1 group of 2",
                thousands(s.drain_count)
            ),
            figure: format!("imago {}msg/s delivered", rate_str(r)),
            check: ">= 2,000,000/s".into(),
            pass: Some(r >= 2e6),
        });
    }
    if !peers.is_empty() {
        let small = Load {
            count: Some(s.peer_drain_count),
            ..fill.clone()
        };
        let im_small = attempt(out, "(4) imago drain (side by side)", || {
            runs::drain(
                &oa,
                &Drain {
                    fill: small.clone(),
                    consumers: cons.clone(),
                },
            )
        });
        for &t in &peers {
            let pj = attempt(out, "(4) peer drain", || {
                runs::drain(
                    &oa,
                    &Drain {
                        fill: Load {
                            target: t,
                            ..small.clone()
                        },
                        consumers: cons.clone(),
                    },
                )
            });
            if let (Some(im), Some(pj)) = (&im_small, &pj) {
                let x = ratio(rate(im), rate(pj));
                summary.f(
                    &format!("t4_ratio_vs_{}", t.name()),
                    (x * 100.0).round() / 100.0,
                );
                rows.push(Row {
                    name: format!(
                        "    {} backlog vs {}",
                        thousands(s.peer_drain_count),
                        t.name()
                    ),
                    figure: format!(
                        "imago {}msg/s, {} {}msg/s = {x:.2}x",
                        rate_str(rate(im)),
                        t.name(),
                        rate_str(rate(pj))
                    ),
                    check: "(reported)".into(),
                    pass: None,
                });
            }
        }
    }

    // (5) end-to-end latency at 10,000 msg/s, long-poll consumers.
    let l5 = Load {
        connections: 1,
        depth: 100,
        partitions: 4,
        seconds: Some(s.latency_seconds),
        ..base.clone()
    };
    let lat = |t: Target| Latency {
        produce: Load {
            target: t,
            ..l5.clone()
        },
        rate: Some(10_000.0),
        consumers: cons.clone(),
        warmup_s: 1.0,
    };
    let e5 = attempt(out, "(5) imago latency", || {
        runs::latency(&oa, &lat(Target::Imago))
    });
    if let Some(j) = &e5 {
        let (p50, p99) = match j.get("e2e_latency_us") {
            Some(J::Obj(l)) => (
                l.num("p50").unwrap_or(f64::NAN),
                l.num("p99").unwrap_or(f64::NAN),
            ),
            _ => (f64::NAN, f64::NAN),
        };
        summary.f("t5_p50_us", p50).f("t5_p99_us", p99);
        rows.push(Row {
            name: "(5) end-to-end latency, 10,000 msg/s async".into(),
            figure: format!("imago p50 {p50:.0} us, p99 {p99:.0} us"),
            check: "p50 < 100 us, p99 < 500 us".into(),
            pass: Some(p50 < 100.0 && p99 < 500.0),
        });
    }
    for &t in &peers {
        if let Some(j) = attempt(out, "(5) peer latency", || runs::latency(&oa, &lat(t))) {
            if let Some(J::Obj(l)) = j.get("e2e_latency_us") {
                rows.push(Row {
                    name: format!("    {}", t.name()),
                    figure: format!(
                        "p50 {:.0} us, p99 {:.0} us",
                        l.num("p50").unwrap_or(f64::NAN),
                        l.num("p99").unwrap_or(f64::NAN)
                    ),
                    check: "(reported)".into(),
                    pass: None,
                });
            }
        }
    }

    summary.f("compare_seconds", t0.elapsed().as_secs_f64().round());
    out.emit(&summary);
    eprintln!("\n== compare: {:.0} s", t0.elapsed().as_secs_f64());
    let w0 = rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    let w1 = rows.iter().map(|r| r.figure.len()).max().unwrap_or(10);
    let w2 = rows.iter().map(|r| r.check.len()).max().unwrap_or(10);
    for r in &rows {
        let verdict = match r.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };
        eprintln!(
            "{:w0$}  {:w1$}  {:w2$}  {verdict}",
            r.name, r.figure, r.check
        );
    }
    Ok(())
}
