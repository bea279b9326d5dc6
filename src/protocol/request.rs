//! Framing and request lines: finding the end of a header line in a read buffer, and turning one
//! header line into a [`Request`] or a [`ParseError`] the server answers with. Bodies are not
//! read here: a put announces its body length and the server reads the body separately.
//!
//! Verbs are matched as whole, case-sensitive words, never by their first character.

use super::error::{line_too_long, Code, ParseError};
use super::group::{
    parse_commit, parse_fetch, parse_join, parse_member, parse_reset, Commit, Fetch, Join, Member,
    Reset,
};
use super::limits::Limits;
use super::name::check_name;
use super::token::{int32, non_negative_int32, shown, text, uint64, Tokens};

/// One parsed request line. Borrowed strings point into the line.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Put(Put<'a>),
    Get(Get<'a>),
    Offset(OffsetReq<'a>),
    /// `item` is None for `stats`, Some("") for `stats  7` (empty item: general counters).
    /// `opaque` is None in the memcached form (no opaque token): the reply has no header.
    Stats {
        item: Option<&'a str>,
        opaque: Option<i32>,
    },
    /// `opaque` None: reply with [`OPAQUE_NONE`](super::OPAQUE_NONE).
    Version {
        opaque: Option<i32>,
    },
    /// Send pending replies, then close. No reply.
    Quit,
    /// Recognised so the broker can answer 501.
    Transaction {
        opaque: i32,
    },
    /// Master-to-slave replication. The broker skips `body_bytes` and answers 501.
    Sync {
        body_bytes: usize,
        opaque: i32,
    },
    Commit(Commit<'a>),
    Fetch(Fetch<'a>),
    Join(Join<'a>),
    Heartbeat(Member<'a>),
    Leave(Member<'a>),
    Reset(Reset<'a>),
}

impl Request<'_> {
    /// The verb as sent, for logs and per-command counters.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Put(_) => "put",
            Request::Get(_) => "get",
            Request::Offset(_) => "offset",
            Request::Stats { .. } => "stats",
            Request::Version { .. } => "version",
            Request::Quit => "quit",
            Request::Transaction { .. } => "transaction",
            Request::Sync { .. } => "sync",
            Request::Commit(_) => "commit",
            Request::Fetch(_) => "fetch",
            Request::Join(_) => "join",
            Request::Heartbeat(_) => "heartbeat",
            Request::Leave(_) => "leave",
            Request::Reset(_) => "reset",
        }
    }
}

/// `put <topic> <partition> <len> <flag> [<checksum>] [<txKey>] <opaque>`
#[derive(Debug, PartialEq)]
pub struct Put<'a> {
    pub topic: &'a str,
    /// None when the client sent -1: the broker chooses (round-robin per topic).
    pub partition: Option<u32>,
    /// The body length that follows the line; at most `body_bytes_max`.
    pub body_bytes: usize,
    /// The int32 flag as sent, reinterpreted as u32 bits.
    pub flag: u32,
    /// None when absent or -1. Otherwise at most 0x7FFF_FFFF.
    pub checksum: Option<u32>,
    /// A transaction key: the broker answers 501 after consuming the body.
    pub tx_key: Option<&'a str>,
    pub opaque: i32,
}

/// `get <topic> <group> <partition> <offset> <maxSize> [<waitMs> [<tags>]] <opaque>`
#[derive(Debug, PartialEq)]
pub struct Get<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub partition: u32,
    /// A logical offset in the partition.
    pub offset: u64,
    /// 1..=i32::MAX as sent; the broker clamps it to `get_bytes_max`.
    pub max_bytes: u32,
    /// How long to wait when caught up (long polling); 0 = answer at once. The broker clamps
    /// it to `wait_ms_max`.
    pub wait_ms: u32,
    /// The tags wanted (`*` or absent: every message).
    pub tags: Option<Vec<&'a [u8]>>,
    pub opaque: i32,
}

/// Most tags one get may ask for.
pub const GET_TAGS_MAX: usize = 32;

/// `offset <topic> <group> <partition> <offset> <opaque>`
#[derive(Debug, PartialEq)]
pub struct OffsetReq<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub opaque: i32,
}

/// Finds the end of the next line in `buf`: returns Some((line_len_without_terminator,
/// consumed_bytes_including_\n)). `\r\n` and bare `\n` both end a line; the `\r` is not part of
/// the line. None when `buf` holds no `\n` yet.
pub fn find_line(buf: &[u8]) -> Option<(usize, usize)> {
    let newline = buf.iter().position(|&byte| byte == b'\n')?;
    let line_len = match newline.checked_sub(1).and_then(|i| buf.get(i)) {
        Some(b'\r') => newline - 1,
        _ => newline,
    };
    Some((line_len, newline + 1))
}

/// Parses one header line (terminator already removed).
///
/// # Errors
/// A [`ParseError`] carrying the reply code (400, 413, or 414 for a line the server should have
/// rejected already), a message saying what was wrong, the opaque to answer with (the last token
/// when it is an int32) and, for put and sync, the body length the server must skip.
pub fn parse_line<'a>(line: &'a [u8], limits: &Limits) -> Result<Request<'a>, ParseError> {
    // The limit counts the terminator; assume the shortest one (bare `\n`).
    if line.len() >= limits.line_bytes_max {
        return Err(line_too_long(limits));
    }
    let tokens = Tokens::split(line);
    match tokens.get(0) {
        b"put" => parse_put(&tokens, limits),
        b"get" => parse_get(&tokens, limits),
        b"offset" => parse_offset(&tokens, limits),
        b"stats" => parse_stats(&tokens),
        b"version" => parse_version(&tokens),
        b"quit" => parse_quit(&tokens),
        b"transaction" => parse_transaction(&tokens),
        b"sync" => parse_sync(&tokens),
        b"commit" => parse_commit(&tokens, limits),
        b"fetch" => parse_fetch(&tokens, limits),
        b"join" => parse_join(&tokens, limits),
        b"heartbeat" => parse_member(&tokens, limits, false).map(Request::Heartbeat),
        b"leave" => parse_member(&tokens, limits, true).map(Request::Leave),
        b"reset" => parse_reset(&tokens, limits),
        b"" if tokens.count() == 1 => Err(Reject::new(&tokens, None).bad("empty request line")),
        verb => {
            let message = format!("unknown command {}", shown(verb));
            Err(Reject::new(&tokens, None).bad(message))
        }
    }
}

