//! Kafka's record-batch compression codecs, in pure Rust, with bounded decompression.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::{Error, Result};

/// Default cap on the decompressed size of one batch's records (64 MiB).
///
/// A compressed batch whose records inflate to more than this is rejected with an
/// [`ErrorKind::Compression`](crate::ErrorKind::Compression) error, which stops decompression
/// bombs. Use [`RecordBatch::records_with_limit`](super::RecordBatch::records_with_limit) for
/// another limit.
pub const DEFAULT_MAX_DECOMPRESSED_SIZE: usize = 64 * 1024 * 1024;

/// The compression codec of a record batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy, in the xerial framing Kafka's Java client writes.
    Snappy,
    /// LZ4 frame format (KIP-57).
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec id in the batch attributes (0-4).
    pub const fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec for an attribute id, `None` for ids 5-7 (undefined).
    pub const fn from_id(id: i16) -> Option<Compression> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Kafka's name for the codec (`compression.type`): `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Compression> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => return Err(Error::config(format!("unknown compression.type {other:?}"))),
        })
    }
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed chunk size of the xerial stream (Java's default block size).
const XERIAL_CHUNK: usize = 32 * 1024;

fn too_large(limit: usize) -> Error {
    Error::compression(format!(
        "decompressed batch exceeds the limit of {limit} bytes"
    ))
}

/// Compresses `input` (a batch's record bytes) and appends the result to `out`.
pub(crate) fn compress_into(
    codec: Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let lvl = match level {
                Some(l) => flate2::Compression::new(l.clamp(1, 9) as u32),
                None => flate2::Compression::default(),
            };
            let mut enc = flate2::write::GzEncoder::new(out, lvl);
            enc.write_all(input)
                .map_err(|e| Error::compression("gzip compression failed").with_source(e))?;
            enc.finish()
                .map_err(|e| Error::compression("gzip compression failed").with_source(e))?;
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_CHUNK) {
                let len_pos = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
                let n = enc
                    .compress(chunk, &mut out[start..])
                    .map_err(|e| Error::compression("snappy compression failed").with_source(e))?;
                out.truncate(start + n);
                let n =
                    i32::try_from(n).map_err(|_| Error::compression("snappy chunk too large"))?;
                out[len_pos..start].copy_from_slice(&n.to_be_bytes());
            }
        }
        // Kafka (KIP-57) uses the standard LZ4 frame format with 64 KiB independent blocks.
        Compression::Lz4 => super::lz4::compress(input, out)?,
        Compression::Zstd => zstd_compress(level, input, out)?,
    }
    Ok(())
}

#[cfg(feature = "zstd-c")]
fn zstd_compress(level: Option<i32>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut enc = zstd::stream::write::Encoder::new(out, level.unwrap_or(3))
        .map_err(|e| Error::compression("zstd compression failed").with_source(e))?;
    enc.write_all(input)
        .map_err(|e| Error::compression("zstd compression failed").with_source(e))?;
    enc.finish()
        .map_err(|e| Error::compression("zstd compression failed").with_source(e))?;
    Ok(())
}

#[cfg(not(feature = "zstd-c"))]
fn zstd_compress(_level: Option<i32>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    // ruzstd's encoder has no numeric levels worth mapping; `Fastest` is its best-tested one.
    ruzstd::encoding::compress(
        input,
        &mut *out,
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    Ok(())
}

/// Reads all of `reader` into `out`, failing once more than `limit` bytes in total are in `out`.
fn read_bounded<R: Read>(reader: R, out: &mut Vec<u8>, limit: usize, what: &str) -> Result<()> {
    let room = limit.saturating_sub(out.len()) as u64;
    let mut take = reader.take(room.saturating_add(1));
    take.read_to_end(out)
        .map_err(|e| Error::compression(format!("{what} decompression failed")).with_source(e))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Decompresses `input` with `codec` into one buffer of at most `limit` bytes.
pub(crate) fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Bytes> {
    // Guess the size from the input, but never reserve more than the limit allows.
    let capacity = input.len().saturating_mul(4).min(limit).min(1 << 24);
    let mut out = if codec == Compression::Lz4 {
        // LZ4 decodes over a pooled buffer's stale bytes: no zero-filling per block.
        super::pool::take_initialized(capacity)
    } else {
        super::pool::take(capacity)
    };
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(too_large(limit));
            }
            out.extend_from_slice(input);
        }
        Compression::Gzip => read_bounded(
            flate2::read::MultiGzDecoder::new(input),
            &mut out,
            limit,
            "gzip",
        )?,
        Compression::Snappy => snappy_decompress(input, &mut out, limit)?,
        Compression::Lz4 => {
            // One frame per batch is usual; concatenated frames are accepted too.
            let end = super::lz4::decompress_at(input, &mut out, 0, limit)?;
            return Ok(super::pool::into_bytes_prefix(out, end));
        }
        Compression::Zstd => zstd_decompress(input, &mut out, limit)?,
    }
    Ok(super::pool::into_bytes(out))
}

/// The most a raw snappy block can expand: no element writes more than 64 bytes (a copy) for
/// fewer than 3 bytes of input (its tag and offset), and literals do not expand.
const SNAPPY_MAX_EXPANSION: usize = 22;

