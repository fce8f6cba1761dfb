//! Appending the small fields of a record in place, past a buffer's logical end.
//!
//! Why: `Vec::extend_from_slice` is a call to the C library's `memcpy` for every slice whose
//! length the compiler does not know. glibc's `memcpy` does a 1–100 byte copy in a few cycles;
//! musl's (1.2.5, x86_64) starts every copy with byte moves up to 8-byte alignment and a
//! microcoded `rep movsq`, tens of cycles for the varints, keys, short values and headers a
//! record is made of. That made uncompressed encode run at half glibc's rate on musl
//! (BENCHMARKS.md, "musl"). [`SpareWriter`] writes varints byte by byte and copies slices of
//! up to [`SHORT`] bytes with fixed-size (inlined) copies; only longer slices go through
//! `copy_from_slice` / `extend_from_slice`, where `memcpy`'s start-up cost is amortized.
//! [`SHORT`] covers the common value sizes (tens to a few hundred bytes): with 32 it left the
//! 100-byte values of the codec bench and of `rekafka perf` on musl's `memcpy`.
//!
//! The crate forbids `unsafe`, so the writer does not write into uninitialized capacity:
//! it writes over the initialized bytes between a logical end `pos` and `vec.len()` (room the
//! caller zero-filled once, or stale bytes of a pooled buffer), and pushes when it reaches
//! `vec.len()`. Correctness never depends on the room prepared beforehand.

/// Slices up to this length are copied without a library call. The largest fixed-size copy
/// is 64 bytes (four 16-byte moves, below the size where the compiler calls `memcpy` for a
/// constant-size copy); a slice of up to 256 bytes takes at most four of them.
pub(crate) const SHORT: usize = 256;

/// Writes at a logical end `pos` of a `Vec<u8>` (`pos` ≤ `vec.len()`): over the bytes already
/// there, then by pushing. The bytes past the final [`pos`](Self::pos) are not part of the
/// result.
pub(crate) struct SpareWriter<'a> {
    vec: &'a mut Vec<u8>,
    pos: usize,
}

