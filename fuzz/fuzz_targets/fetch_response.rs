//! Decodes arbitrary bytes as a Fetch response frame (header and body) at every version, and
//! runs each partition's `records` through the consumer's decoding (batch headers, control and
//! aborted batches under both isolation levels, the records a consumer would return).
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::protocol::{Message, Request};
use libfuzzer_sys::fuzz_target;
use rekafka::consumer::{IsolationLevel, visible_records};
use rekafka::protocol::codec;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    for v in <FetchRequest as Request>::Response::VERSIONS.min
        ..=<FetchRequest as Request>::Response::VERSIONS.max
    {
        let Ok((_, resp)) = codec::decode_response::<FetchRequest>(frame.clone(), v) else {
            continue;
        };
        for t in &resp.responses {
            for p in &t.partitions {
                let Some(records) = &p.records else { continue };
                let aborted: Vec<(i64, i64)> = p
                    .aborted_transactions
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .map(|a| (a.first_offset, a.producer_id.0))
                    .collect();
                for isolation in [
                    IsolationLevel::ReadUncommitted,
                    IsolationLevel::ReadCommitted,
                ] {
                    for fetch_offset in [0, p.log_start_offset.max(0)] {
                        if let Ok((recs, _)) =
                            visible_records(records, fetch_offset, isolation, &aborted)
                        {
                            for r in &recs {
                                std::hint::black_box((&r.key, &r.value, r.offset));
                                for h in r.headers.iter() {
                                    std::hint::black_box((h.key(), h.value()));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
});