/// What every error reply to one line shares: its opaque and the body to skip.
pub(super) struct Reject {
    opaque: i32,
    body_to_skip: Option<usize>,
}

impl Reject {
    pub(super) fn new(tokens: &Tokens<'_>, body_to_skip: Option<usize>) -> Self {
        Reject {
            opaque: tokens.error_opaque(),
            body_to_skip,
        }
    }

    fn with(&self, code: Code, message: impl Into<String>) -> ParseError {
        ParseError {
            code,
            message: message.into(),
            opaque: self.opaque,
            body_to_skip: self.body_to_skip,
        }
    }

    pub(super) fn bad(&self, message: impl Into<String>) -> ParseError {
        self.with(Code::BadRequest, message)
    }

    pub(super) fn count(&self, verb: &str, expected: &str, tokens: &Tokens<'_>) -> ParseError {
        self.bad(format!("{verb} takes {expected}, got {}", tokens.count()))
    }

    /// `bad <field> '<token>': must be <range>`.
    pub(super) fn field(&self, field: &str, token: &[u8], range: &str) -> ParseError {
        self.bad(format!("bad {field} {}: must be {range}", shown(token)))
    }
}

const RANGE_INT32: &str = "an int32, -2147483648 to 2147483647";
const RANGE_PARTITION: &str = "0 to 2147483647";
const RANGE_OFFSET: &str = "0 to 18446744073709551615";

pub(super) fn opaque(reject: &Reject, tokens: &Tokens<'_>) -> Result<i32, ParseError> {
    int32(tokens.last()).ok_or_else(|| reject.field("opaque", tokens.last(), RANGE_INT32))
}

pub(super) fn partition(reject: &Reject, token: &[u8]) -> Result<u32, ParseError> {
    non_negative_int32(token)
        .and_then(|value| u32::try_from(value).ok())
        .ok_or_else(|| reject.field("partition", token, RANGE_PARTITION))
}

pub(super) fn offset(reject: &Reject, token: &[u8]) -> Result<u64, ParseError> {
    uint64(token).ok_or_else(|| reject.field("offset", token, RANGE_OFFSET))
}

pub(super) fn name<'a>(
    reject: &Reject,
    kind: &str,
    token: &'a [u8],
    limits: &Limits,
) -> Result<&'a str, ParseError> {
    check_name(kind, token, limits.name_bytes_max).map_err(|message| reject.bad(message))
}

