//! Tokens of a request line: splitting on single spaces, reading decimal numbers, and quoting a
//! token safely inside an error message.

use super::OPAQUE_NONE;

/// Tokens kept by position; the longest request (an 8-token put) fits. Longer lines are only
/// counted, and their last token is kept for the error reply's opaque.
const TOKENS_KEPT: usize = 8;

/// A request line split on single spaces. Two spaces in a row make an empty token, as do a
/// leading or trailing space. Does not allocate.
#[derive(Debug)]
pub struct Tokens<'a> {
    kept: [&'a [u8]; TOKENS_KEPT],
    count: usize,
    last: &'a [u8],
}

impl<'a> Tokens<'a> {
    /// Splits `line` (terminator already removed). An empty line is one empty token.
    pub fn split(line: &'a [u8]) -> Self {
        let mut tokens = Tokens {
            kept: [&[]; TOKENS_KEPT],
            count: 0,
            last: &[],
        };
        for token in line.split(|&byte| byte == b' ') {
            if let Some(slot) = tokens.kept.get_mut(tokens.count) {
                *slot = token;
            }
            tokens.count += 1;
            tokens.last = token;
        }
        tokens
    }

    /// The number of tokens, the verb included.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The token at `index` (0 is the verb), or an empty slice past the end.
    pub fn get(&self, index: usize) -> &'a [u8] {
        if index < self.count {
            self.kept.get(index).copied().unwrap_or(&[])
        } else {
            &[]
        }
    }

    /// The last token (the opaque in every well-formed request that has one).
    pub fn last(&self) -> &'a [u8] {
        self.last
    }

    /// The opaque for an error reply: the last token when it is an int32, else [`OPAQUE_NONE`].
    pub fn error_opaque(&self) -> i32 {
        int32(self.last).unwrap_or(OPAQUE_NONE)
    }
}

/// Reads a whole token as a decimal int32: an optional `-`, then digits (no `+`, no spaces).
/// Leading zeros are accepted, as Java's `Integer.parseInt` does. Hand-rolled rather than
/// nom + `str::parse`: every put carries three of these, and this is the hot path.
pub fn int32(token: &[u8]) -> Option<i32> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    // Accumulate negatively so i32::MIN, whose magnitude has no positive i32, fits.
    let magnitude = decimal(digits, i32::MIN as i64)?;
    let value = if negative { -magnitude } else { magnitude };
    i32::try_from(value).ok()
}

/// Reads a whole token as a decimal u64: digits only.
pub fn uint64(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &byte| {
        let digit = (byte as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(digit as u64)
    })
}

/// The magnitude of a non-empty run of ASCII digits as a negative i64, or None when a byte is
/// not a digit or the value passes `floor` (a negative bound).
fn decimal(digits: &[u8], floor: i64) -> Option<i64> {
    if digits.is_empty() {
        return None;
    }
    let mut acc: i64 = 0;
    for &byte in digits {
        let digit = (byte as char).to_digit(10)? as i64;
        acc = acc * 10 - digit;
        if acc < floor {
            return None;
        }
    }
    Some(-acc)
}

/// Reads a token that must be a non-negative int32 (a length or a partition), as a usize.
pub fn non_negative_int32(token: &[u8]) -> Option<usize> {
    int32(token).and_then(|value| usize::try_from(value).ok())
}

/// Reads a whole token as UTF-8 text.
pub fn text(token: &[u8]) -> Option<&str> {
    std::str::from_utf8(token).ok()
}

/// A token quoted for an error message: `'...'`, with bytes outside printable ASCII written as
/// `\xNN`, so the message stays one line of ASCII whatever the client sent.
pub fn shown(token: &[u8]) -> String {
    let mut out = String::with_capacity(token.len() + 2);
    out.push('\'');
    for &byte in token {
        if (0x20..0x7f).contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_spaces_make_an_empty_token() {
        let tokens = Tokens::split(b"stats  7");
        assert_eq!(tokens.count(), 3);
        assert_eq!(tokens.get(0), b"stats");
        assert_eq!(tokens.get(1), b"");
        assert_eq!(tokens.get(2), b"7");
        assert_eq!(tokens.last(), b"7");
    }

    #[test]
    fn lines_longer_than_kept_tokens_are_counted_and_keep_their_last() {
        let tokens = Tokens::split(b"a b c d e f g h i j 42");
        assert_eq!(tokens.count(), 11);
        assert_eq!(tokens.get(9), b"");
        assert_eq!(tokens.last(), b"42");
        assert_eq!(tokens.error_opaque(), 42);
    }

    #[test]
    fn empty_line_is_one_empty_token() {
        let tokens = Tokens::split(b"");
        assert_eq!(tokens.count(), 1);
        assert_eq!(tokens.get(0), b"");
        assert_eq!(tokens.error_opaque(), OPAQUE_NONE);
    }

    #[test]
    fn int32_reads_the_full_range_and_rejects_the_rest() {
        assert_eq!(int32(b"0"), Some(0));
        assert_eq!(int32(b"-1"), Some(-1));
        assert_eq!(int32(b"007"), Some(7));
        assert_eq!(int32(b"2147483647"), Some(i32::MAX));
        assert_eq!(int32(b"-2147483648"), Some(i32::MIN));
        assert_eq!(int32(b"2147483648"), None);
        assert_eq!(int32(b"+1"), None);
        assert_eq!(int32(b"1x"), None);
        assert_eq!(int32(b"-"), None);
        assert_eq!(int32(b""), None);
        assert_eq!(int32(b" 1"), None);
    }

    #[test]
    fn uint64_reads_digits_only() {
        assert_eq!(uint64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(uint64(b"18446744073709551616"), None);
        assert_eq!(uint64(b"-1"), None);
        assert_eq!(uint64(b""), None);
    }

    #[test]
    fn shown_escapes_non_printable_bytes() {
        assert_eq!(shown(b"foo"), "'foo'");
        assert_eq!(shown(b"a\rb\xff"), "'a\\x0db\\xff'");
    }
}
