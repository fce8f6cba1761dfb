//! The transactional producer against rekafka's mock cluster: the transactional scenarios of
//! the reliability note (12–23), each with its invariant. "Visible" below is what a
//! `read_committed` consumer sees: computed from the stored batches and control markers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rekafka::cluster::{Cluster, ClusterConfig, CoordinatorType};
use rekafka::consumer::{Consumer, ConsumerConfig, IsolationLevel, StartOffset, TopicPartition};
use rekafka::mock::MockCluster;
use rekafka::producer::{DeliveryFuture, ProducerConfig, Record};
use rekafka::protocol::record::ControlType;
use rekafka::protocol::unstable::ApiKey;
use rekafka::transaction::{ConsumerGroupMetadata, TransactionState, TransactionalProducer};
use rekafka::{ErrorKind, KafkaCode};

fn config(tid: &str) -> ProducerConfig {
    let mut c = ProducerConfig::default().with_transactional_id(tid);
    c.linger = Duration::from_millis(1);
    c.request_timeout = Duration::from_secs(1);
    c.delivery_timeout = Duration::from_secs(20);
    c.max_block = Duration::from_secs(15);
    c.retry_backoff = Duration::from_millis(10);
    c.retry_backoff_max = Duration::from_millis(100);
    c
}

async fn producer(mock: &MockCluster, config: ProducerConfig) -> TransactionalProducer {
    let cluster = Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect");
    TransactionalProducer::new(cluster, config).expect("producer")
}

async fn ready(mock: &MockCluster, config: ProducerConfig) -> TransactionalProducer {
    let p = producer(mock, config).await;
    p.init_transactions().await.expect("init_transactions");
    assert_eq!(p.state(), TransactionState::Ready);
    p
}

/// What a read_committed consumer sees in `topic` (all partitions), in offset order per
/// partition; records of open transactions are not visible.
fn visible(mock: &MockCluster, topic: &str, partitions: i32) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut pending: HashMap<i64, Vec<String>> = HashMap::new();
        for b in mock.batches(topic, p).expect("batches") {
            if b.is_control() {
                let c = b.control_record().expect("control").expect("marker");
                let recs = pending.remove(&b.producer_id()).unwrap_or_default();
                if c.control_type == ControlType::Commit {
                    out.extend(recs);
                }
                continue;
            }
            let values: Vec<String> = b
                .records()
                .expect("records")
                .map(|r| {
                    let r = r.expect("record");
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
                })
                .collect();
            if b.is_transactional() {
                pending.entry(b.producer_id()).or_default().extend(values);
            } else {
                out.extend(values);
            }
        }
    }
    out
}