// put <topic> <partition> <len> <flag> <opaque>                       (6 tokens)
// put <topic> <partition> <len> <flag> <checksum> <opaque>            (7 tokens)
// put <topic> <partition> <len> <flag> <txKey> <opaque>               (7 tokens)
// put <topic> <partition> <len> <flag> <checksum> <txKey> <opaque>    (8 tokens)
//
// The length is read first, from the fourth token whatever the token count, so that every error
// after it can tell the server how much body to skip. Other tokens are checked left to right.
fn parse_put<'a>(tokens: &Tokens<'a>, limits: &Limits) -> Result<Request<'a>, ParseError> {
    let body_bytes = if tokens.count() > 3 {
        non_negative_int32(tokens.get(3))
    } else {
        None
    };
    let reject = Reject::new(tokens, body_bytes);
    if !(6..=8).contains(&tokens.count()) {
        return Err(reject.count("put", "6 to 8 tokens", tokens));
    }
    let topic = name(&reject, "topic", tokens.get(1), limits)?;
    let partition = match int32(tokens.get(2)) {
        Some(-1) => None,
        Some(value) if value >= 0 => Some(value.unsigned_abs()),
        _ => return Err(reject.field("partition", tokens.get(2), "-1 or 0 to 2147483647")),
    };
    let Some(body_bytes) = body_bytes else {
        return Err(reject.field("length", tokens.get(3), "0 to 2147483647"));
    };
    if body_bytes > limits.body_bytes_max {
        let message = format!(
            "body of {body_bytes} bytes exceeds body_bytes_max {}",
            limits.body_bytes_max
        );
        return Err(reject.with(Code::PayloadTooLarge, message));
    }
    let flag = int32(tokens.get(4))
        .map(|value| value as u32) // stored as sent: the int32's bits
        .ok_or_else(|| reject.field("flag", tokens.get(4), RANGE_INT32))?;
    let (checksum_token, tx_key_token) = match tokens.count() {
        6 => (None, None),
        7 if looks_like_checksum(tokens.get(5)) => (Some(tokens.get(5)), None),
        7 => (None, Some(tokens.get(5))),
        _ => (Some(tokens.get(5)), Some(tokens.get(6))),
    };
    let checksum = match checksum_token {
        None => None,
        Some(token) => checksum(&reject, token)?,
    };
    let tx_key = match tx_key_token {
        None => None,
        Some(token) => Some(tx_key(&reject, token)?),
    };
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Put(Put {
        topic,
        partition,
        body_bytes,
        flag,
        checksum,
        tx_key,
        opaque,
    }))
}

/// The Metamorphosis rule for a 7-token put: token 6 is a checksum when its first character is a
/// digit or `-`, otherwise a transaction key.
fn looks_like_checksum(token: &[u8]) -> bool {
    matches!(token.first(), Some(byte) if byte.is_ascii_digit() || *byte == b'-')
}

/// -1 means "not given"; otherwise 0..=i32::MAX (a masked CRC is never negative).
fn checksum(reject: &Reject, token: &[u8]) -> Result<Option<u32>, ParseError> {
    match int32(token) {
        Some(-1) => Ok(None),
        Some(value) if value >= 0 => Ok(Some(value.unsigned_abs())),
        _ => Err(reject.field("checksum", token, "-1 or 0 to 2147483647")),
    }
}

fn tx_key<'a>(reject: &Reject, token: &'a [u8]) -> Result<&'a str, ParseError> {
    match text(token) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(reject.field("transaction key", token, "non-empty UTF-8")),
    }
}

// get <topic> <group> <partition> <offset> <maxSize> <opaque>
// get <topic> <group> <partition> <offset> <maxSize> <waitMs> <opaque>
// get <topic> <group> <partition> <offset> <maxSize> <waitMs> <tags> <opaque>
fn parse_get<'a>(tokens: &Tokens<'a>, limits: &Limits) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if !(7..=9).contains(&tokens.count()) {
        return Err(reject.count("get", "7 to 9 tokens", tokens));
    }
    let topic = name(&reject, "topic", tokens.get(1), limits)?;
    let group = name(&reject, "group", tokens.get(2), limits)?;
    let partition = partition(&reject, tokens.get(3))?;
    let offset = offset(&reject, tokens.get(4))?;
    // The draft's wording for a number out of range is `bad maxSize <n>`, unquoted.
    let max_bytes = match int32(tokens.get(5)) {
        Some(value) if value > 0 => value.unsigned_abs(),
        Some(value) => return Err(reject.bad(format!("bad maxSize {value}"))),
        None => return Err(reject.field("maxSize", tokens.get(5), "1 to 2147483647")),
    };
    let wait_ms = match tokens.count() {
        7 => 0,
        _ => non_negative_int32(tokens.get(6))
            .map(|v| v as u32)
            .ok_or_else(|| reject.field("waitMs", tokens.get(6), "0 to 2147483647"))?,
    };
    let tags = match tokens.count() {
        9 => get_tags(&reject, tokens.get(7))?,
        _ => None,
    };
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Get(Get {
        topic,
        group,
        partition,
        offset,
        max_bytes,
        wait_ms,
        tags,
        opaque,
    }))
}

