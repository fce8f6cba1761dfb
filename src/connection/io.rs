//! The reader and writer tasks of one connection: the only code that touches its socket.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use super::BoxTransport;
use super::inflight::{Table, disconnected, sweep_interval};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::frame::FrameDecoder;

/// How many frames the writer coalesces into one flush.
pub(crate) const WRITE_BATCH: usize = 64;

/// One encoded frame for the writer task.
pub(crate) struct WriteCmd {
    pub(crate) frame: Bytes,
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
            r = write_batch(&mut out, &mut rx, cmd, &mut acks) => r,
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

pub(crate) async fn write_batch(
    out: &mut BufWriter<WriteHalf<BoxTransport>>,
    rx: &mut mpsc::Receiver<WriteCmd>,
    first: WriteCmd,
    acks: &mut Vec<oneshot::Sender<()>>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(cmd) = next {
        out.write_all(&cmd.frame).await?;
        acks.extend(cmd.written);
        n += 1;
        next = if n < WRITE_BATCH {
            rx.try_recv().ok()
        } else {
            None
        };
    }
    out.flush().await
}
