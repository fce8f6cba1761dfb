//! Decoding record batches (magic 2) and their records.

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;

use super::compression::{self, Compression, DEFAULT_MAX_DECOMPRESSED_SIZE};
use super::control::ControlRecord;
use super::varint::{read_varint, read_varlong};
use crate::{Error, Result};

/// Size of the batch header (everything before the first record).
pub const BATCH_HEADER_LEN: usize = 61;
/// Size of the `base_offset` and `batch_length` fields that precede what `batch_length` counts.
pub const LOG_OVERHEAD: usize = 12;
/// Default upper bound on one batch's `batch_length` accepted by [`RecordBatches`] (1 GiB).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1 << 30;

pub(crate) const OFF_BATCH_LENGTH: usize = 8;
pub(crate) const OFF_LEADER_EPOCH: usize = 12;
pub(crate) const OFF_MAGIC: usize = 16;
pub(crate) const OFF_CRC: usize = 17;
pub(crate) const OFF_ATTRIBUTES: usize = 21;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFF_BASE_TIMESTAMP: usize = 27;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFF_PRODUCER_ID: usize = 43;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFF_BASE_SEQUENCE: usize = 53;
pub(crate) const OFF_RECORD_COUNT: usize = 57;

pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub(crate) const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;
pub(crate) const ATTR_DELETE_HORIZON: i16 = 0x40;

/// The meaning of a batch's timestamps (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TimestampType {
    /// The producer set the timestamps (`CreateTime`).
    #[default]
    CreateTime,
    /// The broker set the timestamp on append (`LogAppendTime`); every record of the batch has
    /// the batch's `max_timestamp`.
    LogAppendTime,
}

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    i16::from_be_bytes(a)
}

pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    i32::from_be_bytes(a)
}

pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    i64::from_be_bytes(a)
}

/// One record batch (magic 2), header decoded and CRC verified.
///
/// The records are read with [`records`](Self::records), which decompresses a compressed batch
/// once into one buffer; every key, value and header of a record is a slice of that buffer.
#[derive(Clone)]
pub struct RecordBatch {
    raw: Bytes,
    base_offset: i64,
    batch_length: i32,
    partition_leader_epoch: i32,
    magic: i8,
    crc: u32,
    attributes: i16,
    compression: Compression,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset)
            .field("batch_length", &self.batch_length)
            .field("partition_leader_epoch", &self.partition_leader_epoch)
            .field("magic", &self.magic)
            .field("crc", &self.crc)
            .field("attributes", &self.attributes)
            .field("last_offset_delta", &self.last_offset_delta)
            .field("base_timestamp", &self.base_timestamp)
            .field("max_timestamp", &self.max_timestamp)
            .field("producer_id", &self.producer_id)
            .field("producer_epoch", &self.producer_epoch)
            .field("base_sequence", &self.base_sequence)
            .field("record_count", &self.record_count)
            .finish()
    }
}

