//! Allocation guard for decoding untrusted bytes with `kafka-protocol`.
//!
//! The generated decoders of `kafka-protocol` 0.18 call `Vec::with_capacity(n)` with an array
//! length `n` read off the wire before checking that the input can hold `n` elements, so a
//! handful of bytes claiming a huge array would make the process allocate gigabytes (or abort).
//! We cannot change those decoders, but they are generic over the input buffer, so every read
//! they make goes through [`GuardBuf`], which sees each length before the decoder acts on it:
//!
//! * **Compact lengths** (unsigned varints, used by every flexible version): a varint whose value
//!   exceeds the bytes left in the frame by more than [`MARGIN`] cannot be a valid length (every
//!   element, string byte or tagged field takes at least one byte), so decoding stops with an
//!   error before the decoder sees the value. The only varints that are not lengths are tag
//!   numbers, which are small in every Kafka schema.
//! * **`i32` lengths** (arrays and bytes in non-flexible versions) look exactly like `i32`
//!   fields, so the guard cannot tell them apart by looking. It decodes in up to three passes:
//!   the first replaces every `i32` that exceeds the bytes left (by more than [`MARGIN`]) with 0
//!   and records the path of reads; if nothing was replaced its result is final (the common
//!   case), and if it fails the input is rejected. Otherwise a second pass replaces the same
//!   values with 1: if it fails or its read path differs, one of the values is a length that
//!   cannot be satisfied, and the input is rejected; if not, the values are plain fields and a
//!   final pass decodes them as sent.
//!
//! Together these bound what a decode can pre-allocate by the size of its input (times the size
//! of the element type), whatever the input claims.

use std::ops::Range;

use bytes::{Buf, Bytes, TryGetError};
use kafka_protocol::protocol::{Decodable, buf::ByteBuf};

use crate::error::{Error, Result, from_decode};

/// How far a length may exceed the remaining input before it is treated as hostile. Lengths
/// within the margin are harmless: at most `MARGIN` elements are pre-allocated in vain.
pub const MARGIN: u64 = 128;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Replace oversized `i32`s with the given value and count them.
    Substitute(i32),
    /// Return every `i32` as it is (used only after the substitution passes proved it safe).
    Plain,
}

/// A `Bytes` wrapper that watches every read of a decoder.
pub(crate) struct GuardBuf {
    inner: Bytes,
    /// Total length, to turn `remaining()` into a position.
    len: usize,
    mode: Mode,
    /// How many `i32`s were replaced in this pass.
    substituted: u32,
    /// Continuation bytes of a multi-byte varint still to pass through unchecked.
    varint_skip: u8,
    /// A rolling hash of (position, length) of every read: the read path.
    path: u64,
    /// Set when a varint length exceeded the input.
    violation: Option<(usize, u64)>,
}

impl GuardBuf {
    fn new(inner: Bytes, mode: Mode) -> GuardBuf {
        let len = inner.len();
        GuardBuf {
            inner,
            len,
            mode,
            substituted: 0,
            varint_skip: 0,
            path: 0xcbf2_9ce4_8422_2325,
            violation: None,
        }
    }

    fn position(&self) -> usize {
        self.len - self.inner.len()
    }

