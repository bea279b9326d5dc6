//! The standard comparison set: the issue's targets (1) to (5), each peer measured in the same
//! invocation so the ratios compare like with like on this machine at this moment. Targets (1)
//! to (3) alternate imago's runs with the peers' (`--pairs`, 3) and judge the median ratio.

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
    /// Targets (1) to (3): alternated pairs of runs, the verdict on their median ratio.
    pub pairs: usize,
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

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The middle value (the mean of the middle two for an even count); `None` when empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| !x.is_nan());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One ratio per pair of runs, in the order run.
#[derive(Default)]
struct Ratios(Vec<f64>);

impl Ratios {
    fn arr(&self) -> J {
        J::Arr(self.0.iter().map(|x| J::Num(round2(*x))).collect())
    }
    /// " (a, b, c)" after a median, each ratio as `show` writes it, when there was more
    /// than one pair.
    fn list(&self, show: impl Fn(f64) -> String) -> String {
        if self.0.len() < 2 {
            return String::new();
        }
        let each: Vec<String> = self.0.iter().map(|&x| show(x)).collect();
        format!(" ({})", each.join(", "))
    }
}

/// Imago's runs and each peer's, alternated: imago, then every peer, `pairs` times over. The
/// machine's speed drifts by tens of percent within minutes, so a ratio of two runs minutes
/// apart can be decided by the drift; each ratio here is of two runs seconds apart, and the
/// verdict takes the median of them.
struct Rounds {
    imago: Vec<Option<Obj>>,
    peers: Vec<(Target, Vec<Option<Obj>>)>,
}

fn alternate(
    out: &Out,
    what: &str,
    pairs: usize,
    peers: &[Target],
    measure: impl Fn(Target) -> Result<Obj, String>,
) -> Rounds {
    let mut r = Rounds {
        imago: Vec::new(),
        peers: peers.iter().map(|&t| (t, Vec::new())).collect(),
    };
    for _ in 0..pairs {
        r.imago.push(attempt(out, &format!("{what} imago"), || {
            measure(Target::Imago)
        }));
        for (t, runs) in &mut r.peers {
            runs.push(attempt(out, &format!("{what} {}", t.name()), || {
                measure(*t)
            }));
        }
    }
    r
}

impl Rounds {
    fn imago_rates(&self) -> Vec<f64> {
        self.imago.iter().flatten().map(rate).collect()
    }
    /// " (runs a, b, c)" when there was more than one.
    fn imago_runs(&self) -> String {
        let v = self.imago_rates();
        if v.len() < 2 {
            return String::new();
        }
        let each: Vec<String> = v.iter().map(|&x| rate_str(x).trim().to_string()).collect();
        format!(" (runs {})", each.join(", "))
    }
    fn peer_rate(&self, t: Target) -> f64 {
        let runs = self.peers.iter().find(|(p, _)| *p == t).map(|(_, r)| r);
        median(runs.into_iter().flatten().flatten().map(rate).collect()).unwrap_or(0.0)
    }
    /// A row per peer (its median rate, the median ratio and each pair's) and the summary's
    /// `{key}_ratio_vs_{peer}` and `{key}_ratios_vs_{peer}`; `need` gives the ratio a peer's
    /// row must reach, for the peers that are judged.
    fn peer_rows(
        &self,
        key: &str,
        o: &Opts,
        need: impl Fn(Target) -> Option<f64>,
        rows: &mut Vec<Row>,
        summary: &mut Obj,
    ) {
        for (t, x, each) in self.peer_ratios() {
            summary
                .f(&format!("{key}_ratio_vs_{}", t.name()), round2(x))
                .set(&format!("{key}_ratios_vs_{}", t.name()), each.arr());
            let need = need(t);
            rows.push(Row {
                name: format!("    vs {} ({})", t.name(), o.servers.mode_name(t)),
                figure: format!(
                    "{}msg/s, imago/peer = {x:.2}x{}",
                    rate_str(self.peer_rate(t)),
                    each.list(|x| format!("{x:.2}x"))
                ),
                check: need.map_or_else(|| "(reported)".into(), |n| format!(">= {n}x")),
                pass: need.map(|n| x >= n),
            });
        }
    }

    /// Per peer: the median ratio and each pair's, over the pairs where both runs succeeded.
    fn peer_ratios(&self) -> Vec<(Target, f64, Ratios)> {
        let mut v = Vec::new();
        for (t, runs) in &self.peers {
            let mut each = Ratios::default();
            for (im, pj) in self.imago.iter().zip(runs) {
                if let (Some(im), Some(pj)) = (im, pj) {
                    each.0.push(ratio(rate(im), rate(pj)));
                }
            }
            if let Some(x) = median(each.0.clone()) {
                v.push((*t, x, each));
            }
        }
        v
    }
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

