//! Page-cache residency of mapped files: whether a range would wait for the disk if read now
//! (mincore(2)), starting its read-in without waiting (MADV_WILLNEED), and waiting for it by
//! touching each page. Used to keep reads of a cold backlog off the event loop (see
//! [`super::residency`]).

use memmap2::MmapRaw;

pub const PAGE_BYTES: usize = 4096;

/// Pages asked of mincore(2) per call (its result vector lives on the stack).
const MINCORE_PAGES_MAX: usize = 256;

/// The page-aligned span of `[off, off + len)` within a map of `map_len` bytes, or None.
fn span(map_len: usize, off: usize, len: usize) -> Option<(usize, usize)> {
    let start = off / PAGE_BYTES * PAGE_BYTES;
    let end = off.saturating_add(len).min(map_len);
    (end > start).then_some((start, end - start))
}

/// Whether every page of `[off, off + len)` of `map` is in the page cache.
pub fn resident(map: &MmapRaw, off: usize, len: usize) -> bool {
    let Some((mut at, mut left)) = span(map.len(), off, len) else {
        return true;
    };
    let mut vec = [0u8; MINCORE_PAGES_MAX];
    while left > 0 {
        let n = left.min(MINCORE_PAGES_MAX * PAGE_BYTES);
        // SAFETY: `[at, at + n)` lies in the mapping and `at` is page-aligned (the mapping
        // starts on a page); `vec` has a byte for each of the at most MINCORE_PAGES_MAX pages.
        let rc =
            unsafe { libc::mincore(map.as_ptr().add(at).cast_mut().cast(), n, vec.as_mut_ptr()) };
        if rc != 0 {
            return true; // unknown: let the read find out
        }
        if vec[..n.div_ceil(PAGE_BYTES)].iter().any(|b| b & 1 == 0) {
            return false;
        }
        at += n;
        left -= n;
    }
    true
}

/// Starts reading `[off, off + len)` of `map` into the page cache; does not wait.
pub fn will_need(map: &MmapRaw, off: usize, len: usize) {
    if let Some((at, n)) = span(map.len(), off, len) {
        let _ = map.advise_range(memmap2::Advice::WillNeed, at, n);
    }
}

/// Reads a byte of each page of `[off, off + len)` of `map`, waiting for each to arrive.
pub fn touch(map: &MmapRaw, off: usize, len: usize) {
    let Some((mut at, n)) = span(map.len(), off, len) else {
        return;
    };
    let end = at + n;
    while at < end {
        // SAFETY: `at` is inside the mapping; a read of a mapped file page has no effect
        // but faulting it in (volatile so it is not optimised away).
        unsafe {
            std::ptr::read_volatile(map.as_ptr().add(at));
        }
        at += PAGE_BYTES;
    }
}

/// Writes back and drops from the page cache every file under `dir`, recursively, as a
/// restart after `echo 3 > drop_caches` finds them (for tests of cold reads).
#[cfg(test)]
pub(super) fn evict_dir(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            evict_dir(&e.path());
        } else {
            let f = std::fs::File::open(e.path()).unwrap();
            f.sync_all().unwrap();
            // SAFETY: an advice call on a descriptor we own; it touches no memory of ours.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_page_is_resident_and_an_evicted_one_is_not() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(16 << 20).unwrap();
        std::io::Write::write_all(&mut &file, &[7u8; 8192]).unwrap();
        file.sync_all().unwrap();
        // SAFETY: an advice call on our own descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
        assert!(!resident(&map, 0, 8192), "evicted pages reported resident");
        will_need(&map, 0, 8192);
        touch(&map, 0, 8192);
        assert!(resident(&map, 0, 8192), "touched pages reported cold");
        assert!(
            !resident(&map, 15 << 20, 1 << 20),
            "an untouched far range reported resident"
        );
        assert!(
            resident(&map, 16 << 20, 100),
            "a range past the end has nothing to wait for"
        );
    }
}
