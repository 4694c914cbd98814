//! Read-only memory mappings of file ranges, handed out as [`Bytes`].
//!
//! Serving a blob by copying it into a buffer and then into the socket costs
//! two user-space copies per byte; hyper has no `sendfile` path. A mapping
//! removes the first copy: the socket write reads the page cache directly,
//! and the mapping lives exactly as long as the `Bytes` hyper holds.
//!
//! The mapping is populated when it is made (`MAP_POPULATE`), on the
//! blocking pool, so the socket write on a runtime thread does not fault
//! pages in from disk.
//!
//! A mapping is only safe while the file is not truncated below the mapped
//! range (the kernel raises `SIGBUS` on access to a page past the end).
//! Registry files are never truncated: blob data is written to a temporary
//! file and renamed into place, upload data is only appended to, and
//! deletion unlinks (the inode lives on while it is mapped). CNCF
//! Distribution's filesystem driver, which may share the root, does the same.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use bytes::Bytes;

/// Private and read-only; populated at once where the platform can.
#[cfg(target_os = "linux")]
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_POPULATE;
#[cfg(not(target_os = "linux"))]
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE;

/// A mapped file range; unmapped on drop.
struct Mapping {
    /// Start of the mapping (page-aligned).
    base: NonNull<libc::c_void>,
    /// Length of the mapping from `base`.
    mapped: usize,
    /// Offset of the requested range within the mapping.
    skip: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; the pages
// can be read from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only gives out shared reads.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `base..base + mapped` is a live PROT_READ mapping of file
        // bytes that exist (the caller mapped no further than the file's size),
        // and `skip <= mapped`.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().cast::<u8>().add(self.skip),
                self.mapped - self.skip,
            )
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `mapped` are exactly what mmap returned and was given.
        unsafe { libc::munmap(self.base.as_ptr(), self.mapped) };
    }
}

/// Maps `len` bytes of `file` from `offset`. The range must lie within the
/// file's current size, and `len` must not be zero.
pub(super) fn map_range(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let page = page_size();
    let skip = (offset % page) as usize;
    let start = libc::off_t::try_from(offset - skip as u64).map_err(io::Error::other)?;
    let mapped = skip + len;
    // SAFETY: a fresh read-only private mapping of an open file descriptor;
    // nothing else refers to the address range it returns.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapped,
            libc::PROT_READ,
            MAP_FLAGS,
            file.as_raw_fd(),
            start,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base =
        NonNull::new(base).ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
    Ok(Bytes::from_owner(Mapping { base, mapped, skip }))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_unaligned_ranges() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        for (offset, len) in [
            (0, 20_000),
            (1, 1),
            (4095, 2),
            (4096, 4096),
            (12_345, 7_655),
        ] {
            let bytes = map_range(&file, offset, len).unwrap();
            assert_eq!(
                &bytes[..],
                &content[offset as usize..offset as usize + len],
                "{offset}+{len}"
            );
        }
    }
}