impl RecordBatch {
    /// Decodes one complete batch (exactly `LOG_OVERHEAD + batch_length` bytes), verifying the
    /// magic byte, the CRC and the attributes.
    pub fn decode(raw: Bytes) -> Result<RecordBatch> {
        let b: &[u8] = &raw;
        if b.len() < BATCH_HEADER_LEN {
            return Err(Error::corrupt(format!(
                "record batch of {} bytes is shorter than its {BATCH_HEADER_LEN}-byte header",
                b.len()
            )));
        }
        let batch_length = be_i32(b, OFF_BATCH_LENGTH);
        if usize::try_from(batch_length).ok().map(|l| l + LOG_OVERHEAD) != Some(b.len()) {
            return Err(Error::corrupt(format!(
                "record batch length {batch_length} does not match its {} bytes",
                b.len()
            )));
        }
        let magic = b.get(OFF_MAGIC).map_or(-1, |&m| m as i8);
        if magic != 2 {
            return Err(Error::corrupt(format!(
                "unsupported record batch magic {magic} (only magic 2 is supported)"
            )));
        }
        let crc = be_i32(b, OFF_CRC) as u32;
        let computed = crc32c::crc32c(b.get(OFF_ATTRIBUTES..).unwrap_or_default());
        if crc != computed {
            return Err(Error::corrupt(format!(
                "record batch CRC mismatch: header {crc:#010x}, computed {computed:#010x}"
            )));
        }
        let attributes = be_i16(b, OFF_ATTRIBUTES);
        let codec = attributes & ATTR_COMPRESSION_MASK;
        let compression = Compression::from_id(codec).ok_or_else(|| {
            Error::corrupt(format!("unknown compression codec {codec} in record batch"))
        })?;
        let record_count = be_i32(b, OFF_RECORD_COUNT);
        if record_count < 0 {
            return Err(Error::corrupt(format!(
                "negative record count {record_count} in record batch"
            )));
        }
        let last_offset_delta = be_i32(b, OFF_LAST_OFFSET_DELTA);
        if last_offset_delta < 0 {
            return Err(Error::corrupt(format!(
                "negative last offset delta {last_offset_delta} in record batch"
            )));
        }
        Ok(RecordBatch {
            base_offset: be_i64(b, 0),
            batch_length,
            partition_leader_epoch: be_i32(b, OFF_LEADER_EPOCH),
            magic,
            crc,
            attributes,
            compression,
            last_offset_delta,
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(b, OFF_PRODUCER_ID),
            producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
            record_count,
            raw,
        })
    }

    /// The whole batch as on the wire (header and records).
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The `batch_length` field: bytes after the length field itself.
    pub fn batch_length(&self) -> i32 {
        self.batch_length
    }

    /// The leader epoch stamped by the broker (-1 if none).
    pub fn partition_leader_epoch(&self) -> i32 {
        self.partition_leader_epoch
    }

    /// The magic byte (always 2 for a decoded batch).
    pub fn magic(&self) -> i8 {
        self.magic
    }

    /// The CRC32C from the header (verified when the batch was decoded).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The raw attributes field.
    pub fn attributes(&self) -> i16 {
        self.attributes
    }

    /// The compression codec of the records.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Whether the timestamps are `CreateTime` or `LogAppendTime`.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the delete-horizon bit is set (then `base_timestamp` is the delete horizon).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & ATTR_DELETE_HORIZON != 0
    }

    /// The delete horizon (ms), if the batch has one.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        self.has_delete_horizon().then_some(self.base_timestamp)
    }

    /// Offset delta of the last record, as written by the producer (may exceed the record count
    /// after compaction).
    pub fn last_offset_delta(&self) -> i32 {
        self.last_offset_delta
    }

    /// Timestamp of the first record (or the delete horizon).
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp
    }

    /// Largest timestamp of the batch (the append time for `LogAppendTime`).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Producer id (-1 if the producer is not idempotent).
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    /// Producer epoch (-1 if none).
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }

    /// Sequence number of the first record (-1 if none).
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence
    }

    /// The record count from the header (checked against the records while iterating).
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset to fetch next: `last_offset() + 1`. Use it to move past empty, control-only
    /// and aborted batches.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The records bytes as on the wire (possibly compressed).
    pub fn records_payload(&self) -> Bytes {
        self.raw.slice(BATCH_HEADER_LEN..)
    }

    /// The records, decompressing at most [`DEFAULT_MAX_DECOMPRESSED_SIZE`] bytes.
    pub fn records(&self) -> Result<Records> {
        self.records_with_limit(DEFAULT_MAX_DECOMPRESSED_SIZE)
    }

    /// The records, failing if they decompress to more than `max_decompressed` bytes.
    pub fn records_with_limit(&self, max_decompressed: usize) -> Result<Records> {
        let payload = self.records_payload();
        let data = match self.compression {
            Compression::None => payload,
            codec => compression::decompress(codec, &payload, max_decompressed)?,
        };
        let log_append_time =
            (self.timestamp_type() == TimestampType::LogAppendTime).then_some(self.max_timestamp);
        Ok(Records {
            data,
            pos: 0,
            remaining: self.record_count as u32,
            base_offset: self.base_offset,
            base_timestamp: self.base_timestamp,
            log_append_time,
            failed: false,
        })
    }

    /// For a control batch, the control record it carries (its first record); `None` for a
    /// batch that is not a control batch.
    pub fn control_record(&self) -> Result<Option<ControlRecord>> {
        if !self.is_control() {
            return Ok(None);
        }
        match self.records()?.next() {
            Some(r) => Ok(Some(ControlRecord::from_record(&r?)?)),
            None => Err(Error::corrupt("control batch without records")),
        }
    }
}

