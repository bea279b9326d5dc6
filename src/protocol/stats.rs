//! `STAT` lines and the two forms of a stats reply.
//!
//! # Format
//! ```text
//! memcached form (request had no opaque):   STAT <name> <value>\r\n ... END\r\n
//! result form (request had an opaque):      result 200 <n> <opaque>\r\nSTAT <name> <value>\r\n ... END\r\n
//! ```
//! `<n>` counts every byte after the header line, `END\r\n` included.

use std::fmt::{self, Write as _};

use super::error::Code;
use super::reply::write_result;

const END: &[u8] = b"END\r\n";
const RESET: &[u8] = b"RESET\r\n";

/// Collects STAT lines; `finish` appends either the memcached form (STAT lines + END\r\n, no
/// header) when opaque is None, or `result 200 <n> <opaque>\r\n` + the same lines + `END\r\n`.
#[derive(Debug, Default)]
pub struct StatsWriter {
    /// Whole `STAT <name> <value>\r\n` lines; never a partial line.
    lines: Vec<u8>,
    /// Scratch space for formatting one value, reused across stats.
    value: String,
}

impl StatsWriter {
    pub fn new() -> Self {
        StatsWriter::default()
    }

    /// Adds `STAT <name> <value>\r\n`. A space or line break in `name` becomes `_`, and a line
    /// break in `value` becomes a space, so one stat is always one line of two fields. A value
    /// whose `Display` fails is left out.
    pub fn stat(&mut self, name: &str, value: impl fmt::Display) {
        self.value.clear();
        // fmt::Write (not io::Write, which panics on a failing Display) into a String.
        if write!(self.value, "{value}").is_err() {
            return;
        }
        self.lines.extend_from_slice(b"STAT ");
        self.lines.extend(name.bytes().map(|byte| match byte {
            b' ' | b'\r' | b'\n' => b'_',
            other => other,
        }));
        self.lines.push(b' ');
        self.lines.extend(self.value.bytes().map(|byte| match byte {
            b'\r' | b'\n' => b' ',
            other => other,
        }));
        self.lines.extend_from_slice(b"\r\n");
    }

    /// Appends the reply in the form chosen by `opaque` (see the type's doc).
    pub fn finish(mut self, out: &mut Vec<u8>, opaque: Option<i32>) {
        self.lines.extend_from_slice(END);
        match opaque {
            None => out.extend_from_slice(&self.lines),
            Some(opaque) => write_result(out, Code::Ok, &self.lines, opaque),
        }
    }
}

/// Error for a stats request: memcached form `CLIENT_ERROR <msg>\r\n` when opaque None, else
/// result 400. Line breaks in `message` become spaces in the memcached form.
pub fn write_stats_error(out: &mut Vec<u8>, message: &str, opaque: Option<i32>) {
    match opaque {
        None => {
            out.extend_from_slice(b"CLIENT_ERROR ");
            out.extend(message.bytes().map(|byte| match byte {
                b'\r' | b'\n' => b' ',
                other => other,
            }));
            out.extend_from_slice(b"\r\n");
        }
        Some(opaque) => write_result(out, Code::BadRequest, message.as_bytes(), opaque),
    }
}

/// `stats reset` reply: `RESET\r\n` (memcached form) or result 200 with body `RESET\r\n`.
pub fn write_stats_reset(out: &mut Vec<u8>, opaque: Option<i32>) {
    match opaque {
        None => out.extend_from_slice(RESET),
        Some(opaque) => write_result(out, Code::Ok, RESET, opaque),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsWriter {
        let mut stats = StatsWriter::new();
        stats.stat("pid", 4242);
        stats.stat("flush_mode", "sync");
        stats.stat("records_per_fsync_avg", format_args!("{:.2}", 3.456));
        stats
    }

    #[test]
    fn memcached_form_is_stat_lines_then_end_without_header() {
        let mut out = Vec::new();
        sample().finish(&mut out, None);
        assert_eq!(
            out,
            b"STAT pid 4242\r\nSTAT flush_mode sync\r\nSTAT records_per_fsync_avg 3.46\r\nEND\r\n"
        );
    }

    #[test]
    fn result_form_wraps_the_same_lines_and_counts_end() {
        let mut out = Vec::new();
        sample().finish(&mut out, Some(7));
        let body: &[u8] =
            b"STAT pid 4242\r\nSTAT flush_mode sync\r\nSTAT records_per_fsync_avg 3.46\r\nEND\r\n";
        let mut expected = format!("result 200 {} 7\r\n", body.len()).into_bytes();
        expected.extend_from_slice(body);
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_stats_is_just_end() {
        let mut out = Vec::new();
        StatsWriter::default().finish(&mut out, None);
        assert_eq!(out, b"END\r\n");
        let mut out = Vec::new();
        StatsWriter::new().finish(&mut out, Some(1));
        assert_eq!(out, b"result 200 5 1\r\nEND\r\n");
    }

    #[test]
    fn stat_cannot_break_a_line_or_add_a_field_to_the_name() {
        let mut stats = StatsWriter::new();
        stats.stat("a b\r\n", "x\r\ny");
        let mut out = Vec::new();
        stats.finish(&mut out, None);
        assert_eq!(out, b"STAT a_b__ x  y\r\nEND\r\n");
    }

    #[test]
    fn failing_display_drops_the_whole_line() {
        struct Broken;
        impl fmt::Display for Broken {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                Err(fmt::Error)
            }
        }
        let mut stats = StatsWriter::new();
        stats.stat("ok", 1);
        stats.stat("broken", Broken);
        let mut out = Vec::new();
        stats.finish(&mut out, None);
        assert_eq!(out, b"STAT ok 1\r\nEND\r\n");
    }

    #[test]
    fn stats_error_has_both_forms() {
        let mut out = Vec::new();
        write_stats_error(&mut out, "unknown stats item foo", None);
        assert_eq!(out, b"CLIENT_ERROR unknown stats item foo\r\n");
        let mut out = Vec::new();
        write_stats_error(&mut out, "unknown stats item foo", Some(3));
        assert_eq!(out, b"result 400 22 3\r\nunknown stats item foo");
    }

    #[test]
    fn stats_error_keeps_the_memcached_form_on_one_line() {
        let mut out = Vec::new();
        write_stats_error(&mut out, "a\r\nb", None);
        assert_eq!(out, b"CLIENT_ERROR a  b\r\n");
    }

    #[test]
    fn stats_reset_has_both_forms() {
        let mut out = Vec::new();
        write_stats_reset(&mut out, None);
        assert_eq!(out, b"RESET\r\n");
        let mut out = Vec::new();
        write_stats_reset(&mut out, Some(9));
        assert_eq!(out, b"result 200 7 9\r\nRESET\r\n");
    }
}
