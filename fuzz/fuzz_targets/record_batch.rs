//! Decodes arbitrary bytes as a Fetch partition's `records` and touches every record and header.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rekafka::protocol::record::RecordBatches;

fuzz_target!(|data: &[u8]| {
    let mut batches = RecordBatches::new(Bytes::copy_from_slice(data));
    for batch in batches.by_ref() {
        let Ok(batch) = batch else { break };
        let _ = (
            batch.next_offset(),
            batch.compression(),
            batch.control_record(),
        );
        // A small decompression limit keeps the fuzzer's memory bounded.
        let Ok(records) = batch.records_with_limit(4 << 20) else {
            continue;
        };
        for record in records {
            let Ok(record) = record else { break };
            std::hint::black_box((&record.key, &record.value, record.offset, record.timestamp));
            for header in record.headers.iter() {
                std::hint::black_box((header.key(), header.value()));
            }
        }
    }
    std::hint::black_box(batches.truncated_tail());
});
