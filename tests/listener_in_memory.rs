//! In-memory redelivery (`DefaultErrorHandler::seek_after_error(false)`, Spring's
//! `seekAfterError=false`) and the listener-level error handler of batch listeners, on rekafka's
//! embedded mock cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset};
use rekafka::listener::{
    AckMode, CommittedOffsets, ContainerConsumer, DefaultErrorHandler, FixedBackOff, HandlerError,
    ListenerConsumerRecord, ListenerContainer, ListenerRecord, OffsetToCommit, RecovererFn,
    SharedError, StopReason, TopicPartition,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

/// A topic of `partitions` partitions with `per_partition` records in each (`v<p>-<i>`).
async fn setup(topic: &str, partitions: i32, per_partition: usize) -> (MockCluster, Cluster) {
    let mock = MockCluster::builder()
        .topic(topic, partitions)
        .start()
        .await
        .expect("mock");
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for p in 0..partitions {
        for i in 0..per_partition {
            producer
                .send_and_wait(
                    Record::new(topic)
                        .with_partition(p)
                        .with_key(format!("k{i}"))
                        .with_value(format!("v{p}-{i}")),
                )
                .await
                .expect("sent");
        }
    }
    producer.close().await;
    (mock, cluster)
}

fn consumer(cluster: &Cluster, group: &str, topic: &str) -> Consumer {
    let config = ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(20));
    let consumer = Consumer::new(cluster.clone(), config).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    consumer
}

/// rekafka's consumer, noting every seek the container asks for.
struct SeekNoting {
    inner: Consumer,
    seeks: Arc<Mutex<Vec<(TopicPartition, i64)>>>,
}

impl ContainerConsumer for SeekNoting {
    type Record = ListenerConsumerRecord;

    async fn poll(&mut self, timeout: Duration) -> rekafka::Result<Vec<ListenerConsumerRecord>> {
        ContainerConsumer::poll(&mut self.inner, timeout).await
    }
    fn seek(&mut self, partition: &TopicPartition, offset: i64) -> rekafka::Result<()> {
        self.seeks.lock().unwrap().push((partition.clone(), offset));
        ContainerConsumer::seek(&mut self.inner, partition, offset)
    }
    fn pause(&mut self, partitions: &[TopicPartition]) -> rekafka::Result<()> {
        ContainerConsumer::pause(&mut self.inner, partitions)
    }
    fn resume(&mut self, partitions: &[TopicPartition]) -> rekafka::Result<()> {
        ContainerConsumer::resume(&mut self.inner, partitions)
    }
    fn assignment(&self) -> Vec<TopicPartition> {
        ContainerConsumer::assignment(&self.inner)
    }
    fn assignment_ids(&self) -> Vec<(TopicPartition, u64)> {
        ContainerConsumer::assignment_ids(&self.inner)
    }
    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> rekafka::Result<()> {
        ContainerConsumer::commit(&mut self.inner, offsets).await
    }
    async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> rekafka::Result<CommittedOffsets> {
        ContainerConsumer::committed(&mut self.inner, partitions).await
    }
    fn group_id(&self) -> Option<String> {
        ContainerConsumer::group_id(&self.inner)
    }
    fn rebalance_pending(&self) -> bool {
        ContainerConsumer::rebalance_pending(&self.inner)
    }
    async fn close(&mut self) -> rekafka::Result<()> {
        ContainerConsumer::close(&mut self.inner).await
    }
}

