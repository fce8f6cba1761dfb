//! Encoding record batches (magic 2).

use bytes::Bytes;

use super::batch::{
    ATTR_CONTROL, ATTR_TIMESTAMP_TYPE, ATTR_TRANSACTIONAL, BATCH_HEADER_LEN, LOG_OVERHEAD,
    OFF_ATTRIBUTES, OFF_BASE_SEQUENCE, OFF_CRC, OFF_LEADER_EPOCH, OFF_MAGIC, OFF_PRODUCER_EPOCH,
    OFF_PRODUCER_ID, TimestampType,
};
use super::compression::{Compression, compress_into};
use super::control::{ControlRecord, ControlType};
use super::spare::SpareWriter;
use super::varint::{MAX_VARINT_LEN, read_varint, read_varlong, varint_len, varlong_len};
use crate::{Error, Result};

/// Producer id of a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a producer that is not idempotent.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a producer that is not idempotent.
pub const NO_SEQUENCE: i32 = -1;
/// Partition leader epoch before the broker stamps one.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Builds one record batch (magic 2) record by record.
///
/// Records are encoded as they are appended, into one buffer; [`build`](Self::build) writes the
/// header, compresses if asked and computes the CRC. [`estimated_size`](Self::estimated_size)
/// tells the producer when to seal a batch at `batch.size`.
///
/// ```
/// use rekafka::protocol::record::{BatchBuilder, Compression, RecordBatches};
///
/// let mut b = BatchBuilder::new().with_compression(Compression::Lz4);
/// b.append(1_700_000_000_000, Some(b"k"), Some(b"v"), &[("h", Some(b"x")), ("h", None)])?;
/// let bytes = b.build()?;
/// let batch = RecordBatches::new(bytes).next().unwrap()?;
/// assert_eq!(batch.record_count(), 1);
/// # Ok::<(), rekafka::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// Header and records up to `len`; the bytes past `len` are room to write into (zeroed
    /// once, or stale bytes of a pooled buffer), so appending needs no `memset` or `memcpy`
    /// call per record (see `spare.rs`).
    buf: Vec<u8>,
    /// The end of the encoded bytes in `buf`.
    len: usize,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    timestamp_type: TimestampType,
    compression: Compression,
    level: Option<i32>,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    /// Whether the buffer goes back to the pool once the built batch is dropped: not after
    /// [`absorb`](Self::absorb) grew it to a one-off size (exactly the merged records), which
    /// the pool would otherwise hand to ordinary batches (the producer charges
    /// `buffer.memory` by capacity) in place of the batch-sized buffers it is for.
    pooled: bool,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty, uncompressed, non-idempotent builder with base offset 0.
    pub fn new() -> BatchBuilder {
        BatchBuilder::with_capacity(0)
    }

    /// Like [`new`](Self::new), reserving room for `bytes` bytes of records. The buffer may
    /// come from (and the built batch's memory goes back to) a small process-wide pool, so
    /// that building batch after batch does not allocate afresh each time.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        BatchBuilder::with_buffer(super::pool::take_initialized(BATCH_HEADER_LEN + bytes))
    }

    /// Like [`with_capacity`](Self::with_capacity), but never a pooled buffer of more than
    /// `max` bytes (header included): the producer charges `buffer.memory` by capacity and
    /// reserved exactly `max`.
    pub(crate) fn with_capacity_at_most(bytes: usize, max: usize) -> BatchBuilder {
        BatchBuilder::with_buffer(super::pool::take_initialized_at_most(
            BATCH_HEADER_LEN + bytes,
            max,
        ))
    }

    /// Like [`with_capacity`](Self::with_capacity) with a buffer of exactly that capacity,
    /// never a pooled one (the producer charges `buffer.memory` by capacity).
    pub(crate) fn with_exact_capacity(bytes: usize) -> BatchBuilder {
        BatchBuilder::with_buffer(Vec::with_capacity(BATCH_HEADER_LEN + bytes))
    }

    /// The capacity of the buffer (header included).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn with_buffer(mut buf: Vec<u8>) -> BatchBuilder {
        if buf.len() < BATCH_HEADER_LEN {
            buf.resize(BATCH_HEADER_LEN, 0);
        }
        buf[..BATCH_HEADER_LEN].fill(0);
        BatchBuilder {
            buf,
            len: BATCH_HEADER_LEN,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            timestamp_type: TimestampType::CreateTime,
            compression: Compression::None,
            level: None,
            base_timestamp: -1,
            max_timestamp: -1,
            count: 0,
            pooled: true,
        }
    }

    /// Sets the compression codec (default none).
    pub fn with_compression(mut self, compression: Compression) -> BatchBuilder {
        self.compression = compression;
        self
    }

    /// Sets the codec's level, where it has one (gzip 1-9, zstd with feature `zstd-c`); `None`
    /// is the codec's default. Ignored by snappy and lz4.
    pub fn with_compression_level(mut self, level: Option<i32>) -> BatchBuilder {
        self.level = level;
        self
    }

    /// Sets the base offset (default 0; the broker assigns offsets on append).
    pub fn with_base_offset(mut self, base_offset: i64) -> BatchBuilder {
        self.base_offset = base_offset;
        self
    }

    /// Sets the partition leader epoch (default -1).
    pub fn with_partition_leader_epoch(mut self, epoch: i32) -> BatchBuilder {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets producer id, epoch and base sequence (default -1, -1, -1: not idempotent).
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch transactional.
    pub fn with_transactional(mut self, transactional: bool) -> BatchBuilder {
        self.transactional = transactional;
        self
    }

    /// Sets the timestamp type (default `CreateTime`).
    pub fn with_timestamp_type(mut self, timestamp_type: TimestampType) -> BatchBuilder {
        self.timestamp_type = timestamp_type;
        self
    }

    /// Number of records appended.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The compression codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Size of the batch if built now without compression (header plus encoded records); an
    /// upper estimate for compressed batches.
    pub fn estimated_size(&self) -> usize {
        self.len
    }

    /// Bytes that appending this record would add (exact for the uncompressed encoding).
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let ts_delta = if self.count == 0 {
            0
        } else {
            timestamp.wrapping_sub(self.base_timestamp)
        };
        let body = body_len(ts_delta, self.count, key, value, headers);
        varint_len(body as i32) + body
    }

    /// Appends a record with the given timestamp (ms), key, value and headers (duplicates and
    /// null values allowed). Returns the record's offset delta.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<i32> {
        if self.count == i32::MAX {
            return Err(Error::new(crate::ErrorKind::Encode).message("record batch is full"));
        }
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else if timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;
        let body = body_len(ts_delta, offset_delta, key, value, headers);
        let body_i32 = i32::try_from(body)
            .map_err(|_| Error::new(crate::ErrorKind::Encode).message("record too large"))?;
        // `body` is exact and its length varint takes at most 5 bytes: one reservation, then
        // every field is written in place (no scratch copy, no `memcpy` call for the short
        // ones; see `spare.rs` for why).
        self.make_room(body + MAX_VARINT_LEN);
        let mut w = SpareWriter::new(&mut self.buf, self.len);
        w.varint(body_i32);
        w.byte(0); // attributes
        w.varlong(ts_delta);
        w.varint(offset_delta);
        put_bytes(&mut w, key);
        put_bytes(&mut w, value);
        w.varint(headers.len() as i32);
        for (k, v) in headers {
            put_bytes(&mut w, Some(k.as_bytes()));
            put_bytes(&mut w, *v);
        }
        self.len = w.pos();
        self.count += 1;
        Ok(offset_delta)
    }

    /// Makes `buf` hold at least `need` bytes past `len` (initialized), growing the capacity
    /// as `Vec::reserve` would and zero-filling up to the capacity, once per growth.
    fn make_room(&mut self, need: usize) {
        let want = self.len + need;
        if self.buf.len() < want {
            self.buf.reserve(want - self.buf.len());
            let capacity = self.buf.capacity();
            self.buf.resize(capacity, 0);
        }
    }

    /// The [`estimated_size`](Self::estimated_size) this builder would have after
    /// [`absorb`](Self::absorb)ing `other`: every record of `other` with its timestamp and
    /// offset deltas re-encoded against this batch (their varints may change length).
    pub(crate) fn absorbed_size(&self, other: &BatchBuilder) -> Result<usize> {
        let (base_ts, first) = self.absorb_bases(other)?;
        let mut size = self.len;
        let mut pos = BATCH_HEADER_LEN;
        let src = other.records_bytes();
        while pos < src.len() {
            let r = RawRecord::read(src, &mut pos)?;
            let body = r.body_len(base_ts, other.base_timestamp, first)?;
            size += varint_len(body_i32(body)?) + body;
        }
        Ok(size)
    }

    /// Appends every record of `other` (a builder of the same partition, not built yet)
    /// after this batch's records, in order: the producer merges batches that were queued but
    /// never sent into one (issue 21: batch growth in a burst). Keys, values, headers and
    /// record attributes are copied as they are; each record's timestamp delta (against this
    /// batch's base timestamp) and offset delta (after this batch's records) are re-encoded.
    /// The buffer grows to exactly [`absorbed_size`](Self::absorbed_size) (the producer
    /// charges `buffer.memory` by capacity). On an error nothing is appended.
    pub(crate) fn absorb(&mut self, other: &BatchBuilder) -> Result<()> {
        let end = self.absorbed_size(other)?;
        let (base_ts, first) = self.absorb_bases(other)?;
        if self.buf.len() < end {
            if self.buf.capacity() < end {
                self.pooled = false;
            }
            self.buf.reserve_exact(end - self.buf.len());
            self.buf.resize(end, 0);
        }
        let mut w = SpareWriter::new(&mut self.buf, self.len);
        let src = other.records_bytes();
        let mut pos = BATCH_HEADER_LEN;
        while pos < src.len() {
            let r = RawRecord::read(src, &mut pos)?;
            let body = r.body_len(base_ts, other.base_timestamp, first)?;
            w.varint(body_i32(body)?);
            w.byte(r.attributes);
            w.varlong(r.timestamp(other.base_timestamp).wrapping_sub(base_ts));
            w.varint(first + r.offset_delta);
            w.slice(r.rest);
        }
        if other.count > 0 {
            if self.count == 0 {
                self.base_timestamp = base_ts;
                self.max_timestamp = other.max_timestamp;
            } else {
                self.max_timestamp = self.max_timestamp.max(other.max_timestamp);
            }
        }
        self.len = w.pos();
        self.count = first + other.count;
        Ok(())
    }

    /// The base timestamp and first offset delta `other`'s records get when absorbed.
    fn absorb_bases(&self, other: &BatchBuilder) -> Result<(i64, i32)> {
        let base_ts = if self.count == 0 {
            other.base_timestamp
        } else {
            self.base_timestamp
        };
        if self.count.checked_add(other.count).is_none() {
            return Err(Error::new(crate::ErrorKind::Encode).message("record batch is full"));
        }
        Ok((base_ts, self.count))
    }

    /// The header and the encoded records (no spare room).
    fn records_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Writes the header, compresses the records if asked, computes the CRC and returns the
    /// finished batch.
    pub fn build(self) -> Result<Bytes> {
        let mut pooled = self.pooled;
        let (mut out, len) = match self.compression {
            Compression::None => (self.buf, self.len),
            codec => {
                let records = self.buf.get(BATCH_HEADER_LEN..self.len).unwrap_or_default();
                let mut out = super::pool::take(BATCH_HEADER_LEN + records.len() / 2 + 64);
                out.resize(BATCH_HEADER_LEN, 0);
                compress_into(codec, self.level, records, &mut out)?;
                if pooled {
                    super::pool::give(self.buf);
                }
                pooled = true;
                let len = out.len();
                (out, len)
            }
        };
        let Some(batch) = out.get_mut(..len) else {
            return Err(Error::new(crate::ErrorKind::Encode).message("record batch overran"));
        };
        let mut attributes = self.compression.id();
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= ATTR_TIMESTAMP_TYPE;
        }
        if self.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if self.control {
            attributes |= ATTR_CONTROL;
        }
        let batch_length = i32::try_from(batch.len() - LOG_OVERHEAD)
            .map_err(|_| Error::new(crate::ErrorKind::Encode).message("record batch too large"))?;
        let last_offset_delta = (self.count - 1).max(0);
        let header = &mut batch[..BATCH_HEADER_LEN];
        header[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        header[8..12].copy_from_slice(&batch_length.to_be_bytes());
        header[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        header[16] = 2;
        header[21..23].copy_from_slice(&attributes.to_be_bytes());
        header[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        header[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
        batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        if !pooled {
            out.truncate(len);
            return Ok(Bytes::from(out));
        }
        // The bytes past `len` go back to the pool with the buffer: room for the next batch.
        Ok(super::pool::into_bytes_prefix(out, len))
    }
}

/// One encoded record of an unbuilt batch, read for [`BatchBuilder::absorb`]: its deltas
/// and everything after them (key, value, headers), which is copied unchanged.
struct RawRecord<'a> {
    attributes: u8,
    timestamp_delta: i64,
    offset_delta: i32,
    rest: &'a [u8],
}

impl<'a> RawRecord<'a> {
    fn read(buf: &'a [u8], pos: &mut usize) -> Result<RawRecord<'a>> {
        let body = usize::try_from(read_varint(buf, pos)?)
            .map_err(|_| Error::corrupt("negative record length in a batch being built"))?;
        let end = pos
            .checked_add(body)
            .filter(|e| *e <= buf.len())
            .ok_or_else(|| Error::corrupt("record past the end of a batch being built"))?;
        let attributes = *buf
            .get(*pos)
            .ok_or_else(|| Error::corrupt("empty record in a batch being built"))?;
        *pos += 1;
        let timestamp_delta = read_varlong(buf, pos)?;
        let offset_delta = read_varint(buf, pos)?;
        let rest = buf
            .get(*pos..end)
            .ok_or_else(|| Error::corrupt("record fields past the record's length"))?;
        *pos = end;
        Ok(RawRecord {
            attributes,
            timestamp_delta,
            offset_delta,
            rest,
        })
    }

    fn timestamp(&self, base_timestamp: i64) -> i64 {
        base_timestamp.wrapping_add(self.timestamp_delta)
    }

    /// The body length once re-encoded against `base_ts`, after `first` records.
    fn body_len(&self, base_ts: i64, old_base: i64, first: i32) -> Result<usize> {
        let offset = first
            .checked_add(self.offset_delta)
            .ok_or_else(|| Error::new(crate::ErrorKind::Encode).message("record batch is full"))?;
        Ok(
            1 + varlong_len(self.timestamp(old_base).wrapping_sub(base_ts))
                + varint_len(offset)
                + self.rest.len(),
        )
    }
}

fn body_i32(body: usize) -> Result<i32> {
    i32::try_from(body)
        .map_err(|_| Error::new(crate::ErrorKind::Encode).message("record too large"))
}

#[inline(always)]
fn put_bytes(w: &mut SpareWriter<'_>, b: Option<&[u8]>) {
    match b {
        None => w.varint(-1),
        Some(b) => {
            w.varint(b.len() as i32);
            w.slice(b);
        }
    }
}

#[inline(always)]
fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

#[inline(always)]
fn body_len(
    ts_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let mut n = 1
        + varlong_len(ts_delta)
        + varint_len(offset_delta)
        + bytes_len(key)
        + bytes_len(value)
        + varint_len(headers.len() as i32);
    for (k, v) in headers {
        n += bytes_len(Some(k.as_bytes())) + bytes_len(*v);
    }
    n
}

/// Encodes a control batch holding one transaction marker (commit or abort), as the transaction
/// coordinator writes it: transactional and control bits set, base sequence -1.
pub fn encode_control_batch(
    base_offset: i64,
    producer_id: i64,
    producer_epoch: i16,
    timestamp: i64,
    marker: ControlRecord,
) -> Result<Bytes> {
    let mut b = BatchBuilder::with_capacity(32)
        .with_base_offset(base_offset)
        .with_producer(producer_id, producer_epoch, NO_SEQUENCE)
        .with_transactional(true);
    b.control = true;
    b.append(
        timestamp,
        Some(&marker.key_bytes()),
        Some(&marker.value_bytes()),
        &[],
    )?;
    b.build()
}

/// Convenience for [`encode_control_batch`] with a version-0 commit or abort marker.
pub fn encode_transaction_marker(
    base_offset: i64,
    producer_id: i64,
    producer_epoch: i16,
    timestamp: i64,
    control_type: ControlType,
    coordinator_epoch: i32,
) -> Result<Bytes> {
    encode_control_batch(
        base_offset,
        producer_id,
        producer_epoch,
        timestamp,
        ControlRecord::new(control_type, coordinator_epoch),
    )
}

fn check_header(batch: &[u8]) -> Result<()> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(Error::corrupt("record batch shorter than its header"));
    }
    if batch.get(OFF_MAGIC) != Some(&2) {
        return Err(Error::corrupt("record batch magic is not 2"));
    }
    Ok(())
}