/// Iterator over the batches of a buffer of concatenated batches, such as the `records` bytes of
/// one partition in a Fetch response.
///
/// A truncated last batch (normal when the broker cut the response at `max_bytes`) ends the
/// iteration after every complete batch before it; [`truncated_tail`](Self::truncated_tail)
/// then returns `true`. A corrupt batch yields one `Err`, after which the iterator ends.
#[derive(Debug, Clone)]
pub struct RecordBatches {
    buf: Bytes,
    max_batch_size: usize,
    truncated: bool,
    done: bool,
}

impl RecordBatches {
    /// Iterates the batches in `buf`.
    pub fn new(buf: Bytes) -> RecordBatches {
        RecordBatches {
            buf,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            truncated: false,
            done: false,
        }
    }

    /// Rejects batches whose `batch_length` exceeds `max` bytes (default
    /// [`DEFAULT_MAX_BATCH_SIZE`]) as corrupt instead of treating them as truncated.
    pub fn with_max_batch_size(mut self, max: usize) -> RecordBatches {
        self.max_batch_size = max;
        self
    }

    /// Whether the iteration ended at an incomplete batch.
    pub fn truncated_tail(&self) -> bool {
        self.truncated
    }

    /// The bytes not consumed yet (the truncated tail, after the iteration ended on one).
    pub fn remaining(&self) -> &Bytes {
        &self.buf
    }

    fn fail(&mut self, e: Error) -> Option<Result<RecordBatch>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.done || self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < LOG_OVERHEAD {
            self.truncated = true;
            self.done = true;
            return None;
        }
        let length = be_i32(&self.buf, OFF_BATCH_LENGTH);
        let min = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
        if length < min {
            return self.fail(Error::corrupt(format!(
                "record batch length {length} is smaller than the minimum {min}"
            )));
        }
        let length = length as usize;
        if length > self.max_batch_size {
            return self.fail(Error::corrupt(format!(
                "record batch length {length} exceeds the maximum {}",
                self.max_batch_size
            )));
        }
        let total = LOG_OVERHEAD + length;
        if self.buf.len() < total {
            self.truncated = true;
            self.done = true;
            return None;
        }
        let raw = self.buf.split_to(total);
        match RecordBatch::decode(raw) {
            Ok(b) => Some(Ok(b)),
            Err(e) => self.fail(e),
        }
    }
}

impl std::iter::FusedIterator for RecordBatches {}

/// Iterator over the records of one batch. Yields `Err` once (then ends) on bad framing or when
/// the record count of the header disagrees with the records present.
#[derive(Debug, Clone)]
pub struct Records {
    data: Bytes,
    pos: usize,
    remaining: u32,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    failed: bool,
}

impl Records {
    /// Records not yet yielded, according to the batch header.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Parses the record at the current position into positions within `data`, and moves past
    /// it, for [`Records::next_ref`]'s borrowed views.
    #[inline(always)]
    fn parse_raw(&mut self) -> Result<RawRecord> {
        let data: &[u8] = &self.data;
        let mut pos = self.pos;
        let (end, ts_delta, offset_delta) = record_prologue(data, &mut pos)?;
        let rec = data.get(..end).unwrap_or_default();
        let key = field_range(rec, &mut pos, "key")?;
        let value = field_range(rec, &mut pos, "value")?;
        let header_count = read_varint(rec, &mut pos)?;
        check_headers(rec, pos, header_count)?;
        self.pos = end;
        Ok(RawRecord {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: match self.log_append_time {
                Some(t) => t,
                None => self.base_timestamp.wrapping_add(ts_delta),
            },
            key,
            value,
            headers: (pos, end),
            header_count: header_count as u32,
        })
    }