/// Waits until `group` has committed `offset` on every partition of `topic` (0..partitions).
async fn wait_committed(
    mock: &MockCluster,
    group: &str,
    topic: &str,
    partitions: i32,
    offset: i64,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<Option<i64>> = (0..partitions)
            .map(|p| mock.committed_offset(group, topic, p))
            .collect();
        if now.iter().all(|o| *o == Some(offset)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offset {offset} never committed on all partitions (now {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Seen = Arc<Mutex<Vec<(i32, i64)>>>;

/// Runs a container over two partitions of 5 records whose record at offset 2 of partition 0
/// fails twice, and returns what the handler saw (in order) and the seeks of partition 0.
async fn run_failing_twice(seek_after_error: bool) -> (Vec<(i32, i64)>, Vec<i64>) {
    let topic = if seek_after_error {
        "seeking"
    } else {
        "in-memory"
    };
    let group = format!("g-{topic}");
    let (mock, cluster) = setup(topic, 2, 5).await;
    let seen: Seen = Arc::default();
    let failures = Arc::new(Mutex::new(0u32));
    let seeks = Arc::new(Mutex::new(Vec::new()));
    let consumer = SeekNoting {
        inner: consumer(&cluster, &group, topic),
        seeks: seeks.clone(),
    };
    let (s, f) = (seen.clone(), failures.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.lock().unwrap().push((r.partition(), r.offset()));
                if r.partition() == 0 && r.offset() == 2 {
                    let mut f = f.lock().unwrap();
                    if *f < 2 {
                        *f += 1;
                        return Err(Box::new(Poison) as HandlerError);
                    }
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(50), 5))
                .seek_after_error(seek_after_error),
        )
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_committed(&mock, &group, topic, 2, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let seen = seen.lock().unwrap().clone();
    let seeks: Vec<i64> = seeks
        .lock()
        .unwrap()
        .iter()
        .filter(|(tp, _)| tp.1 == 0)
        .map(|(_, o)| *o)
        .collect();
    (seen, seeks)
}

/// `seek_after_error(false)`: the failed record and the rest of its partition's poll are
/// redelivered from memory after the back-off (no seek), in order, until it succeeds; nothing is
/// skipped or handled twice, and both partitions are committed to their ends. The same run with
/// the default (seeking) shows the seek the in-memory run does without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_after_error_false_redelivers_from_memory() {
    let (seen, seeks) = run_failing_twice(false).await;
    let p0: Vec<i64> = seen
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    let p1: Vec<i64> = seen
        .iter()
        .filter(|(p, _)| *p == 1)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(p0, vec![0, 1, 2, 2, 2, 3, 4], "partition 0 as handled");
    assert_eq!(p1, vec![0, 1, 2, 3, 4], "partition 1 as handled");
    assert!(
        seeks.is_empty(),
        "in-memory redelivery sought partition 0: {seeks:?}"
    );

    let (seen, seeks) = run_failing_twice(true).await;
    let p0: Vec<i64> = seen
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(
        p0,
        vec![0, 1, 2, 2, 2, 3, 4],
        "partition 0 as handled (seeking)"
    );
    assert_eq!(
        seeks,
        vec![2, 2],
        "the default seeks back to the failed record per retry"
    );
}

/// `seek_after_error(false)` when the retries run out: the record is recovered (with its raw
/// bytes) after the in-memory redeliveries, and the rest of the poll follows from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_after_error_false_recovers_when_the_retries_run_out() {
    let (topic, group) = ("in-memory-exhausted", "g-in-memory-exhausted");
    let (mock, cluster) = setup(topic, 1, 4).await;
    let seen: Seen = Arc::default();
    let recovered: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let seeks = Arc::new(Mutex::new(Vec::new()));
    let consumer = SeekNoting {
        inner: consumer(&cluster, group, topic),
        seeks: seeks.clone(),
    };
    let (s, rec) = (seen.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((r.partition(), r.offset()));
                if r.offset() == 1 {
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(20), 2))
                .seek_after_error(false)
                .recoverer(RecovererFn(
                    move |r: ListenerConsumerRecord, _e: SharedError| {
                        rec.lock()
                            .unwrap()
                            .push((r.offset(), r.value_str().unwrap_or_default().to_string()));
                        std::future::ready(Ok::<(), HandlerError>(()))
                    },
                )),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_committed(&mock, group, topic, 1, 4).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let offsets: Vec<i64> = seen.lock().unwrap().iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, vec![0, 1, 1, 1, 2, 3]);
    assert_eq!(*recovered.lock().unwrap(), vec![(1, "v0-1".to_string())]);
    assert!(
        seeks.lock().unwrap().is_empty(),
        "sought: {:?}",
        seeks.lock().unwrap()
    );
}