fn snappy_raw_into(chunk: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<()> {
    let n = snap::raw::decompress_len(chunk)
        .map_err(|e| Error::compression("invalid snappy data").with_source(e))?;
    if n > limit.saturating_sub(out.len()) {
        return Err(too_large(limit));
    }
    // The block's header is only a claim: the output buffer is zero-filled to it before the
    // block is decoded, so a few hostile bytes could reserve the whole limit. A valid block
    // cannot produce more than `SNAPPY_MAX_EXPANSION` bytes per input byte.
    if n > chunk.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(Error::compression(format!(
            "invalid snappy data: a {} byte block claims {n} bytes",
            chunk.len()
        )));
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(chunk, &mut out[start..])
        .map_err(|e| Error::compression("invalid snappy data").with_source(e))?;
    out.truncate(start + written);
    Ok(())
}

fn snappy_decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<()> {
    if input.len() < XERIAL_HEADER_LEN || !input.starts_with(XERIAL_MAGIC) {
        // librdkafka and Sarama may write raw (unframed) snappy.
        return snappy_raw_into(input, out, limit);
    }
    let mut rest = input.get(XERIAL_HEADER_LEN..).unwrap_or_default();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(Error::compression("truncated xerial snappy chunk length"));
        };
        let len = i32::from_be_bytes(*len);
        let len = usize::try_from(len)
            .map_err(|_| Error::compression("negative xerial snappy chunk length"))?;
        let Some(chunk) = tail.get(..len) else {
            return Err(Error::compression(
                "xerial snappy chunk is longer than its input",
            ));
        };
        snappy_raw_into(chunk, out, limit)?;
        rest = tail.get(len..).unwrap_or_default();
    }
    Ok(())
}

fn zstd_decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<()> {
    let mut rest = input;
    while !rest.is_empty() {
        // Skippable frames: magic 0x184D2A5?, then a little-endian u32 size.
        if let Some((magic, tail)) = rest.split_first_chunk::<4>() {
            if u32::from_le_bytes(*magic) & 0xFFFF_FFF0 == 0x184D_2A50 {
                let Some((size, tail)) = tail.split_first_chunk::<4>() else {
                    return Err(Error::compression("truncated zstd skippable frame"));
                };
                let size = u32::from_le_bytes(*size) as usize;
                rest = tail
                    .get(size..)
                    .ok_or_else(|| Error::compression("truncated zstd skippable frame"))?;
                continue;
            }
        }
        let mut cursor = rest;
        let dec = ruzstd::decoding::StreamingDecoder::new(&mut cursor)
            .map_err(|e| Error::compression("invalid zstd frame").with_source(e))?;
        read_bounded(dec, out, limit, "zstd")?;
        if cursor.len() >= rest.len() {
            return Err(Error::compression("zstd decoder made no progress"));
        }
        rest = cursor;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("value-{i} ").into_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut out = Vec::new();
            compress_into(codec, None, &data, &mut out).unwrap();
            let back = decompress(codec, &out, DEFAULT_MAX_DECOMPRESSED_SIZE).unwrap();
            assert_eq!(&back[..], &data[..], "{codec}");
            // The limit is enforced.
            let err = decompress(codec, &out, data.len() - 1).unwrap_err();
            assert_eq!(err.kind(), &crate::ErrorKind::Compression, "{codec}");
            // Empty input compresses and decompresses too.
            let mut out = Vec::new();
            compress_into(codec, None, &[], &mut out).unwrap();
            assert!(decompress(codec, &out, 10).unwrap().is_empty(), "{codec}");
        }
    }

    #[test]
    fn snappy_raw_fallback_and_bad_chunks() {
        let data = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            &decompress(Compression::Snappy, &raw, usize::MAX).unwrap()[..],
            &data[..]
        );

        let mut framed = Vec::new();
        compress_into(Compression::Snappy, None, b"hello", &mut framed).unwrap();
        // Claim a chunk far longer than what follows.
        framed[16..20].copy_from_slice(&1_000_000i32.to_be_bytes());
        assert!(decompress(Compression::Snappy, &framed, usize::MAX).is_err());
        framed[16..20].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decompress(Compression::Snappy, &framed, usize::MAX).is_err());
    }

    #[test]
    fn snappy_worst_case_expansion_is_accepted() {
        // Highly repetitive data compresses close to the format's best ratio; it must stay
        // within the bound the decoder checks headers against.
        for len in [0usize, 1, 64, 4096, 1 << 20] {
            let data = vec![7u8; len];
            let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
            assert!(data.len() <= raw.len() * SNAPPY_MAX_EXPANSION, "{len}");
            assert_eq!(
                decompress(Compression::Snappy, &raw, usize::MAX)
                    .unwrap()
                    .len(),
                len
            );
        }
    }

    #[test]
    fn concatenated_frames_decode() {
        let mut gz = Vec::new();
        compress_into(Compression::Gzip, None, b"abc", &mut gz).unwrap();
        compress_into(Compression::Gzip, None, b"def", &mut gz).unwrap();
        assert_eq!(
            &decompress(Compression::Gzip, &gz, 100).unwrap()[..],
            b"abcdef"
        );

        let mut zs = Vec::new();
        compress_into(Compression::Zstd, None, b"abc", &mut zs).unwrap();
        zs.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        zs.extend_from_slice(&3u32.to_le_bytes());
        zs.extend_from_slice(b"xyz");
        compress_into(Compression::Zstd, None, b"def", &mut zs).unwrap();
        assert_eq!(
            &decompress(Compression::Zstd, &zs, 100).unwrap()[..],
            b"abcdef"
        );

        let mut lz = Vec::new();
        compress_into(Compression::Lz4, None, b"abc", &mut lz).unwrap();
        compress_into(Compression::Lz4, None, b"def", &mut lz).unwrap();
        assert_eq!(
            &decompress(Compression::Lz4, &lz, 100).unwrap()[..],
            b"abcdef"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(codec, b"\x00\x01garbage-garbage-garbage", 1 << 20).is_err());
        }
    }
}