/// What rekafka's own consumer reads at `read_committed` from the beginning of every
/// partition (until nothing new arrives for 500 ms), in offset order per partition.
async fn consume_committed(mock: &MockCluster, topic: &str, partitions: i32) -> Vec<String> {
    let cluster = Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect");
    let consumer = Consumer::new(
        cluster,
        ConsumerConfig::new().with_isolation_level(IsolationLevel::ReadCommitted),
    )
    .expect("consumer");
    consumer
        .assign((0..partitions).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)))
        .expect("assign");
    let mut per_partition: HashMap<i32, Vec<String>> = HashMap::new();
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < Duration::from_millis(500) {
        let records = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
        if !records.is_empty() {
            idle_since = std::time::Instant::now();
        }
        for r in records.iter() {
            per_partition
                .entry(r.partition)
                .or_default()
                .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    let _ = consumer.close().await;
    (0..partitions)
        .flat_map(|p| per_partition.remove(&p).unwrap_or_default())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn send_all(
    p: &TransactionalProducer,
    topic: &str,
    values: &[String],
) -> Vec<DeliveryFuture> {
    let mut futs = Vec::new();
    for v in values {
        futs.push(
            p.send(Record::new(topic).with_key(v.clone()).with_value(v.clone()))
                .await
                .expect("send"),
        );
    }
    futs
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

async fn mock_with(topic: &str, partitions: i32, brokers: usize) -> MockCluster {
    MockCluster::builder()
        .brokers(brokers)
        .topic(topic, partitions)
        .start()
        .await
        .expect("mock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_abort_read_committed_hides_aborted() {
    let mock = mock_with("t", 3, 1).await;
    let p = ready(&mock, config("tx-basic")).await;

    // Outside a transaction: a typed state error.
    let e = p.send(Record::new("t").with_value("x")).await.unwrap_err();
    assert_eq!(*e.error.kind(), ErrorKind::InvalidState);
    assert_eq!(
        *p.commit_transaction().await.unwrap_err().kind(),
        ErrorKind::InvalidState
    );

    p.begin_transaction().unwrap();
    assert_eq!(
        *p.begin_transaction().unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    let committed = values("c", 50);
    let futs = send_all(&p, "t", &committed).await;
    p.commit_transaction().await.expect("commit");
    for f in futs {
        f.await.expect("delivered");
    }
    p.begin_transaction().unwrap();
    let aborted = values("a", 50);
    send_all(&p, "t", &aborted).await;
    p.flush().await; // written to the log, then aborted
    p.abort_transaction().await.expect("abort");
    assert_eq!(p.state(), TransactionState::Ready);

    assert_eq!(sorted(visible(&mock, "t", 3)), sorted(committed.clone()));
    // A read_committed consumer (rekafka's) sees exactly the committed records.
    assert_eq!(
        sorted(consume_committed(&mock, "t", 3).await),
        sorted(committed.clone())
    );
    // The aborted records are in the log (followed by abort markers), just not visible.
    let stored: usize = (0..3).map(|i| mock.records("t", i).unwrap().len()).sum();
    assert_eq!(stored, 100);
    // One AddPartitionsToTxn per transaction may carry several partitions (batched).
    let adds = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::AddPartitionsToTxn)
        .count();
    assert!(adds <= 6, "{adds} AddPartitionsToTxn requests");
}

/// Scenario 22 (KIP-654): abort with 5 000 buffered records (linger 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_with_buffered_records_fails_them_as_aborted() {
    let mock = mock_with("t", 2, 1).await;
    let mut c = config("tx-buffered");
    c.linger = Duration::from_secs(10);
    c.delivery_timeout = Duration::from_secs(30);
    c.batch_size = 1 << 20;
    let p = ready(&mock, c).await;
    p.begin_transaction().unwrap();
    let futs = send_all(&p, "t", &values("b", 5000)).await;
    p.abort_transaction().await.expect("abort");
    for f in futs {
        let e = f.await.unwrap_err();
        assert_eq!(*e.error.kind(), ErrorKind::TransactionAborted, "{e}");
        assert!(!e.error.is_fatal());
    }
    assert!(visible(&mock, "t", 2).is_empty());
    assert_eq!(
        mock.records("t", 0).unwrap().len() + mock.records("t", 1).unwrap().len(),
        0
    );
    // Reusable.
    p.begin_transaction().unwrap();
    let v = values("after", 10);
    send_all(&p, "t", &v).await;
    p.commit_transaction().await.expect("commit");
    assert_eq!(sorted(visible(&mock, "t", 2)), sorted(v));
}

/// Scenario 12: retriable errors on every transactional request are handled inside the call;
/// transaction and group coordinators on different brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_errors_on_every_txn_request_are_invisible() {
    let mock = mock_with("t", 1, 2).await;
    let ids = mock.broker_ids();
    mock.set_coordinator(CoordinatorType::Transaction, "tx-12", ids[0])
        .unwrap();
    mock.set_coordinator(CoordinatorType::Group, "g-12", ids[1])
        .unwrap();
    use KafkaCode::*;
    mock.push_request_errors(
        ApiKey::InitProducerId,
        &[
            CoordinatorNotAvailable,
            NotCoordinator,
            CoordinatorLoadInProgress,
        ],
    );
    mock.push_request_errors(ApiKey::AddPartitionsToTxn, &[UnknownTopicOrPartition]);
    mock.push_request_errors(ApiKey::AddOffsetsToTxn, &[ConcurrentTransactions]);
    mock.push_request_errors(
        ApiKey::TxnOffsetCommit,
        &[NotCoordinator, ConcurrentTransactions],
    );
    mock.push_request_errors(
        ApiKey::EndTxn,
        &[
            NotCoordinator,
            CoordinatorNotAvailable,
            CoordinatorLoadInProgress,
        ],
    );
    let p = ready(&mock, config("tx-12")).await;
    p.begin_transaction().unwrap();
    let v = values("r", 2);
    send_all(&p, "t", &v).await;
    p.send_offsets_to_transaction(&[("in", 0, 42)], &ConsumerGroupMetadata::new("g-12"))
        .await
        .expect("offsets");
    p.commit_transaction().await.expect("commit");
    assert_eq!(visible(&mock, "t", 1), v);
    assert_eq!(mock.committed_offset("g-12", "in", 0), Some(42));
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Retried,
    Abortable,
    Fatal,
}

/// One row of scenario 13: inject `code` once on `api` and run a transaction.
async fn error_class_case(api: ApiKey, code: KafkaCode, expect: Expect) {
    let mock = mock_with("t", 1, 1).await;
    let tid = format!("tx-13-{api:?}-{code:?}");
    let group = ConsumerGroupMetadata::new("g-13");
    if api == ApiKey::InitProducerId {
        mock.push_request_errors(api, &[code]);
    }
    let p = producer(&mock, config(&tid)).await;
    let init = p.init_transactions().await;
    if api == ApiKey::InitProducerId {
        match expect {
            Expect::Retried => init.expect("init retried"),
            Expect::Fatal => {
                let e = init.unwrap_err();
                assert!(e.is_fatal(), "{api:?} {code:?}: {e:?}");
                assert_eq!(p.state(), TransactionState::FatalError);
                assert!(p.begin_transaction().unwrap_err().is_fatal());
                return;
            }
            Expect::Abortable => unreachable!(),
        }
    } else {
        init.expect("init");
    }
    p.begin_transaction().unwrap();
    if api != ApiKey::InitProducerId {
        mock.push_request_errors(api, &[code]);
    }
    let v = values("x", 2);
    let mut outcome: Result<(), rekafka::Error> = Ok(());
    for r in &v {
        if let Err(e) = p.send(Record::new("t").with_value(r.clone())).await {
            outcome = Err(e.error);
            break;
        }
        p.flush().await;
    }
    if outcome.is_ok() {
        outcome = p.send_offsets_to_transaction(&[("in", 0, 7)], &group).await;
    }
    if outcome.is_ok() {
        outcome = p.commit_transaction().await;
    }
    match expect {
        Expect::Retried => {
            outcome.unwrap_or_else(|e| panic!("{api:?} {code:?}: {e:?}"));
            assert_eq!(visible(&mock, "t", 1), v);
        }
        Expect::Abortable => {
            let e = outcome.expect_err("abortable");
            assert!(e.is_abortable(), "{api:?} {code:?}: {e:?}");
            assert!(!e.is_fatal());
            if p.state() == TransactionState::InTransaction {
                // An error returned by send_offsets leaves the decision to the caller.
                assert!(p.commit_transaction().await.unwrap_err().is_abortable());
            }
            assert_eq!(p.state(), TransactionState::AbortableError);
            p.abort_transaction().await.expect("abort");
            assert!(visible(&mock, "t", 1).is_empty(), "{api:?} {code:?}");
            // The next transaction works.
            p.begin_transaction().unwrap();
            let w = values("next", 3);
            send_all(&p, "t", &w).await;
            p.commit_transaction().await.expect("next commit");
            assert_eq!(visible(&mock, "t", 1), w);
        }
        Expect::Fatal => {
            let e = outcome.expect_err("fatal");
            assert!(e.is_fatal(), "{api:?} {code:?}: {e:?}");
            assert_eq!(p.state(), TransactionState::FatalError);
            let later = p.abort_transaction().await.unwrap_err();
            assert_eq!(*later.kind(), ErrorKind::Fatal);
            assert!(p.begin_transaction().unwrap_err().is_fatal());
            assert!(visible(&mock, "t", 1).is_empty(), "{api:?} {code:?}");
        }
    }
}

/// Scenario 13: the error-class table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_class_table() {
    use Expect::*;
    use KafkaCode::*;
    let cases: &[(ApiKey, KafkaCode, Expect)] = &[
        (ApiKey::InitProducerId, ConcurrentTransactions, Retried),
        (ApiKey::InitProducerId, NotCoordinator, Retried),
        (ApiKey::InitProducerId, CoordinatorLoadInProgress, Retried),
        (
            ApiKey::InitProducerId,
            TransactionalIdAuthorizationFailed,
            Fatal,
        ),
        (ApiKey::AddPartitionsToTxn, ConcurrentTransactions, Retried),
        (ApiKey::AddPartitionsToTxn, NotCoordinator, Retried),
        (
            ApiKey::AddPartitionsToTxn,
            CoordinatorLoadInProgress,
            Retried,
        ),
        (
            ApiKey::AddPartitionsToTxn,
            TopicAuthorizationFailed,
            Abortable,
        ),
        (ApiKey::AddPartitionsToTxn, ProducerFenced, Fatal),
        (
            ApiKey::AddPartitionsToTxn,
            TransactionalIdAuthorizationFailed,
            Fatal,
        ),
        (ApiKey::Produce, NotLeaderOrFollower, Retried),
        (ApiKey::Produce, UnknownProducerId, Abortable),
        (ApiKey::Produce, InvalidProducerIdMapping, Abortable),
        (ApiKey::Produce, InvalidProducerEpoch, Abortable),
        (ApiKey::Produce, TransactionAbortable, Abortable),
        (ApiKey::Produce, TransactionalIdAuthorizationFailed, Fatal),
        (ApiKey::AddOffsetsToTxn, ConcurrentTransactions, Retried),
        (ApiKey::AddOffsetsToTxn, GroupAuthorizationFailed, Abortable),
        (ApiKey::AddOffsetsToTxn, ProducerFenced, Fatal),
        (ApiKey::TxnOffsetCommit, ConcurrentTransactions, Retried),
        (ApiKey::TxnOffsetCommit, NotCoordinator, Retried),
        (ApiKey::TxnOffsetCommit, CoordinatorLoadInProgress, Retried),
        (ApiKey::TxnOffsetCommit, GroupAuthorizationFailed, Abortable),
        (ApiKey::TxnOffsetCommit, IllegalGeneration, Abortable),
        (ApiKey::TxnOffsetCommit, ProducerFenced, Fatal),
        (ApiKey::EndTxn, ConcurrentTransactions, Retried),
        (ApiKey::EndTxn, NotCoordinator, Retried),
        (ApiKey::EndTxn, CoordinatorLoadInProgress, Retried),
        (ApiKey::EndTxn, TransactionAbortable, Abortable),
        (ApiKey::EndTxn, ProducerFenced, Fatal),
        (ApiKey::EndTxn, InvalidProducerEpoch, Fatal),
        (ApiKey::EndTxn, TransactionalIdAuthorizationFailed, Fatal),
    ];
    for &(api, code, expect) in cases {
        error_class_case(api, code, expect).await;
    }
}

/// Scenario 14 (KIP-360): UNKNOWN_PRODUCER_ID on the 2nd produce of txn 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_producer_id_makes_the_txn_abortable_then_bumps() {
    let mock = mock_with("t", 1, 1).await;
    let p = ready(&mock, config("tx-14")).await;
    let (pid, epoch) = p.producer_id_and_epoch().unwrap();
    p.begin_transaction().unwrap();
    p.send(Record::new("t").with_value("first"))
        .await
        .unwrap()
        .await
        .expect("first delivered");
    mock.push_request_errors(ApiKey::Produce, &[KafkaCode::UnknownProducerId]);
    let e = p
        .send(Record::new("t").with_value("second"))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(e.error.kafka_code(), Some(KafkaCode::UnknownProducerId));
    assert_eq!(p.state(), TransactionState::AbortableError);
    assert!(p.commit_transaction().await.unwrap_err().is_abortable());
    p.abort_transaction().await.expect("abort");
    let (pid2, epoch2) = p.producer_id_and_epoch().unwrap();
    assert_eq!(pid2, pid);
    assert!(epoch2 > epoch, "the epoch is bumped after the abort");
    p.begin_transaction().unwrap();
    let v = values("txn2", 5);
    send_all(&p, "t", &v).await;
    p.commit_transaction().await.expect("txn2");
    assert_eq!(visible(&mock, "t", 1), v);
}

