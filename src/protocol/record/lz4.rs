//! LZ4 frames (KIP-57: the standard LZ4 frame format, magic v2 batches) on lz4_flex's block
//! codec.
//!
//! lz4_flex's `FrameEncoder` / `FrameDecoder` allocate their block buffers and hash table for
//! every frame, that is for every batch; on allocators that return such memory to the kernel
//! at once (musl's) that dominated the codec's time. Here the blocks are compressed straight
//! into the output buffer with a per-thread hash table, and decompressed straight into the
//! output buffer. The output buffer may arrive with stale initialized bytes past the
//! point decoding starts (a pooled buffer, `pool::take_initialized`): blocks are decoded over
//! them, so the buffer is zero-filled only where it must grow, not 64 KiB per block (musl's
//! `memset` made that a visible cost).
//!
//! Written: 64 KiB independent blocks, no checksums (the batch's CRC-32C covers the bytes), as
//! the Java client writes them. Read: any block size, independent or linked blocks, block and
//! content checksums (skipped, not verified: the batch CRC was), content size and dictionary
//! id fields, concatenated frames and skippable frames.

use std::cell::RefCell;

use lz4_flex::block::{
    CompressTable, compress_into_with_table, decompress_into, decompress_into_with_dict,
    get_maximum_output_size,
};

use crate::error::{Error, Result};

const MAGIC: u32 = 0x184D_2204;
/// FLG: version 01, independent blocks, no checksums, no content size, no dictionary.
const FLG: u8 = 0x60;
/// BD: 64 KiB maximum block size.
const BD: u8 = 0x40;
/// The header checksum: the second byte of xxh32([FLG, BD], seed 0) (checked against
/// lz4_flex's encoder in the tests).
const HC: u8 = 0x82;
const BLOCK: usize = 64 * 1024;
const UNCOMPRESSED: u32 = 0x8000_0000;

thread_local! {
    static TABLE: RefCell<Option<CompressTable>> = const { RefCell::new(None) };
}

/// Appends `input` as one LZ4 frame to `out`.
pub(crate) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.reserve(7 + input.len() + input.len() / 255 + 4 * (input.len() / BLOCK + 2) + 16);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[FLG, BD, HC]);
    TABLE.with(|t| -> Result<()> {
        let mut t = t.borrow_mut();
        let table = t.get_or_insert_with(CompressTable::large);
        for chunk in input.chunks(BLOCK) {
            let size_at = out.len();
            let start = size_at + 4;
            out.resize(start + get_maximum_output_size(chunk.len()), 0);
            let n = compress_into_with_table(chunk, &mut out[start..], table)
                .map_err(|e| Error::compression(format!("lz4 compression failed: {e}")))?;
            if n >= chunk.len() {
                // Incompressible: stored as is.
                out.truncate(start);
                out.extend_from_slice(chunk);
                let size = chunk.len() as u32 | UNCOMPRESSED;
                out[size_at..start].copy_from_slice(&size.to_le_bytes());
            } else {
                out.truncate(start + n);
                out[size_at..start].copy_from_slice(&(n as u32).to_le_bytes());
            }
        }
        Ok(())
    })?;
    out.extend_from_slice(&0u32.to_le_bytes()); // end mark
    Ok(())
}

fn invalid(what: &str) -> Error {
    Error::compression(format!("invalid lz4 frame: {what}"))
}

