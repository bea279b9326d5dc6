//! The broker's settings: one table ([`SETTINGS`]) drives the command-line flags, the config
//! file, `--help` and `stats settings`, so the four never disagree.
//!
//! Config file (`--config FILE`): `name = value` lines using the flag names (dashes or
//! underscores), `#` comments, and per-topic sections:
//!
//! ```text
//! flush = sync
//! default_partitions = 8
//! [topic orders]
//! partitions = 16
//! retention_hours = 168
//! ```
//!
//! Flags given on the command line override the file.
//!
//! `stats settings` shows the values in force, which are these except `connections_max`: the
//! server lowers it at start-up to fit the open-file limit, and the broker reports that value.

use crate::protocol::Limits;
use crate::store::{FlushMode, StoreConfig};
use std::collections::HashMap;
use std::path::PathBuf;

/// Per-topic overrides from the config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicSettings {
    pub partitions: Option<u32>,
    pub retention_hours: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub flush: FlushMode,
    pub flush_interval_ms: u64,
    pub segment_bytes: u64,
    pub cache_window_bytes: u64,
    pub index_maps_max: usize,
    pub default_partitions: u32,
    pub auto_create_topics: bool,
    /// 0 keeps messages forever (until the disk watermark).
    pub retention_hours: f64,
    pub disk_free_reserve_bytes: u64,
    pub disk_used_ratio_max: f64,
    pub broker_id: u16,
    pub limits: Limits,
    pub get_bytes_max: usize,
    pub output_bytes_max: usize,
    pub connections_max: usize,
    pub half_command_timeout_ms: u64,
    pub topics_max: usize,
    pub partitions_per_topic_max: u32,
    pub wait_ms_max: u32,
    pub parked_per_connection_max: usize,
    pub session_timeout_ms: u64,
    pub members_per_group_max: usize,
    pub groups_max: usize,
    pub offsets_flush_interval_ms: u64,
    pub topics: HashMap<String, TopicSettings>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8123".into(),
            data_dir: PathBuf::from("./data"),
            flush: FlushMode::Async,
            flush_interval_ms: 500,
            segment_bytes: 1 << 30,
            cache_window_bytes: crate::store::cache_window::default_bytes(),
            index_maps_max: 49_152,
            default_partitions: 4,
            auto_create_topics: true,
            retention_hours: 72.0,
            disk_free_reserve_bytes: 256 << 20,
            disk_used_ratio_max: 0.90,
            broker_id: 0,
            limits: Limits::default(),
            get_bytes_max: 1 << 20,
            output_bytes_max: 4 << 20,
            connections_max: 10_000,
            half_command_timeout_ms: 30_000,
            topics_max: 10_000,
            partitions_per_topic_max: 65_536,
            wait_ms_max: 30_000,
            parked_per_connection_max: 1024,
            session_timeout_ms: 10_000,
            members_per_group_max: 1024,
            groups_max: 10_000,
            offsets_flush_interval_ms: 1000,
            topics: HashMap::new(),
        }
    }
}

type Getter = fn(&Config) -> String;
type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// One setting: its name (flags use dashes), a help line, and how to read and write it.
pub struct Setting {
    pub name: &'static str,
    pub help: &'static str,
    pub get: Getter,
    pub set: Setter,
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("'{v}' is not a valid number here"))
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

macro_rules! setting {
    ($name:literal, $help:literal, |$c:ident| $get:expr, |$s:ident, $v:ident| $set:expr) => {
        Setting {
            name: $name,
            help: $help,
            get: |$c: &Config| $get.to_string(),
            set: |$s: &mut Config, $v: &str| {
                $set;
                Ok(())
            },
        }
    };
}