/// Rewrites the base offset of an encoded batch in place (the field is outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<()> {
    check_header(batch)?;
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Rewrites the partition leader epoch of an encoded batch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<()> {
    check_header(batch)?;
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Rewrites producer id, epoch and base sequence of an encoded batch in place and recomputes
/// the CRC.
pub fn set_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<()> {
    check_header(batch)?;
    batch[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    batch[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod absorb_tests {
    use super::*;

    type Rec<'a> = (
        i64,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Vec<(&'a str, Option<&'a [u8]>)>,
    );

    fn records() -> Vec<Rec<'static>> {
        let mut out: Vec<Rec<'static>> = Vec::new();
        for i in 0..300i64 {
            // Timestamps that go back and forth (user-set CreateTime), keys and headers of
            // varying shape, so that re-encoded deltas change their varint lengths.
            let ts = 1_700_000_000_000 + (i * 37) % 1000 - 400;
            let key: Option<&'static [u8]> = if i % 3 == 0 { None } else { Some(b"key") };
            let headers = if i % 5 == 0 {
                vec![("h", Some(&b"v"[..])), ("n", None)]
            } else {
                Vec::new()
            };
            out.push((ts, key, Some(&b"value value value"[..]), headers));
        }
        out
    }

    fn fill(b: &mut BatchBuilder, recs: &[Rec<'_>]) {
        for (ts, k, v, h) in recs {
            b.append(*ts, *k, *v, h).unwrap();
        }
    }

    #[test]
    fn absorbing_equals_appending_every_record_to_one_builder() {
        let recs = records();
        for split in [1, 7, 64, 150, 299] {
            let (a, rest) = recs.split_at(split);
            let (b, c) = rest.split_at(rest.len() / 2);
            let mut one = BatchBuilder::new().with_producer(7, 1, 40);
            fill(&mut one, &recs);
            let mut head = BatchBuilder::new().with_producer(7, 1, 40);
            fill(&mut head, a);
            let mut second = BatchBuilder::new();
            fill(&mut second, b);
            let mut third = BatchBuilder::with_exact_capacity(0);
            fill(&mut third, c);
            let expected = head.absorbed_size(&second).unwrap();
            head.absorb(&second).unwrap();
            assert_eq!(head.estimated_size(), expected);
            head.absorb(&third).unwrap();
            assert_eq!(head.len(), recs.len());
            assert_eq!(head.estimated_size(), one.estimated_size());
            assert_eq!(
                head.build().unwrap(),
                one.build().unwrap(),
                "split at {split}"
            );
        }
    }

    #[test]
    fn absorbing_into_an_empty_builder_takes_the_other_as_it_is() {
        let recs = records();
        let mut one = BatchBuilder::new();
        fill(&mut one, &recs[..20]);
        let mut empty = BatchBuilder::new();
        empty.absorb(&one).unwrap();
        let mut nothing = BatchBuilder::new();
        nothing.absorb(&BatchBuilder::new()).unwrap();
        empty.absorb(&nothing).unwrap();
        assert_eq!(empty.build().unwrap(), one.build().unwrap());
    }
}
