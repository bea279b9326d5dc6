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
    out.extend_from_slice(b"result ");
    push_decimal(out, u64::from(code.as_u16()));
    out.push(b' ');
    push_decimal(out, body.len() as u64);
    out.push(b' ');
    push_int(out, i64::from(opaque));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
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
pub fn write_put_ok(out: &mut Vec<u8>, msg_id: u64, partition: u32, offset: u64, opaque: i32) {
    let mut body = Vec::with_capacity(48);
    push_decimal(&mut body, msg_id);
    body.push(b' ');
    push_decimal(&mut body, u64::from(partition));
    body.push(b' ');
    push_decimal(&mut body, offset);
    write_result(out, Code::Ok, &body, opaque);
}

/// Appends `value` in decimal without allocating.
fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
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
