//! Request lines of consumer groups: `commit`, `fetch`, `join`, `heartbeat`, `leave`, `reset`
//! (protocol.md "Consumer groups"). Pure parsing, like the rest of this module.

use super::error::ParseError;
use super::limits::Limits;
use super::request::{name, offset, opaque, partition, Reject, Request};
use super::token::{int32, shown, text, Tokens};

/// How a group's members share a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each partition belongs to one member.
    Cluster,
    /// Every member gets every partition, with its own offsets.
    Broadcast,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cluster => "cluster",
            Mode::Broadcast => "broadcast",
        }
    }
}

/// Where a partition with no committed offset begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

/// `commit <group> <topic> <partition> <offset> <member> <generation> <opaque>`
#[derive(Debug, PartialEq)]
pub struct Commit<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    /// None for `-`: group-level offsets, no ownership check.
    pub member: Option<&'a str>,
    /// -1 with member `-`.
    pub generation: i64,
    pub opaque: i32,
}

/// `fetch <group> <topic> <partition> <member> <opaque>`
#[derive(Debug, PartialEq)]
pub struct Fetch<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub member: Option<&'a str>,
    pub opaque: i32,
}

/// `join <group> <topic> <member> <mode> <start> <opaque>`
#[derive(Debug, PartialEq)]
pub struct Join<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub member: &'a str,
    pub mode: Mode,
    pub start: Start,
    pub opaque: i32,
}

/// `heartbeat|leave <group> <topic> <member> <opaque>`
#[derive(Debug, PartialEq)]
pub struct Member<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub member: &'a str,
    pub opaque: i32,
}

/// Where `reset` moves committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(u64),
    /// The first message stored at or after this Unix time (ms).
    Time(i64),
}

/// `reset <group> <topic> <partition|-1> <target> <opaque>`
#[derive(Debug, PartialEq)]
pub struct Reset<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// None for -1: every partition.
    pub partition: Option<u32>,
    pub target: ResetTarget,
    pub opaque: i32,
}

fn member<'a>(
    reject: &Reject,
    token: &'a [u8],
    limits: &Limits,
) -> Result<Option<&'a str>, ParseError> {
    if token == b"-" {
        return Ok(None);
    }
    name(reject, "member", token, limits).map(Some)
}

pub(super) fn parse_commit<'a>(
    tokens: &Tokens<'a>,
    limits: &Limits,
) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if tokens.count() != 8 {
        return Err(reject.count("commit", "8 tokens", tokens));
    }
    let group = name(&reject, "group", tokens.get(1), limits)?;
    let topic = name(&reject, "topic", tokens.get(2), limits)?;
    let partition = partition(&reject, tokens.get(3))?;
    let offset = offset(&reject, tokens.get(4))?;
    let member = member(&reject, tokens.get(5), limits)?;
    let generation = text(tokens.get(6))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|&g| g >= -1)
        .ok_or_else(|| reject.field("generation", tokens.get(6), "-1 or 0 to 2^63-1"))?;
    if member.is_none() != (generation == -1) {
        return Err(reject.bad("member '-' goes with generation -1, a member with its generation"));
    }
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Commit(Commit {
        group,
        topic,
        partition,
        offset,
        member,
        generation,
        opaque,
    }))
}

pub(super) fn parse_fetch<'a>(
    tokens: &Tokens<'a>,
    limits: &Limits,
) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if tokens.count() != 6 {
        return Err(reject.count("fetch", "6 tokens", tokens));
    }
    let group = name(&reject, "group", tokens.get(1), limits)?;
    let topic = name(&reject, "topic", tokens.get(2), limits)?;
    let partition = partition(&reject, tokens.get(3))?;
    let member = member(&reject, tokens.get(4), limits)?;
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Fetch(Fetch {
        group,
        topic,
        partition,
        member,
        opaque,
    }))
}

pub(super) fn parse_join<'a>(
    tokens: &Tokens<'a>,
    limits: &Limits,
) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if tokens.count() != 7 {
        return Err(reject.count("join", "7 tokens", tokens));
    }
    let group = name(&reject, "group", tokens.get(1), limits)?;
    let topic = name(&reject, "topic", tokens.get(2), limits)?;
    let member = name(&reject, "member", tokens.get(3), limits)?;
    let mode = match tokens.get(4) {
        b"cluster" => Mode::Cluster,
        b"broadcast" => Mode::Broadcast,
        other => return Err(reject.field("mode", other, "cluster or broadcast")),
    };
    let start = match tokens.get(5) {
        b"earliest" => Start::Earliest,
        b"latest" => Start::Latest,
        other => return Err(reject.field("start", other, "earliest or latest")),
    };
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Join(Join {
        group,
        topic,
        member,
        mode,
        start,
        opaque,
    }))
}

/// `heartbeat` and `leave` share their shape.
pub(super) fn parse_member<'a>(
    tokens: &Tokens<'a>,
    limits: &Limits,
    leave: bool,
) -> Result<Member<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    let verb = if leave { "leave" } else { "heartbeat" };
    if tokens.count() != 5 {
        return Err(reject.count(verb, "5 tokens", tokens));
    }
    let group = name(&reject, "group", tokens.get(1), limits)?;
    let topic = name(&reject, "topic", tokens.get(2), limits)?;
    let member = name(&reject, "member", tokens.get(3), limits)?;
    let opaque = opaque(&reject, tokens)?;
    Ok(Member {
        group,
        topic,
        member,
        opaque,
    })
}

