//! A put body split into its parts per the put flag, and the Metamorphosis checksum.
//!
//! # Format
//! ```text
//! flag bit 0 (1): int32 BE attribute length | attribute (UTF-8)      -> the message tag
//! flag bit 1 (2): int32 BE properties length | properties block      -> imago extension
//! the rest:       payload
//! ```
//! The parts appear in that order; each is present only when its bit is set. Other flag bits
//! carry no meaning here and are stored as sent. The properties block is zero or more entries of
//! `key 0x01 value 0x02` (UTF-8, key non-empty, neither part containing 0x01 or 0x02).

use nom::number::complete::be_i32;

use super::error::Code;
use super::limits::Limits;

/// Flag bit: the body begins with an attribute (the tag).
pub const FLAG_ATTRIBUTE: u32 = 1;
/// Flag bit (imago extension): a properties block follows the attribute, if any.
pub const FLAG_PROPERTIES: u32 = 2;

const ENTRY_SEPARATOR: u8 = 0x01;
const ENTRY_END: u8 = 0x02;

/// The parts of a put body per its flag (bit0 attribute->tag, bit1 properties block).
/// Absent parts are empty.
#[derive(Debug, PartialEq)]
pub struct PutBody<'a> {
    /// The attribute's bytes (valid UTF-8), without its length prefix.
    pub tag: &'a [u8],
    /// The properties block, without its length prefix; validated as entries.
    pub props: &'a [u8],
    /// Everything after the attribute and properties.
    pub payload: &'a [u8],
}

/// Splits a put body per its flag.
///
/// # Errors
/// 400 with a message when a length prefix is missing, negative, over its limit
/// (`tag_bytes_max`, `props_bytes_max`) or overruns the body, when the attribute is not UTF-8,
/// or when the properties block is malformed.
pub fn split_put_body<'a>(
    flag: u32,
    body: &'a [u8],
    limits: &Limits,
) -> Result<PutBody<'a>, (Code, String)> {
    let bad = |message: String| (Code::BadRequest, message);
    let mut rest = body;
    let mut tag: &[u8] = &[];
    let mut props: &[u8] = &[];
    if flag & FLAG_ATTRIBUTE != 0 {
        tag = take_block(
            &mut rest,
            "attribute",
            "tag_bytes_max",
            limits.tag_bytes_max,
        )
        .map_err(bad)?;
        if std::str::from_utf8(tag).is_err() {
            return Err(bad("attribute is not valid UTF-8".to_string()));
        }
    }
    if flag & FLAG_PROPERTIES != 0 {
        props = take_block(
            &mut rest,
            "properties block",
            "props_bytes_max",
            limits.props_bytes_max,
        )
        .map_err(bad)?;
        parse_properties(props).map_err(bad)?;
    }
    Ok(PutBody {
        tag,
        props,
        payload: rest,
    })
}

/// Takes an int32 BE length and that many bytes from the front of `rest`.
fn take_block<'a>(
    rest: &mut &'a [u8],
    what: &str,
    limit_name: &str,
    limit: usize,
) -> Result<&'a [u8], String> {
    let (after, declared) = be_i32::<_, nom::error::Error<&[u8]>>(*rest).map_err(|_| {
        format!(
            "{what} length needs 4 bytes, the body has {} left",
            rest.len()
        )
    })?;
    let Ok(length) = usize::try_from(declared) else {
        return Err(format!("{what} length {declared} is negative"));
    };
    if length > limit {
        return Err(format!(
            "{what} of {length} bytes exceeds {limit_name} {limit}"
        ));
    }
    let (block, remainder) = after.split_at_checked(length).ok_or_else(|| {
        format!(
            "{what} of {length} bytes overruns the body ({} bytes left after its length)",
            after.len()
        )
    })?;
    *rest = remainder;
    Ok(block)
}

