//! A small process-wide pool of batch buffers for the codec's hot paths.
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
//! Bounded: at most [`MAX_BUFFERS`] buffers of at most [`MAX_CAPACITY`] bytes each are kept
//! (so at most 16 MiB idle); a buffer is handed out only for a request of at least a quarter
//! of its capacity, so a small batch never pins a large buffer.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers kept at most.
pub(crate) const MAX_BUFFERS: usize = 16;
/// The largest buffer kept (a batch at the default `max.request.size` / `message.max.bytes`).
pub(crate) const MAX_CAPACITY: usize = 1 << 20;
/// Smaller buffers are cheap to allocate anywhere: not kept.
const MIN_CAPACITY: usize = 4096;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with room for at least `capacity` bytes: a pooled one that fits (the
/// smallest with at most 4× the room asked for), else a new one.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let mut buf = take_initialized(capacity);
    buf.clear();
    buf
}

/// Like [`take`], but a pooled buffer keeps its length: its bytes are initialized (stale
/// contents of an earlier batch), so a decoder can write into them without zero-filling.
/// Callers must expose only the bytes they wrote (see [`into_bytes_prefix`]).
pub(crate) fn take_initialized(capacity: usize) -> Vec<u8> {
    take_initialized_at_most(capacity, usize::MAX)
}

/// Like [`take_initialized`], but never a pooled buffer of more than `max` bytes: for a caller
/// charged by capacity for exactly what it reserved (the producer's `buffer.memory`).
pub(crate) fn take_initialized_at_most(capacity: usize, max: usize) -> Vec<u8> {
    if (MIN_CAPACITY / 4..=MAX_CAPACITY).contains(&capacity) {
        let mut pool = pool();
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.capacity() >= capacity && b.capacity() / 4 <= capacity && b.capacity() <= max
            })
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            return pool.swap_remove(i);
        }
    }
    Vec::with_capacity(capacity)
}

/// Gives a buffer back (kept if the pool has room and the buffer is of a size worth keeping).
/// Its length is kept: see [`take_initialized`].
pub(crate) fn give(buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
        return;
    }
    let mut pool = pool();
    if pool.len() < MAX_BUFFERS {
        pool.push(buf);
    } else if let Some((i, _)) = pool
        .iter()
        .enumerate()
        .min_by_key(|(_, b)| b.capacity())
        .filter(|(_, b)| b.capacity() < cap)
    {
        // Keep the larger buffers: they are the expensive ones.
        let old = std::mem::replace(&mut pool[i], buf);
        drop(pool);
        drop(old);
    }
}

/// A buffer that goes back to the pool when dropped; only its first `len` bytes are the
/// batch's (`len` ≤ the buffer's length).
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.buf));
    }
}

/// `buf` as `Bytes` whose memory returns to the pool once every handle (and slice) of it is
/// dropped. Small buffers become plain `Bytes`.
pub(crate) fn into_bytes(buf: Vec<u8>) -> Bytes {
    let len = buf.len();
    into_bytes_prefix(buf, len)
}

/// Like [`into_bytes`], exposing only `buf[..len]` (`len` is capped at `buf.len()`); the rest
/// goes back to the pool with the buffer, initialized.
pub(crate) fn into_bytes_prefix(mut buf: Vec<u8>, len: usize) -> Bytes {
    let len = len.min(buf.len());
    if buf.capacity() < MIN_CAPACITY || buf.capacity() > MAX_CAPACITY {
        buf.truncate(len);
        return Bytes::from(buf);
    }
    Bytes::from_owner(Pooled { buf, len })
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
        assert!(pool().iter().all(|b| b.capacity() <= MAX_CAPACITY));
        assert!(pool().len() <= MAX_BUFFERS);
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
}
