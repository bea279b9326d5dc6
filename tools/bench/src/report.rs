//! Progress lines, human summaries and latency summaries.

use crate::json::Obj;
use crate::servers::Server;
use crate::sys::Mem;
use hdrhistogram::Histogram;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Latency percentiles in microseconds.
pub fn lat_obj(h: &Histogram<u64>) -> Obj {
    let mut o = Obj::new();
    let us = |v: u64| (v as f64 / 1000.0 * 10.0).round() / 10.0;
    o.i("count", h.len() as i64);
    if h.is_empty() {
        return o;
    }
    o.f("p50", us(h.value_at_quantile(0.50)))
        .f("p90", us(h.value_at_quantile(0.90)))
        .f("p99", us(h.value_at_quantile(0.99)))
        .f("p999", us(h.value_at_quantile(0.999)))
        .f("max", us(h.max()))
        .f("mean", (h.mean() / 100.0).round() / 10.0);
    o
}

pub fn lat_str(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let f = |v: u64| {
        let us = v as f64 / 1000.0;
        if us >= 10_000.0 {
            format!("{:.1} ms", us / 1000.0)
        } else {
            format!("{us:.1} us")
        }
    };
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {}",
        f(h.value_at_quantile(0.5)),
        f(h.value_at_quantile(0.9)),
        f(h.value_at_quantile(0.99)),
        f(h.value_at_quantile(0.999)),
        f(h.max())
    )
}

/// 1234567 -> "1,234,567".
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn rate_str(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0} ")
    }
}

/// Prints a progress line every second and keeps per-second counts and the broker's peak
/// memory (sampled every tick).
pub struct Monitor {
    label: String,
    start: Instant,
    last: Instant,
    last_counts: Vec<u64>,
    tty: bool,
    pub per_second: Vec<Vec<u64>>,
    pub mem_peak: Mem,
    printed: bool,
}

impl Monitor {
    pub fn new(label: &str) -> Monitor {
        Monitor {
            label: label.to_owned(),
            start: Instant::now(),
            last: Instant::now(),
            last_counts: Vec::new(),
            tty: std::io::stderr().is_terminal(),
            per_second: Vec::new(),
            mem_peak: Mem::default(),
            printed: false,
        }
    }

    /// Call about every 100 ms with the current totals (name, count).
    pub fn tick(&mut self, counts: &[(&str, u64)], server: Option<&Server>) {
        if let Some(m) = server.and_then(|s| s.mem()) {
            if m.rss_anon_kib > self.mem_peak.rss_anon_kib {
                self.mem_peak.rss_anon_kib = m.rss_anon_kib;
            }
            self.mem_peak.rss_file_kib = self.mem_peak.rss_file_kib.max(m.rss_file_kib);
            self.mem_peak.vm_rss_kib = self.mem_peak.vm_rss_kib.max(m.vm_rss_kib);
            self.mem_peak.threads = self.mem_peak.threads.max(m.threads);
        }
        let dt = self.last.elapsed();
        if dt < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        if self.last_counts.len() != counts.len() {
            self.last_counts = vec![0; counts.len()];
        }
        let mut line = format!(
            "[{}] {:>5.1}s",
            self.label,
            self.start.elapsed().as_secs_f64()
        );
        let mut row = Vec::new();
        for (i, (name, c)) in counts.iter().enumerate() {
            let d = c.saturating_sub(self.last_counts[i]);
            row.push(d);
            line.push_str(&format!(
                "  {name} {} ({}/s)",
                thousands(*c),
                rate_str(d as f64 / dt.as_secs_f64())
            ));
            self.last_counts[i] = *c;
        }
        if let Some(m) = server.and_then(|s| s.mem()) {
            line.push_str(&format!("  broker RssAnon {} MiB", m.rss_anon_kib / 1024));
        }
        self.per_second.push(row);
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
        self.printed = true;
    }

    pub fn end(&mut self) {
        if self.tty && self.printed {
            eprintln!();
        }
        self.printed = false;
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.end();
    }
}