/// Scenario 15: OUT_OF_ORDER_SEQUENCE inside a transaction: abortable, no hidden epoch bump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_sequence_in_txn_is_abortable_without_hidden_bump() {
    let mock = mock_with("t", 1, 1).await;
    let p = ready(&mock, config("tx-15")).await;
    let (_, epoch) = p.producer_id_and_epoch().unwrap();
    use KafkaCode::*;
    mock.push_request_errors(
        ApiKey::Produce,
        &[
            NotLeaderOrFollower,
            NotLeaderOrFollower,
            OutOfOrderSequenceNumber,
        ],
    );
    p.begin_transaction().unwrap();
    let futs = send_all(&p, "t", &values("oos", 3)).await;
    for f in futs {
        assert!(f.await.is_err());
    }
    // The next send gets the abortable state error.
    let e = p
        .send(Record::new("t").with_value("late"))
        .await
        .unwrap_err();
    assert_eq!(*e.error.kind(), ErrorKind::Abortable);
    assert!(p.commit_transaction().await.unwrap_err().is_abortable());
    // Until the abort, every Produce carried the same epoch.
    let epochs: Vec<i16> = mock
        .requests()
        .iter()
        .filter(|r| r.api_key == ApiKey::Produce)
        .filter_map(|r| r.producer_epoch)
        .collect();
    assert!(
        !epochs.is_empty() && epochs.iter().all(|e| *e == epoch),
        "{epochs:?}"
    );
    p.abort_transaction().await.expect("abort");
    p.begin_transaction().unwrap();
    let v = values("txn2", 3);
    send_all(&p, "t", &v).await;
    p.commit_transaction().await.expect("txn2");
    assert_eq!(visible(&mock, "t", 1), v);
}

