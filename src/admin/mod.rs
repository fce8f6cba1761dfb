//! The admin client: topics, configs, partitions, offsets, records, consumer groups and share
//! groups.
//!
//! [`Admin`] comes from [`Client::admin`](crate::Client::admin) and shares the client's
//! [`Cluster`]. Every call is one or more requests at the highest version both sides support,
//! routed where Kafka wants them:
//!
//! | call | goes to |
//! |---|---|
//! | create/delete topics, create partitions | the controller (any broker if none is known; brokers forward) |
//! | list/describe topics, describe cluster, topic configs | any broker |
//! | broker configs | that broker |
//! | list offsets, delete records | each partition's leader (one request per leader) |
//! | list groups | every broker |
//! | describe/delete groups, committed offsets | each group's coordinator |
//! | share groups: describe, start offsets (list, alter, delete) | each group's coordinator |
//! | group configs (`ConfigResource::Group`) | any broker |
//!
//! # Results and errors
//!
//! Calls on many items return one result per item, **in input order**
//! (`Vec<Result<T>>`): a topic that already exists does not hide the topics that were
//! created. The outer `Result` fails only when the call as a whole failed: a transport failure
//! (the broker could not be reached or did not answer) that outlasted the retries, or an
//! error that concerns the whole request.
//!
//! Retriable errors are retried with back-off (the cluster's [`retry_backoff`]) until
//! [`api_timeout`](Admin::api_timeout) runs out, recovering as [`recovery_for`] says: after
//! `NOT_CONTROLLER` or a leader change the metadata is looked up again, after
//! `NOT_COORDINATOR` the coordinator, after a transport failure the broker is marked failed so
//! that another one is preferred. Only the items that failed retriably are sent again.
//!
//! [`retry_backoff`]: crate::cluster::ClusterConfig::retry_backoff

mod groups;
mod offsets;
mod share_groups;
mod topics;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use std::time::Duration;

use tokio::time::Instant;

pub use groups::{
    CommittedOffset, ConsumerGroupDescription, ConsumerGroupMember, GroupDescription, GroupListing,
    GroupState, GroupType, MemberDescription, decode_consumer_assignment,
};
pub use offsets::{IsolationLevel, ListedOffset, OffsetSpec};
pub use share_groups::{
    SHARE_AUTO_OFFSET_RESET, SHARE_DELIVERY_COUNT_LIMIT, SHARE_HEARTBEAT_INTERVAL_MS,
    SHARE_ISOLATION_LEVEL, SHARE_RECORD_LOCK_DURATION_MS, SHARE_SESSION_TIMEOUT_MS,
    ShareGroupDescription, ShareGroupMember, ShareOffsetResult, SharePartitionOffset,
};
pub use topics::{
    AlterConfigOp, ClusterDescription, ConfigEntry, ConfigResource, ConfigSource, NewPartitions,
    NewTopic, TopicCreated, TopicDescription, TopicListing,
};

use crate::cluster::{Cluster, CoordinatorType, Recovery, recovery_for};
use crate::connection::{BrokerConnection, RetryDelay};
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::messages::metadata_request::MetadataRequestTopic;
use crate::protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use crate::protocol::{Request, StrBytes};

pub use crate::cluster::TopicPartition;

/// Whether [`Admin::list_topics`] includes internal topics (`__consumer_offsets`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Internal {
    /// Leave internal topics out (the default, as Kafka's `listTopics`).
    #[default]
    Exclude,
    /// List internal topics too.
    Include,
}

/// The admin client. Cheap to clone; made by [`Client::admin`](crate::Client::admin).
///
/// ```no_run
/// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
/// use rekafka::admin::{NewTopic, OffsetSpec, TopicPartition};
///
/// let admin = client.admin();
/// let created = admin
///     .create_topics(&[NewTopic::new("orders", 6).with_config("retention.ms", "86400000")])
///     .await?;
/// for r in created {
///     match r {
///         Ok(t) => println!("created {} with {} partitions", t.name, t.partitions),
///         Err(e) => eprintln!("{e}"),
///     }
/// }
/// let ends = admin
///     .list_offsets(&[(TopicPartition::new("orders", 0), OffsetSpec::Latest)])
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Cluster,
    api_timeout: Duration,
}

