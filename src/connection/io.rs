//! The reader and writer tasks of one connection: the only code that touches its socket.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use super::BoxTransport;
use super::inflight::{Table, disconnected, sweep_interval};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::frame::FrameDecoder;
use crate::protocol::record::pool::FRAMES;

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

/// Frames of at least this many bytes (a fetch response with records, a large metadata
/// response) are read into a buffer of their own, sized to the frame and taken from the
/// process-wide pool of frame buffers ([`FRAMES`]), instead of growing the shared read buffer
/// by doubling. When the frame's last slice (its last record) is dropped, on whatever thread,
/// the buffer goes back to the pool, so a steady stream of fetch responses reuses the same few
/// buffers: no fresh pages to fault in and no `realloc` copies, on any allocator.
pub(crate) const POOLED_FRAME_MIN: usize = READ_CHUNK;

/// Frames larger than this take the growing path: the reader trusts a frame's size prefix for
/// an up-front allocation only this far (four hostile bytes may claim the 100 MiB maximum).
/// Kafka's fetch responses are far below it at the defaults (`max.partition.fetch.bytes` is
/// 1 MiB a partition).
pub(crate) const POOLED_FRAME_MAX: usize = 16 * 1024 * 1024;

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
    let error = 'read: loop {
        if let Err(e) = drain_frames(&mut buf, decoder, &table) {
            break e;
        }
        let frame_len = match decoder.frame_len(&buf) {
            Ok(n) => n,
            Err(e) => break e,
        };
        if let Some(n) = frame_len {
            let size = n - 4;
            if (POOLED_FRAME_MIN..=POOLED_FRAME_MAX).contains(&size) && buf.len() < n {
                // Everything buffered belongs to this frame (it is incomplete): move it into a
                // buffer of the frame's size and read the rest straight into that.
                let mut frame = FRAMES.take(size);
                frame.extend_from_slice(buf.get(4..).unwrap_or_default());
                buf.clear();
                while frame.len() < size {
                    let room = size - frame.len();
                    let mut dst = (&mut frame).limit(room);
                    match read_some(&mut io, &mut dst, &mut dead, &mut sweep, &table).await {
                        Step::Read => {}
                        Step::Dead => return,
                        Step::Failed(e) => break 'read e,
                    }
                }
                let len = frame.len();
                if let Err(e) = table.dispatch(FRAMES.share_prefix(frame, len)) {
                    break e;
                }
                continue;
            }
        }
        let want = frame_len.map_or(0, |n| n.saturating_sub(buf.len()));
        // A size prefix is only a claim (4 hostile bytes may announce 100 MiB): grow with the
        // bytes that arrived, at most doubling what the frame already holds (at least 64 KiB),
        // which keeps a large frame's copies amortised.
        let want = want.min(buf.len().max(READ_CHUNK));
        buf.reserve(want.max(8 * 1024));
        match read_some(&mut io, &mut buf, &mut dead, &mut sweep, &table).await {
            Step::Read => {}
            Step::Dead => return,
            Step::Failed(e) => break e,
        }
    };
    tracing::debug!(broker = table.broker_id, %error, "connection failed");
    table.fail(disconnected(table.broker_id, error), false);
}

/// What one [`read_some`] came to.
enum Step {
    /// Bytes arrived, or the sweep ran: go on.
    Read,
    /// The connection is closed or dead: stop without a word.
    Dead,
    /// The socket failed or the broker closed it.
    Failed(Error),
}

/// One read into `dst`, or one sweep of abandoned requests, or the dead signal.
async fn read_some<B: BufMut>(
    io: &mut ReadHalf<BoxTransport>,
    dst: &mut B,
    dead: &mut watch::Receiver<bool>,
    sweep: &mut tokio::time::Interval,
    table: &Table,
) -> Step {
    tokio::select! {
        biased;
        _ = dead.wait_for(|d| *d) => Step::Dead,
        // Before the read, so a busy socket cannot starve the check (it is ready once per
        // interval only). `read_buf` is cancel safe: no bytes are lost.
        now = sweep.tick() => {
            table.expire_abandoned(now);
            Step::Read
        }
        read = io.read_buf(dst) => match read {
            Ok(0) => Step::Failed(Error::with_message(ErrorKind::Disconnected, "connection closed by the broker")),
            Ok(_) => Step::Read,
            Err(e) => Step::Failed(Error::from(e)),
        },
    }
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

    /// A reader task over an in-memory stream: the test writes the broker's side.
    struct Reader {
        table: Arc<Table>,
        broker: tokio::io::DuplexStream,
        task: tokio::task::JoinHandle<()>,
    }

    impl Reader {
        fn start() -> Reader {
            let (table, dead_rx) = Table::new(1, std::time::Duration::from_secs(30), 8, 1);
            let table = Arc::new(table);
            let (client, broker) = tokio::io::duplex(4096);
            let (read, _write) = tokio::io::split(Box::new(client) as BoxTransport);
            let task = tokio::spawn(read_loop(
                read,
                BytesMut::new(),
                FrameDecoder::default(),
                table.clone(),
                dead_rx,
            ));
            Reader {
                table,
                broker,
                task,
            }
        }

        /// A Fetch in flight: its correlation id and where its response arrives.
        fn register(&self) -> (i32, oneshot::Receiver<Result<Bytes>>) {
            use super::super::inflight::Registration;
            let (tx, rx) = oneshot::channel();
            let corr = self
                .table
                .register(
                    kafka_protocol::messages::ApiKey::Fetch,
                    Registration::Caller(tx, None),
                )
                .unwrap();
            (corr, rx)
        }
    }

    #[tokio::test]
    async fn large_and_small_frames_arrive_whole_through_small_reads() {
        let mut reader = Reader::start();
        // Small frames, frames at and around the pooled threshold, a large one; each body
        // starts with its correlation id, as a response does.
        let sizes = [
            100,
            200 * 1024,
            10,
            POOLED_FRAME_MIN,
            POOLED_FRAME_MIN - 1,
            70_000,
            4,
        ];
        let mut waiting = Vec::new();
        let mut stream = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let (corr, rx) = reader.register();
            let mut body = corr.to_be_bytes().to_vec();
            body.extend_from_slice(&pattern(size - 4, i as u8));
            stream.extend_from_slice(&(body.len() as i32).to_be_bytes());
            stream.extend_from_slice(&body);
            waiting.push((rx, body));
        }
        // Odd-sized pieces: prefixes and frames split across reads.
        for piece in stream.chunks(1777) {
            reader.broker.write_all(piece).await.unwrap();
        }
        for (rx, body) in waiting {
            let frame = rx.await.unwrap().unwrap();
            assert_eq!(frame.len(), body.len());
            assert!(
                frame[..] == body[..],
                "a frame of {} bytes differs",
                body.len()
            );
        }
        // The broker closes the connection: the reader fails what is in flight and ends.
        let (_, rx) = reader.register();
        drop(reader.broker);
        assert!(rx.await.unwrap().is_err());
        reader.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_closed_mid_frame_fails_the_request() {
        let mut reader = Reader::start();
        let (corr, rx) = reader.register();
        // A large frame's prefix and a part of its body, then the end of the stream.
        let broker = &mut reader.broker;
        broker.write_all(&1_000_000i32.to_be_bytes()).await.unwrap();
        broker.write_all(&corr.to_be_bytes()).await.unwrap();
        broker.write_all(&[7; 5000]).await.unwrap();
        drop(reader.broker);
        let err = rx.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Disconnected, "{err}");
        reader.task.await.unwrap();
    }
}
