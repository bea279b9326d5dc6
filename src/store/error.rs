//! Typed errors of the store. Each names the condition a protocol reply reports; the broker
//! maps them onto reply codes.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum StoreError {
    /// An I/O error from the filesystem (500).
    Io(io::Error),
    /// Free disk space is under the reserve, or a file could not be allocated; nothing was
    /// written (507).
    DiskFull,
    /// No topic of that name (404).
    UnknownTopic,
    /// The partition does not exist in the topic (400).
    PartitionOutOfRange { partitions: u32 },
    /// The offset is outside `[min, max]`; `valid` is the nearest valid offset (301).
    OffsetOutOfRange { valid: u64 },
    /// The record at `offset` failed its CRC or was lost; `next` is the offset to continue at
    /// (520).
    Corrupt { offset: u64, next: u64 },
    /// A record larger than a segment can hold, or a field beyond its width (413).
    RecordTooLarge { bytes: usize },
    /// A topic name that is not a valid name (400).
    BadName,
    /// A limit on topics or partitions was reached (403).
    LimitReached(&'static str),
    /// No record with that message id (404).
    NoSuchMessage,
    /// Another process holds the data directory.
    Locked,
    /// The data directory holds something this version cannot read.
    BadDataDir(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "I/O error: {e}"),
            StoreError::DiskFull => write!(f, "disk full: free space is under the reserve"),
            StoreError::UnknownTopic => write!(f, "unknown topic"),
            StoreError::PartitionOutOfRange { partitions } => {
                write!(
                    f,
                    "partition out of range, the topic has {partitions} partitions"
                )
            }
            StoreError::OffsetOutOfRange { valid } => {
                write!(f, "offset out of range, nearest valid offset {valid}")
            }
            StoreError::Corrupt { offset, next } => {
                write!(f, "corrupt record at offset {offset}; next offset {next}")
            }
            StoreError::RecordTooLarge { bytes } => write!(f, "record of {bytes} bytes too large"),
            StoreError::BadName => write!(f, "bad topic name"),
            StoreError::LimitReached(what) => write!(f, "limit reached: {what}"),
            StoreError::NoSuchMessage => write!(f, "no such message"),
            StoreError::Locked => write!(f, "data directory is locked by another process"),
            StoreError::BadDataDir(why) => write!(f, "bad data directory: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            StoreError::DiskFull
        } else {
            StoreError::Io(e)
        }
    }
}
