//! Reply codes and the typed error for a request line the broker must answer with an error.

use std::fmt;

use super::limits::Limits;
use super::OPAQUE_NONE;

/// The code of a `result` reply (HTTP-like). See `protocol.md`, section "Codes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Code {
    Ok = 200,
    /// get: offset outside [min, max]; the body is a valid offset.
    Moved = 301,
    BadRequest = 400,
    Forbidden = 403,
    NotFound = 404,
    /// Stale generation, not the owner, unknown member, group mode clash.
    Conflict = 409,
    /// A half-sent line or body timed out; the connection is then closed.
    RequestTimeout = 408,
    /// Put body over body_bytes_max; the body is skipped by its declared length.
    PayloadTooLarge = 413,
    /// Header line over line_bytes_max; discarded up to its `\n`.
    LineTooLong = 414,
    Internal = 500,
    NotImplemented = 501,
    Unavailable = 503,
    InsufficientStorage = 507,
    /// The record at the requested offset failed its CRC.
    Corrupt = 520,
}

impl Code {
    /// The decimal code as sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// A short English name, for logs and documentation.
    pub fn reason(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Moved => "Moved",
            Code::BadRequest => "Bad Request",
            Code::Forbidden => "Forbidden",
            Code::NotFound => "Not Found",
            Code::Conflict => "Conflict",
            Code::RequestTimeout => "Request Timeout",
            Code::PayloadTooLarge => "Payload Too Large",
            Code::LineTooLong => "Line Too Long",
            Code::Internal => "Internal Error",
            Code::NotImplemented => "Not Implemented",
            Code::Unavailable => "Unavailable",
            Code::InsufficientStorage => "Insufficient Storage",
            Code::Corrupt => "Corrupt Record",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// A request line the broker must answer with an error. `body_to_skip` is Some(n) when the line
/// announced a body of n bytes that the server must discard (e.g. put with a bad topic name or an
/// oversized body), None when no body length could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 400 for any malformed line, 413 for an oversized put body, 414 for an overlong line.
    pub code: Code,
    /// What was wrong, for the reply body. One line: no `\r` or `\n`.
    pub message: String,
    /// The line's last token when it is an int32, else [`OPAQUE_NONE`].
    pub opaque: i32,
    /// Body bytes announced by the line that the server must read and discard.
    pub body_to_skip: Option<usize>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The error for a header line longer than `line_bytes_max`. The server detects this itself
/// (it never passes such a line to [`parse_line`](super::parse_line)), discards the line up to
/// its `\n` and answers this with opaque [`OPAQUE_NONE`]. Nothing after the `\n` is skipped.
pub fn line_too_long(limits: &Limits) -> ParseError {
    ParseError {
        code: Code::LineTooLong,
        message: format!(
            "line exceeds line_bytes_max {} (including its \\r\\n)",
            limits.line_bytes_max
        ),
        opaque: OPAQUE_NONE,
        body_to_skip: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_wire_numbers() {
        let expected = [
            (Code::Ok, 200),
            (Code::Moved, 301),
            (Code::BadRequest, 400),
            (Code::Forbidden, 403),
            (Code::NotFound, 404),
            (Code::RequestTimeout, 408),
            (Code::PayloadTooLarge, 413),
            (Code::LineTooLong, 414),
            (Code::Internal, 500),
            (Code::NotImplemented, 501),
            (Code::Unavailable, 503),
            (Code::InsufficientStorage, 507),
            (Code::Corrupt, 520),
        ];
        for (code, number) in expected {
            assert_eq!(code.as_u16(), number);
            assert_eq!(code.to_string(), number.to_string());
            assert!(!code.reason().is_empty());
        }
    }

    #[test]
    fn line_too_long_is_414_with_no_opaque_and_nothing_to_skip() {
        let error = line_too_long(&Limits::default());
        assert_eq!(error.code, Code::LineTooLong);
        assert_eq!(error.opaque, OPAQUE_NONE);
        assert_eq!(error.body_to_skip, None);
        assert_eq!(
            error.message,
            "line exceeds line_bytes_max 1024 (including its \\r\\n)"
        );
    }
}
