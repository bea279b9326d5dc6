//! A small command-line parser: `--name value`, `--name=value` and boolean switches. Every flag
//! given must be used by the subcommand, so a typo is an error instead of a silent default.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// Switches (flags without a value).
const SWITCHES: &[&str] = &[
    "sync",
    "keep-data",
    "verify",
    "broker-chooses",
    "plain",
    "no-peers",
    "cold-keep-cache",
    "help",
];

pub struct Args {
    values: HashMap<String, Vec<String>>,
    switches: HashSet<String>,
    used: RefCell<HashSet<String>>,
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut switches = HashSet::new();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}' (flags start with --)"));
            };
            if let Some((n, v)) = name.split_once('=') {
                values.entry(n.to_owned()).or_default().push(v.to_owned());
            } else if SWITCHES.contains(&name) {
                switches.insert(name.to_owned());
            } else {
                let v = argv
                    .get(i + 1)
                    .ok_or_else(|| format!("--{name} needs a value"))?;
                values.entry(name.to_owned()).or_default().push(v.clone());
                i += 1;
            }
            i += 1;
        }
        Ok(Args {
            values,
            switches,
            used: RefCell::new(HashSet::new()),
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.used.borrow_mut().insert(name.to_owned());
        self.switches.contains(name)
    }

    pub fn str_opt(&self, name: &str) -> Option<String> {
        self.used.borrow_mut().insert(name.to_owned());
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    pub fn str_all(&self, name: &str) -> Vec<String> {
        self.used.borrow_mut().insert(name.to_owned());
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn str_or(&self, name: &str, default: &str) -> String {
        self.str_opt(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn num_opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.str_opt(name) {
            None => Ok(None),
            Some(v) => parse_num(&v)
                .map(Some)
                .ok_or_else(|| format!("--{name}: '{v}' is not a valid number")),
        }
    }

    pub fn num<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.num_opt(name)?.unwrap_or(default))
    }

    /// Errors on flags no one asked for.
    pub fn finish(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let mut unknown: Vec<&String> = self
            .values
            .keys()
            .chain(self.switches.iter())
            .filter(|k| !used.contains(*k))
            .collect();
        unknown.sort();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unknown flag(s) for this subcommand: {}",
                unknown
                    .iter()
                    .map(|k| format!("--{k}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        }
    }
}

/// Numbers may use `_` separators and the suffixes k, M, G (powers of 1000), e.g. `10M`.
fn parse_num<T: FromStr>(v: &str) -> Option<T> {
    let clean: String = v.chars().filter(|c| *c != '_' && *c != ',').collect();
    if let Ok(x) = clean.parse::<T>() {
        return Some(x);
    }
    let (digits, mult) = match clean.chars().last()? {
        'k' | 'K' => (&clean[..clean.len() - 1], 1_000u64),
        'M' => (&clean[..clean.len() - 1], 1_000_000),
        'G' => (&clean[..clean.len() - 1], 1_000_000_000),
        _ => return None,
    };
    let base: f64 = digits.parse().ok()?;
    format!("{}", (base * mult as f64).round() as u64)
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse_num::<u64>("10M"), Some(10_000_000));
        assert_eq!(parse_num::<u64>("1.5k"), Some(1500));
        assert_eq!(parse_num::<u64>("10_240"), Some(10240));
        assert_eq!(parse_num::<f64>("0.5"), Some(0.5));
    }
}