/// `*` (None: every message) or `tag1||tag2||...`.
fn get_tags<'a>(reject: &Reject, token: &'a [u8]) -> Result<Option<Vec<&'a [u8]>>, ParseError> {
    if token == b"*" {
        return Ok(None);
    }
    let tags: Vec<&[u8]> = token
        .split(|&b| b == b'|')
        .filter(|t| !t.is_empty())
        .collect();
    let well_formed = token.windows(2).filter(|w| w == b"||").count() + 1 == tags.len()
        && !token.starts_with(b"|")
        && !token.ends_with(b"|");
    if tags.is_empty() || tags.len() > GET_TAGS_MAX || !well_formed {
        let range = "* or 1 to 32 tags joined by ||";
        return Err(reject.field("tags", token, range));
    }
    Ok(Some(tags))
}

// offset <topic> <group> <partition> <offset> <opaque>
fn parse_offset<'a>(tokens: &Tokens<'a>, limits: &Limits) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if tokens.count() != 6 {
        return Err(reject.count("offset", "6 tokens", tokens));
    }
    let topic = name(&reject, "topic", tokens.get(1), limits)?;
    let group = name(&reject, "group", tokens.get(2), limits)?;
    let partition = partition(&reject, tokens.get(3))?;
    let offset = offset(&reject, tokens.get(4))?;
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Offset(OffsetReq {
        topic,
        group,
        partition,
        offset,
        opaque,
    }))
}

// stats                      memcached form, general counters
// stats <item>               memcached form (the single argument is the item, not an opaque)
// stats <item> <opaque>      result form; <item> may be empty: `stats  <opaque>`
fn parse_stats<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    let item = match tokens.count() {
        1 => None,
        2 | 3 => match text(tokens.get(1)) {
            Some(item) => Some(item),
            None => return Err(reject.field("stats item", tokens.get(1), "UTF-8")),
        },
        _ => return Err(reject.count("stats", "1 to 3 tokens", tokens)),
    };
    let opaque = match tokens.count() {
        3 => Some(opaque(&reject, tokens)?),
        _ => None,
    };
    Ok(Request::Stats { item, opaque })
}

// version [<opaque>]
fn parse_version<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    match tokens.count() {
        1 => Ok(Request::Version { opaque: None }),
        2 => Ok(Request::Version {
            opaque: Some(opaque(&reject, tokens)?),
        }),
        _ => Err(reject.count("version", "1 or 2 tokens", tokens)),
    }
}

// quit
fn parse_quit<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ParseError> {
    match tokens.count() {
        1 => Ok(Request::Quit),
        _ => Err(Reject::new(tokens, None).count("quit", "1 token", tokens)),
    }
}

// transaction <txKey> <sessionId> <type> [<timeout>] [<uniqueQualifier>] <opaque>
// Only the token count and the opaque are checked: the broker answers 501.
fn parse_transaction<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if !(5..=7).contains(&tokens.count()) {
        return Err(reject.count("transaction", "5 to 7 tokens", tokens));
    }
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Transaction { opaque })
}

// sync <topic> <partition> <len> <flag> <msgId> [<checksum>] <opaque>
// Only the length (so the body can be skipped), the token count and the opaque are checked: the
// broker answers 501. The length is not held to body_bytes_max: the body is skipped, not stored.
fn parse_sync<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ParseError> {
    let body_bytes = if tokens.count() > 3 {
        non_negative_int32(tokens.get(3))
    } else {
        None
    };
    let reject = Reject::new(tokens, body_bytes);
    if !(7..=8).contains(&tokens.count()) {
        return Err(reject.count("sync", "7 or 8 tokens", tokens));
    }
    let Some(body_bytes) = body_bytes else {
        return Err(reject.field("length", tokens.get(3), "0 to 2147483647"));
    };
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Sync { body_bytes, opaque })
}

#[cfg(test)]
mod tests {
    use super::super::OPAQUE_NONE;
    use super::*;
    use proptest::prelude::*;

