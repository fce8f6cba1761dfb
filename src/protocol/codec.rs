//! Typed encoding and decoding of requests and responses.
//!
//! Everything is generic over `kafka-protocol`'s [`Request`] trait, which ties a request type
//! to its API key and response type, so there is no hand-written match over the APIs: the
//! connection layer sends a `MetadataRequest` and gets a `MetadataResponse` back.
//!
//! All decoding of bytes that came from the network goes through the allocation guard (see
//! `guard.rs`): a hostile frame gets an [`ErrorKind::Corrupt`] error, never a panic or a huge
//! allocation.
//!
//! ```
//! use bytes::BytesMut;
//! use rekafka::protocol::codec;
//! use rekafka::protocol::unstable::messages::{MetadataRequest, MetadataResponse};
//!
//! let mut buf = BytesMut::new();
//! codec::encode_request(&MetadataRequest::default(), 12, 7, Some("app"), &mut buf).unwrap();
//! // The frame starts with its size, then the request header.
//! let size = i32::from_be_bytes(buf[..4].try_into().unwrap());
//! assert_eq!(size as usize, buf.len() - 4);
//!
//! // A broker's answer, decoded by the request's type and version.
//! # use kafka_protocol::protocol::Encodable;
//! let mut frame = BytesMut::new();
//! frame.extend_from_slice(&7i32.to_be_bytes()); // response header v1: correlation id,
//! frame.extend_from_slice(&[0]); // no tagged fields
//! MetadataResponse::default().encode(&mut frame, 12).unwrap();
//! let frame = frame.freeze();
//! assert_eq!(codec::response_correlation_id(&frame).unwrap(), 7);
//! let (header, _metadata) = codec::decode_response::<MetadataRequest>(frame, 12).unwrap();
//! assert_eq!(header.correlation_id, 7);
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Message, Request, StrBytes};

use super::frame::{RequestFrame, finish_frame};
use super::guard;
use crate::error::{Error, ErrorKind, Result, from_encode};

/// The API key of a request type.
pub fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| Error::with_message(ErrorKind::Encode, format!("unknown API key {}", R::KEY)))
}

fn check_version<M: Message>(api: ApiKey, version: i16) -> Result<()> {
    if version < M::VERSIONS.min || version > M::VERSIONS.max {
        return Err(Error::new(ErrorKind::UnsupportedVersion {
            api: crate::error::Api::of(api),
        })
        .message(format!(
            "version {version} is outside {}..={}",
            M::VERSIONS.min,
            M::VERSIONS.max
        )));
    }
    Ok(())
}

/// Encodes `request` at `version` as a complete frame (size prefix, request header, body) and
/// appends it to `buf`.
///
/// The request header version is the one the API and version call for (v1 or v2). A field set
/// to a non-default value that `version` cannot carry is an [`ErrorKind::Encode`] error.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    buf: &mut BytesMut,
) -> Result<()> {
    let api = api_key::<R>()?;
    check_version::<R>(api, version)?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(|c| StrBytes::from_string(c.to_owned())));
    let start = buf.len();
    buf.put_i32(0);
    let body = (|| {
        header.encode(buf, R::header_version(version))?;
        request.encode(buf, version)
    })();
    if let Err(e) = body {
        buf.truncate(start);
        return Err(from_encode(e).api(api));
    }
    finish_frame(buf, start)
}

/// Record batches up to this size are copied into the frame's current segment; larger ones
/// become segments of their own (sharing the batch's buffer). A small copy is cheaper than a
/// separate segment (one more I/O slice, one more allocation-sharing handle).
pub(crate) const INLINE_RECORDS_MAX: usize = 512;

