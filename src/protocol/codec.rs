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
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Message, Request, StrBytes};

use super::frame::finish_frame;
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
}
