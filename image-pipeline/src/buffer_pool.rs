//! Reusable, page-aligned chunk buffers for the hot path.
//!
//! The download copies network pieces into these (the one userspace copy of the image); the
//! disk writer can hand them to O_DIRECT as they are, because their memory is 4 KiB aligned
//! and a raw image's chunks land at 4 KiB-aligned offsets. Buffers return to the pool when
//! the last `Bytes` referring to one is dropped, so steady state allocates nothing: no page
//! faults, no zeroing of fresh pages (which musl's allocator would do for every 1 MiB chunk),
//! and memory bounded by the pipeline's queues.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Alignment of the buffers: enough for O_DIRECT on 512-byte and 4 KiB-sector devices.
pub const ALIGN: usize = 4096;

#[derive(Debug)]
struct Shared {
    free: Mutex<Vec<Vec<u8>>>,
    buf_size: usize,
    max_free: usize,
}

/// Hands out buffers of `buf_size` bytes.
#[derive(Debug, Clone)]
pub struct BufferPool {
    shared: Arc<Shared>,
}

impl BufferPool {
    /// A pool keeping at most `max_free` idle buffers.
    pub fn new(buf_size: usize, max_free: usize) -> Self {
        BufferPool {
            shared: Arc::new(Shared {
                free: Mutex::new(Vec::new()),
                buf_size: buf_size.max(1),
                max_free,
            }),
        }
    }

    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// An empty buffer to fill.
    pub fn get(&self) -> PoolBuf {
        let storage = self
            .shared
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            // Over-allocated so that an aligned window of `buf_size` fits in it.
            .unwrap_or_else(|| vec![0u8; self.shared.buf_size + ALIGN]);
        let start = (ALIGN - storage.as_ptr() as usize % ALIGN) % ALIGN;
        PoolBuf {
            storage,
            start,
            len: 0,
            pool: self.shared.clone(),
        }
    }

    /// Idle buffers held (for tests).
    pub fn idle(&self) -> usize {
        self.shared
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// A buffer being filled; [`PoolBuf::freeze`] turns it into `Bytes` without copying.
#[derive(Debug)]
pub struct PoolBuf {
    storage: Vec<u8>,
    /// Offset of the aligned window in `storage`.
    start: usize,
    len: usize,
    pool: Arc<Shared>,
}

impl PoolBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.pool.buf_size
    }

    pub fn is_full(&self) -> bool {
        self.len == self.pool.buf_size
    }

    /// Forgets the contents (a restart from byte 0).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `data` as fits; returns how much that was.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = (self.pool.buf_size - self.len).min(data.len());
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// The filled part as `Bytes`; the buffer goes back to the pool when the last clone drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.pool.max_free {
            free.push(std::mem::take(&mut self.storage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let pool = BufferPool::new(64 << 10, 2);
        let mut b = pool.get();
        assert_eq!(b.extend_from_slice(&[7u8; 100]), 100);
        assert_eq!(b.extend_from_slice(&vec![1u8; 1 << 20]), (64 << 10) - 100);
        assert!(b.is_full());
        let bytes = b.freeze();
        assert_eq!(bytes.as_ptr() as usize % ALIGN, 0);
        assert_eq!(bytes.len(), 64 << 10);
        assert_eq!(&bytes[..100], &[7u8; 100][..]);
        let slice = bytes.slice(4096..8192);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a slice keeps the buffer alive");
        drop(slice);
        assert_eq!(pool.idle(), 1);
        let again = pool.get();
        assert_eq!(pool.idle(), 0);
        assert!(again.is_empty());
    }

    #[test]
    fn idle_buffers_are_bounded() {
        let pool = BufferPool::new(1024, 1);
        let a = pool.get().freeze();
        let b = pool.get().freeze();
        drop(a);
        drop(b);
        assert_eq!(pool.idle(), 1);
    }
}