/// Encodes a Produce request like [`encode_request`], as a frame of segments: each record
/// batch larger than [`INLINE_RECORDS_MAX`] is a segment of its own, a clone of the request's
/// `Bytes` (no copy), between the encoded pieces around it. The concatenation of the segments
/// is byte for byte what `encode_request` writes.
///
/// A request carrying unknown tagged fields (which the producer never sets) is encoded by
/// `kafka-protocol` as one segment.
pub(crate) fn encode_produce_request(
    request: &ProduceRequest,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
) -> Result<RequestFrame> {
    let api = ApiKey::Produce;
    check_version::<ProduceRequest>(api, version)?;
    let tagged = !request.unknown_tagged_fields.is_empty()
        || request.topic_data.iter().any(|t| {
            !t.unknown_tagged_fields.is_empty()
                || t.partition_data
                    .iter()
                    .any(|p| !p.unknown_tagged_fields.is_empty())
        });
    if tagged {
        let mut buf = BytesMut::new();
        encode_request(request, version, correlation_id, client_id, &mut buf)?;
        return Ok(RequestFrame::one(buf));
    }
    let header = RequestHeader::default()
        .with_request_api_key(ProduceRequest::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(|c| StrBytes::from_string(c.to_owned())));
    let mut w = SegmentWriter {
        buf: BytesMut::with_capacity(produce_head_capacity(request, client_id)),
        ..SegmentWriter::default()
    };
    w.buf.put_i32(0);
    header
        .encode(&mut w.buf, ProduceRequest::header_version(version))
        .map_err(|e| from_encode(e).api(api))?;
    encode_produce_body(request, version, &mut w).map_err(|e| e.api(api))?;
    let mut frame = w.finish();
    let size = frame.len() - 4;
    let size = i32::try_from(size).map_err(|_| {
        Error::with_message(
            ErrorKind::Encode,
            format!("frame of {size} bytes is too large"),
        )
        .api(api)
    })?;
    match frame.head.get_mut(..4) {
        Some(prefix) => prefix.copy_from_slice(&size.to_be_bytes()),
        None => return Err(Error::with_message(ErrorKind::Encode, "frame too short").api(api)),
    }
    Ok(frame)
}

/// About the bytes of a Produce frame other than its shared record batches (an estimate, a
/// little over: the buffer is not grown while it is written).
fn produce_head_capacity(request: &ProduceRequest, client_id: Option<&str>) -> usize {
    let mut n = 32 + client_id.map_or(0, str::len);
    n += request.transactional_id.as_ref().map_or(0, |t| t.0.len());
    for t in &request.topic_data {
        n += 32 + t.name.0.len();
        for p in &t.partition_data {
            n += 16;
            if let Some(r) = &p.records
                && r.len() <= INLINE_RECORDS_MAX
            {
                n += r.len();
            }
        }
    }
    n
}

/// Builds a [`RequestFrame`]: encoded bytes go to `buf`; [`push_shared`](Self::push_shared)
/// ends the current segment and adds a shared one.
#[derive(Default)]
struct SegmentWriter {
    buf: BytesMut,
    head: Option<BytesMut>,
    tail: Vec<Bytes>,
}

impl SegmentWriter {
    fn push_shared(&mut self, bytes: &Bytes) {
        // `split` hands out the bytes written so far; the next ones share the allocation.
        let piece = self.buf.split();
        match self.head {
            None => self.head = Some(piece),
            Some(_) if piece.is_empty() => {}
            Some(_) => self.tail.push(piece.freeze()),
        }
        if !bytes.is_empty() {
            self.tail.push(bytes.clone());
        }
    }

    fn finish(mut self) -> RequestFrame {
        match self.head.take() {
            None => RequestFrame::one(self.buf),
            Some(head) => {
                if !self.buf.is_empty() {
                    self.tail.push(self.buf.freeze());
                }
                RequestFrame {
                    head,
                    tail: self.tail,
                }
            }
        }
    }
}

