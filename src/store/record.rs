//! The record format: encoding a message into its fixed-width, CRC-protected layout, and
//! decoding and verifying it. The same bytes are stored in the commitlog and sent in `value`
//! replies, so this module is the single definition of the layout (see the table in
//! [`crate::store`]).

/// Magic of a version-1 record: "IMG" then the format version byte.
pub const MAGIC_V1: u32 = 0x494D_4701;
/// Magic of the end-of-segment marker: "IMG" then 0. Only `total_len` and the magic are
/// written; a reader jumps to the next segment.
pub const MAGIC_END: u32 = 0x494D_4700;
/// Bytes in the fixed header.
pub const HEADER_BYTES: usize = 64;
/// Bytes of the end-of-segment marker.
pub const END_MARKER_BYTES: usize = 8;

const CRC_AT: usize = 8;

/// What a producer supplies; the store fills in partition offset, id and store time.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub flag: u32,
    pub tag: &'a [u8],
    pub props: &'a [u8],
    pub body: &'a [u8],
    pub born_ts_ms: i64,
}

impl Message<'_> {
    /// Encoded size of the record; `None` when a variable part exceeds its field width.
    pub fn encoded_bytes(&self) -> Option<usize> {
        if self.topic.len() > u16::MAX as usize
            || self.tag.len() > u16::MAX as usize
            || self.props.len() > u16::MAX as usize
            || self.body.len() > u32::MAX as usize - HEADER_BYTES
        {
            return None;
        }
        Some(HEADER_BYTES + self.topic.len() + self.tag.len() + self.props.len() + self.body.len())
    }
}

/// The fields the store assigns at append time.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub offset: u64,
    pub msg_id: u64,
    pub store_ts_ms: i64,
}

/// Writes `msg` into `dst`, which must be exactly `msg.encoded_bytes()` long, CRC included.
pub fn encode(dst: &mut [u8], msg: &Message<'_>, stamp: Stamp) {
    assert_eq!(Some(dst.len()), msg.encoded_bytes());
    let total = dst.len() as u32;
    put_u32(dst, 0, total);
    put_u32(dst, 4, MAGIC_V1);
    put_u32(dst, 12, msg.partition);
    put_u64(dst, 16, stamp.offset);
    put_u64(dst, 24, stamp.msg_id);
    put_u64(dst, 32, stamp.store_ts_ms as u64);
    put_u64(dst, 40, msg.born_ts_ms as u64);
    put_u32(dst, 48, msg.flag);
    put_u32(dst, 52, msg.body.len() as u32);
    put_u16(dst, 56, msg.topic.len() as u16);
    put_u16(dst, 58, msg.tag.len() as u16);
    put_u16(dst, 60, msg.props.len() as u16);
    put_u16(dst, 62, 0);
    let mut at = HEADER_BYTES;
    for part in [msg.topic.as_bytes(), msg.tag, msg.props, msg.body] {
        dst[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let crc = crc_of(dst);
    put_u32(dst, CRC_AT, crc);
}

/// CRC32 (IEEE) over the record with its own CRC field left out: bytes [0,8) and [12,len).
pub fn crc_of(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..CRC_AT]);
    hasher.update(&record[CRC_AT + 4..]);
    hasher.finalize()
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the header or than `total_len` says.
    Short,
    /// Zero length and zero magic: never-written, preallocated space.
    Blank,
    BadMagic,
    /// The lengths in the header do not add up to `total_len`.
    BadLength,
    BadCrc,
}

/// A decoded view of one record, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub bytes: &'a [u8],
    pub partition: u32,
    pub offset: u64,
    pub msg_id: u64,
    pub store_ts_ms: i64,
    pub born_ts_ms: i64,
    pub flag: u32,
    pub topic: &'a [u8],
    pub tag: &'a [u8],
    pub props: &'a [u8],
    pub body: &'a [u8],
}

/// What starts at a position in a segment.
#[derive(Debug, Clone, Copy)]
pub enum Slot<'a> {
    Record(RecordView<'a>),
    /// End-of-segment marker (or too little room for one): continue at the next segment.
    End,
}