pub const SETTINGS: &[Setting] = &[
    setting!(
        "listen",
        "address to listen on (port 0 picks a free port)",
        |c| c.listen,
        |c, v| c.listen = v.to_owned()
    ),
    setting!(
        "data_dir",
        "data directory",
        |c| c.data_dir.display(),
        |c, v| c.data_dir = PathBuf::from(v)
    ),
    setting!(
        "flush",
        "async (ack = in the page cache) or sync (ack = on disk, group commit)",
        |c| c.flush.name(),
        |c, v| c.flush = match v {
            "async" => FlushMode::Async,
            "sync" => FlushMode::Sync,
            _ => return Err(format!("'{v}' is not async or sync")),
        }
    ),
    setting!(
        "flush_interval_ms",
        "async mode: flush at least this often",
        |c| c.flush_interval_ms,
        |c, v| c.flush_interval_ms = num(v)?
    ),
    setting!(
        "segment_bytes",
        "commitlog segment size (at least 65536)",
        |c| c.segment_bytes,
        |c, v| c.segment_bytes = num(v)?
    ),
    setting!(
        "cache_window_bytes",
        "drop durable commitlog pages further than this behind the writer from the page cache (0 = leave it to the kernel; default a quarter of physical memory)",
        |c| c.cache_window_bytes,
        |c, v| c.cache_window_bytes = num(v)?
    ),
    setting!(
        "index_maps_max",
        "most partition index files mapped at once: half for writers' tails (more than the partitions written at once, or appends remap), half for reads; keep below vm.max_map_count",
        |c| c.index_maps_max,
        |c, v| c.index_maps_max = num(v)?
    ),
    setting!(
        "default_partitions",
        "partitions of a topic created by its first put",
        |c| c.default_partitions,
        |c, v| c.default_partitions = num(v)?
    ),
    setting!(
        "auto_create_topics",
        "create a topic on its first put (true|false)",
        |c| c.auto_create_topics,
        |c, v| c.auto_create_topics = boolean(v)?
    ),
    setting!(
        "retention_hours",
        "delete segments older than this (0 = keep)",
        |c| c.retention_hours,
        |c, v| c.retention_hours = num(v)?
    ),
    setting!(
        "disk_free_reserve_bytes",
        "refuse puts (507) while free space is under this",
        |c| c.disk_free_reserve_bytes,
        |c, v| c.disk_free_reserve_bytes = num(v)?
    ),
    setting!(
        "disk_used_ratio_max",
        "above this disk use, delete the oldest segments",
        |c| c.disk_used_ratio_max,
        |c, v| c.disk_used_ratio_max = num(v)?
    ),
    setting!(
        "broker_id",
        "this broker's id (0-65535), part of message ids",
        |c| c.broker_id,
        |c, v| c.broker_id = num(v)?
    ),
    setting!(
        "line_bytes_max",
        "longest request line, its \\r\\n included",
        |c| c.limits.line_bytes_max,
        |c, v| c.limits.line_bytes_max = num(v)?
    ),
    setting!(
        "body_bytes_max",
        "largest put body",
        |c| c.limits.body_bytes_max,
        |c, v| c.limits.body_bytes_max = num(v)?
    ),
    setting!(
        "name_bytes_max",
        "longest topic or group name",
        |c| c.limits.name_bytes_max,
        |c, v| c.limits.name_bytes_max = num(v)?
    ),
    setting!(
        "tag_bytes_max",
        "longest tag (put attribute)",
        |c| c.limits.tag_bytes_max,
        |c, v| c.limits.tag_bytes_max = num(v)?
    ),
    setting!(
        "props_bytes_max",
        "largest properties block",
        |c| c.limits.props_bytes_max,
        |c, v| c.limits.props_bytes_max = num(v)?
    ),
    setting!(
        "get_bytes_max",
        "largest get reply (maxSize is clamped to it)",
        |c| c.get_bytes_max,
        |c, v| c.get_bytes_max = num(v)?
    ),
    setting!(
        "output_bytes_max",
        "unsent reply bytes per connection before reading pauses",
        |c| c.output_bytes_max,
        |c, v| c.output_bytes_max = num(v)?
    ),
    setting!(
        "connections_max",
        "most open connections (lowered at start-up to fit the open-file limit)",
        |c| c.connections_max,
        |c, v| c.connections_max = num(v)?
    ),
    setting!(
        "half_command_timeout_ms",
        "a partial line or body older than this: 408 and close",
        |c| c.half_command_timeout_ms,
        |c, v| c.half_command_timeout_ms = num(v)?
    ),
    setting!("topics_max", "most topics", |c| c.topics_max, |c, v| c
        .topics_max =
        num(v)?),
    setting!(
        "partitions_per_topic_max",
        "most partitions in one topic",
        |c| c.partitions_per_topic_max,
        |c, v| c.partitions_per_topic_max = num(v)?
    ),
    setting!(
        "wait_ms_max",
        "longest long-poll wait of a get (longer is clamped)",
        |c| c.wait_ms_max,
        |c, v| c.wait_ms_max = num(v)?
    ),
    setting!(
        "parked_per_connection_max",
        "most long-poll gets waiting on one connection",
        |c| c.parked_per_connection_max,
        |c, v| c.parked_per_connection_max = num(v)?
    ),
    setting!(
        "session_timeout_ms",
        "a group member silent this long expires",
        |c| c.session_timeout_ms,
        |c, v| c.session_timeout_ms = num(v)?
    ),
    setting!(
        "members_per_group_max",
        "most members of one group on one topic",
        |c| c.members_per_group_max,
        |c, v| c.members_per_group_max = num(v)?
    ),
    setting!(
        "groups_max",
        "most consumer groups (with members or committed offsets)",
        |c| c.groups_max,
        |c, v| c.groups_max = num(v)?
    ),
    setting!(
        "offsets_flush_interval_ms",
        "committed offsets are written at most this often",
        |c| c.offsets_flush_interval_ms,
        |c, v| c.offsets_flush_interval_ms = num(v)?
    ),
];

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    Help(String),
    Version,
}

