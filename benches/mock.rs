//! Throughput of the mock cluster: 1M records of 100 B, in batches of 1000, produced to one
//! partition over one pipelined connection and fetched back (every record decoded).
//!
//! ```text
//! cargo bench --features mock --bench mock
//! ```
//!
//! Optional arguments: RECORDS BATCH (defaults 1000000 1000).

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rekafka::connection::{Connection, ConnectionConfig};
use rekafka::mock::MockCluster;
use rekafka::protocol::record::{BatchBuilder, RecordBatches};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let total: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let per_batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(total, per_batch));
}

async fn run(total: usize, per_batch: usize) {
    let mock = MockCluster::builder()
        .topic("bench", 1)
        .request_log_capacity(0)
        .start()
        .await
        .expect("mock");
    let conn = Connection::connect(&mock.bootstrap(), -1, &ConnectionConfig::default())
        .await
        .expect("connect");
    let topic = TopicName(StrBytes::from_static_str("bench"));
    let value = [b'x'; 100];
    let batches = total.div_ceil(per_batch);
    let encoded: Vec<Bytes> = (0..batches)
        .map(|i| {
            let mut b = BatchBuilder::with_capacity(per_batch * 110);
            let n = per_batch.min(total - i * per_batch);
            for j in 0..n {
                b.append(j as i64, None, Some(&value), &[]).expect("append");
            }
            b.build().expect("build")
        })
        .collect();

    // Produce, 16 requests in flight.
    let start = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for records in encoded {
        if in_flight.len() >= 16 {
            let r = in_flight.join_next().await.expect("task").expect("join");
            check(r);
        }
        let conn = conn.clone();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records)),
                    ]),
            ]);
        in_flight.spawn(async move { conn.send(req).await });
    }
    while let Some(r) = in_flight.join_next().await {
        check(r.expect("join"));
    }
    let produce = start.elapsed();
    assert_eq!(
        mock.high_watermark("bench", 0).expect("hw") as usize,
        total,
        "all records stored"
    );

    // Fetch everything back, 1 MiB per fetch (about 9 batches), decoding every record.
    let start = Instant::now();
    let mut offset = 0i64;
    let mut read = 0usize;
    let mut fetches = 0usize;
    while (offset as usize) < total {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_current_leader_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let resp = conn.send(req).await.expect("fetch");
        fetches += 1;
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        for b in RecordBatches::new(p.records.clone().unwrap_or_default()) {
            let b = b.expect("batch");
            for r in b.records().expect("records") {
                let r = r.expect("record");
                if r.offset >= offset {
                    read += 1;
                }
            }
            offset = b.next_offset();
        }
    }
    let fetch = start.elapsed();
    assert_eq!(read, total, "every record read back once");
    let rate = |d: std::time::Duration| total as f64 / d.as_secs_f64();
    println!(
        "mock produce: {total} records x 100 B in {} batches: {:.2?} = {:.0} rec/s ({:.1} MB/s)",
        batches,
        produce,
        rate(produce),
        rate(produce) * 100.0 / 1e6
    );
    println!(
        "mock fetch:   {total} records in {fetches} fetches: {:.2?} = {:.0} rec/s ({:.1} MB/s)",
        fetch,
        rate(fetch),
        rate(fetch) * 100.0 / 1e6
    );
    mock.shutdown().await;
}

fn check(r: rekafka::Result<kafka_protocol::messages::ProduceResponse>) {
    let resp = r.expect("produce");
    let code = resp.responses[0].partition_responses[0].error_code;
    assert_eq!(code, 0, "produce error {code}");
}
