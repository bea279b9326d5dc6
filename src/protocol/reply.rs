//! Reply encoding: `result` and `value` headers appended to a reusable output buffer.
//!
//! # Format
//! ```text
//! result <code> <len> <opaque>\r\n<len bytes of UTF-8 text>
//! value <len> <opaque>\r\n<len bytes of whole records>
//! ```

use super::error::{Code, ParseError};

/// Appends `result <code> <len> <opaque>\r\n` and `body`.
pub fn write_result(out: &mut Vec<u8>, code: Code, body: &[u8], opaque: i32) {
    write_result_header(out, code, body.len(), opaque);
    out.extend_from_slice(body);
}

/// Appends `result <code> <body_bytes> <opaque>\r\n`; the caller appends the body.
fn write_result_header(out: &mut Vec<u8>, code: Code, body_bytes: usize, opaque: i32) {
    out.extend_from_slice(b"result ");
    push_decimal(out, u64::from(code.as_u16()));
    out.push(b' ');
    push_decimal(out, body_bytes as u64);
    out.push(b' ');
    push_int(out, i64::from(opaque));
    out.extend_from_slice(b"\r\n");
}

/// Appends `value <body_bytes> <opaque>\r\n`. The caller appends exactly `body_bytes` bytes of
/// whole records after it.
pub fn write_value_header(out: &mut Vec<u8>, body_bytes: usize, opaque: i32) {
    out.extend_from_slice(b"value ");
    push_decimal(out, body_bytes as u64);
    out.push(b' ');
    push_int(out, i64::from(opaque));
    out.extend_from_slice(b"\r\n");
}

/// Appends the reply to a line that failed to parse: `result <code> <n> <opaque>\r\n<message>`.
/// The server still has to skip `error.body_to_skip` bytes of input.
pub fn write_error(out: &mut Vec<u8>, error: &ParseError) {
    write_result(out, error.code, error.message.as_bytes(), error.opaque);
}

/// Appends a successful put reply: `result 200 <n> <opaque>\r\n<msgId> <partition> <offset>`.
/// The hot path of every put: no allocation, the body's length counted from its digits.
pub fn write_put_ok(out: &mut Vec<u8>, msg_id: u64, partition: u32, offset: u64, opaque: i32) {
    let (id, part, off) = (
        Decimal::of(msg_id),
        Decimal::of(u64::from(partition)),
        Decimal::of(offset),
    );
    let body_bytes = id.bytes().len() + 1 + part.bytes().len() + 1 + off.bytes().len();
    write_result_header(out, Code::Ok, body_bytes, opaque);
    out.extend_from_slice(id.bytes());
    out.push(b' ');
    out.extend_from_slice(part.bytes());
    out.push(b' ');
    out.extend_from_slice(off.bytes());
}

/// "00" to "99", for two digits per division.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// A u64 in decimal, in a stack buffer (u64::MAX has 20 digits).
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn of(mut value: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        while value >= 100 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if value >= 10 {
            let pair = value as usize * 2;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            start -= 1;
            digits[start] = b'0' + value as u8;
        }
        Decimal { digits, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// Appends `value` in decimal without allocating.
fn push_decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(Decimal::of(value).bytes());
}

fn push_int(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_decimal(out, value.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_code_length_opaque_then_body() {
        let mut out = Vec::new();
        write_result(&mut out, Code::Ok, b"4097 0 0", 1);
        assert_eq!(out, b"result 200 8 1\r\n4097 0 0");
    }

    #[test]
    fn result_appends_to_what_is_already_buffered() {
        let mut out = b"x".to_vec();
        write_result(&mut out, Code::NotFound, b"", -2_147_483_648);
        assert_eq!(out, b"xresult 404 0 -2147483648\r\n");
    }

    #[test]
    fn value_header_has_length_and_opaque() {
        let mut out = Vec::new();
        write_value_header(&mut out, 58, 4);
        assert_eq!(out, b"value 58 4\r\n");
    }

    #[test]
    fn put_ok_body_is_msg_id_partition_offset() {
        let mut out = Vec::new();
        write_put_ok(&mut out, u64::MAX, 3, 0, i32::MAX);
        assert_eq!(
            out,
            b"result 200 24 2147483647\r\n18446744073709551615 3 0".to_vec()
        );
    }

    #[test]
    fn decimals_match_the_standard_formatting_at_every_digit_count() {
        let mut values: Vec<u64> = (0..10_000).chain([u64::MAX]).collect();
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1, next / 2]);
            p = next;
        }
        values.extend([p - 1, p, p + 1]);
        for v in values {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    #[test]
    fn parse_error_reply_carries_its_code_message_and_opaque() {
        let error = ParseError {
            code: Code::PayloadTooLarge,
            message: "too big".to_string(),
            opaque: 7,
            body_to_skip: Some(9),
        };
        let mut out = Vec::new();
        write_error(&mut out, &error);
        assert_eq!(out, b"result 413 7 7\r\ntoo big");
    }
}