/// Reads the slot at the start of `buf` (the rest of a segment). Verifies the CRC.
pub fn read_slot(buf: &[u8]) -> Result<Slot<'_>, Invalid> {
    if buf.len() < END_MARKER_BYTES {
        return Ok(Slot::End);
    }
    let total = get_u32(buf, 0) as usize;
    let magic = get_u32(buf, 4);
    if magic == MAGIC_END && total == buf.len() {
        return Ok(Slot::End);
    }
    if total == 0 && magic == 0 {
        return Err(Invalid::Blank);
    }
    if magic != MAGIC_V1 {
        return Err(Invalid::BadMagic);
    }
    if total < HEADER_BYTES || total > buf.len() {
        return Err(if total > buf.len() {
            Invalid::Short
        } else {
            Invalid::BadLength
        });
    }
    decode(&buf[..total]).map(Slot::Record)
}

/// Decodes and verifies exactly one record occupying all of `rec`.
pub fn decode(rec: &[u8]) -> Result<RecordView<'_>, Invalid> {
    let view = decode_unverified(rec)?;
    if crc_of(rec) != get_u32(rec, CRC_AT) {
        return Err(Invalid::BadCrc);
    }
    Ok(view)
}

/// [`decode`] without the CRC check: magic and lengths only. For recovery's look at a
/// damaged record's header, whose fields nothing vouches for.
pub fn decode_unverified(rec: &[u8]) -> Result<RecordView<'_>, Invalid> {
    if rec.len() < HEADER_BYTES {
        return Err(Invalid::Short);
    }
    if get_u32(rec, 4) != MAGIC_V1 {
        return Err(Invalid::BadMagic);
    }
    let total = get_u32(rec, 0) as usize;
    let body_len = get_u32(rec, 52) as usize;
    let topic_len = get_u16(rec, 56) as usize;
    let tag_len = get_u16(rec, 58) as usize;
    let props_len = get_u16(rec, 60) as usize;
    if total != rec.len() || HEADER_BYTES + topic_len + tag_len + props_len + body_len != total {
        return Err(Invalid::BadLength);
    }
    let topic_at = HEADER_BYTES;
    let tag_at = topic_at + topic_len;
    let props_at = tag_at + tag_len;
    let body_at = props_at + props_len;
    Ok(RecordView {
        bytes: rec,
        partition: get_u32(rec, 12),
        offset: get_u64(rec, 16),
        msg_id: get_u64(rec, 24),
        store_ts_ms: get_u64(rec, 32) as i64,
        born_ts_ms: get_u64(rec, 40) as i64,
        flag: get_u32(rec, 48),
        topic: &rec[topic_at..tag_at],
        tag: &rec[tag_at..props_at],
        props: &rec[props_at..body_at],
        body: &rec[body_at..],
    })
}

/// The `total_len` field of a record that starts `buf`, if the header is there.
pub fn total_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| get_u32(buf, 0) as usize)
}

/// Whether the header bytes at the position of message id `msg_id` look like the start of a
/// record (its magic, or its own id field, is intact): a record there that fails to decode
/// is damage, not a wrong id pointing into the middle of another record.
pub fn looks_like_start(header: &[u8], msg_id: u64) -> bool {
    header.len() >= HEADER_BYTES
        && (get_u32(header, 4) == MAGIC_V1 || get_u64(header, 24) == msg_id)
}

/// Writes the end-of-segment marker into `dst` (the rest of a segment, at least 8 bytes).
pub fn encode_end(dst: &mut [u8]) {
    let total = dst.len() as u32;
    put_u32(dst, 0, total);
    put_u32(dst, 4, MAGIC_END);
}

