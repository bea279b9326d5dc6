//! The name grammar for topics and groups: 1..=name_bytes_max bytes of `[A-Za-z0-9_.-]`, the
//! first byte not `.` or `-` (so a name is never `.`, `..` or an option-like `-x`, and is safe as
//! a directory name).

use super::token::shown;

/// True when `name` is a valid topic or group name of at most `name_bytes_max` bytes.
pub fn is_valid_name(name: &[u8], name_bytes_max: usize) -> bool {
    let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-');
    match name.first() {
        None | Some(b'.') | Some(b'-') => false,
        Some(_) => name.len() <= name_bytes_max && name.iter().all(allowed),
    }
}

/// Checks a name token and returns it as text.
///
/// # Errors
/// A message for the reply, e.g. `bad topic name 'a/b': ...` or
/// `topic name of 300 bytes exceeds name_bytes_max 255`.
pub(crate) fn check_name<'a>(
    kind: &str,
    token: &'a [u8],
    name_bytes_max: usize,
) -> Result<&'a str, String> {
    if token.len() > name_bytes_max {
        return Err(format!(
            "{kind} name of {} bytes exceeds name_bytes_max {name_bytes_max}",
            token.len()
        ));
    }
    if !is_valid_name(token, name_bytes_max) {
        return Err(format!(
            "bad {kind} name {}: must be 1 to {name_bytes_max} bytes of [A-Za-z0-9_.-], \
             not starting with '.' or '-'",
            shown(token)
        ));
    }
    // The grammar is ASCII, so this cannot fail; stay total anyway.
    std::str::from_utf8(token).map_err(|_| format!("bad {kind} name {}", shown(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_allowed_bytes_are_valid() {
        assert!(is_valid_name(b"meta-test", 255));
        assert!(is_valid_name(b"a", 255));
        assert!(is_valid_name(b"A_b.c-9", 255));
        assert!(is_valid_name(b"_x", 255));
        assert!(is_valid_name(b"9", 255));
    }

    #[test]
    fn names_starting_with_dot_or_dash_are_invalid() {
        assert!(!is_valid_name(b".", 255));
        assert!(!is_valid_name(b"..", 255));
        assert!(!is_valid_name(b".hidden", 255));
        assert!(!is_valid_name(b"-x", 255));
    }

    #[test]
    fn empty_long_and_foreign_names_are_invalid() {
        assert!(!is_valid_name(b"", 255));
        assert!(!is_valid_name(&[b'a'; 256], 255));
        assert!(is_valid_name(&[b'a'; 255], 255));
        assert!(!is_valid_name(b"a/b", 255));
        assert!(!is_valid_name(b"a b", 255));
        assert!(!is_valid_name("café".as_bytes(), 255));
        assert!(!is_valid_name(b"a:b", 255));
    }

    #[test]
    fn check_name_says_what_was_wrong() {
        assert_eq!(check_name("topic", b"t1", 255), Ok("t1"));
        let long = check_name("group", &[b'g'; 300], 255);
        assert_eq!(
            long,
            Err("group name of 300 bytes exceeds name_bytes_max 255".to_string())
        );
        let bad = check_name("topic", b"a/b", 255).unwrap_err();
        assert!(bad.starts_with("bad topic name 'a/b': "), "{bad}");
    }
}