impl Config {
    /// Parses `args` (without the program name): `--config FILE` first, then flags on top.
    pub fn from_args(args: &[String]) -> Result<Parsed, String> {
        let mut cfg = Config::default();
        let mut pairs = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            match arg.as_str() {
                "--help" | "-h" => return Ok(Parsed::Help(help())),
                "--version" | "-V" => return Ok(Parsed::Version),
                _ => {}
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument '{arg}' (see --help)"));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => {
                    i += 1;
                    let v = args
                        .get(i)
                        .ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_owned(), v.clone())
                }
            };
            pairs.push((name.replace('-', "_"), value));
            i += 1;
        }
        if let Some((_, path)) = pairs.iter().find(|(n, _)| n == "config") {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
            cfg.apply_file(&text).map_err(|e| format!("{path}: {e}"))?;
        }
        for (name, value) in pairs.iter().filter(|(n, _)| n != "config") {
            cfg.set(name, value)
                .map_err(|e| format!("--{}: {e}", name.replace('_', "-")))?;
        }
        cfg.validate()?;
        Ok(Parsed::Run(Box::new(cfg)))
    }

    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let s = SETTINGS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("unknown setting '{name}' (see --help)"))?;
        (s.set)(self, value)
    }

    /// Applies a config file's text.
    pub fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let mut topic: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = section.trim().strip_prefix("topic").map(str::trim);
                match name {
                    Some(t) if crate::store::valid_topic(t) => topic = Some(t.to_owned()),
                    _ => return Err(at(format!("bad section [{section}]: use [topic NAME]"))),
                }
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| at("expected name = value".into()))?;
            let (k, v) = (k.trim().replace('-', "_"), v.trim());
            match &topic {
                None => self.set(&k, v).map_err(at)?,
                Some(t) => {
                    let ts = self.topics.entry(t.clone()).or_default();
                    match k.as_str() {
                        "partitions" => ts.partitions = Some(num(v).map_err(at)?),
                        "retention_hours" => ts.retention_hours = Some(num(v).map_err(at)?),
                        _ => return Err(at(format!("unknown topic setting '{k}'"))),
                    }
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        self.limits.check()?;
        if self.segment_bytes < StoreConfig::SEGMENT_BYTES_MIN {
            return Err(format!(
                "segment_bytes must be at least {}",
                StoreConfig::SEGMENT_BYTES_MIN
            ));
        }
        let parts_ok = |p: u32| p >= 1 && p <= self.partitions_per_topic_max;
        if !parts_ok(self.default_partitions) {
            return Err("default_partitions must be 1 to partitions_per_topic_max".into());
        }
        for (t, s) in &self.topics {
            if s.partitions.is_some_and(|p| !parts_ok(p)) {
                return Err(format!(
                    "topic {t}: partitions must be 1 to partitions_per_topic_max"
                ));
            }
        }
        if self.connections_max == 0 || self.output_bytes_max == 0 || self.get_bytes_max == 0 {
            return Err(
                "connections_max, output_bytes_max and get_bytes_max must be positive".into(),
            );
        }
        Ok(())
    }

    /// Settings that work but deserve a word at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let max_record = self.limits.body_bytes_max as u64 + 64 * 1024 + 1024;
        let mut w = Vec::new();
        if self.segment_bytes < max_record {
            w.push(format!(
                "segment_bytes {} cannot hold a record of body_bytes_max {}: larger puts get 413",
                self.segment_bytes, self.limits.body_bytes_max
            ));
        }
        w
    }

    /// Partitions for a topic created now.
    pub fn partitions_for(&self, topic: &str) -> u32 {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions)
            .unwrap_or(self.default_partitions)
    }

    pub fn store_config(&self) -> StoreConfig {
        let hours_ms = |h: f64| (h * 3_600_000.0) as u64;
        let mut s = StoreConfig::new(&self.data_dir);
        s.segment_bytes = self.segment_bytes;
        s.cache_window_bytes = self.cache_window_bytes;
        s.index_maps_max = self.index_maps_max;
        s.flush = self.flush;
        s.flush_interval_ms = self.flush_interval_ms;
        s.broker_id = self.broker_id;
        s.retention_ms = (self.retention_hours > 0.0).then(|| hours_ms(self.retention_hours));
        s.topic_retention_ms = self
            .topics
            .iter()
            .filter_map(|(t, ts)| ts.retention_hours.map(|h| (t.clone(), hours_ms(h))))
            .collect();
        s.disk_used_ratio_max = self.disk_used_ratio_max;
        s.disk_free_reserve_bytes = self.disk_free_reserve_bytes;
        s
    }
}