/// Reads a properties block as (key, value) pairs in the order sent. Duplicate keys are kept.
///
/// # Errors
/// A message when the block is not UTF-8, an entry lacks its `0x02` end or its `0x01` separator,
/// has a second `0x01`, or has an empty key.
pub fn parse_properties(block: &[u8]) -> Result<Vec<(&str, &str)>, String> {
    let text = std::str::from_utf8(block)
        .map_err(|_| "properties block is not valid UTF-8".to_string())?;
    let mut entries = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((entry, after)) = rest.split_once(char::from(ENTRY_END)) else {
            return Err(format!(
                "properties entry {} does not end with \\x02",
                entries.len()
            ));
        };
        let Some((key, value)) = entry.split_once(char::from(ENTRY_SEPARATOR)) else {
            return Err(format!(
                "properties entry {} has no \\x01 between key and value",
                entries.len()
            ));
        };
        if key.is_empty() {
            return Err(format!(
                "properties entry {} has an empty key",
                entries.len()
            ));
        }
        if value.contains(char::from(ENTRY_SEPARATOR)) {
            return Err(format!(
                "properties entry {} has more than one \\x01",
                entries.len()
            ));
        }
        entries.push((key, value));
        rest = after;
    }
    Ok(entries)
}

/// Metamorphosis checksum: CRC32 (IEEE) & 0x7FFF_FFFF, over the whole put body (attribute and
/// properties included).
pub fn checksum(body: &[u8]) -> u32 {
    crc32fast::hash(body) & 0x7FFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_length(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn checksum_of_hello_matches_metamorphosis() {
        // metamorphosis.md 1.6: crc("hello") = 907060870 = 0x3610A686.
        assert_eq!(checksum(b"hello"), 907_060_870);
        assert_eq!(checksum(b"hello"), 0x3610_A686);
    }

    #[test]
    fn checksum_of_attribute_tag1_and_hello_matches_metamorphosis() {
        // metamorphosis.md 1.6 example 2: 00 00 00 04 "tag1" "hello", crc 1184113660.
        let body = [
            0x00, 0x00, 0x00, 0x04, 0x74, 0x61, 0x67, 0x31, 0x68, 0x65, 0x6C, 0x6C, 0x6F,
        ];
        assert_eq!(checksum(&body), 1_184_113_660);
        assert_eq!(checksum(&body), 0x4694_23FC);
        assert_eq!(
            split_put_body(FLAG_ATTRIBUTE, &body, &Limits::default()),
            Ok(PutBody {
                tag: b"tag1",
                props: b"",
                payload: b"hello"
            })
        );
    }

    #[test]
    fn checksum_is_never_negative_as_int32() {
        for body in [&b""[..], b"a", b"\xff\xff\xff\xff", b"hello world"] {
            assert!(checksum(body) <= i32::MAX as u32);
        }
    }

    #[test]
    fn flag_zero_body_is_all_payload() {
        let split = split_put_body(0, b"\x00\x00\x00\x04tag1", &Limits::default());
        assert_eq!(
            split,
            Ok(PutBody {
                tag: b"",
                props: b"",
                payload: b"\x00\x00\x00\x04tag1"
            })
        );
    }

    #[test]
    fn other_flag_bits_do_not_change_the_split() {
        let split = split_put_body(0xFFFF_FFFC, b"abc", &Limits::default());
        assert_eq!(split.map(|parts| parts.payload), Ok(&b"abc"[..]));
    }

    #[test]
    fn attribute_and_properties_split_in_order() {
        let mut body = with_length(b"tag1");
        body.extend(with_length(b"k\x01v\x02key2\x01\x02"));
        body.extend_from_slice(b"payload");
        let split = split_put_body(FLAG_ATTRIBUTE | FLAG_PROPERTIES, &body, &Limits::default());
        assert_eq!(
            split,
            Ok(PutBody {
                tag: b"tag1",
                props: b"k\x01v\x02key2\x01\x02",
                payload: b"payload"
            })
        );
    }

    #[test]
    fn properties_without_attribute_start_the_body() {
        let mut body = with_length(b"k\x01v\x02");
        body.extend_from_slice(b"p");
        let split = split_put_body(FLAG_PROPERTIES, &body, &Limits::default());
        assert_eq!(
            split,
            Ok(PutBody {
                tag: b"",
                props: b"k\x01v\x02",
                payload: b"p"
            })
        );
    }

    #[test]
    fn empty_attribute_and_empty_payload_are_allowed() {
        let body = with_length(b"");
        let split = split_put_body(FLAG_ATTRIBUTE, &body, &Limits::default());
        assert_eq!(
            split,
            Ok(PutBody {
                tag: b"",
                props: b"",
                payload: b""
            })
        );
    }

    #[test]
    fn attribute_length_that_overruns_the_body_is_400() {
        let (code, message) =
            split_put_body(FLAG_ATTRIBUTE, b"\x00\x00\x00\x09tag1", &Limits::default())
                .unwrap_err();
        assert_eq!(code, Code::BadRequest);
        assert_eq!(
            message,
            "attribute of 9 bytes overruns the body (4 bytes left after its length)"
        );
    }

    #[test]
    fn attribute_without_its_length_prefix_is_400() {
        let (code, message) =
            split_put_body(FLAG_ATTRIBUTE, b"\x00\x00", &Limits::default()).unwrap_err();
        assert_eq!(code, Code::BadRequest);
        assert_eq!(
            message,
            "attribute length needs 4 bytes, the body has 2 left"
        );
    }

    #[test]
    fn negative_attribute_length_is_400() {
        let (_, message) =
            split_put_body(FLAG_ATTRIBUTE, b"\xff\xff\xff\xffabc", &Limits::default()).unwrap_err();
        assert_eq!(message, "attribute length -1 is negative");
    }

    #[test]
    fn attribute_over_tag_bytes_max_is_400() {
        let body = with_length(&[b'a'; 256]);
        let (code, message) =
            split_put_body(FLAG_ATTRIBUTE, &body, &Limits::default()).unwrap_err();
        assert_eq!(code, Code::BadRequest);
        assert_eq!(message, "attribute of 256 bytes exceeds tag_bytes_max 255");
    }

    #[test]
    fn attribute_that_is_not_utf8_is_400() {
        let body = with_length(b"\xff");
        let (_, message) = split_put_body(FLAG_ATTRIBUTE, &body, &Limits::default()).unwrap_err();
        assert_eq!(message, "attribute is not valid UTF-8");
    }

    #[test]
    fn properties_over_props_bytes_max_is_400() {
        let limits = Limits {
            props_bytes_max: 3,
            ..Limits::default()
        };
        let body = with_length(b"k\x01v\x02");
        let (_, message) = split_put_body(FLAG_PROPERTIES, &body, &limits).unwrap_err();
        assert_eq!(
            message,
            "properties block of 4 bytes exceeds props_bytes_max 3"
        );
    }

    #[test]
    fn malformed_properties_blocks_are_400() {
        let cases: [(&[u8], &str); 4] = [
            (b"k\x01v", "properties entry 0 does not end with \\x02"),
            (
                b"k\x01v\x02kv\x02",
                "properties entry 1 has no \\x01 between key and value",
            ),
            (b"\x01v\x02", "properties entry 0 has an empty key"),
            (
                b"k\x01v\x01w\x02",
                "properties entry 0 has more than one \\x01",
            ),
        ];
        for (block, expected) in cases {
            let (code, message) =
                split_put_body(FLAG_PROPERTIES, &with_length(block), &Limits::default())
                    .unwrap_err();
            assert_eq!(code, Code::BadRequest);
            assert_eq!(message, expected);
        }
    }

    #[test]
    fn parse_properties_returns_entries_in_order() {
        assert_eq!(
            parse_properties(b"a\x011\x02b\x01\x02a\x012\x02"),
            Ok(vec![("a", "1"), ("b", ""), ("a", "2")])
        );
        assert_eq!(parse_properties(b""), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn split_put_body_never_panics(flag in any::<u32>(), body in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(parts) = split_put_body(flag, &body, &Limits::default()) {
                let prefixes = 4 * usize::from(flag & FLAG_ATTRIBUTE != 0)
                    + 4 * usize::from(flag & FLAG_PROPERTIES != 0);
                prop_assert_eq!(
                    prefixes + parts.tag.len() + parts.props.len() + parts.payload.len(),
                    body.len()
                );
            }
        }

        #[test]
        fn split_put_body_finds_a_well_formed_attribute(tag in "[a-z]{0,40}", payload in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut body = with_length(tag.as_bytes());
            body.extend_from_slice(&payload);
            let parts = split_put_body(FLAG_ATTRIBUTE, &body, &Limits::default());
            prop_assert_eq!(parts, Ok(PutBody { tag: tag.as_bytes(), props: b"", payload: &payload }));
        }
    }
}