/// Scenarios 16: commit after a local delivery timeout (leader and coordinator down) is
/// abortable, never OK; after the brokers return, abort, then the next transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_after_local_timeout_is_abortable() {
    let mock = mock_with("t", 1, 1).await;
    let mut c = config("tx-16");
    c.delivery_timeout = Duration::from_secs(3);
    c.transaction_timeout = Duration::from_secs(10);
    let p = ready(&mock, c).await;
    // Warm the metadata up with a first transaction.
    p.begin_transaction().unwrap();
    let first = values("first", 1);
    send_all(&p, "t", &first).await;
    p.commit_transaction().await.expect("txn1");

    p.begin_transaction().unwrap();
    let id = mock.broker_ids()[0];
    mock.broker_down(id).await.unwrap();
    let f = p.send(Record::new("t").with_value("lost")).await.unwrap();
    let e = f.await.unwrap_err();
    assert_eq!(*e.error.kind(), ErrorKind::Timeout, "{e}");
    let e = p.commit_transaction().await.unwrap_err();
    assert!(e.is_abortable(), "{e:?}");
    assert_ne!(p.state(), TransactionState::Ready);
    mock.broker_up(id).await.unwrap();
    p.abort_transaction().await.expect("abort");
    p.begin_transaction().unwrap();
    let v = values("third", 4);
    send_all(&p, "t", &v).await;
    p.commit_transaction().await.expect("txn3");
    let mut want = first;
    want.extend(v);
    assert_eq!(visible(&mock, "t", 1), want);
}