fn too_large(limit: usize) -> Error {
    Error::compression(format!(
        "decompressed batch exceeds the limit of {limit} bytes"
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decompresses the LZ4 frames of `input`, appending to `out`, failing once `out` would hold
/// more than `limit` bytes.
#[cfg(test)]
pub(crate) fn decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<()> {
    let end = decompress_at(input, out, out.len(), limit)?;
    out.truncate(end);
    Ok(())
}

/// Grows `out` (zero-filling) to at least `len` bytes; bytes already there are left as they
/// are, to be overwritten.
fn ensure_len(out: &mut Vec<u8>, len: usize) {
    if out.len() < len {
        out.resize(len, 0);
    }
}

/// Decompresses the LZ4 frames of `input` into `out` from index `start` on, over whatever
/// `out` holds there, and returns the end of the decompressed bytes (`out.len()` may be
/// larger: the bytes past the end are not part of the result). Fails once the end would pass
/// `limit`.
pub(crate) fn decompress_at(
    input: &[u8],
    out: &mut Vec<u8>,
    start: usize,
    limit: usize,
) -> Result<usize> {
    let mut end = start.min(out.len());
    let mut pos = 0;
    while pos < input.len() {
        let magic = u32_at(input, pos).ok_or_else(|| invalid("truncated magic"))?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            let size =
                u32_at(input, pos + 4).ok_or_else(|| invalid("truncated skippable frame"))?;
            pos = pos
                .checked_add(8 + size as usize)
                .filter(|p| *p <= input.len())
                .ok_or_else(|| invalid("truncated skippable frame"))?;
            continue;
        }
        if magic != MAGIC {
            return Err(invalid("bad magic"));
        }
        pos += 4;
        let (flg, bd) = match input.get(pos..pos + 2) {
            Some(&[flg, bd]) => (flg, bd),
            _ => return Err(invalid("truncated header")),
        };
        if flg >> 6 != 1 {
            return Err(invalid("unsupported version"));
        }
        let independent = flg & 0x20 != 0;
        let block_checksum = flg & 0x10 != 0;
        let content_size = flg & 0x08 != 0;
        let content_checksum = flg & 0x04 != 0;
        let dict_id = flg & 0x01 != 0;
        let block_max = match (bd >> 4) & 0x7 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            _ => return Err(invalid("bad block size")),
        };
        pos += 2 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
        if pos > input.len() {
            return Err(invalid("truncated header"));
        }
        let frame_start = end;
        loop {
            let word = u32_at(input, pos).ok_or_else(|| invalid("truncated block size"))?;
            pos += 4;
            if word == 0 {
                break;
            }
            let len = (word & !UNCOMPRESSED) as usize;
            let block = input
                .get(pos..pos + len)
                .ok_or_else(|| invalid("truncated block"))?;
            pos += len + if block_checksum { 4 } else { 0 };
            if word & UNCOMPRESSED != 0 {
                if end + len > limit {
                    return Err(too_large(limit));
                }
                ensure_len(out, end + len);
                out[end..end + len].copy_from_slice(block);
                end += len;
                continue;
            }
            let room = block_max.min(limit.saturating_sub(end));
            ensure_len(out, end + room);
            let (before, after) = out.split_at_mut(end);
            let after = &mut after[..room];
            let result = if independent || end == frame_start {
                decompress_into(block, after)
            } else {
                let dict = &before[frame_start.max(end.saturating_sub(64 << 10))..];
                decompress_into_with_dict(block, after, dict)
            };
            match result {
                Ok(n) => end += n,
                Err(_) if room < block_max => return Err(too_large(limit)),
                Err(e) => return Err(invalid(&e.to_string())),
            }
        }
        if content_checksum {
            pos += 4;
        }
        if pos > input.len() {
            return Err(invalid("truncated checksum"));
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    (i / 7) as u8
                } else {
                    b"abcdefgh"[i % 8]
                }
            })
            .collect()
    }

    #[test]
    fn the_header_matches_lz4_flex_and_frames_round_trip_both_ways() {
        for n in [0, 1, 100, 65_535, 65_536, 65_537, 300_000] {
            let input = sample(n);
            let mut ours = Vec::new();
            compress(&input, &mut ours).unwrap();
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(&input).unwrap();
            let theirs = enc.finish().unwrap();
            assert_eq!(ours[..7], theirs[..7], "header, {n} bytes");
            // Each decodes the other's frame.
            let mut back = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&ours[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input, "lz4_flex reads ours, {n} bytes");
            let mut back = Vec::new();
            decompress(&theirs, &mut back, usize::MAX).unwrap();
            assert_eq!(back, input, "we read lz4_flex's, {n} bytes");
        }
    }

    #[test]
    fn linked_blocks_checksums_and_limits() {
        let input = sample(200_000);
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_mode(lz4_flex::frame::BlockMode::Linked)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(input.len() as u64));
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&input).unwrap();
        let frame = enc.finish().unwrap();
        let mut twice = frame.clone();
        twice.extend_from_slice(&frame);
        let mut back = Vec::new();
        decompress(&twice, &mut back, usize::MAX).unwrap();
        assert_eq!(back.len(), 2 * input.len());
        assert!(back[..input.len()] == input[..] && back[input.len()..] == input[..]);
        let mut small = Vec::new();
        let e = decompress(&frame, &mut small, 100_000).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let mut junk = Vec::new();
        assert!(decompress(&frame[..frame.len() - 9], &mut junk, usize::MAX).is_err());
        assert!(decompress(b"nope", &mut junk, usize::MAX).is_err());
    }

    /// A buffer holding stale bytes (a pooled one) decodes to the same bytes as an empty one,
    /// whether the stale part is shorter or longer than the output, and the limit counts from
    /// the start of the output, not the stale length.
    #[test]
    fn decoding_over_stale_bytes_gives_the_same_output() {
        for n in [0, 1, 1000, 65_536, 150_000] {
            let input = sample(n);
            let mut frame = Vec::new();
            compress(&input, &mut frame).unwrap();
            // An incompressible block too (stored as is).
            let noise: Vec<u8> = (0..70_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            compress(&noise, &mut frame).unwrap();
            let mut want = input.clone();
            want.extend_from_slice(&noise);
            for stale in [0, 10, 100_000, 400_000] {
                for start in [0, 7] {
                    let mut out = vec![0xA5; stale.max(start)];
                    let end = decompress_at(&frame, &mut out, start, usize::MAX).unwrap();
                    assert_eq!(end, start + want.len(), "{n} bytes, {stale} stale");
                    assert!(out.len() >= end);
                    assert!(out[..start].iter().all(|b| *b == 0xA5));
                    assert!(out[start..end] == want[..], "{n} bytes, {stale} stale");
                }
            }
            let mut out = vec![0xA5; 400_000];
            let limit = want.len() - 1;
            let e = decompress_at(&frame, &mut out, 0, limit).unwrap_err();
            assert!(e.to_string().contains("limit"), "{e}");
        }
    }
}