    /// Parses the record at the current position with `Bytes` slices for key, value and
    /// headers, and moves past it. Kept separate from [`parse_raw`](Self::parse_raw), which
    /// does the same walk for borrowed views: building the `Bytes` while walking measured
    /// ~30% faster than converting positions afterwards (`benches/codec.rs`).
    #[inline(always)]
    fn parse(&mut self) -> Result<Record> {
        let data: &[u8] = &self.data;
        let mut pos = self.pos;
        let (end, ts_delta, offset_delta) = record_prologue(data, &mut pos)?;
        let rec = data.get(..end).unwrap_or_default();
        let key = slice_field(&self.data, rec, &mut pos, "key")?;
        let value = slice_field(&self.data, rec, &mut pos, "value")?;
        let header_count = read_varint(rec, &mut pos)?;
        check_headers(rec, pos, header_count)?;
        let headers = if header_count == 0 {
            Headers::default()
        } else {
            Headers {
                data: self.data.slice(pos..end),
                count: header_count as u32,
            }
        };
        self.pos = end;
        Ok(Record {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: match self.log_append_time {
                Some(t) => t,
                None => self.base_timestamp.wrapping_add(ts_delta),
            },
            timestamp_delta: ts_delta,
            offset_delta,
            key,
            value,
            headers,
        })
    }

    /// Checks the record count before a record is read; `Some` ends the iteration.
    #[inline(always)]
    fn check_next(&mut self) -> Option<Option<Error>> {
        if self.failed {
            return Some(None);
        }
        if self.remaining == 0 {
            if self.pos < self.data.len() {
                return Some(Some(Error::corrupt(
                    "record batch has more records than its record count",
                )));
            }
            return Some(None);
        }
        if self.pos >= self.data.len() {
            return Some(Some(Error::corrupt(format!(
                "record batch ends {} records short of its record count",
                self.remaining
            ))));
        }
        self.remaining -= 1;
        None
    }