/// Scenario 17: the partition leader down for 2 s in the middle of a 1000-record transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_mid_transaction_commits_everything_once() {
    let mock = mock_with("t", 2, 2).await;
    let ids = mock.broker_ids();
    mock.set_coordinator(CoordinatorType::Transaction, "tx-17", ids[0])
        .unwrap();
    mock.set_partition_leader("t", 0, ids[1]).unwrap();
    mock.set_partition_leader("t", 1, ids[1]).unwrap();
    let p = ready(&mock, config("tx-17")).await;
    p.begin_transaction().unwrap();
    let v = values("m", 1000);
    let mut futs = send_all(&p, "t", &v[..500]).await;
    mock.broker_down(ids[1]).await.unwrap();
    futs.extend(send_all(&p, "t", &v[500..]).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.broker_up(ids[1]).await.unwrap();
    p.commit_transaction().await.expect("commit");
    for f in futs {
        f.await.expect("delivered");
    }
    let seen = visible(&mock, "t", 2);
    assert_eq!(seen.len(), 1000);
    assert_eq!(sorted(seen), sorted(v));
}

/// Scenario 18: EndTxn(commit) applied but its response lost: the commit is retried and
/// confirmed, never reported before that; UNKNOWN_SERVER_ERROR likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_end_txn_outcome_is_confirmed_before_reporting() {
    let mock = mock_with("t", 1, 1).await;
    let p = ready(&mock, config("tx-18")).await;
    p.begin_transaction().unwrap();
    let v1 = values("one", 3);
    send_all(&p, "t", &v1).await;
    mock.drop_responses(|r| r.api_key == ApiKey::EndTxn, 1);
    p.commit_transaction().await.expect("commit confirmed");
    let end_txns = mock
        .requests()
        .iter()
        .filter(|r| r.api_key == ApiKey::EndTxn)
        .count();
    assert!(end_txns >= 2, "the lost EndTxn was resent ({end_txns})");
    assert_eq!(visible(&mock, "t", 1), v1);

    p.begin_transaction().unwrap();
    let v2 = values("two", 3);
    send_all(&p, "t", &v2).await;
    mock.push_request_errors(ApiKey::EndTxn, &[KafkaCode::UnknownServerError]);
    p.commit_transaction()
        .await
        .expect("commit after unknown error");
    let mut want = v1;
    want.extend(v2);
    assert_eq!(visible(&mock, "t", 1), want);
}

