//! Chunks of files read with positioned reads into reused buffers, handed
//! out as [`Bytes`].
//!
//! A streamed blob read hands hyper one chunk at a time, and hyper holds it
//! until the socket has taken it. The chunk is memory the process owns: a
//! file truncated or replaced while it is served then only makes a read come
//! back short, which ends that one response (the client sees a broken
//! transfer). A memory mapping of the file would save a copy, but any
//! user-space read of a mapped page past the file's new end raises `SIGBUS`,
//! which kills the process with every request in flight (TLS encrypts from
//! the chunk, so every byte served over TLS is such a read).
//!
//! A chunk's buffer goes back to a small pool when hyper drops it, so steady
//! reads reuse memory that is already resident instead of asking the
//! allocator, which hands out blocks this large as fresh mappings that fault
//! in page by page.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Size of each buffer, the most one chunk holds.
pub(crate) const CHUNK: usize = 512 * 1024;

/// Idle buffers kept for reuse; past this, returned buffers are freed.
const POOLED: usize = 4;

/// The idle read buffers of one driver.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffers {
    idle: Mutex<Vec<Box<[u8]>>>,
}

impl ReadBuffers {
    fn take(&self) -> Box<[u8]> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| vec![0; CHUNK].into_boxed_slice())
    }

    fn put(&self, buffer: Box<[u8]>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOLED {
            idle.push(buffer);
        }
    }

    /// Reads exactly `len` bytes (at most [`CHUNK`]) of `file` from `offset`.
    /// A file that ends before is an `UnexpectedEof` error: it was truncated
    /// after its size was taken.
    pub(crate) fn read(
        self: &Arc<Self>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<Bytes> {
        let mut chunk = Chunk {
            buffer: self.take(),
            len: 0,
            pool: self.clone(),
        };
        let wanted = chunk.buffer.get_mut(..len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a read of {len} bytes exceeds the chunk size {CHUNK}"),
            )
        })?;
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut wanted[filled..], offset + filled as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ended at {} bytes while being read: truncated under the read",
                            offset + filled as u64
                        ),
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        chunk.len = len;
        Ok(Bytes::from_owner(chunk))
    }
}

/// A buffer holding `len` bytes read; back to its pool when dropped.
struct Chunk {
    buffer: Box<[u8]>,
    len: usize,
    pool: Arc<ReadBuffers>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_ranges_and_reuses_buffers() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let buffers = Arc::new(ReadBuffers::default());
        for (offset, len) in [(0, 20_000), (1, 1), (4095, 2), (12_345, 7_655)] {
            let bytes = buffers.read(&file, offset, len).unwrap();
            assert_eq!(
                &bytes[..],
                &content[offset as usize..offset as usize + len],
                "{offset}+{len}"
            );
        }
        assert_eq!(buffers.idle.lock().unwrap().len(), 1, "one buffer, reused");
    }

    #[test]
    fn a_file_truncated_under_the_read_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7; 10_000]).unwrap();
        let buffers = Arc::new(ReadBuffers::default());
        let first = buffers.read(&file, 0, 5_000).unwrap();
        file.set_len(6_000).unwrap();
        let err = buffers.read(&file, 5_000, 5_000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // What was read before stays intact.
        assert_eq!(&first[..], &[7; 5_000][..]);
        assert!(buffers.read(&file, 0, CHUNK + 1).is_err());
    }
}