    /// The next record as a view borrowed from the batch's buffer: the same checks as
    /// [`next`](Iterator::next), without creating a `Bytes` handle (and its reference count
    /// update) per key and value. For consumers that deserialize straight from the bytes.
    ///
    /// ```
    /// use rekafka::protocol::record::{BatchBuilder, RecordBatch};
    ///
    /// let mut b = BatchBuilder::new();
    /// b.append(1, Some(b"k"), Some(b"v"), &[("h", None)])?;
    /// let batch = RecordBatch::decode(b.build()?)?;
    /// let mut records = batch.records()?;
    /// while let Some(r) = records.next_ref() {
    ///     let r = r?;
    ///     assert_eq!((r.offset, r.key, r.value), (0, Some(&b"k"[..]), Some(&b"v"[..])));
    ///     assert_eq!(r.headers().collect::<Vec<_>>(), [("h", None)]);
    /// }
    /// # Ok::<(), rekafka::Error>(())
    /// ```
    #[inline]
    pub fn next_ref(&mut self) -> Option<Result<RecordRef<'_>>> {
        if let Some(end) = self.check_next() {
            self.failed = true;
            return end.map(Err);
        }
        match self.parse_raw() {
            Ok(raw) => {
                let data: &[u8] = &self.data;
                Some(Ok(RecordRef {
                    offset: raw.offset,
                    timestamp: raw.timestamp,
                    key: raw.key.map(|(a, b)| &data[a..b]),
                    value: raw.value.map(|(a, b)| &data[a..b]),
                    header_bytes: &data[raw.headers.0..raw.headers.1],
                    header_count: raw.header_count,
                }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads the start of the record at `*pos`: its length (checked against `data`), attributes,
/// timestamp delta and offset delta. Returns the record's end, and leaves `*pos` at the key.
#[inline(always)]
fn record_prologue(data: &[u8], pos: &mut usize) -> Result<(usize, i64, i32)> {
    let len = read_varint(data, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| Error::corrupt(format!("record length {len} exceeds the batch's bytes")))?;
    let rec = data.get(..end).unwrap_or_default();
    // attributes (unused)
    *pos += 1;
    if *pos > end {
        return Err(Error::corrupt("record too short"));
    }
    let ts_delta = read_varlong(rec, pos)?;
    let offset_delta = read_varint(rec, pos)?;
    Ok((end, ts_delta, offset_delta))
}

/// Checks that `count` headers exactly fill `rec[pos..]` (nothing may follow a record's
/// headers).
#[inline(always)]
fn check_headers(rec: &[u8], pos: usize, count: i32) -> Result<()> {
    if count == 0 {
        if pos != rec.len() {
            return Err(Error::corrupt("trailing bytes after record"));
        }
        return Ok(());
    }
    validate_headers(rec, pos, count)
}

/// Positions of one parsed record within the batch's buffer.
struct RawRecord {
    offset: i64,
    timestamp: i64,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    headers: (usize, usize),
    header_count: u32,
}

/// A record borrowed from its batch's buffer (see [`Records::next_ref`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordRef<'a> {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp (the batch's `max_timestamp` for `LogAppendTime` batches).
    pub timestamp: i64,
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a null value.
    pub value: Option<&'a [u8]>,
    header_bytes: &'a [u8],
    header_count: u32,
}

impl<'a> RecordRef<'a> {
    /// The headers in order, duplicate keys and null values kept (validated when the record
    /// was read).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let data = self.header_bytes;
        let mut pos = 0usize;
        (0..self.header_count).map_while(move |_| {
            let (ka, kb) = field_range(data, &mut pos, "header key").ok().flatten()?;
            let key = std::str::from_utf8(&data[ka..kb]).ok()?;
            let value = field_range(data, &mut pos, "header value").ok()?;
            Some((key, value.map(|(a, b)| &data[a..b])))
        })
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }
}

/// Reads a varint length and returns the range of the bytes it announces; -1 is null.
#[inline(always)]
fn field_range(rec: &[u8], pos: &mut usize, what: &'static str) -> Result<Option<(usize, usize)>> {
    let len = read_varint(rec, pos)?;
    if len < 0 {
        if len == -1 {
            return Ok(None);
        }
        return Err(Error::corrupt(format!("negative {what} length {len}")));
    }
    let start = *pos;
    let end = start + len as usize;
    if end > rec.len() {
        return Err(Error::corrupt(format!(
            "{what} length {len} exceeds the record's bytes"
        )));
    }
    *pos = end;
    Ok(Some((start, end)))
}

/// Reads a varint length and the bytes it announces, as a slice of `data`; -1 is null.
#[inline(always)]
fn slice_field(
    data: &Bytes,
    rec: &[u8],
    pos: &mut usize,
    what: &'static str,
) -> Result<Option<Bytes>> {
    Ok(field_range(rec, pos, what)?.map(|(start, end)| data.slice(start..end)))
}

/// Checks that `count` headers exactly fill `rec[pos..]`, with UTF-8 keys.
fn validate_headers(rec: &[u8], mut pos: usize, count: i32) -> Result<()> {
    if count < 0 {
        return Err(Error::corrupt(format!("negative header count {count}")));
    }
    for _ in 0..count {
        let klen = read_varint(rec, &mut pos)?;
        let kend = usize::try_from(klen)
            .ok()
            .map(|l| pos + l)
            .filter(|&e| e <= rec.len())
            .ok_or_else(|| Error::corrupt(format!("bad header key length {klen}")))?;
        let key = rec.get(pos..kend).unwrap_or_default();
        if std::str::from_utf8(key).is_err() {
            return Err(Error::corrupt("header key is not UTF-8"));
        }
        pos = kend;
        let vlen = read_varint(rec, &mut pos)?;
        if vlen == -1 {
            continue;
        }
        pos = usize::try_from(vlen)
            .ok()
            .map(|l| pos + l)
            .filter(|&e| e <= rec.len())
            .ok_or_else(|| Error::corrupt(format!("bad header value length {vlen}")))?;
    }
    if pos != rec.len() {
        return Err(Error::corrupt("trailing bytes after record headers"));
    }
    Ok(())
}

impl Iterator for Records {
    type Item = Result<Record>;

    #[inline]
    fn next(&mut self) -> Option<Result<Record>> {
        if let Some(end) = self.check_next() {
            self.failed = true;
            return end.map(Err);
        }
        match self.parse() {
            Ok(record) => Some(Ok(record)),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Records {}

/// One record of a batch. Key, value and headers are slices of the batch's (decompressed)
/// buffer; no copy is made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Absolute offset: `base_offset + offset_delta`.
    pub offset: i64,
    /// Timestamp: `base_timestamp + timestamp_delta`, or the batch's `max_timestamp` for
    /// `LogAppendTime` batches.
    pub timestamp: i64,
    /// The timestamp delta as on the wire.
    pub timestamp_delta: i64,
    /// The offset delta as on the wire.
    pub offset_delta: i32,
    /// The key; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// The headers, in order, duplicates kept.
    pub headers: Headers,
}

/// The headers of a record, parsed lazily from their bytes (validated when the record was read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    data: Bytes,
    count: u32,
}

impl Headers {
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The headers in order, duplicate keys and null values kept (KIP-82).
    pub fn iter(&self) -> HeaderIter {
        HeaderIter {
            data: self.data.clone(),
            pos: 0,
            remaining: self.count,
        }
    }
}

impl IntoIterator for &Headers {
    type Item = Header;
    type IntoIter = HeaderIter;

    fn into_iter(self) -> HeaderIter {
        self.iter()
    }
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct HeaderIter {
    data: Bytes,
    pos: usize,
    remaining: u32,
}

impl HeaderIter {
    fn parse(&mut self) -> Result<Header> {
        let data: &[u8] = &self.data;
        let mut pos = self.pos;
        let key = slice_field(&self.data, data, &mut pos, "header key")?
            .ok_or_else(|| Error::corrupt("null header key"))?;
        let key = StrBytes::from_utf8(key)
            .map_err(|e| Error::corrupt("header key is not UTF-8").with_source(e))?;
        let value = slice_field(&self.data, data, &mut pos, "header value")?;
        self.pos = pos;
        Ok(Header { key, value })
    }
}

impl Iterator for HeaderIter {
    type Item = Header;

    fn next(&mut self) -> Option<Header> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Headers were validated when the record was read, so this does not fail.
        match self.parse() {
            Ok(h) => Some(h),
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Header {
    /// The key (UTF-8, validated); read it with [`key`](Header::key). Crate-private: its
    /// type is `kafka-protocol`'s, which is not part of the stable API.
    pub(crate) key: StrBytes,
    /// The value; `None` for a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with `key` and `value` (`None` for a null value, KIP-82).
    ///
    /// ```
    /// use rekafka::protocol::record::Header;
    /// let h = Header::new("trace-id", Some(&b"abc"[..]));
    /// assert_eq!(h.key(), "trace-id");
    /// assert_eq!(h.value(), Some(&b"abc"[..]));
    /// ```
    pub fn new(key: impl Into<String>, value: Option<impl Into<Bytes>>) -> Header {
        Header {
            key: StrBytes::from_string(key.into()),
            value: value.map(Into::into),
        }
    }

    /// A header whose key is a `'static` string (not copied).
    ///
    /// ```
    /// use rekafka::protocol::record::Header;
    /// let h = Header::from_static("trace-id", Some(&b"abc"[..]));
    /// assert_eq!(h.key(), "trace-id");
    /// ```
    pub fn from_static(key: &'static str, value: Option<impl Into<Bytes>>) -> Header {
        Header {
            key: StrBytes::from_static_str(key),
            value: value.map(Into::into),
        }
    }

    /// The key as a string.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value bytes, `None` for a null value.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}
