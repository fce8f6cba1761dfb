//! Small process-wide pools of buffers for the hot paths: batch buffers for the codec
//! ([`BATCHES`]) and large response frames for the connections' readers ([`FRAMES`]).
//!
//! Every batch built ([`BatchBuilder`](super::BatchBuilder)) and every compressed batch read
//! needs a buffer of tens of KiB to a MiB. glibc's allocator serves these from its free lists;
//! musl's (mallocng) returns such memory to the kernel when it is freed, so each new buffer
//! page-faults afresh (the codec bench ran 3–6× slower on musl). Instead of asking users to
//! swap the global allocator, the buffers go back to this pool when the last `Bytes` handle of
//! a batch is dropped ([`into_bytes`]), and the next batch takes one ([`take`]).
//!
//! A pooled buffer keeps its length (its contents are stale but initialized), so that LZ4
//! decompression ([`take_initialized`]) can decode into it without zero-filling it first; the
//! `Bytes` of a batch expose only the batch's own bytes ([`into_bytes_prefix`]).
//!
//! A fetch response's records are slices of its frame, so a frame's buffer is freed when the
//! application drops the last record of the response: with [`FRAMES`] it comes back for the
//! next response instead (1M records of 100 B read 57 MiB of fresh pages without it).
//!
//! Bounded: at most [`MAX_BUFFERS`] batch buffers of at most [`MAX_CAPACITY`] bytes each are kept
//! (so at most 16 MiB idle); a buffer is handed out only for a request of at least a quarter
//! of its capacity, so a small batch never pins a large buffer.

use std::sync::Mutex;

use bytes::Bytes;

/// Batch buffers kept at most.
pub(crate) const MAX_BUFFERS: usize = 16;
/// The largest batch buffer kept (a batch at the default `max.request.size` /
/// `message.max.bytes`).
pub(crate) const MAX_CAPACITY: usize = 1 << 20;
/// Smaller batch buffers are cheap to allocate anywhere: not kept.
const MIN_CAPACITY: usize = 4096;

/// A bounded set of free buffers: at most `max_buffers`, each of `min_capacity` to
/// `max_capacity` bytes. A buffer is handed out only for a request of at least a quarter of its
/// capacity, so a small request never pins a large buffer.
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_buffers: usize,
    min_capacity: usize,
    max_capacity: usize,
}

/// The codec's batch buffers (see the module's documentation).
pub(crate) static BATCHES: BufferPool = BufferPool::new(MAX_BUFFERS, MIN_CAPACITY, MAX_CAPACITY);

/// Response frames of 64 KiB to 8 MiB (fetch responses with records): the connection's reader
/// reads a large frame into a buffer of its size, and the frame's buffer comes back here when
/// its last record is dropped. At most 4 buffers, so at most 32 MiB idle.
pub(crate) static FRAMES: BufferPool = BufferPool::new(4, 64 * 1024, 8 << 20);

impl BufferPool {
    /// A pool of at most `max_buffers` buffers of `min_capacity..=max_capacity` bytes.
    pub(crate) const fn new(max_buffers: usize, min_capacity: usize, max_capacity: usize) -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
            max_buffers,
            min_capacity,
            max_capacity,
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for at least `capacity` bytes: a pooled one that fits (the
    /// smallest with at most 4× the room asked for), else a new one.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.take_initialized_at_most(capacity, usize::MAX);
        buf.clear();
        buf
    }

    /// Like [`take`](Self::take), but a pooled buffer keeps its length (see
    /// [`take_initialized`]), and is never of more than `max` bytes.
    pub(crate) fn take_initialized_at_most(&self, capacity: usize, max: usize) -> Vec<u8> {
        if (self.min_capacity / 4..=self.max_capacity).contains(&capacity) {
            let mut free = self.free();
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    b.capacity() >= capacity && b.capacity() / 4 <= capacity && b.capacity() <= max
                })
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return free.swap_remove(i);
            }
        }
        Vec::with_capacity(capacity)
    }

    /// Gives a buffer back (kept if the pool has room and the buffer is of a size worth
    /// keeping). Its length is kept: see [`take_initialized`].
    pub(crate) fn give(&'static self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(self.min_capacity..=self.max_capacity).contains(&cap) {
            return;
        }
        let mut free = self.free();
        if free.len() < self.max_buffers {
            free.push(buf);
        } else if let Some((i, _)) = free
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.capacity())
            .filter(|(_, b)| b.capacity() < cap)
        {
            // Keep the larger buffers: they are the expensive ones.
            let old = std::mem::replace(&mut free[i], buf);
            drop(free);
            drop(old);
        }
    }

    /// `buf[..len]` as `Bytes` whose memory returns to this pool once every handle (and slice)
    /// of it is dropped; `len` is capped at `buf.len()`, and the rest of the buffer goes back
    /// initialized. Buffers of a size the pool does not keep become plain `Bytes`.
    pub(crate) fn share_prefix(&'static self, mut buf: Vec<u8>, len: usize) -> Bytes {
        let len = len.min(buf.len());
        if buf.capacity() < self.min_capacity || buf.capacity() > self.max_capacity {
            buf.truncate(len);
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            len,
            home: self,
        })
    }

    #[cfg(test)]
    pub(crate) fn free_buffers(&self) -> usize {
        self.free().len()
    }
}