    fn record(&mut self, n: usize) {
        let p = self.position() as u64;
        self.path = (self.path ^ p).wrapping_mul(0x0000_0100_0000_01b3);
        self.path = (self.path ^ n as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }

    /// The value of the unsigned varint starting at the current position, read as
    /// `kafka-protocol` reads it (at most five bytes, into a `u32`), with its length in bytes.
    fn peek_varint(&self) -> Option<(u64, u8)> {
        let mut value: u32 = 0;
        let mut len = 0u8;
        for (i, b) in self.inner.iter().take(5).enumerate() {
            value |= u32::from(b & 0x7f).wrapping_shl(7 * i as u32);
            len = i as u8 + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        (len > 0).then_some((u64::from(value), len))
    }
}

impl Buf for GuardBuf {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.record(cnt);
        self.inner.advance(cnt);
    }

    fn try_get_u8(&mut self) -> std::result::Result<u8, TryGetError> {
        // Unsigned varints are read one byte at a time through this method; so are booleans.
        if self.varint_skip > 0 {
            self.varint_skip -= 1;
        } else if let Some(&first) = self.inner.first()
            && first & 0x80 != 0
            && let Some((value, len)) = self.peek_varint()
        {
            let after = (self.inner.len() - usize::from(len)) as u64;
            if value > after + MARGIN {
                self.violation = Some((self.position(), value));
                return Err(TryGetError {
                    requested: usize::MAX,
                    available: self.inner.len(),
                });
            }
            self.varint_skip = len - 1;
        }
        if self.inner.is_empty() {
            return Err(TryGetError {
                requested: 1,
                available: 0,
            });
        }
        let b = self.inner[0];
        self.advance(1);
        Ok(b)
    }

    fn try_get_i32(&mut self) -> std::result::Result<i32, TryGetError> {
        if self.inner.len() < 4 {
            return Err(TryGetError {
                requested: 4,
                available: self.inner.len(),
            });
        }
        let v = i32::from_be_bytes([self.inner[0], self.inner[1], self.inner[2], self.inner[3]]);
        self.advance(4);
        if let Mode::Substitute(with) = self.mode
            && v > 0
            && v as u64 > self.inner.len() as u64 + MARGIN
        {
            self.substituted += 1;
            return Ok(with);
        }
        Ok(v)
    }
}

impl ByteBuf for GuardBuf {
    fn peek_bytes(&mut self, r: Range<usize>) -> Bytes {
        // Callers check the range with `remaining()` first (see `try_peek_bytes`); clamp anyway
        // so that a wrong range can never panic.
        let end = r.end.min(self.inner.len());
        let start = r.start.min(end);
        self.inner.slice(start..end)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        let size = size.min(self.inner.len());
        self.record(size);
        self.inner.split_to(size)
    }
}

struct Pass<T> {
    result: std::result::Result<T, anyhow::Error>,
    substituted: u32,
    path: u64,
    consumed: usize,
    violation: Option<(usize, u64)>,
}

fn pass<T: Decodable>(bytes: &Bytes, version: i16, mode: Mode) -> Pass<T> {
    let mut buf = GuardBuf::new(bytes.clone(), mode);
    let result = T::decode(&mut buf, version);
    Pass {
        substituted: buf.substituted,
        path: buf.path,
        consumed: buf.position(),
        violation: buf.violation,
        result,
    }
}

fn violation_error(pos: usize, value: u64, len: usize) -> Error {
    Error::corrupt(format!(
        "length {value} at byte {pos} exceeds the {len} bytes of input"
    ))
}

/// Decodes `T` at `version` from untrusted bytes with bounded allocation (see the module docs).
///
/// Returns the message and the number of bytes it took.
pub(crate) fn decode<T: Decodable>(bytes: &Bytes, version: i16) -> Result<(T, usize)> {
    let first = pass::<T>(bytes, version, Mode::Substitute(0));
    if let Some((pos, value)) = first.violation {
        return Err(violation_error(pos, value, bytes.len()));
    }
    if first.substituted == 0 {
        return first
            .result
            .map(|v| (v, first.consumed))
            .map_err(from_decode);
    }
    // With the oversized values replaced, the input does not decode: either they are plain
    // fields and the input is broken elsewhere (an unguarded pass would fail the same way), or
    // one is a length the input cannot hold. Both are errors.
    if let Err(e) = first.result {
        return Err(from_decode(e));
    }
    let second = pass::<T>(bytes, version, Mode::Substitute(1));
    if let Some((pos, value)) = second.violation {
        return Err(violation_error(pos, value, bytes.len()));
    }
    if second.path != first.path || second.consumed != first.consumed || second.result.is_err() {
        return Err(Error::corrupt(format!(
            "a length field exceeds the {} bytes of input",
            bytes.len()
        )));
    }
    let last = pass::<T>(bytes, version, Mode::Plain);
    if let Some((pos, value)) = last.violation {
        return Err(violation_error(pos, value, bytes.len()));
    }
    last.result.map(|v| (v, last.consumed)).map_err(from_decode)
}