/// The properties area: a generic block of `key 0x01 value 0x02` entries (UTF-8; a key is
/// non-empty; neither part contains 0x01 or 0x02; the block is at most 65,535 bytes). The
/// store never interprets it. The keys below are **reserved** for broker features (names are
/// upper-case ASCII; applications should use other, e.g. lower-case, keys). Every value is
/// UTF-8 text; numbers are unsigned decimal without sign or leading zeros.
///
/// | key | value | meaning |
/// |---|---|---|
/// | `KEYS` | keys separated by single spaces | business keys, for lookup by key |
/// | `DELAY` | decimal level, 1..=255 | deliver after the delay of that level |
/// | `DELIVER_AT` | decimal ms since the epoch | deliver at (not before) that time |
/// | `TRAN_ID` | opaque text, at most 128 bytes | transaction the message belongs to |
/// | `RETRY` | decimal count, 0..=u32::MAX | times delivery of this message was retried |
/// | `REAL_TOPIC` | a topic name | the topic the message was first sent to (retry, delay, transaction) |
/// | `REAL_PART` | decimal partition, 0..=u32::MAX | the partition it was first stored in |
pub mod props {
    pub const KEYS: &str = "KEYS";
    pub const DELAY_LEVEL: &str = "DELAY";
    pub const DELIVER_AT_MS: &str = "DELIVER_AT";
    pub const TRANSACTION_ID: &str = "TRAN_ID";
    pub const RETRY_COUNT: &str = "RETRY";
    pub const ORIGINAL_TOPIC: &str = "REAL_TOPIC";
    pub const ORIGINAL_PARTITION: &str = "REAL_PART";
    /// Every reserved key.
    pub const RESERVED: [&str; 7] = [
        KEYS,
        DELAY_LEVEL,
        DELIVER_AT_MS,
        TRANSACTION_ID,
        RETRY_COUNT,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
    ];
    /// Most bytes of a `TRAN_ID` value.
    pub const TRANSACTION_ID_BYTES_MAX: usize = 128;

    const SEP: u8 = 0x01;
    const END: u8 = 0x02;

    /// Encodes entries; `None` when a key is empty, a part holds 0x01 or 0x02, or the block
    /// would exceed 65,535 bytes.
    pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(entries: &[(K, V)]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for (k, v) in entries {
            let (k, v) = (k.as_ref(), v.as_ref());
            let bad = |b: &[u8]| b.iter().any(|&c| c == SEP || c == END);
            if k.is_empty() || bad(k) || bad(v) {
                return None;
            }
            out.extend_from_slice(k);
            out.push(SEP);
            out.extend_from_slice(v);
            out.push(END);
        }
        (out.len() <= u16::MAX as usize).then_some(out)
    }

    /// The entries of a block, in order; stops at the first malformed entry.
    pub fn iter(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        block.split_inclusive(|&c| c == END).map_while(|entry| {
            let entry = entry.strip_suffix(&[END])?;
            let at = entry.iter().position(|&c| c == SEP)?;
            let (k, v) = (&entry[..at], &entry[at + 1..]);
            (!k.is_empty() && !v.contains(&SEP)).then_some((k, v))
        })
    }