pub(super) fn parse_reset<'a>(
    tokens: &Tokens<'a>,
    limits: &Limits,
) -> Result<Request<'a>, ParseError> {
    let reject = Reject::new(tokens, None);
    if tokens.count() != 6 {
        return Err(reject.count("reset", "6 tokens", tokens));
    }
    let group = name(&reject, "group", tokens.get(1), limits)?;
    let topic = name(&reject, "topic", tokens.get(2), limits)?;
    let partition = match int32(tokens.get(3)) {
        Some(-1) => None,
        _ => Some(partition(&reject, tokens.get(3))?),
    };
    let token = tokens.get(4);
    let time = token
        .strip_prefix(b"@")
        .and_then(text)
        .and_then(|t| t.parse::<i64>().ok());
    let target = match token {
        b"earliest" => ResetTarget::Earliest,
        b"latest" => ResetTarget::Latest,
        _ if time.is_some() => ResetTarget::Time(time.unwrap_or(0)),
        _ => match text(token).and_then(|t| t.parse::<u64>().ok()) {
            Some(o) => ResetTarget::Offset(o),
            None => {
                let range = "earliest, latest, an offset or @<unix ms>";
                return Err(reject.bad(format!("bad target {}: must be {range}", shown(token))));
            }
        },
    };
    let opaque = opaque(&reject, tokens)?;
    Ok(Request::Reset(Reset {
        group,
        topic,
        partition,
        target,
        opaque,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_line, Limits};
    use super::*;

    fn parse(line: &str) -> Result<Request<'_>, ParseError> {
        parse_line(line.as_bytes(), &Limits::default())
    }

    #[test]
    fn commit_with_a_member_and_generation_parses() {
        let Ok(Request::Commit(c)) = parse("commit g t 3 17 m1 4 9") else {
            panic!()
        };
        assert_eq!((c.group, c.topic, c.partition, c.offset), ("g", "t", 3, 17));
        assert_eq!((c.member, c.generation, c.opaque), (Some("m1"), 4, 9));
    }

    #[test]
    fn commit_without_a_member_needs_generation_minus_one() {
        assert!(matches!(
            parse("commit g t 0 1 - -1 2"),
            Ok(Request::Commit(Commit { member: None, .. }))
        ));
        assert_eq!(
            parse("commit g t 0 1 - 3 2").unwrap_err().code.as_u16(),
            400
        );
        assert_eq!(
            parse("commit g t 0 1 m -1 2").unwrap_err().code.as_u16(),
            400
        );
    }

    #[test]
    fn join_reads_mode_and_start_and_refuses_others() {
        let Ok(Request::Join(j)) = parse("join g t m1 broadcast latest 5") else {
            panic!()
        };
        assert_eq!((j.mode, j.start), (Mode::Broadcast, Start::Latest));
        let e = parse("join g t m1 shared latest 5").unwrap_err();
        assert!(e.message.contains("mode"), "{}", e.message);
        assert_eq!(e.opaque, 5);
        assert!(parse("join g t m1 cluster newest 5")
            .unwrap_err()
            .message
            .contains("start"));
    }

    #[test]
    fn reset_targets_parse_every_form() {
        let target = |l: &str| match parse(l) {
            Ok(Request::Reset(r)) => (r.partition, r.target),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            target("reset g t -1 earliest 1"),
            (None, ResetTarget::Earliest)
        );
        assert_eq!(
            target("reset g t 2 latest 1"),
            (Some(2), ResetTarget::Latest)
        );
        assert_eq!(
            target("reset g t 2 42 1"),
            (Some(2), ResetTarget::Offset(42))
        );
        assert_eq!(
            target("reset g t 2 @1700000000000 1"),
            (Some(2), ResetTarget::Time(1_700_000_000_000))
        );
        assert_eq!(parse("reset g t 2 soon 1").unwrap_err().code.as_u16(), 400);
    }

    #[test]
    fn heartbeat_and_leave_take_five_tokens() {
        assert!(matches!(
            parse("heartbeat g t m 3"),
            Ok(Request::Heartbeat(_))
        ));
        assert!(matches!(parse("leave g t m 3"), Ok(Request::Leave(_))));
        assert!(parse("heartbeat g t 3").is_err());
    }

    #[test]
    fn get_reads_wait_and_tags_forms() {
        let Ok(Request::Get(g)) = parse("get t g 0 5 100 250 a||bc 7") else {
            panic!()
        };
        assert_eq!(g.wait_ms, 250);
        assert_eq!(g.tags, Some(vec![&b"a"[..], &b"bc"[..]]));
        let Ok(Request::Get(g)) = parse("get t g 0 5 100 250 * 7") else {
            panic!()
        };
        assert_eq!(g.tags, None);
        let Ok(Request::Get(g)) = parse("get t g 0 5 100 7") else {
            panic!()
        };
        assert_eq!((g.wait_ms, g.tags), (0, None));
        for bad in ["a|b", "||a", "a||", "a||||b", ""] {
            let line = format!("get t g 0 5 100 250 {bad} 7");
            assert!(parse(&line).is_err(), "{bad}");
        }
    }
}
