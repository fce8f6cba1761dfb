//! The reader and writer tasks of one connection: the only code that touches its socket.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use super::BoxTransport;
use super::inflight::{Table, disconnected, sweep_interval};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::frame::FrameDecoder;

/// How many frames the writer coalesces into one flush.
pub(crate) const WRITE_BATCH: usize = 64;

/// One encoded frame for the writer task: its segments, written in order.
pub(crate) struct WriteCmd {
    /// The first segment (size prefix, request header, correlation id patched in).
    pub(crate) head: Bytes,
    /// The segments after `head` (a Produce request's record batches and what lies between
    /// them); empty for a frame of one segment.
    pub(crate) tail: Vec<Bytes>,
    /// Told once the frame is flushed (for requests without a response).
    pub(crate) written: Option<oneshot::Sender<()>>,
}

/// The most the reader reserves beyond the bytes it holds while a frame is incomplete.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// The reader task: splits the stream into frames and routes them by correlation id. Ends when
/// the connection dies (failing everything in flight) or is closed.
pub(crate) async fn read_loop(
    mut io: ReadHalf<BoxTransport>,
    mut buf: BytesMut,
    decoder: FrameDecoder,
    table: Arc<Table>,
    mut dead: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(sweep_interval(table.request_timeout));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let error = loop {
        if let Err(e) = drain_frames(&mut buf, decoder, &table) {
            break e;
        }
        let want = match decoder.frame_len(&buf) {
            Ok(Some(n)) => n.saturating_sub(buf.len()),
            Ok(None) => 0,
            Err(e) => break e,
        };
        // A size prefix is only a claim (4 hostile bytes may announce 100 MiB): grow with the
        // bytes that arrived, at most doubling what the frame already holds (at least 64 KiB),
        // which keeps a large frame's copies amortised.
        let want = want.min(buf.len().max(READ_CHUNK));
        buf.reserve(want.max(8 * 1024));
        tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            // Before the read, so a busy socket cannot starve the check (it is ready once per
            // interval only). `read_buf` is cancel safe: no bytes are lost.
            now = sweep.tick() => table.expire_abandoned(now),
            read = io.read_buf(&mut buf) => match read {
                Ok(0) => break Error::with_message(ErrorKind::Disconnected, "connection closed by the broker"),
                Ok(_) => {}
                Err(e) => break Error::from(e),
            },
        }
    };
    tracing::debug!(broker = table.broker_id, %error, "connection failed");
    table.fail(disconnected(table.broker_id, error), false);
}

pub(crate) fn drain_frames(buf: &mut BytesMut, decoder: FrameDecoder, table: &Table) -> Result<()> {
    while let Some(frame) = decoder.decode(buf)? {
        table.dispatch(frame)?;
    }
    Ok(())
}

/// The writer task: the only code that writes to the socket, one whole frame at a time.
pub(crate) async fn write_loop(
    io: WriteHalf<BoxTransport>,
    mut rx: mpsc::Receiver<WriteCmd>,
    table: Arc<Table>,
    mut dead: watch::Receiver<bool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, io);
    let mut acks = Vec::new();
    let mut segments = Segments::default();
    loop {
        let cmd = tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        let result = tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            r = write_batch(&mut out, &mut rx, cmd, &mut segments, &mut acks) => r,
        };
        match result {
            Ok(()) => {
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
            Err(e) => {
                tracing::debug!(broker = table.broker_id, error = %e, "write failed");
                table.fail(disconnected(table.broker_id, Error::from(e)), false);
                return;
            }
        }
    }
}