/// Default [`Admin::api_timeout`]: 60 s, as Kafka's `default.api.timeout.ms`.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(60);

/// The retry budget of one admin call.
struct Attempts {
    deadline: Instant,
    backoff: RetryDelay,
}

impl Attempts {
    /// After a failure: whether to try again (the error is retriable and the back-off ends
    /// before the deadline). Waits the back-off if so.
    async fn again(&mut self, error: &Error) -> bool {
        if recovery_for(error) == Recovery::GiveUp {
            return false;
        }
        let wait = self.backoff.delay();
        self.backoff.failed();
        if Instant::now() + wait >= self.deadline {
            return false;
        }
        tracing::debug!(error = %error, ?wait, "admin request failed; retrying");
        tokio::time::sleep(wait).await;
        true
    }
}

/// Runs futures concurrently and returns their outputs in order (requests to several brokers
/// go out at once).
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Whether an item's error is worth sending the item again for. As [`recovery_for`] says,
/// except that `UNKNOWN_TOPIC_OR_PARTITION` is final unless a partition's leader said it (then
/// the metadata may be stale): a topic the metadata or the controller does not know will not
/// appear by retrying, as in Kafka's admin client.
fn worth_retrying(e: &Error) -> bool {
    if recovery_for(e) == Recovery::GiveUp {
        return false;
    }
    if e.kafka_code() == Some(KafkaCode::UnknownTopicOrPartition) {
        return matches!(
            e.context().api.and_then(crate::error::Api::known),
            Some(ApiKey::ListOffsets | ApiKey::DeleteRecords)
        );
    }
    true
}

/// Whether an error is a transport failure (not an answer from a broker).
fn is_transport(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout
    )
}

/// A broker error for `code` (0 = none) with the broker's message, if any.
fn code_error(code: i16, message: Option<&StrBytes>, api: ApiKey) -> Option<Error> {
    KafkaCode::from_i16(code).map(|c| {
        let e = Error::broker(c).api(api);
        match message {
            Some(m) if !m.is_empty() => e.message(m.to_string()),
            _ => e,
        }
    })
}

/// One input's answer from its entry in a response (`None`: the response does not mention
/// it, named by `what`): the entry's error (`status` gives its code and message) or
/// `ok(entry)`.
fn entry_answer<E, T>(
    entry: Option<&E>,
    api: ApiKey,
    what: &str,
    status: fn(&E) -> (i16, Option<&StrBytes>),
    ok: impl FnOnce(&E) -> T,
) -> Result<T> {
    let entry = entry.ok_or_else(|| missing(api, what))?;
    let (code, message) = status(entry);
    status_of(code, message, api).map(|()| ok(entry))
}