    /// The value of `key`, if present (the first occurrence).
    pub fn get<'a>(block: &'a [u8], key: &str) -> Option<&'a [u8]> {
        iter(block)
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// A reserved decimal value (`DELAY`, `DELIVER_AT`, `RETRY`, `REAL_PART`), parsed.
    pub fn get_u64(block: &[u8], key: &str) -> Option<u64> {
        let v = std::str::from_utf8(get(block, key)?).ok()?;
        let canonical = !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && (v == "0" || !v.starts_with('0'));
        canonical.then(|| v.parse().ok()).flatten()
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let msg = Message {
            topic: "orders",
            partition: 3,
            flag: 1,
            tag: b"paid",
            props: b"KEYS\x01o-17\x02",
            body: b"hello world",
            born_ts_ms: 1_700_000_000_000,
        };
        let mut buf = vec![0; msg.encoded_bytes().unwrap()];
        let stamp = Stamp {
            offset: 42,
            msg_id: 7 << 48 | 4096,
            store_ts_ms: 1_700_000_000_001,
        };
        encode(&mut buf, &msg, stamp);
        buf
    }

    #[test]
    fn encoded_record_decodes_to_the_same_fields() {
        let buf = sample();
        let r = decode(&buf).unwrap();
        assert_eq!(r.partition, 3);
        assert_eq!(r.offset, 42);
        assert_eq!(r.msg_id, 7 << 48 | 4096);
        assert_eq!(r.store_ts_ms, 1_700_000_000_001);
        assert_eq!(r.born_ts_ms, 1_700_000_000_000);
        assert_eq!(r.flag, 1);
        assert_eq!(r.topic, b"orders");
        assert_eq!(r.tag, b"paid");
        assert_eq!(r.props, b"KEYS\x01o-17\x02");
        assert_eq!(r.body, b"hello world");
    }

    #[test]
    fn reserved_properties_round_trip_through_a_stored_record() {
        let block = props::encode(&[
            (props::KEYS, "order-17 customer-9"),
            (props::DELAY_LEVEL, "3"),
            (props::DELIVER_AT_MS, "1700000000123"),
            (props::TRANSACTION_ID, "tx-42"),
            (props::RETRY_COUNT, "2"),
            (props::ORIGINAL_TOPIC, "orders"),
            (props::ORIGINAL_PARTITION, "5"),
            ("app-key", "x"),
        ])
        .unwrap();
        let msg = Message {
            topic: "%RETRY%g",
            partition: 0,
            flag: 0,
            tag: b"",
            props: &block,
            body: b"b",
            born_ts_ms: 1,
        };
        let mut buf = vec![0; msg.encoded_bytes().unwrap()];
        let stamp = Stamp {
            offset: 0,
            msg_id: 0,
            store_ts_ms: 2,
        };
        encode(&mut buf, &msg, stamp);
        let r = decode(&buf).unwrap();
        assert_eq!(
            props::get(r.props, props::KEYS),
            Some(&b"order-17 customer-9"[..])
        );
        assert_eq!(props::get_u64(r.props, props::DELAY_LEVEL), Some(3));
        assert_eq!(
            props::get_u64(r.props, props::DELIVER_AT_MS),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            props::get(r.props, props::TRANSACTION_ID),
            Some(&b"tx-42"[..])
        );
        assert_eq!(props::get_u64(r.props, props::RETRY_COUNT), Some(2));
        assert_eq!(
            props::get(r.props, props::ORIGINAL_TOPIC),
            Some(&b"orders"[..])
        );
        assert_eq!(props::get_u64(r.props, props::ORIGINAL_PARTITION), Some(5));
        assert_eq!(props::get(r.props, "app-key"), Some(&b"x"[..]));
        assert_eq!(props::iter(r.props).count(), 8);
        assert_eq!(props::get(r.props, "missing"), None);
    }

    #[test]
    fn property_blocks_reject_separators_and_empty_keys_and_numbers_must_be_canonical() {
        assert!(props::encode(&[("", "v")]).is_none());
        assert!(props::encode(&[("k\x01", "v")]).is_none());
        assert!(props::encode(&[("k", "v\x02")]).is_none());
        let block =
            props::encode(&[(props::RETRY_COUNT, "007"), (props::DELAY_LEVEL, "-1")]).unwrap();
        assert_eq!(props::get_u64(&block, props::RETRY_COUNT), None);
        assert_eq!(props::get_u64(&block, props::DELAY_LEVEL), None);
        assert!(props::RESERVED
            .iter()
            .all(|k| k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = sample();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip at byte {byte} bit {bit} not detected"
                );
            }
        }
    }

    #[test]
    fn blank_space_reads_as_blank_and_a_marker_as_end() {
        assert_eq!(read_slot(&[0u8; 100]).unwrap_err(), Invalid::Blank);
        let mut seg_tail = vec![0u8; 100];
        encode_end(&mut seg_tail);
        assert!(matches!(read_slot(&seg_tail), Ok(Slot::End)));
        assert!(matches!(read_slot(&[0u8; 7]), Ok(Slot::End)));
    }

    #[test]
    fn a_record_cut_short_is_reported_short() {
        let good = sample();
        for cut in HEADER_BYTES..good.len() {
            assert_eq!(read_slot(&good[..cut]).unwrap_err(), Invalid::Short);
        }
    }
}
