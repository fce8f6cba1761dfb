//! Zig-zag variable-length integers as used inside Kafka records (protobuf style).

use crate::{Error, Result};

/// Most bytes a 32-bit varint may take on the wire.
pub(crate) const MAX_VARINT_LEN: usize = 5;
/// Most bytes a 64-bit varlong may take on the wire.
pub(crate) const MAX_VARLONG_LEN: usize = 10;

#[cold]
#[inline(never)]
fn varint_error(overlong: bool) -> Error {
    if overlong {
        Error::corrupt("overlong varint in record")
    } else {
        Error::corrupt("varint runs past the end of the record")
    }
}

/// Reads an unsigned LEB128 value of at most `max` bytes from `buf[*pos..]`.
#[inline(always)]
fn read_unsigned(buf: &[u8], pos: &mut usize, max: usize) -> Result<u64> {
    let start = *pos;
    match buf.get(start) {
        Some(&b) if b < 0x80 => {
            *pos = start + 1;
            return Ok(u64::from(b));
        }
        None => return Err(varint_error(false)),
        Some(&b0) => {
            // Two-byte fast path (lengths 64..8191 zig-zagged: typical values).
            if let Some(&b1) = buf.get(start + 1) {
                if b1 < 0x80 {
                    *pos = start + 2;
                    return Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7));
                }
            }
        }
    }
    let mut result = 0u64;
    let mut shift = 0u32;
    for i in 0..max {
        let Some(&b) = buf.get(start + i) else {
            return Err(varint_error(false));
        };
        result |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            *pos = start + i + 1;
            return Ok(result);
        }
        shift += 7;
    }
    Err(varint_error(true))
}

/// Reads a zig-zag varint (at most 5 bytes).
#[inline(always)]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32> {
    let u = read_unsigned(buf, pos, MAX_VARINT_LEN)? as u32;
    Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
}

/// Reads a zig-zag varlong (at most 10 bytes).
#[inline(always)]
pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64> {
    let u = read_unsigned(buf, pos, MAX_VARLONG_LEN)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let mut tmp = [0u8; MAX_VARLONG_LEN];
    let mut n = 0;
    while v >= 0x80 && n < MAX_VARLONG_LEN - 1 {
        tmp[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    out.extend_from_slice(&tmp[..=n]);
}

/// Appends a zig-zag varint.
#[cfg(test)]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Appends a zig-zag varlong.
#[cfg(test)]
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[inline(always)]
fn unsigned_len(v: u64) -> usize {
    // 1 + floor(bits / 7), with 0 taking one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encoded size of a zig-zag varint.
#[inline(always)]
pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
}

/// Encoded size of a zig-zag varlong.
#[inline(always)]
pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(((v << 1) ^ (v >> 63)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
        for v in [0, 1, -1, 1 << 40, -(1 << 40), i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(read_varlong(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn overlong_and_truncated_rejected() {
        let mut pos = 0;
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varlong(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varint(&[0x80, 0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varint(&[], &mut pos).is_err());
    }
}