/// Scenario 23: a commit that times out resumes on the next call; an abort meanwhile first
/// completes the pending commit (here still held: it times out too); concurrent calls are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_timeout_is_resumable_and_abort_completes_it_first() {
    let mock = mock_with("t", 1, 1).await;
    let p = Arc::new(ready(&mock, config("tx-23")).await);
    p.begin_transaction().unwrap();
    let v = values("r", 3);
    send_all(&p, "t", &v).await;
    let held = mock.hold(|r| r.api_key == ApiKey::EndTxn);
    let e = p
        .commit_transaction_within(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(*e.kind(), ErrorKind::Timeout);
    assert_eq!(p.state(), TransactionState::CommittingTransaction);
    let e = p
        .abort_transaction_within(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(*e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(p.state(), TransactionState::CommittingTransaction);
    assert!(p.begin_transaction().is_err());
    // Two calls at once: the second is refused.
    let p2 = p.clone();
    let first = tokio::spawn(async move { p2.commit_transaction().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = p.commit_transaction().await.unwrap_err();
    assert_eq!(*e.kind(), ErrorKind::InvalidState, "{e}");
    assert!(visible(&mock, "t", 1).is_empty(), "not committed yet");
    held.release();
    first.await.unwrap().expect("the resumed commit completes");
    assert_eq!(p.state(), TransactionState::Ready);
    assert_eq!(visible(&mock, "t", 1), v);
    let end_txns: Vec<bool> = mock
        .requests()
        .iter()
        .filter(|r| r.api_key == ApiKey::EndTxn)
        .map(|_| true)
        .collect();
    assert!(!end_txns.is_empty());
}

/// Scenario 19: a produce of T1 held by the broker, T1 aborted, T2 begun and the held produce
/// released: it never lands in T2 (the abort waited for it, then bumped the epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_produce_released_after_abort_never_lands_in_next_txn() {
    // The coordinator and the leader on different brokers: a broker serves one connection's
    // requests in order, so the held Produce blocks only the leader's connection.
    let mock = mock_with("t", 1, 2).await;
    let ids = mock.broker_ids();
    mock.set_coordinator(CoordinatorType::Transaction, "tx-19", ids[0])
        .unwrap();
    mock.set_partition_leader("t", 0, ids[1]).unwrap();
    let p = ready(&mock, config("tx-19")).await;
    let (_, epoch) = p.producer_id_and_epoch().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let held =
        mock.hold(move |r| r.api_key == ApiKey::Produce && s.fetch_add(1, Ordering::SeqCst) == 0);
    p.begin_transaction().unwrap();
    let f = p.send(Record::new("t").with_value("t1")).await.unwrap();
    held.wait_matched(1).await;
    p.abort_transaction().await.expect("abort");
    let e = f.await.unwrap_err();
    assert!(!e.error.is_fatal(), "{e}");
    let (_, epoch2) = p.producer_id_and_epoch().unwrap();
    assert!(epoch2 > epoch, "the abort bumped the epoch");
    p.begin_transaction().unwrap();
    let v = values("t2", 3);
    let futs = send_all(&p, "t", &v).await;
    // T2's Produce queues behind the held one on the leader's connection; release it now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.release();
    for f in futs {
        f.await.expect("t2 delivered");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.commit_transaction().await.expect("t2");
    assert_eq!(visible(&mock, "t", 1), v);
    assert_eq!(consume_committed(&mock, "t", 1).await, v);
    let stored: Vec<String> = mock
        .records("t", 0)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert!(!stored.contains(&"t1".to_string()), "{stored:?}");
}

/// Scenario 20: zombie fencing. B starts with A's transactional id while A is mid-transaction:
/// A's commit fails fatally, none of A's records become visible, B commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_fences_the_first() {
    let mock = mock_with("t", 2, 1).await;
    let a = ready(&mock, config("tx-20")).await;
    a.begin_transaction().unwrap();
    send_all(&a, "t", &values("a", 500)).await;
    a.flush().await;
    mock.push_request_errors(ApiKey::InitProducerId, &[KafkaCode::ConcurrentTransactions]);
    let b = ready(&mock, config("tx-20")).await;
    let e = a.commit_transaction().await.unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
    assert_eq!(a.state(), TransactionState::FatalError);
    let e = a
        .send(Record::new("t").with_value("zombie"))
        .await
        .unwrap_err();
    assert_eq!(*e.error.kind(), ErrorKind::Fatal);
    assert!(a.begin_transaction().unwrap_err().is_fatal());
    b.begin_transaction().unwrap();
    let v = values("b", 20);
    send_all(&b, "t", &v).await;
    b.commit_transaction().await.expect("b commits");
    assert_eq!(sorted(visible(&mock, "t", 2)), sorted(v.clone()));
    assert_eq!(sorted(consume_committed(&mock, "t", 2).await), sorted(v));
}

/// KIP-447: offsets of a zombie consumer (stale generation) are refused and the transaction
/// becomes abortable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_with_unknown_member_are_refused() {
    let mock = mock_with("t", 1, 1).await;
    let p = ready(&mock, config("tx-447")).await;
    p.begin_transaction().unwrap();
    send_all(&p, "t", &values("x", 2)).await;
    let zombie = ConsumerGroupMetadata::new("g-447").with_member("gone-member", 3);
    let e = p
        .send_offsets_to_transaction(&[("in", 0, 10)], &zombie)
        .await
        .unwrap_err();
    assert!(e.is_abortable(), "{e:?}");
    assert!(p.commit_transaction().await.unwrap_err().is_abortable());
    p.abort_transaction().await.expect("abort");
    assert_eq!(mock.committed_offset("g-447", "in", 0), None);
    assert!(visible(&mock, "t", 1).is_empty());
}

/// Scenario 21: the transaction outlives `transaction.timeout`; the coordinator aborts it and
/// bumps the epoch. The commit is never reported OK and nothing of the transaction is
/// visible. The mock, like Kafka before KIP-890's transaction version 2, answers the late
/// EndTxn with PRODUCER_FENCED, which is fatal (the client cannot tell it from a new
/// instance): the application makes a new producer with the same id and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_aborts_and_commit_is_never_ok() {
    let mock = mock_with("t", 1, 1).await;
    let mut c = config("tx-21");
    c.transaction_timeout = Duration::from_secs(1);
    let p = ready(&mock, c.clone()).await;
    p.begin_transaction().unwrap();
    send_all(&p, "t", &values("slow", 5)).await;
    p.flush().await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let e = p.commit_transaction().await.unwrap_err();
    assert!(e.is_fatal() || e.is_abortable(), "{e:?}");
    assert!(visible(&mock, "t", 1).is_empty());
    let next = if e.is_abortable() {
        p.abort_transaction().await.expect("abort");
        p
    } else {
        ready(&mock, c).await
    };
    next.begin_transaction().unwrap();
    let v = values("next", 3);
    send_all(&next, "t", &v).await;
    next.commit_transaction().await.expect("next txn");
    assert_eq!(visible(&mock, "t", 1), v);
}

/// A record refused at `send` (larger than `max.request.size`) makes the transaction
/// abortable: the commit cannot silently leave it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_at_send_makes_the_txn_abortable() {
    let mock = mock_with("t", 1, 1).await;
    let mut c = config("tx-refused");
    c.max_request_size = 4096;
    let p = ready(&mock, c).await;
    p.begin_transaction().unwrap();
    send_all(&p, "t", &values("ok", 2)).await;
    let e = p
        .send(Record::new("t").with_value(vec![7u8; 10_000]))
        .await
        .unwrap_err();
    assert_eq!(e.error.kafka_code(), Some(KafkaCode::MessageTooLarge));
    assert!(p.commit_transaction().await.unwrap_err().is_abortable());
    p.abort_transaction().await.expect("abort");
    assert!(visible(&mock, "t", 1).is_empty());
}

