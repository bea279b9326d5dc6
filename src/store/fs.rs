//! Thin, checked wrappers over the filesystem calls the store needs beyond `std`: space
//! allocation (so a full disk fails an allocation instead of faulting a mapped write),
//! free-space queries, hole lookup, whole-filesystem sync, directory sync and the
//! data-directory lock.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Reserves real blocks for `[0, len)` of `file` (posix_fallocate); on a full disk this fails
/// with ENOSPC and nothing is written.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    allocate_range(file, 0, len)
}

/// Starts writeback of the dirty pages of `[offset, offset + len)` of `file` and, with
/// `wait`, waits until every page of the range is written (sync_file_range(2)). Neither flushes
/// the device's cache nor writes metadata: this is not durability, only I/O done now and in
/// small pieces instead of later in one burst.
pub fn write_back(file: &File, offset: u64, len: u64, wait: bool) -> io::Result<()> {
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: a plain syscall on an open file descriptor; no memory is passed.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reserves real blocks for `[offset, offset + len)` of `file`, as [`allocate`] does.
pub fn allocate_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid, owned descriptor.
    let rc = unsafe {
        libc::posix_fallocate(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The first hole at or after byte `offset` of `file` by the filesystem's block map
/// (lseek(2) `SEEK_HOLE`): unallocated blocks, and on ext4 and XFS allocated but never written
/// ones (`fallocate`'s unwritten extents) not in the page cache. Metadata only: no file data is
/// read. A filesystem that does not track holes answers the file's size.
pub fn first_hole(file: &File, offset: u64) -> io::Result<u64> {
    // SAFETY: a plain syscall on an open file descriptor; no memory is passed.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, libc::SEEK_HOLE) };
    if at < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(at as u64)
    }
}

/// Free and total bytes of the filesystem holding `path`, as an unprivileged user sees them.
pub fn space(path: &Path) -> io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: zeroed statvfs is a valid out-parameter; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: pointers are valid for the duration of the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Flushes every dirty page of the filesystem holding `dir` (syncfs): one call makes all
/// index files durable however many partitions exist.
pub fn sync_filesystem(dir: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid, owned descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Takes an exclusive, non-blocking lock on `path`; the returned file holds it until dropped.
pub fn lock_file(path: &Path) -> io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: plain syscall on a valid, owned descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(f))
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, directory fsync.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Zero-padded 20-digit file name of a position, as MetaQ and RocketMQ name segments.
pub fn name_of(pos: u64) -> String {
    format!("{pos:020}")
}

/// Parses a 20-digit segment file name.
pub fn parse_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}