impl<'a> SpareWriter<'a> {
    /// A writer starting at `pos` (capped at `vec.len()`).
    #[inline(always)]
    pub(crate) fn new(vec: &'a mut Vec<u8>, pos: usize) -> SpareWriter<'a> {
        let pos = pos.min(vec.len());
        SpareWriter { vec, pos }
    }

    /// The logical end: everything written lies before it.
    #[inline(always)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Appends one byte.
    #[inline(always)]
    pub(crate) fn byte(&mut self, b: u8) {
        match self.vec.get_mut(self.pos) {
            Some(slot) => *slot = b,
            None => self.vec.push(b),
        }
        self.pos += 1;
    }

    /// Appends an unsigned LEB128 value.
    #[inline(always)]
    pub(crate) fn unsigned(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// Appends a zig-zag varint.
    #[inline(always)]
    pub(crate) fn varint(&mut self, v: i32) {
        self.unsigned(u64::from(((v << 1) ^ (v >> 31)) as u32));
    }

    /// Appends a zig-zag varlong.
    #[inline(always)]
    pub(crate) fn varlong(&mut self, v: i64) {
        self.unsigned(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Appends `src`: short slices with fixed-size copies, longer ones with one library copy.
    #[inline(always)]
    pub(crate) fn slice(&mut self, src: &[u8]) {
        let n = src.len();
        match self.vec.get_mut(self.pos..self.pos + n) {
            Some(dst) => {
                if n > SHORT || !short(dst, src) {
                    dst.copy_from_slice(src);
                }
            }
            None => {
                self.vec.truncate(self.pos);
                self.vec.extend_from_slice(src);
            }
        }
        self.pos += n;
    }
}

/// Copies `src` (at most [`SHORT`] bytes; `dst` of the same length) with two or four
/// overlapping fixed-size copies (64, 32, 16, 8 or 4 bytes; three single bytes below 4), which
/// the compiler turns into a few moves. False (nothing written) if `src` is longer or the
/// lengths differ.
#[inline(always)]
fn short(dst: &mut [u8], src: &[u8]) -> bool {
    let n = src.len();
    if dst.len() != n {
        return false;
    }
    match n {
        0 => true,
        1..=3 => {
            // Covers 0, n/2 and n-1: every index below 4.
            for i in [0, n / 2, n - 1] {
                if let (Some(d), Some(s)) = (dst.get_mut(i), src.get(i)) {
                    *d = *s;
                }
            }
            true
        }
        4..=7 => two_chunks::<4>(dst, src),
        8..=15 => two_chunks::<8>(dst, src),
        16..=31 => two_chunks::<16>(dst, src),
        32..=63 => two_chunks::<32>(dst, src),
        64..=128 => two_chunks::<64>(dst, src),
        129..=SHORT => four_chunks::<64>(dst, src),
        _ => false,
    }
}

/// Copies `src` (N ≤ len ≤ 2N, `dst` of the same length) as its first and its last N bytes.
#[inline(always)]
fn two_chunks<const N: usize>(dst: &mut [u8], src: &[u8]) -> bool {
    let n = src.len();
    if n < N || n > 2 * N || dst.len() != n {
        return false;
    }
    copy_chunk::<N>(dst, src, 0) && copy_chunk::<N>(dst, src, n - N)
}

/// Copies `src` (2N < len ≤ 4N, `dst` of the same length) as its first 2N and its last 2N
/// bytes, each as two N-byte copies.
#[inline(always)]
fn four_chunks<const N: usize>(dst: &mut [u8], src: &[u8]) -> bool {
    let n = src.len();
    if n <= 2 * N || n > 4 * N || dst.len() != n {
        return false;
    }
    copy_chunk::<N>(dst, src, 0)
        && copy_chunk::<N>(dst, src, N)
        && copy_chunk::<N>(dst, src, n - 2 * N)
        && copy_chunk::<N>(dst, src, n - N)
}

/// Copies `src[at..at + N]` to `dst[at..at + N]` (a constant-size copy).
#[inline(always)]
fn copy_chunk<const N: usize>(dst: &mut [u8], src: &[u8], at: usize) -> bool {
    let (Some(d), Some(s)) = (
        dst.get_mut(at..at + N)
            .and_then(|d| <&mut [u8; N]>::try_from(d).ok()),
        src.get(at..at + N)
            .and_then(|s| <&[u8; N]>::try_from(s).ok()),
    ) else {
        return false;
    };
    *d = *s;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::varint::{put_varint, put_varlong};

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + 7) as u8).collect()
    }

    /// Every slice length around the fixed-size copies' edges, over stale room (fast path) and
    /// without room (pushes), lands byte-identical to `extend_from_slice`.
    #[test]
    fn slices_match_extend_from_slice() {
        for room in [0, 3, 600] {
            for n in 0..=(2 * SHORT + 3) {
                for prefix in [0, 1, 5] {
                    let src = sample(n);
                    let mut want = vec![0xEE; prefix];
                    want.push(1);
                    want.extend_from_slice(&src);
                    want.push(2);
                    let mut got = vec![0xEE; prefix];
                    got.resize(prefix + room, 0xA5);
                    let mut w = SpareWriter::new(&mut got, prefix);
                    w.byte(1);
                    w.slice(&src);
                    w.byte(2);
                    let end = w.pos();
                    assert_eq!(end, want.len());
                    assert_eq!(
                        got[..end],
                        want[..],
                        "length {n}, prefix {prefix}, room {room}"
                    );
                }
            }
        }
    }

    #[test]
    fn varints_match_put_varint_and_room_running_out_mid_field() {
        let ints = [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN];
        let longs = [0, 1, -1, 1 << 40, -(1 << 40), i64::MAX, i64::MIN];
        let mut want = Vec::new();
        for v in ints {
            put_varint(&mut want, v);
        }
        for v in longs {
            put_varlong(&mut want, v);
        }
        // Each amount of room makes it run out at a different byte.
        for room in 0..=want.len() + 1 {
            let mut got = vec![0xA5; room];
            let mut w = SpareWriter::new(&mut got, 0);
            for v in ints {
                w.varint(v);
            }
            for v in longs {
                w.varlong(v);
            }
            w.slice(&[9; 20]);
            let end = w.pos();
            assert_eq!(end, want.len() + 20);
            assert_eq!(got[..want.len()], want[..], "room {room}");
            assert_eq!(got[want.len()..end], [9; 20], "room {room}");
        }
    }
}
