//! Length-prefixed framing: every Kafka request and response is a big-endian `i32` size
//! followed by that many bytes.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{Error, ErrorKind, Result};

/// The default maximum frame size: 100 MiB, Kafka's `socket.request.max.bytes` (the broker's
/// limit on requests) is 100 MiB too, and a Fetch response is bounded by `fetch.max.bytes`
/// (default 50 MiB) plus overhead.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 100 * 1024 * 1024;

/// Splits a byte stream into frames, rejecting frames larger than a configured maximum before
/// buffering them.
///
/// ```
/// use bytes::{BufMut, BytesMut};
/// use rekafka::protocol::frame::FrameDecoder;
///
/// let mut stream = BytesMut::new();
/// stream.put_i32(3);
/// stream.put_slice(b"abc");
/// stream.put_i32(10); // a second frame, not complete yet
/// let dec = FrameDecoder::new(1024);
/// assert_eq!(&dec.decode(&mut stream).unwrap().unwrap()[..], b"abc");
/// assert!(dec.decode(&mut stream).unwrap().is_none());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that accepts frames of at most `max_frame_size` bytes (not counting the
    /// 4-byte size prefix).
    pub fn new(max_frame_size: usize) -> FrameDecoder {
        FrameDecoder { max_frame_size }
    }

    /// The configured maximum frame size.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// How many bytes the frame at the start of `buf` needs in all (prefix included), if its
    /// prefix is complete. The size is the peer's claim: a reader should not reserve more up
    /// front than it is willing to lose to four hostile bytes, and grow with the bytes that
    /// arrive beyond that.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if size < 0 || size as usize > self.max_frame_size {
            return Err(Error::new(ErrorKind::FrameTooLarge {
                size: i64::from(size),
                max: self.max_frame_size,
            }));
        }
        Ok(Some(size as usize + 4))
    }

    /// Takes one complete frame off the front of `buf`, without its size prefix. Returns
    /// `Ok(None)` when more bytes are needed; an error when the size prefix is negative or
    /// exceeds the maximum (the stream cannot be resynchronised after that).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        match self.frame_len(buf)? {
            Some(n) if buf.len() >= n => {
                buf.advance(4);
                Ok(Some(buf.split_to(n - 4).freeze()))
            }
            _ => Ok(None),
        }
    }
}

/// Writes the 4-byte size prefix for a frame built in `buf` starting at `start`, where a
/// placeholder of 4 bytes was reserved.
pub(crate) fn finish_frame(buf: &mut BytesMut, start: usize) -> Result<()> {
    let size = buf.len() - start - 4;
    let size = i32::try_from(size).map_err(|_| {
        Error::with_message(
            ErrorKind::Encode,
            format!("frame of {size} bytes is too large"),
        )
    })?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// An encoded request frame as a list of segments, written in order: the `head` (size
/// prefix, request header and the start of the body, mutable so that the connection can patch
/// in the correlation id), then the `tail` segments. A Produce request's record batches are
/// tail segments of their own, shared with the producer's batches rather than copied into the
/// frame; every other request is one segment (an empty tail, which does not allocate).
///
/// The concatenation of the segments is the frame, size prefix included.
#[derive(Debug, Default)]
pub(crate) struct RequestFrame {
    /// The first segment: at least the size prefix and the request header.
    pub(crate) head: BytesMut,
    /// The segments after the head, none of them empty.
    pub(crate) tail: Vec<Bytes>,
}

impl RequestFrame {
    /// A frame of one segment.
    pub(crate) fn one(head: BytesMut) -> RequestFrame {
        RequestFrame {
            head,
            tail: Vec::new(),
        }
    }

    /// The size of the whole frame, size prefix included.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.iter().map(Bytes::len).sum::<usize>()
    }

    /// The frame as one contiguous buffer (a copy): for tests and checks.
    #[cfg(test)]
    pub(crate) fn to_contiguous(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(self.len());
        b.extend_from_slice(&self.head);
        for s in &self.tail {
            b.extend_from_slice(s);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn rejects_negative_and_oversized() {
        let dec = FrameDecoder::new(100);
        let mut b = BytesMut::new();
        b.put_i32(-5);
        assert!(matches!(
            dec.decode(&mut b).unwrap_err().kind(),
            ErrorKind::FrameTooLarge { size: -5, .. }
        ));
        let mut b = BytesMut::new();
        b.put_i32(i32::MAX);
        assert!(matches!(
            dec.decode(&mut b).unwrap_err().kind(),
            ErrorKind::FrameTooLarge { .. }
        ));
    }

    #[test]
    fn partial_prefix_and_body() {
        let dec = FrameDecoder::new(100);
        let mut b = BytesMut::from(&[0u8, 0][..]);
        assert!(dec.decode(&mut b).unwrap().is_none());
        b.put_slice(&[0, 2, 7]);
        assert!(dec.decode(&mut b).unwrap().is_none());
        b.put_u8(8);
        assert_eq!(&dec.decode(&mut b).unwrap().unwrap()[..], &[7, 8]);
        assert!(b.is_empty());
    }
}
