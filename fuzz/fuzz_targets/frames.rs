//! Splits arbitrary bytes into frames (a 1 MiB maximum) and decodes each frame as the response to
//! a selection of APIs at every version, and as an ApiVersions answer (KIP-511 path included).
//! Also decodes each frame as a request header and body, as the mock broker will.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, Request};
use libfuzzer_sys::fuzz_target;
use rekafka::protocol::codec;
use rekafka::protocol::frame::FrameDecoder;
use rekafka::protocol::versions::decode_api_versions;

fn responses<R: Request>(frame: &Bytes) {
    for v in R::Response::VERSIONS.min..=R::Response::VERSIONS.max {
        let _ = codec::decode_response::<R>(frame.clone(), v);
    }
}

fn all(frame: &Bytes) {
    responses::<ProduceRequest>(frame);
    responses::<FetchRequest>(frame);
    responses::<MetadataRequest>(frame);
    responses::<ListOffsetsRequest>(frame);
    responses::<FindCoordinatorRequest>(frame);
    responses::<JoinGroupRequest>(frame);
    responses::<SyncGroupRequest>(frame);
    responses::<OffsetCommitRequest>(frame);
    responses::<OffsetFetchRequest>(frame);
    responses::<InitProducerIdRequest>(frame);
    responses::<EndTxnRequest>(frame);
    for v in ApiVersionsRequest::VERSIONS.min..=ApiVersionsRequest::VERSIONS.max {
        let _ = decode_api_versions(frame.clone(), v);
    }
    if let Ok((header, body)) = codec::decode_request_header(frame) {
        let v = header.request_api_version;
        let _ = codec::decode_request::<ProduceRequest>(body.clone(), v);
        let _ = codec::decode_request::<FetchRequest>(body.clone(), v);
        let _ = codec::decode_request::<JoinGroupRequest>(body, v);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut stream = BytesMut::from(data);
    let frames = FrameDecoder::new(1 << 20);
    while let Ok(Some(frame)) = frames.decode(&mut stream) {
        all(&frame);
    }
    all(&Bytes::copy_from_slice(data));
});