/// KIP-447 with a real group member: offsets sent with the consumer's generation commit with
/// the transaction; after the member's generation moved on, the old generation's offsets are
/// refused (abortable) and the committed offset stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_commit_with_the_members_generation_and_a_stale_one_is_refused() {
    let mock = MockCluster::builder()
        .topic("in", 1)
        .topic("out", 1)
        .initial_rebalance_delay(Duration::ZERO)
        .start()
        .await
        .expect("mock");
    let cluster = Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect");
    let mut cc = ConsumerConfig::new();
    cc.group_id = Some("g-eos".into());
    let consumer = Consumer::new(cluster, cc).expect("consumer");
    consumer.subscribe(["in"]).expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while consumer.assignment().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no assignment");
        let _ = consumer.poll(Duration::from_millis(100)).await;
    }
    let group = ConsumerGroupMetadata::from_consumer(&consumer).expect("group metadata");
    assert!(
        group.generation_id >= 1 && !group.member_id.is_empty(),
        "{group:?}"
    );

    let p = ready(&mock, config("tx-eos")).await;
    p.begin_transaction().unwrap();
    send_all(&p, "out", &values("o", 2)).await;
    p.send_offsets_to_transaction(&[("in", 0, 5)], &group)
        .await
        .expect("offsets of the current generation");
    p.commit_transaction().await.expect("commit");
    assert_eq!(mock.committed_offset("g-eos", "in", 0), Some(5));

    // A zombie: same member id, an older generation.
    let stale = group
        .clone()
        .with_member(group.member_id.clone(), group.generation_id - 1);
    p.begin_transaction().unwrap();
    send_all(&p, "out", &values("z", 2)).await;
    let e = p
        .send_offsets_to_transaction(&[("in", 0, 9)], &stale)
        .await
        .unwrap_err();
    assert!(e.is_abortable(), "{e:?}");
    p.abort_transaction().await.expect("abort");
    assert_eq!(mock.committed_offset("g-eos", "in", 0), Some(5));
    assert_eq!(visible(&mock, "out", 1), values("o", 2));
    let _ = consumer.close().await;
}