    fn parse(line: &str) -> Result<Request<'_>, ParseError> {
        parse_line(line.as_bytes(), &Limits::default())
    }

    fn error(line: &str) -> ParseError {
        match parse(line) {
            Ok(request) => panic!("{line:?} parsed as {request:?}"),
            Err(error) => error,
        }
    }

    fn put(line: &str) -> Put<'_> {
        match parse(line) {
            Ok(Request::Put(put)) => put,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    // --- framing ---

    #[test]
    fn find_line_strips_crlf_and_bare_lf() {
        assert_eq!(find_line(b"quit\r\nrest"), Some((4, 6)));
        assert_eq!(find_line(b"quit\nrest"), Some((4, 5)));
        assert_eq!(find_line(b"\n"), Some((0, 1)));
        assert_eq!(find_line(b"\r\n"), Some((0, 2)));
    }

    #[test]
    fn find_line_waits_for_a_newline() {
        assert_eq!(find_line(b""), None);
        assert_eq!(find_line(b"quit\r"), None);
        assert_eq!(find_line(b"put t 0 5 0 1"), None);
    }

    #[test]
    fn find_line_keeps_a_carriage_return_inside_the_line() {
        assert_eq!(find_line(b"a\rb\n"), Some((3, 4)));
    }

    // --- put ---

    #[test]
    fn old_client_put_parses_six_tokens() {
        assert_eq!(
            put("put meta-test 0 5 0 3"),
            Put {
                topic: "meta-test",
                partition: Some(0),
                body_bytes: 5,
                flag: 0,
                checksum: None,
                tx_key: None,
                opaque: 3,
            }
        );
    }

    #[test]
    fn seven_token_put_reads_digit_token_as_checksum() {
        // metamorphosis.md 1.6 example 1.
        let put = put("put meta-test 0 5 0 907060870 1");
        assert_eq!(put.checksum, Some(907_060_870));
        assert_eq!(put.tx_key, None);
        assert_eq!(put.opaque, 1);
    }

    #[test]
    fn seven_token_put_with_attribute_flag_reads_checksum() {
        // metamorphosis.md 1.6 example 2.
        let put = put("put meta-test 0 13 1 1184113660 2");
        assert_eq!(put.body_bytes, 13);
        assert_eq!(put.flag, 1);
        assert_eq!(put.checksum, Some(1_184_113_660));
    }

    #[test]
    fn seven_token_put_reads_minus_one_as_no_checksum() {
        let put = put("put t 0 5 0 -1 9");
        assert_eq!(put.checksum, None);
        assert_eq!(put.tx_key, None);
    }

    #[test]
    fn seven_token_put_reads_letter_token_as_tx_key() {
        let put = put("put t 0 5 0 TX:10.0.0.5-1362990000000-1:1 12");
        assert_eq!(put.checksum, None);
        assert_eq!(put.tx_key, Some("TX:10.0.0.5-1362990000000-1:1"));
        assert_eq!(put.opaque, 12);
    }

    #[test]
    fn seven_token_put_with_dash_token_that_is_not_a_number_is_bad_checksum() {
        let error = error("put t 0 5 0 -abc 9");
        assert_eq!(error.code, Code::BadRequest);
        assert!(
            error.message.starts_with("bad checksum '-abc'"),
            "{}",
            error.message
        );
        assert_eq!(error.body_to_skip, Some(5));
        assert_eq!(error.opaque, 9);
    }

    #[test]
    fn put_with_checksum_and_tx_key_parses_eight_tokens() {
        assert_eq!(
            put("put meta-test 0 5 0 907060870 TX:10.0.0.5-1362990000000-1:1 12"),
            Put {
                topic: "meta-test",
                partition: Some(0),
                body_bytes: 5,
                flag: 0,
                checksum: Some(907_060_870),
                tx_key: Some("TX:10.0.0.5-1362990000000-1:1"),
                opaque: 12,
            }
        );
    }

    #[test]
    fn put_partition_minus_one_lets_the_broker_choose() {
        assert_eq!(put("put t -1 5 0 1").partition, None);
    }

    #[test]
    fn put_partition_below_minus_one_is_bad_and_skips_the_body() {
        let error = error("put t -2 5 0 1");
        assert_eq!(error.code, Code::BadRequest);
        assert_eq!(
            error.message,
            "bad partition '-2': must be -1 or 0 to 2147483647"
        );
        assert_eq!(error.body_to_skip, Some(5));
        assert_eq!(error.opaque, 1);
    }

    #[test]
    fn put_with_non_numeric_partition_names_the_token() {
        let error = error("put t x 5 0 1");
        assert!(
            error.message.starts_with("bad partition 'x'"),
            "{}",
            error.message
        );
        assert_eq!(error.body_to_skip, Some(5));
    }

    #[test]
    fn put_negative_flag_is_kept_as_its_bits() {
        assert_eq!(put("put t 0 5 -1 1").flag, u32::MAX);
        assert_eq!(put("put t 0 5 3 1").flag, 3);
    }

    #[test]
    fn put_with_too_few_tokens_says_how_many() {
        let error = error("put t 0");
        assert_eq!(error.code, Code::BadRequest);
        assert_eq!(error.message, "put takes 6 to 8 tokens, got 3");
        assert_eq!(error.body_to_skip, None);
        assert_eq!(error.opaque, 0);
    }

    #[test]
    fn put_with_too_many_tokens_still_skips_its_body() {
        let error = error("put t 0 5 0 1 k 2 3");
        assert_eq!(error.message, "put takes 6 to 8 tokens, got 9");
        assert_eq!(error.body_to_skip, Some(5));
        assert_eq!(error.opaque, 3);
    }

    #[test]
    fn put_over_body_bytes_max_is_413_and_skips_the_body() {
        let error = error("put t 0 5000000 0 7");
        assert_eq!(error.code, Code::PayloadTooLarge);
        assert_eq!(
            error.message,
            "body of 5000000 bytes exceeds body_bytes_max 4194304"
        );
        assert_eq!(error.body_to_skip, Some(5_000_000));
        assert_eq!(error.opaque, 7);
    }

    #[test]
    fn put_at_body_bytes_max_is_accepted() {
        assert_eq!(put("put t 0 4194304 0 1").body_bytes, 4_194_304);
        assert_eq!(put("put t 0 0 0 1").body_bytes, 0);
    }

    #[test]
    fn put_with_unreadable_length_skips_nothing() {
        for line in ["put t 0 x 0 1", "put t 0 -5 0 1", "put t 0 2147483648 0 1"] {
            let error = error(line);
            assert_eq!(error.code, Code::BadRequest, "{line}");
            assert!(
                error.message.starts_with("bad length "),
                "{}",
                error.message
            );
            assert_eq!(error.body_to_skip, None, "{line}");
        }
    }

    #[test]
    fn put_with_bad_topic_name_skips_the_body() {
        let error = error("put a/b 0 5 0 1");
        assert_eq!(error.code, Code::BadRequest);
        assert!(
            error.message.starts_with("bad topic name 'a/b'"),
            "{}",
            error.message
        );
        assert_eq!(error.body_to_skip, Some(5));
    }

    #[test]
    fn put_with_bad_opaque_answers_opaque_none() {
        let error = error("put t 0 5 0 x");
        assert_eq!(
            error.message,
            "bad opaque 'x': must be an int32, -2147483648 to 2147483647"
        );
        assert_eq!(error.opaque, OPAQUE_NONE);
        assert_eq!(error.body_to_skip, Some(5));
    }

    #[test]
    fn put_with_empty_tx_key_is_bad() {
        // Two spaces: the empty token 6 is not a checksum, and an empty key is refused.
        let error = error("put t 0 5 0  1");
        assert!(
            error.message.starts_with("bad transaction key ''"),
            "{}",
            error.message
        );
        assert_eq!(error.body_to_skip, Some(5));
    }

    #[test]
    fn put_checksum_other_negative_is_bad() {
        let error = error("put t 0 5 0 -2 k 1");
        assert!(
            error.message.starts_with("bad checksum '-2'"),
            "{}",
            error.message
        );
    }

    // --- verbs ---

    #[test]
    fn unknown_verb_beginning_with_p_is_not_put() {
        let error = error("pub t 0 5 0 1");
        assert_eq!(error.code, Code::BadRequest);
        assert_eq!(error.message, "unknown command 'pub'");
        assert_eq!(error.body_to_skip, None);
        assert_eq!(error.opaque, 1);
    }

    #[test]
    fn verbs_are_case_sensitive_whole_words() {
        for line in [
            "PUT t 0 5 0 1",
            "puts t 0 5 0 1",
            "q",
            "quitx",
            "ver 1",
            "s",
            "value 5 1",
        ] {
            let error = error(line);
            assert!(
                error.message.starts_with("unknown command "),
                "{line}: {}",
                error.message
            );
        }
    }

    #[test]
    fn unknown_command_message_names_the_verb() {
        assert_eq!(error("foo").message, "unknown command 'foo'");
        assert_eq!(error("foo").opaque, OPAQUE_NONE);
    }

    #[test]
    fn empty_line_is_a_bad_request() {
        let error = error("");
        assert_eq!(error.code, Code::BadRequest);
        assert_eq!(error.message, "empty request line");
    }

    #[test]
    fn leading_space_makes_an_empty_verb() {
        assert_eq!(error(" quit").message, "unknown command ''");
    }

    #[test]
    fn line_at_line_bytes_max_is_414() {
        let limits = Limits::default();
        let line = vec![b'a'; limits.line_bytes_max];
        let error = parse_line(&line, &limits).unwrap_err();
        assert_eq!(error.code, Code::LineTooLong);
    }

    // --- get / offset ---

    #[test]
    fn get_parses_seven_tokens() {
        assert_eq!(
            parse("get meta-test meta-example 0 58 1048576 6"),
            Ok(Request::Get(Get {
                topic: "meta-test",
                group: "meta-example",
                partition: 0,
                offset: 58,
                max_bytes: 1_048_576,
                opaque: 6,
                wait_ms: 0,
                tags: None,
            }))
        );
    }

    #[test]
    fn get_accepts_offsets_up_to_u64_max() {
        let Ok(Request::Get(get)) = parse("get t g 0 18446744073709551615 1 7") else {
            panic!("not a get");
        };
        assert_eq!(get.offset, u64::MAX);
    }

    #[test]
    fn get_with_zero_or_negative_max_size_is_bad() {
        let zero = error("get t g 0 0 0 4");
        assert_eq!(zero.code, Code::BadRequest);
        assert_eq!(zero.message, "bad maxSize 0");
        assert_eq!(zero.opaque, 4);
        assert_eq!(zero.body_to_skip, None);
        let negative = error("get t g 0 0 -2147483648 5");
        assert_eq!(negative.message, "bad maxSize -2147483648");
    }

    #[test]
    fn get_with_non_numeric_max_size_quotes_the_token() {
        let error = error("get t g 0 0 big 4");
        assert_eq!(error.message, "bad maxSize 'big': must be 1 to 2147483647");
    }

    #[test]
    fn get_with_negative_offset_or_partition_is_bad() {
        assert!(error("get t g 0 -1 10 4")
            .message
            .starts_with("bad offset '-1'"));
        assert!(error("get t g -1 0 10 4")
            .message
            .starts_with("bad partition '-1'"));
    }

    #[test]
    fn get_with_bad_group_name_says_group() {
        assert!(error("get t .g 0 0 10 4")
            .message
            .starts_with("bad group name '.g'"));
    }

    #[test]
    fn get_with_wrong_token_count_says_how_many() {
        assert_eq!(
            error("get t g 0 0 10").message,
            "get takes 7 to 9 tokens, got 6"
        );
        assert_eq!(
            error("get t g 0 0 10 5 * 1 9").message,
            "get takes 7 to 9 tokens, got 10"
        );
    }

    #[test]
    fn offset_parses_six_tokens() {
        assert_eq!(
            parse("offset meta-test meta-example 0 30 9"),
            Ok(Request::Offset(OffsetReq {
                topic: "meta-test",
                group: "meta-example",
                partition: 0,
                offset: 30,
                opaque: 9,
            }))
        );
        assert_eq!(
            error("offset t g 0 30").message,
            "offset takes 6 tokens, got 5"
        );
    }

    // --- stats / version / quit ---

    #[test]
    fn bare_stats_is_memcached_form_without_item() {
        assert_eq!(
            parse("stats"),
            Ok(Request::Stats {
                item: None,
                opaque: None
            })
        );
    }

    #[test]
    fn stats_with_one_argument_reads_it_as_the_item() {
        assert_eq!(
            parse("stats 1"),
            Ok(Request::Stats {
                item: Some("1"),
                opaque: None
            })
        );
    }

    #[test]
    fn stats_with_empty_item_between_two_spaces_is_result_form() {
        assert_eq!(
            parse("stats  7"),
            Ok(Request::Stats {
                item: Some(""),
                opaque: Some(7)
            })
        );
    }

    #[test]
    fn stats_with_item_and_opaque_is_result_form() {
        assert_eq!(
            parse("stats topics 8"),
            Ok(Request::Stats {
                item: Some("topics"),
                opaque: Some(8)
            })
        );
    }

    #[test]
    fn stats_with_too_many_tokens_or_bad_opaque_is_bad() {
        assert_eq!(
            error("stats a b c").message,
            "stats takes 1 to 3 tokens, got 4"
        );
        let error = error("stats topics x");
        assert!(error.message.starts_with("bad opaque 'x'"));
        assert_eq!(error.opaque, OPAQUE_NONE);
    }

    #[test]
    fn version_takes_an_optional_opaque() {
        assert_eq!(parse("version"), Ok(Request::Version { opaque: None }));
        assert_eq!(
            parse("version 10"),
            Ok(Request::Version { opaque: Some(10) })
        );
        assert!(error("version x").message.starts_with("bad opaque 'x'"));
        assert_eq!(
            error("version 1 2").message,
            "version takes 1 or 2 tokens, got 3"
        );
    }

    #[test]
    fn quit_takes_no_arguments() {
        assert_eq!(parse("quit"), Ok(Request::Quit));
        let error = error("quit 5");
        assert_eq!(error.message, "quit takes 1 token, got 2");
        assert_eq!(error.opaque, 5);
    }

    // --- transaction / sync ---

    #[test]
    fn transaction_is_recognised_with_its_opaque() {
        assert_eq!(
            parse("transaction TX:10.0.0.5-1362990000000-1:1 10.0.0.5-1362990000000-1 BEGIN 11"),
            Ok(Request::Transaction { opaque: 11 })
        );
        assert_eq!(
            parse("transaction TX:s:1 s BEGIN 10 11"),
            Ok(Request::Transaction { opaque: 11 })
        );
        assert_eq!(
            error("transaction a b").message,
            "transaction takes 5 to 7 tokens, got 3"
        );
    }

    #[test]
    fn sync_is_recognised_with_its_body_length() {
        assert_eq!(
            parse("sync meta-test 0 5 0 4097 907060870 20"),
            Ok(Request::Sync {
                body_bytes: 5,
                opaque: 20
            })
        );
        assert_eq!(
            parse("sync meta-test 0 5 0 4097 21"),
            Ok(Request::Sync {
                body_bytes: 5,
                opaque: 21
            })
        );
    }

    #[test]
    fn sync_with_bad_opaque_still_skips_its_body() {
        let error = error("sync t 0 5 0 4097 1 x");
        assert_eq!(error.body_to_skip, Some(5));
        assert_eq!(error.opaque, OPAQUE_NONE);
    }

    #[test]
    fn request_verb_names_the_command() {
        assert_eq!(parse("quit").map(|r| r.verb()), Ok("quit"));
        assert_eq!(parse("put t 0 1 0 1").map(|r| r.verb()), Ok("put"));
    }

    // --- never panics ---

    fn verb() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "put",
            "get",
            "offset",
            "stats",
            "version",
            "quit",
            "transaction",
            "sync",
            "",
        ])
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<i32>().prop_map(|n| n.to_string()),
            Just("-1".to_string()),
            Just(String::new()),
            "[a-zA-Z0-9_.:-]{0,12}",
            "\\PC{0,6}",
        ]
    }

    proptest! {
        #[test]
        fn parse_line_never_panics_on_arbitrary_bytes(line in prop::collection::vec(any::<u8>(), 0..1100)) {
            let limits = Limits::default();
            if let Err(error) = parse_line(&line, &limits) {
                prop_assert!(!error.message.contains('\n') && !error.message.contains('\r'));
            }
        }

        #[test]
        fn parse_line_never_panics_on_verb_shaped_lines(verb in verb(), tokens in prop::collection::vec(token(), 0..10)) {
            let mut line = verb.to_string();
            for token in &tokens {
                line.push(' ');
                line.push_str(token);
            }
            let limits = Limits { body_bytes_max: 1000, ..Limits::default() };
            match parse_line(line.as_bytes(), &limits) {
                Ok(Request::Put(put)) => prop_assert!(put.body_bytes <= 1000),
                Ok(_) => {}
                Err(error) => {
                    prop_assert!(!error.message.contains('\n') && !error.message.contains('\r'));
                    if let Some(skip) = error.body_to_skip {
                        prop_assert!(verb == "put" || verb == "sync");
                        prop_assert!(skip <= i32::MAX as usize);
                    }
                }
            }
        }

        #[test]
        fn find_line_consumes_through_the_first_newline(buf in prop::collection::vec(any::<u8>(), 0..64)) {
            match find_line(&buf) {
                None => prop_assert!(!buf.contains(&b'\n')),
                Some((line_len, consumed)) => {
                    prop_assert_eq!(buf[consumed - 1], b'\n');
                    prop_assert!(!buf[..consumed - 1].contains(&b'\n'));
                    prop_assert!(line_len == consumed - 1 || line_len == consumed - 2);
                }
            }
        }
    }
}
