//! The size limits the parser enforces on a request line and a put body. Limits the parser does
//! not see (connections, output buffers, topics, timeouts) belong to the server and the broker.

/// Byte limits applied while parsing. Every field is a maximum, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A header line including its `\r\n` (or bare `\n`). Longer lines get 414.
    pub line_bytes_max: usize,
    /// A put body (attribute and properties included). Longer bodies get 413 and are skipped.
    pub body_bytes_max: usize,
    /// A topic or group name.
    pub name_bytes_max: usize,
    /// A put attribute (the message tag). Stored as a u16 length, so at most 65535.
    pub tag_bytes_max: usize,
    /// A put properties block. Stored as a u16 length, so at most 65535.
    pub props_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line_bytes_max: 1024,
            body_bytes_max: 4_194_304,
            name_bytes_max: 255,
            tag_bytes_max: 255,
            props_bytes_max: 16_384,
        }
    }
}

impl Limits {
    /// Checks that the limits can be honoured by the wire format and the record layout.
    ///
    /// # Errors
    /// A message naming the first limit out of range: a line must hold at least `quit\n`;
    /// bodies are announced as int32; names, tags and properties are stored with u16 lengths.
    pub fn check(&self) -> Result<(), String> {
        let u16_max = usize::from(u16::MAX);
        let int32_max = i32::MAX as usize;
        let ranges: [(&str, usize, usize, usize); 5] = [
            ("line_bytes_max", self.line_bytes_max, 16, 65_536),
            ("body_bytes_max", self.body_bytes_max, 0, int32_max),
            ("name_bytes_max", self.name_bytes_max, 1, u16_max),
            ("tag_bytes_max", self.tag_bytes_max, 0, u16_max),
            ("props_bytes_max", self.props_bytes_max, 0, u16_max),
        ];
        for (name, value, low, high) in ranges {
            if value < low || value > high {
                return Err(format!("{name} {value} is outside {low}..={high}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_match_the_contract_and_pass_check() {
        let limits = Limits::default();
        assert_eq!(limits.line_bytes_max, 1024);
        assert_eq!(limits.body_bytes_max, 4_194_304);
        assert_eq!(limits.name_bytes_max, 255);
        assert_eq!(limits.tag_bytes_max, 255);
        assert_eq!(limits.props_bytes_max, 16_384);
        assert_eq!(limits.check(), Ok(()));
    }

    #[test]
    fn tag_limit_above_u16_fails_check() {
        let limits = Limits {
            tag_bytes_max: 70_000,
            ..Limits::default()
        };
        assert_eq!(
            limits.check(),
            Err("tag_bytes_max 70000 is outside 0..=65535".to_string())
        );
    }
}