/// An empty buffer with room for at least `capacity` bytes, from [`BATCHES`].
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    BATCHES.take(capacity)
}

/// Like [`take`], but a pooled buffer keeps its length: its bytes are initialized (stale
/// contents of an earlier batch), so a decoder can write into them without zero-filling.
/// Callers must expose only the bytes they wrote (see [`into_bytes_prefix`]).
pub(crate) fn take_initialized(capacity: usize) -> Vec<u8> {
    BATCHES.take_initialized_at_most(capacity, usize::MAX)
}

/// Like [`take_initialized`], but never a pooled buffer of more than `max` bytes: for a caller
/// charged by capacity for exactly what it reserved (the producer's `buffer.memory`).
pub(crate) fn take_initialized_at_most(capacity: usize, max: usize) -> Vec<u8> {
    BATCHES.take_initialized_at_most(capacity, max)
}

/// Gives a batch buffer back to [`BATCHES`].
pub(crate) fn give(buf: Vec<u8>) {
    BATCHES.give(buf);
}

/// A buffer that goes back to its pool when dropped; only its first `len` bytes are the
/// batch's or frame's (`len` ≤ the buffer's length).
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: &'static BufferPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.home.give(std::mem::take(&mut self.buf));
    }
}

/// `buf` as `Bytes` whose memory returns to [`BATCHES`] once every handle (and slice) of it is
/// dropped. Small buffers become plain `Bytes`.
pub(crate) fn into_bytes(buf: Vec<u8>) -> Bytes {
    let len = buf.len();
    into_bytes_prefix(buf, len)
}

/// Like [`into_bytes`], exposing only `buf[..len]` (`len` is capped at `buf.len()`); the rest
/// goes back to the pool with the buffer, initialized.
pub(crate) fn into_bytes_prefix(buf: Vec<u8>, len: usize) -> Bytes {
    BATCHES.share_prefix(buf, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_fit() {
        // Other tests share the pool: only assert what holds regardless of them.
        let b = take(100_000);
        assert!(b.capacity() >= 100_000 && b.is_empty());
        let mut b = b;
        b.extend_from_slice(&[7; 1000]);
        let bytes = into_bytes(b);
        assert_eq!(&bytes[..], &[7; 1000][..]);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&slice[..], &[7; 10][..]);
        drop(slice);
        let again = take(90_000);
        assert!(again.capacity() >= 90_000 && again.is_empty());
        // Too small a request for a large buffer, and oversized buffers, are never pooled.
        assert!(take(10).capacity() < MIN_CAPACITY);
        give(Vec::with_capacity(MAX_CAPACITY * 2));
        assert!(BATCHES.free().iter().all(|b| b.capacity() <= MAX_CAPACITY));
        assert!(BATCHES.free_buffers() <= MAX_BUFFERS);
    }

    #[test]
    fn a_prefix_exposes_only_its_bytes_and_initialized_buffers_keep_their_length() {
        let mut b = Vec::with_capacity(70_000);
        b.resize(60_000, 5);
        b[..10].copy_from_slice(&[1; 10]);
        let bytes = into_bytes_prefix(b, 10);
        assert_eq!(&bytes[..], &[1; 10][..]);
        drop(bytes);
        // Too long a prefix is capped at the buffer's length.
        let bytes = into_bytes_prefix(vec![3; 5000], 9999);
        assert_eq!(bytes.len(), 5000);
        // Small buffers are not pooled: truncated to the prefix.
        assert_eq!(&into_bytes_prefix(vec![4; 10], 3)[..], &[4; 3][..]);
        // Whatever `take_initialized` returns, its length is initialized and `take` is empty.
        let t = take_initialized(65_000);
        assert!(t.capacity() >= 65_000 && t.len() <= t.capacity());
        give(t);
        assert!(take(65_000).is_empty());
    }

    #[test]
    fn a_pool_keeps_its_largest_buffers_and_gets_them_back_from_the_last_slice() {
        static P: BufferPool = BufferPool::new(2, 64 * 1024, 1 << 20);
        let mut buf = P.take(100_000);
        assert!(buf.capacity() >= 100_000 && buf.is_empty());
        buf.extend_from_slice(&[9; 100_000]);
        let at = buf.as_ptr();
        let frame = P.share_prefix(buf, 100_000);
        let value = frame.slice(10..20);
        drop(frame);
        // A record's value still holds the frame.
        assert_eq!(P.free_buffers(), 0);
        assert_eq!(&value[..], &[9; 10][..]);
        drop(value);
        assert_eq!(P.free_buffers(), 1);
        // A smaller request reuses the buffer, emptied; a larger one cannot.
        let again = P.take(90_000);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        let larger = P.take(200_000);
        assert_ne!(larger.as_ptr(), at);
        // At most two are kept: the largest.
        let small = P.take(70_000);
        for b in [again, larger, small] {
            P.give(b);
        }
        assert_eq!(P.free_buffers(), 2);
        assert!(P.take(150_000).capacity() >= 200_000);
        assert!(P.take(80_000).capacity() >= 90_000);
        // Outside the pool's sizes: plain bytes, never kept.
        drop(P.share_prefix(vec![1; 100], 100));
        drop(P.share_prefix(Vec::with_capacity(2 << 20), 0));
        assert_eq!(P.free_buffers(), 0);
    }
}