    // (1) async, 128 B, 1 connection, depth 100.
    let oa = with_sync(o, false);
    let l1 = Load {
        connections: 1,
        depth: 100,
        ..base.clone()
    };
    let r1 = alternate(out, "(1) async", s.pairs, &peers, |t| {
        runs::produce(
            &oa,
            &Load {
                target: t,
                ..l1.clone()
            },
        )
    });
    if let Some(r) = median(r1.imago_rates()) {
        rows.push(Row {
            name: "(1) async 128 B, 1 conn x depth 100".into(),
            figure: format!("imago {}msg/s{}", rate_str(r), r1.imago_runs()),
            check: ">= 1,000,000/s".into(),
            pass: Some(r >= 1e6),
        });
        summary.f("t1_imago_async_msgs_per_s", r.round());
        let need = |t| (t == Target::Redis).then_some(3.0);
        r1.peer_rows("t1", &oa, need, &mut rows, &mut summary);
    }

    // (2) sync, 128 B, 8 connections x depth 16.
    let os = with_sync(o, true);
    let l2 = Load {
        connections: 8,
        depth: 16,
        ..base.clone()
    };
    let r2 = alternate(out, "(2) sync", s.pairs, &peers, |t| {
        runs::produce(
            &os,
            &Load {
                target: t,
                ..l2.clone()
            },
        )
    });
    if let Some(r) = median(r2.imago_rates()) {
        let rpf = median(
            r2.imago
                .iter()
                .flatten()
                .filter_map(|j| j.num("records_per_fsync"))
                .collect(),
        )
        .unwrap_or(f64::NAN);
        rows.push(Row {
            name: "(2) sync 128 B, 8 conns x depth 16".into(),
            figure: format!(
                "imago {}msg/s{}, {rpf:.1} records/fsync",
                rate_str(r),
                r2.imago_runs()
            ),
            check: "(reported)".into(),
            pass: None,
        });
        summary
            .f("t2_imago_sync_msgs_per_s", r.round())
            .f("t2_records_per_fsync", rpf);
        let need = |t| Some(if t == Target::Redis { 2.0 } else { 30.0 });
        r2.peer_rows("t2", &os, need, &mut rows, &mut summary);
    }

    // (3) 10,240 partitions round-robin vs 1 partition (async, 1 x 100), both warmed up,
    // alternated like the peers above.
    let warm = 2 * 10_240;
    let one = Load {
        partitions: 1,
        warmup: warm,
        ..l1.clone()
    };
    let many = Load {
        partitions: 10_240,
        warmup: warm,
        ..l1.clone()
    };
    let (mut ones, mut manys, mut each) = (Vec::new(), Vec::new(), Ratios::default());
    for _ in 0..s.pairs {
        let a = attempt(out, "(3) 1 partition", || runs::produce(&oa, &one));
        let b = attempt(out, "(3) 10240 partitions", || runs::produce(&oa, &many));
        if let (Some(a), Some(b)) = (&a, &b) {
            ones.push(rate(a));
            manys.push(rate(b));
            each.0.push(ratio(rate(b), rate(a)));
        }
    }
    if let Some(x) = median(each.0.clone()) {
        summary
            .f("t3_partitions_ratio", (x * 1000.0).round() / 1000.0)
            .set("t3_partitions_ratios", each.arr());
        rows.push(Row {
            name: "(3) 10,240 partitions round-robin / 1 partition".into(),
            figure: format!(
                "{}msg/s / {}msg/s (medians), ratio {:.0}%{}",
                rate_str(median(manys).unwrap_or(0.0)),
                rate_str(median(ones).unwrap_or(0.0)),
                x * 100.0,
                each.list(|x| format!("{:.0}%", x * 100.0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_run_and_skips_failed_ratios() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![f64::NAN]), None);
        assert_eq!(median(vec![2.1, 1.7, 1.9]), Some(1.9));
        assert_eq!(median(vec![3.0, 1.0, f64::NAN, 2.0, 4.0]), Some(2.5));
    }

    #[test]
    fn ratios_list_each_pair_only_when_there_are_several() {
        let times = |x: f64| format!("{x:.2}x");
        assert_eq!(Ratios(vec![1.98]).list(times), "");
        assert_eq!(Ratios(vec![1.98, 2.014]).list(times), " (1.98x, 2.01x)");
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        assert_eq!(Ratios(vec![0.56, 0.864]).list(pct), " (56%, 86%)");
        let mut j = Obj::new();
        j.set("r", Ratios(vec![1.984, 2.0]).arr());
        assert_eq!(j.render(), r#"{"r":[1.980,2]}"#);
    }
}