/// Scenario 17, coordinator variant: the transaction coordinator is down for 2 s in the middle
/// of a transaction that then needs a new partition (AddPartitionsToTxn) and EndTxn: both are
/// retried inside, the commit succeeds, every record is visible once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_down_mid_transaction_commits_everything_once() {
    let mock = mock_with("t", 2, 2).await;
    let ids = mock.broker_ids();
    mock.set_coordinator(CoordinatorType::Transaction, "tx-17c", ids[0])
        .unwrap();
    mock.set_partition_leader("t", 0, ids[1]).unwrap();
    mock.set_partition_leader("t", 1, ids[1]).unwrap();
    let p = ready(&mock, config("tx-17c")).await;
    p.begin_transaction().unwrap();
    let first: Vec<String> = values("p0", 300);
    let mut futs = Vec::new();
    for v in &first {
        futs.push(
            p.send(Record::new("t").with_partition(0).with_value(v.clone()))
                .await
                .unwrap(),
        );
    }
    p.flush().await;
    mock.broker_down(ids[0]).await.unwrap();
    let second: Vec<String> = values("p1", 300);
    for v in &second {
        futs.push(
            p.send(Record::new("t").with_partition(1).with_value(v.clone()))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.broker_up(ids[0]).await.unwrap();
    p.commit_transaction().await.expect("commit");
    for f in futs {
        f.await.expect("delivered");
    }
    let mut want = first;
    want.extend(second);
    assert_eq!(visible(&mock, "t", 2), want);
}

/// Scenario 27 (KAFKA-17582), with the consumer driven by hand as the listener container will:
/// poll → produce → send offsets → abort, twice, then committed rounds. After each abort the
/// application rewinds to the group's committed offsets, so every input offset is processed
/// in exactly one committed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_rewinds_after_abort() {
    let mock = MockCluster::builder()
        .topic("in", 1)
        .topic("out", 1)
        .initial_rebalance_delay(Duration::ZERO)
        .start()
        .await
        .expect("mock");
    // The input: 30 committed records.
    let feeder = ready(&mock, config("tx-27-feed")).await;
    feeder.begin_transaction().unwrap();
    let inputs = values("in", 30);
    send_all(&feeder, "in", &inputs).await;
    feeder.commit_transaction().await.expect("feed");

    let cluster = Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect");
    let mut cc = ConsumerConfig::new().with_isolation_level(IsolationLevel::ReadCommitted);
    cc.group_id = Some("g-27".into());
    cc.auto_commit = rekafka::consumer::AutoCommit::Disabled;
    cc.auto_offset_reset = rekafka::consumer::OffsetReset::Earliest;
    cc.max_poll_records = 10;
    let consumer = Consumer::new(cluster, cc).expect("consumer");
    consumer.subscribe(["in"]).expect("subscribe");
    let p = ready(&mock, config("tx-27")).await;
    let tp = TopicPartition::new("in", 0);

    let mut round = 0;
    let mut processed_in_commits: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processed_in_commits.len() < inputs.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {processed_in_commits:?}"
        );
        let records = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        if records.is_empty() {
            continue;
        }
        round += 1;
        let group = ConsumerGroupMetadata::from_consumer(&consumer).expect("member");
        p.begin_transaction().unwrap();
        let mut batch = Vec::new();
        let mut next = 0;
        for r in records.iter() {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            // Delivery is confirmed by the commit (or voided by the abort).
            let _delivery = p
                .send(Record::new("out").with_value(format!("out-{v}")))
                .await
                .expect("send");
            batch.push(v);
            next = r.offset + 1;
        }
        p.send_offsets_to_transaction(&[("in", 0, next)], &group)
            .await
            .expect("offsets");
        if round <= 2 {
            p.abort_transaction().await.expect("abort");
            // Rewind to the last committed offset (the start when nothing is committed).
            let committed = consumer
                .committed(std::slice::from_ref(&tp))
                .await
                .expect("committed");
            let to = committed
                .get(&tp)
                .cloned()
                .flatten()
                .map_or(0, |o| o.offset);
            consumer.seek(&tp, to).expect("seek");
            assert_eq!(mock.committed_offset("g-27", "in", 0).unwrap_or(0), to);
        } else {
            p.commit_transaction().await.expect("commit");
            assert_eq!(mock.committed_offset("g-27", "in", 0), Some(next));
            processed_in_commits.extend(batch);
        }
    }
    assert_eq!(
        processed_in_commits, inputs,
        "each input in exactly one committed txn"
    );
    let want: Vec<String> = inputs.iter().map(|v| format!("out-{v}")).collect();
    assert_eq!(visible(&mock, "out", 1), want);
    assert_eq!(consume_committed(&mock, "out", 1).await, want);
    let _ = consumer.close().await;
}