/// Writes `first` and up to [`WRITE_BATCH`] frames queued behind it (gathered in `segments`),
/// then flushes.
///
/// The segments of all these frames go out as one [`Segments`] buffer: the `BufWriter` copies
/// small runs of them into its buffer and hands large runs (a Produce request's record
/// batches) to the socket directly, as vectored writes when the transport supports them
/// (`write_all_buf` advances over partial writes, and falls back to plain writes otherwise).
pub(crate) async fn write_batch<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    rx: &mut mpsc::Receiver<WriteCmd>,
    first: WriteCmd,
    segments: &mut Segments,
    acks: &mut Vec<oneshot::Sender<()>>,
) -> std::io::Result<()> {
    // Reused from batch to batch (its allocation); empty unless a write was cut short.
    segments.clear();
    let mut next = Some(first);
    let mut n = 0;
    while let Some(cmd) = next {
        segments.push(cmd.head);
        for s in cmd.tail {
            segments.push(s);
        }
        acks.extend(cmd.written);
        n += 1;
        next = if n < WRITE_BATCH {
            rx.try_recv().ok()
        } else {
            None
        };
    }
    out.write_all_buf(segments).await?;
    out.flush().await
}

/// Byte segments read in order, as one [`Buf`]: what the writer sends in one batch.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Segments {
    /// Drops every segment.
    pub(crate) fn clear(&mut self) {
        self.parts.clear();
        self.remaining = 0;
    }

    /// Appends a segment (an empty one is dropped).
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.parts.push_back(bytes);
        }
    }
}

impl Buf for Segments {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        // `Buf::advance` past the end is a caller bug (the writer advances by what was
        // written); it is clamped rather than a panic.
        cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                break;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that takes at most `step` bytes per call (partial writes), vectored or not.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn pattern(n: usize, seed: u8) -> Bytes {
        Bytes::from((0..n).map(|i| (i as u8) ^ seed).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn segments_are_written_in_order_through_partial_writes() {
        for vectored in [false, true] {
            for step in [1, 7, 5_000, 1 << 20] {
                let cmds = vec![
                    (pattern(30, 1), vec![]),
                    (
                        pattern(40, 2),
                        vec![pattern(100_000, 3), pattern(9, 4), pattern(70_000, 5)],
                    ),
                    (pattern(12, 6), vec![Bytes::new(), pattern(3, 7)]),
                    (pattern(20, 8), vec![pattern(200_000, 9), pattern(1, 10)]),
                ];
                let mut expected = Vec::new();
                let (tx, mut rx) = mpsc::channel(8);
                let mut written = Vec::new();
                for (head, tail) in &cmds {
                    expected.extend_from_slice(head);
                    for s in tail {
                        expected.extend_from_slice(s);
                    }
                    let (ack, acked) = oneshot::channel();
                    written.push(acked);
                    let cmd = WriteCmd {
                        head: head.clone(),
                        tail: tail.clone(),
                        written: Some(ack),
                    };
                    tx.send(cmd).await.unwrap();
                }
                let first = rx.recv().await.unwrap();
                let mut out = BufWriter::with_capacity(
                    64 * 1024,
                    Trickle {
                        out: Vec::new(),
                        step,
                        vectored,
                        calls: 0,
                    },
                );
                let mut acks = Vec::new();
                let mut segments = Segments::default();
                write_batch(&mut out, &mut rx, first, &mut segments, &mut acks)
                    .await
                    .unwrap();
                assert_eq!(segments.remaining(), 0);
                assert_eq!(acks.len(), cmds.len());
                let inner = out.into_inner();
                assert!(inner.out == expected, "vectored={vectored} step={step}");
                if vectored && step == 1 << 20 {
                    // The large segments went out in a few vectored writes, not one per segment.
                    assert!(inner.calls <= 4, "{} writes", inner.calls);
                }
            }
        }
    }

    #[test]
    fn segments_buf_advances_across_parts() {
        let mut s = Segments::default();
        s.push(Bytes::from_static(b"abc"));
        s.push(Bytes::new());
        s.push(Bytes::from_static(b"de"));
        s.push(Bytes::from_static(b"fghi"));
        assert_eq!(s.remaining(), 9);
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(s.chunks_vectored(&mut slices), 2);
        assert_eq!(&*slices[1], b"de");
        s.advance(4);
        assert_eq!(s.chunk(), b"e");
        s.advance(1);
        assert_eq!(s.chunk(), b"fghi");
        assert_eq!(s.copy_to_bytes(4), Bytes::from_static(b"fghi"));
        assert_eq!(s.remaining(), 0);
        assert_eq!(s.chunk(), b"");
        s.advance(3);
        assert_eq!(s.remaining(), 0);
    }
}