fn too_long(what: &str, len: usize) -> Error {
    Error::with_message(
        ErrorKind::Encode,
        format!("{what} of {len} bytes is too long to encode"),
    )
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A compact length (`len + 1`, 0 for null) as an unsigned varint.
fn put_compact_len(buf: &mut BytesMut, len: Option<usize>, what: &str) -> Result<()> {
    match len {
        None => put_uvarint(buf, 0),
        Some(n) => {
            let v = u32::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or_else(|| too_long(what, n))?;
            put_uvarint(buf, v);
        }
    }
    Ok(())
}

/// A string, nullable or not: compact (flexible versions) or with an `i16` length.
fn put_string(buf: &mut BytesMut, s: Option<&str>, flexible: bool) -> Result<()> {
    if flexible {
        put_compact_len(buf, s.map(str::len), "string")?;
    } else {
        match s {
            None => buf.put_i16(-1),
            Some(s) => buf.put_i16(i16::try_from(s.len()).map_err(|_| too_long("string", s.len()))?),
        }
    }
    if let Some(s) = s {
        buf.put_slice(s.as_bytes());
    }
    Ok(())
}

/// An array length: compact (flexible versions) or `i32`.
fn put_array_len(buf: &mut BytesMut, n: usize, flexible: bool) -> Result<()> {
    if flexible {
        put_compact_len(buf, Some(n), "array")
    } else {
        buf.put_i32(i32::try_from(n).map_err(|_| too_long("array", n))?);
        Ok(())
    }
}

/// The Produce request body (versions 3 to 13), as `kafka-protocol` encodes it when there are
/// no unknown tagged fields, with the record batches as shared segments.
fn encode_produce_body(
    request: &ProduceRequest,
    version: i16,
    w: &mut SegmentWriter,
) -> Result<()> {
    let flexible = version >= 9;
    put_string(
        &mut w.buf,
        request.transactional_id.as_ref().map(|t| &*t.0),
        flexible,
    )?;
    w.buf.put_i16(request.acks);
    w.buf.put_i32(request.timeout_ms);
    put_array_len(&mut w.buf, request.topic_data.len(), flexible)?;
    for topic in &request.topic_data {
        if version <= 12 {
            put_string(&mut w.buf, Some(&*topic.name.0), flexible)?;
        } else {
            w.buf.put_slice(topic.topic_id.as_bytes());
        }
        put_array_len(&mut w.buf, topic.partition_data.len(), flexible)?;
        for partition in &topic.partition_data {
            w.buf.put_i32(partition.index);
            let records = partition.records.as_ref();
            if flexible {
                put_compact_len(&mut w.buf, records.map(Bytes::len), "records")?;
            } else {
                match records {
                    None => w.buf.put_i32(-1),
                    Some(r) => w
                        .buf
                        .put_i32(i32::try_from(r.len()).map_err(|_| too_long("records", r.len()))?),
                }
            }
            match records {
                Some(r) if r.len() > INLINE_RECORDS_MAX => w.push_shared(r),
                Some(r) => w.buf.put_slice(r),
                None => {}
            }
            if flexible {
                put_uvarint(&mut w.buf, 0);
            }
        }
        if flexible {
            put_uvarint(&mut w.buf, 0);
        }
    }
    if flexible {
        put_uvarint(&mut w.buf, 0);
    }
    Ok(())
}

/// The correlation id of a response frame (the frame without its size prefix). Every response
/// header starts with it, whatever its version.
pub fn response_correlation_id(frame: &[u8]) -> Result<i32> {
    match frame.get(..4) {
        Some(b) => Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::corrupt(format!(
            "response frame of {} bytes has no correlation id",
            frame.len()
        ))),
    }
}

/// Decodes a response frame (without its size prefix) to the request `R` made at `version`.
pub fn decode_response<R: Request>(
    frame: Bytes,
    version: i16,
) -> Result<(ResponseHeader, R::Response)> {
    let api = api_key::<R>()?;
    check_version::<R::Response>(api, version)?;
    let (header, used) =
        guard::decode::<ResponseHeader>(&frame, R::Response::header_version(version))
            .map_err(|e| e.api(api))?;
    let body = frame.slice(used..);
    let (response, _) = guard::decode::<R::Response>(&body, version).map_err(|e| e.api(api))?;
    Ok((header, response))
}

/// Decodes the header of a request frame (without its size prefix). Returns the header and the
/// body that follows it. For the server side (the mock cluster) and for tests.
pub fn decode_request_header(frame: &Bytes) -> Result<(RequestHeader, Bytes)> {
    let Some(b) = frame.get(..4) else {
        return Err(Error::corrupt("request frame shorter than its header"));
    };
    let key = i16::from_be_bytes([b[0], b[1]]);
    let version = i16::from_be_bytes([b[2], b[3]]);
    let api =
        ApiKey::try_from(key).map_err(|_| Error::corrupt(format!("unknown API key {key}")))?;
    let header_version = api.request_header_version(version);
    let (header, used) =
        guard::decode::<RequestHeader>(frame, header_version).map_err(|e| e.api(api))?;
    Ok((header, frame.slice(used..)))
}

/// Decodes a request body of type `R` at `version`. For the server side and for tests.
pub fn decode_request<R: Request>(body: Bytes, version: i16) -> Result<R> {
    let api = api_key::<R>()?;
    check_version::<R>(api, version)?;
    guard::decode::<R>(&body, version)
        .map(|(r, _)| r)
        .map_err(|e| e.api(api))
}

