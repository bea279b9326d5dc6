//! The wire protocol: bytes to requests and replies to bytes. Pure code: no sockets, no disk,
//! no broker state. `protocol.md` at the repository root is the contract this module implements;
//! change both in the same commit.
//!
//! # Layout
//! - [`limits`]: the size limits the parser enforces ([`Limits`]).
//! - [`error`]: reply codes ([`Code`]) and the typed error for a bad request line ([`ParseError`]).
//! - [`token`]: splitting a line into tokens, reading numbers, quoting tokens in messages.
//! - [`name`]: the topic/group name grammar.
//! - [`request`]: framing ([`find_line`]) and one header line to a [`Request`] ([`parse_line`]).
//! - [`put_body`]: a put body split into tag, properties and payload; the Metamorphosis checksum.
//! - [`reply`]: `result` and `value` reply headers.
//! - [`stats`]: `STAT` lines in the memcached form and the `result` form.
//!
//! Nothing here panics on any input, and nothing allocates per request except error messages.

pub mod error;
pub mod group;
pub mod limits;
pub mod name;
pub mod put_body;
pub mod reply;
pub mod request;
pub mod stats;
pub mod token;

pub use error::{line_too_long, Code, ParseError};
pub use group::{Commit, Fetch, Join, Member, Mode, Reset, ResetTarget, Start};
pub use limits::Limits;
pub use name::is_valid_name;
pub use put_body::{
    checksum, parse_properties, split_put_body, PutBody, FLAG_ATTRIBUTE, FLAG_PROPERTIES,
};
pub use reply::{write_error, write_put_ok, write_result, write_value_header};
pub use request::{find_line, parse_line, Get, OffsetReq, Put, Request, GET_TAGS_MAX};
pub use stats::{write_stats_error, write_stats_reset, StatsWriter};

/// The opaque used when a request carries none (`stats`, `version` without one, or an error
/// reply to a line whose last token is not an int32): Metamorphosis' `Integer.MAX_VALUE`.
pub const OPAQUE_NONE: i32 = i32::MAX;
