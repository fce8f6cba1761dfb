//! Decodes arbitrary bytes as a Produce response frame at every version and walks every
//! field the producer reads (per-partition errors, base offsets, record errors, the
//! current-leader and node-endpoint hints of KIP-951).
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::{Message, Request};
use libfuzzer_sys::fuzz_target;
use rekafka::protocol::codec;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    for v in <ProduceRequest as Request>::Response::VERSIONS.min
        ..=<ProduceRequest as Request>::Response::VERSIONS.max
    {
        let Ok((_, resp)) = codec::decode_response::<ProduceRequest>(frame.clone(), v) else {
            continue;
        };
        std::hint::black_box(resp.throttle_time_ms);
        for t in &resp.responses {
            for p in &t.partition_responses {
                std::hint::black_box((
                    p.index,
                    p.error_code,
                    p.base_offset,
                    p.log_append_time_ms,
                    p.log_start_offset,
                    p.error_message.as_deref(),
                    p.current_leader.leader_id,
                    p.current_leader.leader_epoch,
                ));
                for e in &p.record_errors {
                    std::hint::black_box((e.batch_index, e.batch_index_error_message.as_deref()));
                }
            }
        }
        for n in &resp.node_endpoints {
            std::hint::black_box((n.node_id, n.host.as_str(), n.port));
        }
    }
});