pub fn help() -> String {
    let mut out = String::from(
        "imago: a message broker in the MetaQ/Metamorphosis line\n\n\
         usage: imago [--config FILE] [--NAME VALUE]...\n\n\
         Every setting below is a flag (--segment-bytes 65536) and a config-file line\n\
         (segment_bytes = 65536); flags override the file. Per-topic sections in the file:\n\
         [topic NAME] with partitions = N and retention_hours = H.\n\n",
    );
    let defaults = Config::default();
    for s in SETTINGS {
        let flag = format!("--{} ", s.name.replace('_', "-"));
        out.push_str(&format!(
            "  {flag:<28}{} (default {})\n",
            s.help,
            (s.get)(&defaults)
        ));
    }
    out.push_str("  --config FILE               read settings from FILE\n");
    out.push_str("  --help, --version\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_override_defaults_with_dashes_or_equals() {
        let Parsed::Run(c) = Config::from_args(&args(
            "--flush sync --segment-bytes=8388608 --listen 127.0.0.1:0",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.flush, FlushMode::Sync);
        assert_eq!(c.segment_bytes, 8 << 20);
        assert_eq!(c.listen, "127.0.0.1:0");
    }

    #[test]
    fn config_file_sets_values_and_topic_overrides() {
        let mut c = Config::default();
        c.apply_file(
            "# comment\nflush = sync\n[topic orders]\npartitions = 16\nretention_hours = 1.5\n",
        )
        .unwrap();
        assert_eq!(c.flush, FlushMode::Sync);
        assert_eq!(c.partitions_for("orders"), 16);
        assert_eq!(c.partitions_for("other"), 4);
        assert_eq!(c.store_config().topic_retention_ms["orders"], 5_400_000);
    }

    #[test]
    fn unknown_settings_and_bad_values_are_refused_with_their_name() {
        assert!(Config::from_args(&args("--no-such 1"))
            .unwrap_err()
            .contains("no_such"));
        assert!(Config::from_args(&args("--flush maybe"))
            .unwrap_err()
            .contains("--flush"));
        assert!(Config::default()
            .apply_file("[topic a]\ncolour = red\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(Config::from_args(&args("--segment-bytes 4096"))
            .unwrap_err()
            .contains("segment_bytes"));
    }

    #[test]
    fn help_lists_every_setting() {
        let h = help();
        for s in SETTINGS {
            assert!(
                h.contains(&format!("--{}", s.name.replace('_', "-"))),
                "{}",
                s.name
            );
        }
    }
}
