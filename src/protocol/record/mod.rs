//! Record batches (magic v2): encoding, decoding, compression and control records.
//!
//! * [`RecordBatches`] walks the concatenated batches of a Fetch partition's `records` bytes; a
//!   truncated last batch ends the walk after the complete ones
//!   ([`RecordBatches::truncated_tail`]). Each [`RecordBatch`] exposes every header field, with
//!   the CRC verified, and [`RecordBatch::next_offset`] to move past empty, control and aborted
//!   batches.
//! * [`RecordBatch::records`] decompresses once (bounded by
//!   [`DEFAULT_MAX_DECOMPRESSED_SIZE`]) and yields [`Record`]s whose key, value and
//!   [`Headers`] are `Bytes` slices of that buffer: no allocation per record.
//! * [`BatchBuilder`] encodes one batch; [`encode_transaction_marker`] a control batch;
//!   [`set_base_offset`] and friends patch an encoded batch in place.
//! * Compression is Kafka's: gzip, xerial-framed snappy (raw snappy accepted on decode), LZ4
//!   frames (KIP-57) and zstd, all in pure Rust (zstd through the C library with feature
//!   `zstd-c`).
//!
//! ```
//! use bytes::Bytes;
//! use rekafka::protocol::record::{BatchBuilder, Compression, RecordBatches};
//!
//! let mut builder = BatchBuilder::new()
//!     .with_base_offset(100)
//!     .with_compression(Compression::Snappy);
//! builder.append(1_000, Some(b"key"), Some(b"value"), &[("trace", Some(b"1")), ("trace", None)])?;
//! builder.append(1_005, None, None, &[])?;
//! let batch_bytes: Bytes = builder.build()?;
//!
//! let mut batches = RecordBatches::new(batch_bytes);
//! let batch = batches.next().expect("one batch")?;
//! assert_eq!(batch.compression(), Compression::Snappy);
//! assert_eq!(batch.next_offset(), 102);
//! let records = batch.records()?.collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(records[0].offset, 100);
//! assert_eq!(records[0].value.as_deref(), Some(&b"value"[..]));
//! let headers: Vec<_> = records[0].headers.iter().collect();
//! assert_eq!((headers[1].key(), headers[1].value()), ("trace", None));
//! assert_eq!((records[1].offset, records[1].timestamp, records[1].key.is_none()), (101, 1_005, true));
//! assert!(!batches.truncated_tail());
//! # Ok::<(), rekafka::Error>(())
//! ```

mod batch;
mod builder;
mod compression;
mod control;
mod lz4;
pub(crate) mod pool;
mod spare;
mod varint;

pub use batch::{
    BATCH_HEADER_LEN, DEFAULT_MAX_BATCH_SIZE, Header, HeaderIter, Headers, LOG_OVERHEAD, Record,
    RecordBatch, RecordBatches, RecordRef, Records, TimestampType,
};
pub use builder::{
    BatchBuilder, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    encode_control_batch, encode_transaction_marker, set_base_offset, set_partition_leader_epoch,
    set_producer,
};
pub use compression::{Compression, DEFAULT_MAX_DECOMPRESSED_SIZE};
pub use control::{ControlRecord, ControlType};

#[cfg(test)]
mod tests;