/// An entry's error code and message as a result: `Ok(())` without an error. The calls whose
/// entries carry a code and a message read them through this (or [`entry_answer`]).
fn status_of(code: i16, message: Option<&StrBytes>, api: ApiKey) -> Result<()> {
    code_error(code, message, api).map_or(Ok(()), Err)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn missing(api: ApiKey, what: &str) -> Error {
    Error::with_message(
        ErrorKind::UnexpectedResponse,
        format!("the response does not mention {what}"),
    )
    .api(api)
}

impl Admin {
    /// An admin client over `cluster`: requests are retried with the cluster's
    /// [`retry_backoff`](crate::cluster::ClusterConfig::retry_backoff) and its connections'
    /// [`request_timeout`](crate::connection::ConnectionConfig::request_timeout) is the
    /// brokers' time limit; calls give up after [`DEFAULT_API_TIMEOUT`] (change it with
    /// [`with_api_timeout`](Self::with_api_timeout)). Most callers use
    /// [`Client::admin`](crate::Client::admin), which applies the client's `api_timeout`.
    pub fn new(cluster: Cluster) -> Admin {
        Admin {
            cluster,
            api_timeout: DEFAULT_API_TIMEOUT,
        }
    }

    /// Sets how long a call keeps retrying retriable errors before it fails. Default:
    /// [`DEFAULT_API_TIMEOUT`] (60 s, Kafka's `default.api.timeout.ms`).
    pub fn with_api_timeout(mut self, timeout: Duration) -> Admin {
        self.api_timeout = timeout;
        self
    }

    /// How long a call keeps retrying retriable errors before it fails.
    pub fn api_timeout(&self) -> Duration {
        self.api_timeout
    }

    /// The cluster this admin client uses.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn attempts(&self) -> Attempts {
        let config = self.cluster.config();
        Attempts {
            deadline: Instant::now() + self.api_timeout,
            backoff: RetryDelay::new(config.retry_backoff, config.retry_backoff_max),
        }
    }

    /// The `timeout_ms` field of requests that have one (the broker's own time limit).
    fn broker_timeout_ms(&self) -> i32 {
        let timeout = self.cluster.config().connection.request_timeout;
        i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Side effects of a failure before it is retried: a broker that failed at the transport
    /// level is marked so that another one is preferred.
    fn note_failure(&self, e: &Error) {
        if recovery_for(e) == Recovery::SwitchBroker
            && let Some(b) = e.context().broker
        {
            self.cluster.mark_failed(b);
        }
    }

    /// Sends a request built for the negotiated version to `broker`.
    async fn send<R, F>(&self, broker: &BrokerConnection, build: F) -> Result<R::Response>
    where
        R: Request,
        F: FnOnce(i16) -> Result<R>,
    {
        let id = broker.broker_id();
        let conn = broker.connection().await.map_err(|e| e.on_broker(id))?;
        let version = conn
            .versions()
            .negotiate::<R>()
            .map_err(|e| e.on_broker(id))?;
        let request = build(version)?;
        conn.send_at(request, version)
            .await
            .map_err(|e| e.on_broker(id))
    }

    /// Sends one request for `items` (indexes into the caller's inputs) to `broker` (or its
    /// lookup failure): the response, or `None` after giving every item the failure in `out`.
    /// The calls that batch their inputs per broker (ListOffsets, DeleteRecords,
    /// DescribeConfigs, IncrementalAlterConfigs) share this step.
    async fn send_for_items<R, F, T>(
        &self,
        broker: Result<BrokerConnection>,
        items: &[usize],
        out: &mut Vec<(usize, Result<T>)>,
        build: F,
    ) -> Option<R::Response>
    where
        R: Request,
        F: FnOnce(i16) -> Result<R>,
    {
        let sent = match broker {
            Ok(b) => self.send::<R, F>(&b, build).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(r) => Some(r),
            Err(e) => {
                out.extend(items.iter().map(|&i| (i, Err(e.clone()))));
                None
            }
        }
    }

    /// Runs a call whose result is one value (one request): retries retriable failures.
    async fn single<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempts = self.attempts();
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.note_failure(&e);
                    if !attempts.again(&e).await {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Runs a call on `n` items. `attempt(pending)` sends the pending items (indexes into the
    /// input) and returns a result for each; items that failed retriably are sent again after
    /// the back-off until the budget runs out. Results come back in input order. If an item's
    /// final result is a transport failure, the whole call fails with it.
    async fn per_item<T, F, Fut>(&self, n: usize, mut attempt: F) -> Result<Vec<Result<T>>>
    where
        F: FnMut(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<(usize, Result<T>)>>>,
    {
        let mut results: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
        let mut attempts = self.attempts();
        loop {
            let pending: Vec<usize> = (0..n).filter(|i| results[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let answered = match attempt(pending.clone()).await {
                Ok(a) => a,
                Err(e) => {
                    self.note_failure(&e);
                    if attempts.again(&e).await {
                        continue;
                    }
                    return Err(e);
                }
            };
            let mut retry: BTreeMap<usize, Error> = BTreeMap::new();
            for (i, r) in answered {
                if i >= n || results[i].is_some() {
                    continue;
                }
                match r {
                    Err(e) if worth_retrying(&e) => {
                        self.note_failure(&e);
                        retry.insert(i, e);
                    }
                    r => results[i] = Some(r),
                }
            }
            // An item the attempt gave no answer for would be sent again forever: final.
            for &i in &pending {
                if results[i].is_none() && !retry.contains_key(&i) {
                    results[i] = Some(Err(Error::with_message(
                        ErrorKind::UnexpectedResponse,
                        "no answer for this item",
                    )));
                }
            }
            let Some(first) = retry.values().next().cloned() else {
                continue;
            };
            if !attempts.again(&first).await {
                for (i, e) in retry {
                    results[i] = Some(Err(e));
                }
            }
        }
        let results: Vec<Result<T>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::UnexpectedResponse))))
            .collect();
        if let Some(e) = results.iter().find_map(|r| match r {
            Err(e) if is_transport(e) => Some(e.clone()),
            _ => None,
        }) {
            return Err(e);
        }
        Ok(results)
    }

    /// A broker for requests any broker serves.
    async fn any_broker(&self) -> Result<BrokerConnection> {
        self.cluster.any_connection().await
    }

    /// The controller if the metadata names one, else any broker (brokers forward controller
    /// requests in KRaft clusters and answer `NOT_CONTROLLER` otherwise, which refreshes).
    async fn controller(&self) -> Result<BrokerConnection> {
        if let Some(id) = self.cluster.metadata().controller_id
            && let Ok(b) = self.cluster.connection_for_broker(id).await
        {
            return Ok(b);
        }
        self.any_broker().await
    }

    /// Sends a controller request ([`controller`](Self::controller)). After a transport
    /// failure the broker is marked failed and the broker list refreshed from another broker,
    /// so that a controller that died is replaced by the one the cluster elected.
    async fn send_to_controller<R, F>(&self, build: F) -> Result<R::Response>
    where
        R: Request,
        F: FnOnce(i16) -> Result<R>,
    {
        let broker = self.controller().await?;
        let result = self.send(&broker, build).await;
        if let Err(e) = &result {
            self.note_failure(e);
            self.after_controller_error(e).await;
        }
        result
    }

    /// Recovery after an error of a controller request: `NOT_CONTROLLER`, or a controller that
    /// could not be reached, refreshes the broker list (which names the controller).
    async fn after_controller_error(&self, e: &Error) {
        if e.kafka_code() == Some(KafkaCode::NotController)
            || recovery_for(e) == Recovery::SwitchBroker
        {
            let none: [&str; 0] = [];
            if let Err(refresh) = self.cluster.refresh_topics(&none).await {
                tracing::debug!(error = %refresh, "metadata refresh after a controller error failed");
            }
        }
    }

    /// A Metadata request for `topics` (all topics if `None`) that never creates a topic, sent
    /// to any broker.
    async fn fetch_metadata(&self, topics: Option<&[&str]>) -> Result<MetadataResponse> {
        let broker = self.any_broker().await?;
        let resp: MetadataResponse = self
            .send(&broker, |version| {
                let list = match topics {
                    None if version == 0 => Some(Vec::new()),
                    None => None,
                    Some(names) => Some(
                        names
                            .iter()
                            .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                            .collect(),
                    ),
                };
                let mut req = MetadataRequest::default().with_topics(list);
                if version >= 4 {
                    req.allow_auto_topic_creation = false;
                }
                Ok(req)
            })
            .await?;
        if let Some(e) = code_error(resp.error_code, None, ApiKey::Metadata) {
            return Err(e.on_broker(broker.broker_id()));
        }
        Ok(resp)
    }

    /// The leader of each partition, by node id, from a fresh Metadata request (without
    /// creating topics). A partition without a leader or an unknown topic maps to its error.
    async fn leaders(
        &self,
        partitions: &[&TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Result<i32>>> {
        let mut topics: Vec<&str> = partitions.iter().map(|tp| tp.topic()).collect();
        topics.sort_unstable();
        topics.dedup();
        let resp = self.fetch_metadata(Some(&topics)).await?;
        let mut out = BTreeMap::new();
        for tp in partitions {
            let err = |code| {
                Error::broker(code)
                    .api(ApiKey::Metadata)
                    .on_partition(tp.topic(), tp.partition)
            };
            let t = resp
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == tp.topic()));
            let leader = match t {
                None => Err(err(KafkaCode::UnknownTopicOrPartition)),
                Some(t) => match KafkaCode::from_i16(t.error_code) {
                    Some(code) => Err(err(code)),
                    None => match t
                        .partitions
                        .iter()
                        .find(|p| p.partition_index == tp.partition)
                    {
                        None => Err(err(KafkaCode::UnknownTopicOrPartition)),
                        Some(p) if p.leader_id.0 < 0 => Err(err(KafkaCode::from_i16(p.error_code)
                            .unwrap_or(KafkaCode::LeaderNotAvailable))),
                        Some(p) => Ok(p.leader_id.0),
                    },
                },
            };
            out.insert((*tp).clone(), leader);
        }
        Ok(out)
    }

    /// One request to `group`'s coordinator, retried as [`single`](Self::single) retries:
    /// `build` makes it for the negotiated version, `check` reads the response's whole-call
    /// error (given the coordinator's broker id to tag it with), and a failure makes the
    /// coordinator be looked up again when it moved
    /// ([`after_coordinator_error`](Self::after_coordinator_error)). The group calls that go to
    /// one coordinator share this step.
    async fn at_group_coordinator<R, B, C>(
        &self,
        group: &str,
        build: B,
        check: C,
    ) -> Result<R::Response>
    where
        R: Request,
        B: Fn(i16) -> Result<R>,
        C: Fn(R::Response, i32) -> Result<R::Response>,
    {
        self.single(|| async {
            let coordinator = self.group_coordinator(group).await?;
            let r = self
                .send::<R, _>(&coordinator, &build)
                .await
                .and_then(|resp| check(resp, coordinator.broker_id()));
            if let Err(e) = &r {
                self.after_coordinator_error(group, e);
            }
            r
        })
        .await
    }

    /// The coordinator connection of `group`, or the lookup error.
    async fn group_coordinator(&self, group: &str) -> Result<BrokerConnection> {
        let id = self
            .cluster
            .coordinator(CoordinatorType::Group, group)
            .await?;
        self.cluster.connection_for_broker(id).await
    }

    /// After a failed request to a group's coordinator: forget the coordinator if it moved (or
    /// could not be reached), so the next attempt looks it up again.
    fn after_coordinator_error(&self, group: &str, e: &Error) {
        if matches!(
            recovery_for(e),
            Recovery::RefreshCoordinator | Recovery::SwitchBroker
        ) {
            self.cluster
                .invalidate_coordinator(CoordinatorType::Group, group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Admin {
        let config = crate::cluster::ClusterConfig::new(["127.0.0.1:1"])
            .with_retry_backoff(Duration::from_millis(10), Duration::from_millis(20));
        let cluster = Cluster::new(config).unwrap_or_else(|e| panic!("{e}"));
        Admin::new(cluster).with_api_timeout(Duration::from_millis(300))
    }

    #[tokio::test]
    async fn per_item_retries_only_retriable_items_and_keeps_order() {
        let a = admin();
        let mut calls: Vec<Vec<usize>> = Vec::new();
        let calls_ref = &mut calls;
        let results = a
            .per_item(3, |pending| {
                calls_ref.push(pending.clone());
                let first = calls_ref.len() == 1;
                async move {
                    Ok(pending
                        .into_iter()
                        .map(|i| {
                            let r = match (i, first) {
                                (0, _) => Ok(10),
                                (1, true) => Err(Error::broker(KafkaCode::NotController)),
                                (1, false) => Ok(11),
                                _ => Err(Error::broker(KafkaCode::TopicAlreadyExists)),
                            };
                            (i, r)
                        })
                        .collect())
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls, [vec![0, 1, 2], vec![1]]);
        assert_eq!(results[0].as_ref().ok(), Some(&10));
        assert_eq!(results[1].as_ref().ok(), Some(&11));
        assert_eq!(
            results[2].as_ref().err().and_then(Error::kafka_code),
            Some(KafkaCode::TopicAlreadyExists)
        );
        a.cluster.close().await;
    }

    fn send<T: Send>(_: T) {}

    #[tokio::test]
    async fn admin_futures_are_send() {
        // Not polled: only their types matter (a caller may spawn any of them).
        let a = admin();
        let tp = TopicPartition::new("t", 0);
        let names = ["t"];
        send(a.create_topics(&[]));
        send(a.validate_create_topics(&[]));
        send(a.delete_topics(&names));
        send(a.list_topics(Internal::Exclude));
        send(a.describe_topics(&names));
        send(a.describe_cluster());
        send(a.describe_configs(&[]));
        send(a.incremental_alter_configs(&[]));
        send(a.create_partitions(&[]));
        send(a.list_offsets(&[]));
        send(a.delete_records(&[]));
        send(a.list_groups());
        send(a.describe_groups(&names));
        send(a.delete_groups(&names));
        send(a.list_group_offsets("g", Some(std::slice::from_ref(&tp))));
        send(a.alter_consumer_group_offsets("g", &[(tp.clone(), 0)]));
        send(a.describe_share_groups(&names));
        send(a.list_share_groups());
        send(a.list_share_group_offsets("g", None));
        send(a.alter_share_group_offsets("g", &[(tp.clone(), 0)]));
        send(a.delete_share_group_offsets("g", &names));
        send(a.delete_share_groups(&names));
        send(a.describe_group_configs(&names));
        send(a.alter_group_configs("g", &[]));
        // Nothing asked, nothing sent (the cluster's only address is dead).
        assert!(
            a.alter_consumer_group_offsets("g", &[])
                .await
                .is_ok_and(|v| v.is_empty())
        );
        assert!(a.create_topics(&[]).await.is_ok_and(|v| v.is_empty()));
        assert!(a.list_offsets(&[]).await.is_ok_and(|v| v.is_empty()));
        let none: [&str; 0] = [];
        assert!(a.describe_groups(&none).await.is_ok_and(|v| v.is_empty()));
        a.cluster.close().await;
    }

    #[tokio::test]
    async fn per_item_items_without_an_answer_are_final() {
        let a = admin();
        let mut calls = 0;
        let calls_ref = &mut calls;
        let results = a
            .per_item(2, |_| {
                *calls_ref += 1;
                async { Ok(vec![(1, Ok(5))]) }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls, 1);
        assert_eq!(
            results[0].as_ref().err().map(|e| e.kind().clone()),
            Some(ErrorKind::UnexpectedResponse)
        );
        assert_eq!(results[1].as_ref().ok(), Some(&5));
        a.cluster.close().await;
    }

    #[tokio::test]
    async fn per_item_gives_up_at_the_deadline_and_transport_errors_fail_the_call() {
        let a = admin();
        let started = Instant::now();
        let results = a
            .per_item(2, |pending| async move {
                Ok(pending
                    .into_iter()
                    .map(|i| {
                        let e = if i == 0 {
                            Error::broker(KafkaCode::LeaderNotAvailable)
                        } else {
                            Error::broker(KafkaCode::InvalidPartitions)
                        };
                        (i, Err::<(), _>(e))
                    })
                    .collect())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            results[0].as_ref().err().and_then(Error::kafka_code),
            Some(KafkaCode::LeaderNotAvailable)
        );
        let r = a
            .per_item(1, |_| async {
                Ok(vec![(0, Err::<(), _>(Error::new(ErrorKind::Disconnected)))])
            })
            .await;
        assert_eq!(
            r.err().map(|e| e.kind().clone()),
            Some(ErrorKind::Disconnected)
        );
        a.cluster.close().await;
    }
}