/// Encodes `response` to request type `R` at `version` as a complete frame with the given
/// correlation id. For the server side (the mock cluster) and for tests.
pub fn encode_response<R: Request>(
    response: &R::Response,
    version: i16,
    correlation_id: i32,
    buf: &mut BytesMut,
) -> Result<()> {
    let api = api_key::<R>()?;
    check_version::<R::Response>(api, version)?;
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let start = buf.len();
    buf.put_i32(0);
    let body = (|| {
        header.encode(buf, R::Response::header_version(version))?;
        response.encode(buf, version)
    })();
    if let Err(e) = body {
        buf.truncate(start);
        return Err(from_encode(e).api(api));
    }
    finish_frame(buf, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest,
        metadata_response::MetadataResponseBroker,
    };
    use kafka_protocol::protocol::Decodable;

    /// A response frame (without size prefix) built with kafka-protocol's own encoder.
    fn response_frame<R: Request>(resp: &R::Response, v: i16, corr: i32) -> Bytes
    where
        R::Response: Encodable,
    {
        let mut b = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(corr)
            .encode(&mut b, R::Response::header_version(v))
            .unwrap();
        resp.encode(&mut b, v).unwrap();
        b.freeze()
    }

    #[test]
    fn request_round_trip_all_versions() {
        for v in MetadataRequest::VERSIONS.min..=MetadataRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            encode_request(&MetadataRequest::default(), v, 42, Some("cid"), &mut buf).unwrap();
            let frame = buf.split_off(4).freeze();
            let (h, body) = decode_request_header(&frame).unwrap();
            assert_eq!(h.request_api_key, ApiKey::Metadata as i16);
            assert_eq!(h.request_api_version, v);
            assert_eq!(h.correlation_id, 42);
            assert_eq!(h.client_id.as_deref(), Some("cid"));
            let _req: MetadataRequest = decode_request(body, v).unwrap();
        }
    }

    #[test]
    fn version_outside_range_is_typed() {
        let mut buf = BytesMut::new();
        let e = encode_request(&ProduceRequest::default(), 99, 1, None, &mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(ApiKey::Produce)
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn response_with_large_int_fields_decodes_exactly() {
        // Ports and node ids larger than the remaining bytes must not be mistaken for lengths.
        for v in [0i16, 5, 8, 9, 12] {
            let resp = MetadataResponse::default().with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(1_000_000.into())
                    .with_host(StrBytes::from_static_str("h"))
                    .with_port(65_000),
            ]);
            let frame = response_frame::<MetadataRequest>(&resp, v, 9);
            let (_, got) = decode_response::<MetadataRequest>(frame, v).unwrap();
            assert_eq!(got.brokers[0].port, 65_000, "v{v}");
            assert_eq!(got.brokers[0].node_id.0, 1_000_000);
        }
    }

    #[test]
    fn huge_array_claims_are_rejected() {
        // Fetch response v4 (non-flexible): throttle, then responses: [..] with i32 length.
        let mut b = BytesMut::new();
        b.put_i32(7); // correlation id
        b.put_i32(0); // throttle_time_ms
        b.put_i32(i32::MAX); // responses array length
        b.put_slice(&[0; 16]);
        let e = decode_response::<FetchRequest>(b.freeze(), 4).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Corrupt);
        // Flexible (v12): compact array length as a varint claiming ~4 billion elements.
        let mut b = BytesMut::new();
        b.put_i32(7);
        b.put_u8(0); // header tagged fields
        b.put_i32(0); // throttle
        b.put_i16(0); // error code
        b.put_i32(0); // session id
        b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        b.put_slice(&[0; 16]);
        let e = decode_response::<FetchRequest>(b.freeze(), 12).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Corrupt);
    }

    #[test]
    fn guarded_decode_matches_plain_decode() {
        let resp = MetadataResponse::default()
            .with_cluster_id(Some(StrBytes::from_static_str("c")))
            .with_controller_id(2_000_000_000.into());
        for v in [1i16, 9, 12] {
            let mut buf = BytesMut::new();
            resp.encode(&mut buf, v).unwrap();
            let plain = MetadataResponse::decode(&mut buf.clone().freeze(), v).unwrap();
            let (guarded, used) = guard::decode::<MetadataResponse>(&buf.freeze(), v).unwrap();
            assert_eq!(plain, guarded);
            assert!(used > 0);
        }
    }

    fn produce_request(transactional: bool, big: usize) -> ProduceRequest {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{TopicName, TransactionalId};
        let batch = |n: usize, seed: u8| {
            Some(Bytes::from(
                (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect::<Vec<_>>(),
            ))
        };
        let partition = |index: i32, records: Option<Bytes>| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(records)
        };
        let topic = |name: &'static str, partitions| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_topic_id(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677))
                .with_partition_data(partitions)
        };
        ProduceRequest::default()
            .with_transactional_id(
                transactional.then(|| TransactionalId(StrBytes::from_static_str("txn-1"))),
            )
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                topic(
                    "orders",
                    vec![
                        partition(0, batch(big, 3)),
                        partition(1, None),
                        partition(2, Some(Bytes::new())),
                        partition(3, batch(17, 5)),
                        partition(4, batch(big + 1, 7)),
                        partition(5, batch(INLINE_RECORDS_MAX, 11)),
                        partition(6, batch(INLINE_RECORDS_MAX + 1, 13)),
                    ],
                ),
                topic("empty-topic", vec![]),
                topic("payments", vec![partition(7, batch(big, 9))]),
            ])
    }

    #[test]
    fn produce_segments_are_byte_identical_to_the_plain_encoding() {
        for version in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
            for transactional in [false, true] {
                // 200 bytes are copied inline; 20 000 and 300 000 (a compact length of
                // three bytes) are segments of their own.
                for big in [200, 20_000, 300_000] {
                    for client_id in [None, Some("producer-1")] {
                        let request = produce_request(transactional, big);
                        let mut plain = BytesMut::new();
                        encode_request(&request, version, 77, client_id, &mut plain).unwrap();
                        let frame = encode_produce_request(&request, version, 77, client_id).unwrap();
                        let what = format!("v{version} txn={transactional} big={big} {client_id:?}");
                        assert_eq!(frame.len(), plain.len(), "{what}");
                        assert!(frame.to_contiguous() == plain, "{what}: bytes differ");
                        assert!(frame.tail.iter().all(|s| !s.is_empty()), "{what}");
                        assert!(frame.head.len() >= 12, "{what}");
                        // The big batches are shared, not copied.
                        let shared: Vec<_> = request
                            .topic_data
                            .iter()
                            .flat_map(|t| &t.partition_data)
                            .filter_map(|p| p.records.as_ref())
                            .filter(|r| r.len() > INLINE_RECORDS_MAX)
                            .collect();
                        for r in &shared {
                            assert!(
                                frame.tail.iter().any(|s| s.as_ptr() == r.as_ptr() && s.len() == r.len()),
                                "{what}: a batch of {} bytes was copied",
                                r.len()
                            );
                        }
                        // The frame decodes as the request it was made from.
                        let body = plain.split_off(4).freeze();
                        let (h, body) = decode_request_header(&body).unwrap();
                        assert_eq!(h.correlation_id, 77);
                        let back: ProduceRequest = decode_request(body, version).unwrap();
                        // The version carries the topic's name (up to v12) or its id (v13).
                        let mut expected = request.clone();
                        for t in &mut expected.topic_data {
                            if version <= 12 {
                                t.topic_id = Default::default();
                            } else {
                                t.name = Default::default();
                            }
                        }
                        assert!(back == expected, "{what}: decodes differently");
                    }
                }
            }
        }
    }

    #[test]
    fn produce_segments_without_records_are_one_segment() {
        let request = ProduceRequest::default().with_acks(1);
        for version in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
            let mut plain = BytesMut::new();
            encode_request(&request, version, 5, Some("c"), &mut plain).unwrap();
            let frame = encode_produce_request(&request, version, 5, Some("c")).unwrap();
            assert!(frame.tail.is_empty());
            assert!(frame.head == plain, "v{version}");
        }
    }

    #[test]
    fn produce_with_unknown_tagged_fields_falls_back_to_one_segment() {
        let mut request = produce_request(false, 20_000);
        request
            .unknown_tagged_fields
            .insert(3, Bytes::from_static(b"x"));
        for version in 9..=ProduceRequest::VERSIONS.max {
            let mut plain = BytesMut::new();
            encode_request(&request, version, 5, None, &mut plain).unwrap();
            let frame = encode_produce_request(&request, version, 5, None).unwrap();
            assert!(frame.tail.is_empty());
            assert!(frame.head == plain, "v{version}");
        }
        let e = encode_produce_request(&request, 99, 5, None).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::UnsupportedVersion { .. }));
    }
}
