//! Topics, partitions, configs and the cluster description.

use super::{Admin, Internal, code_error, entry_answer, missing, topic_name};
use crate::cluster::{BrokerMetadata, Metadata, TopicMetadata};
use crate::connection::BrokerConnection;
use crate::error::Result;
use crate::protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use crate::protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use crate::protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use crate::protocol::messages::create_topics_response::CreatableTopicResult;
use crate::protocol::messages::delete_topics_request::DeleteTopicState;
use crate::protocol::messages::delete_topics_response::DeletableTopicResult;
use crate::protocol::messages::describe_configs_request::DescribeConfigsResource;
use crate::protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use crate::protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, MetadataResponse,
};
use crate::protocol::{Request, StrBytes};

/// A topic to create with [`Admin::create_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewTopic {
    /// The topic name.
    pub name: String,
    /// The number of partitions; `None` takes the broker's `num.partitions`. Default: `None`.
    pub partitions: Option<i32>,
    /// The replication factor; `None` takes the broker's `default.replication.factor`.
    /// Default: `None`.
    pub replication_factor: Option<i16>,
    /// Topic configs (`retention.ms`, `cleanup.policy`, …). Default: none.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the broker's default replication factor.
    pub fn new(name: impl Into<String>, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: Some(partitions),
            replication_factor: None,
            configs: Vec::new(),
        }
    }

    /// A topic with the broker's default partition count and replication factor.
    pub fn with_defaults(name: impl Into<String>) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: None,
            replication_factor: None,
            configs: Vec::new(),
        }
    }

    /// Sets [`replication_factor`](Self::replication_factor).
    pub fn with_replication_factor(mut self, factor: i16) -> NewTopic {
        self.replication_factor = Some(factor);
        self
    }

    /// Adds a topic config.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A topic [`Admin::create_topics`] created (or, for
/// [`validate_create_topics`](Admin::validate_create_topics), would create).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicCreated {
    /// The topic name.
    pub name: String,
    /// The topic id (all zero if the broker did not say: CreateTopics before v7).
    pub topic_id: [u8; 16],
    /// The number of partitions (-1 if the broker did not say: before v5).
    pub partitions: i32,
    /// The replication factor (-1 if the broker did not say: before v5).
    pub replication_factor: i16,
    /// The topic's configs as the broker reported them (v5+).
    pub configs: Vec<ConfigEntry>,
}

/// A topic as [`Admin::list_topics`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicListing {
    /// The topic name.
    pub name: String,
    /// The topic id (all zero if the broker did not say).
    pub topic_id: [u8; 16],
    /// Whether the topic is internal.
    pub is_internal: bool,
    /// The number of partitions.
    pub partitions: usize,
}

/// A topic as [`Admin::describe_topics`] describes it: the cluster's [`TopicMetadata`] (name,
/// id, whether internal, and the partitions with their leader, replicas, in-sync and offline
/// replicas, sorted by index), read from the Metadata answer as the metadata cache reads it.
/// Its `error` is always `None` here: a topic with an error is an `Err` result.
pub type TopicDescription = TopicMetadata;

/// The cluster as [`Admin::describe_cluster`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterDescription {
    /// The cluster id, if the broker gave one.
    pub cluster_id: Option<String>,
    /// The controller's node id, if known.
    pub controller: Option<i32>,
    /// The brokers, by node id.
    pub brokers: Vec<BrokerMetadata>,
}

/// New partitions for [`Admin::create_partitions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewPartitions {
    /// The topic.
    pub topic: String,
    /// The partition count after the call (not the number added).
    pub total_count: i32,
    /// The replicas (broker ids) of each new partition, or `None` to let the broker choose.
    /// Default: `None`.
    pub assignments: Option<Vec<Vec<i32>>>,
}

impl NewPartitions {
    /// Grow `topic` to `total_count` partitions.
    pub fn increase_to(topic: impl Into<String>, total_count: i32) -> NewPartitions {
        NewPartitions {
            topic: topic.into(),
            total_count,
            assignments: None,
        }
    }

    /// Sets [`assignments`](Self::assignments).
    pub fn with_assignments(mut self, assignments: Vec<Vec<i32>>) -> NewPartitions {
        self.assignments = Some(assignments);
        self
    }
}

/// What a config call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigResource {
    /// A topic's configs.
    Topic(String),
    /// A broker's configs (by node id).
    Broker(i32),
    /// A group's configs (KIP-848 and KIP-932 group configs such as
    /// `share.auto.offset.reset`), by group id. The group need not exist.
    Group(String),
}

impl ConfigResource {
    fn type_and_name(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (2, t.clone()),
            ConfigResource::Broker(id) => (4, id.to_string()),
            ConfigResource::Group(g) => (32, g.clone()),
        }
    }
}

/// Where a config value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigSource {
    /// A topic config set on the topic.
    DynamicTopic,
    /// A broker config set for this broker.
    DynamicBroker,
    /// A broker config set as the cluster-wide default.
    DynamicDefaultBroker,
    /// From the broker's properties file.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// A broker logger level.
    DynamicBrokerLogger,
    /// A client-metrics subscription's config (KIP-714).
    ClientMetrics,
    /// A group config set on the group.
    DynamicGroup,
    /// A source this client does not know (the raw value).
    Unknown(i8),
}

impl ConfigSource {
    fn from_i8(v: i8) -> ConfigSource {
        match v {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            7 => ConfigSource::ClientMetrics,
            8 => ConfigSource::DynamicGroup,
            other => ConfigSource::Unknown(other),
        }
    }
}

/// One config value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigEntry {
    /// The config name.
    pub name: String,
    /// The value (`None` for sensitive configs and unset ones).
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether the config cannot be changed.
    pub read_only: bool,
    /// Whether the value is sensitive (and so not returned).
    pub sensitive: bool,
}

/// One change of [`Admin::incremental_alter_configs`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlterConfigOp {
    /// Set `name` to `value`.
    Set {
        /// The config name.
        name: String,
        /// The new value.
        value: String,
    },
    /// Remove `name` (back to its default).
    Delete {
        /// The config name.
        name: String,
    },
    /// Add `value` to the list config `name`.
    Append {
        /// The config name.
        name: String,
        /// The value to add.
        value: String,
    },
    /// Remove `value` from the list config `name`.
    Subtract {
        /// The config name.
        name: String,
        /// The value to remove.
        value: String,
    },
}

impl AlterConfigOp {
    /// [`Set`](Self::Set) `name` to `value`.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> AlterConfigOp {
        AlterConfigOp::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    /// [`Delete`](Self::Delete) `name` (back to its default).
    pub fn delete(name: impl Into<String>) -> AlterConfigOp {
        AlterConfigOp::Delete { name: name.into() }
    }

    fn to_wire(&self) -> AlterableConfig {
        let s = |v: &String| StrBytes::from_string(v.clone());
        let (name, op, value) = match self {
            AlterConfigOp::Set { name, value } => (name, 0, Some(s(value))),
            AlterConfigOp::Delete { name } => (name, 1, None),
            AlterConfigOp::Append { name, value } => (name, 2, Some(s(value))),
            AlterConfigOp::Subtract { name, value } => (name, 3, Some(s(value))),
        };
        AlterableConfig::default()
            .with_name(s(name))
            .with_config_operation(op)
            .with_value(value)
    }
}

fn brokers_of(resp: &MetadataResponse) -> Vec<BrokerMetadata> {
    sorted_brokers(
        resp.brokers
            .iter()
            .map(|b| (b.node_id.0, &b.host, b.port, b.rack.as_ref())),
    )
}

/// The brokers of a Metadata or DescribeCluster answer, from their (id, host, port, rack)
/// entries, sorted by id.
fn sorted_brokers<'a>(
    entries: impl Iterator<Item = (i32, &'a StrBytes, i32, Option<&'a StrBytes>)>,
) -> Vec<BrokerMetadata> {
    let mut brokers: Vec<BrokerMetadata> = entries
        .map(|(node_id, host, port, rack)| BrokerMetadata {
            node_id,
            host: host.to_string(),
            port,
            rack: rack.map(|r| r.to_string()),
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    brokers
}

/// A [`ConfigEntry`] from a config as a broker reports it, in a DescribeConfigs answer or a
/// CreateTopics answer (v5+). A macro because the two are distinct generated types with the
/// same field names.
macro_rules! config_entry {
    ($c:expr) => {{
        let c = $c;
        ConfigEntry {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: ConfigSource::from_i8(c.config_source),
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        }
    }};
}

/// One config resource's answer in a DescribeConfigs or IncrementalAlterConfigs response
/// (`$entries`): the entry of the resource's type and name, its error, or `$ok(entry)`; a
/// resource the response does not mention is an `UnexpectedResponse` error. A macro because
/// the two responses' entries are distinct generated types with the same field names.
macro_rules! config_answer {
    ($entries:expr, $resource:expr, $api:expr, $ok:expr $(,)?) => {{
        let (ty, name) = ConfigResource::type_and_name($resource);
        let found = $entries
            .iter()
            .find(|r| r.resource_type == ty && r.resource_name.as_str() == name);
        entry_answer(
            found,
            $api,
            &format!("resource {name}"),
            |r| (r.error_code, r.error_message.as_ref()),
            $ok,
        )
    }};
}

/// The per-topic entries of the responses of the controller calls that answer topic by topic
/// (CreateTopics, DeleteTopics, CreatePartitions), as
/// [`per_topic_at_controller`](Admin::per_topic_at_controller) reads them.
trait TopicAnswers {
    /// One topic's entry.
    type Entry;
    /// The call.
    const API: ApiKey;
    /// The topics' entries.
    fn entries(&self) -> &[Self::Entry];
    /// The topic an entry answers for.
    fn topic(entry: &Self::Entry) -> Option<&str>;
    /// An entry's error code and message.
    fn status(entry: &Self::Entry) -> (i16, Option<&StrBytes>);
}

/// [`TopicAnswers`] for each of the three responses, as a table: `Response: entries field of
/// Entry type, API key, how an entry names its topic`. A macro because the entries are distinct
/// generated types with the same error fields.
macro_rules! topic_answers {
    ($($response:ident: $entries:ident of $entry:ty, $api:ident, |$e:ident| $topic:expr;)*) => {$(
        impl TopicAnswers for $response {
            type Entry = $entry;
            const API: ApiKey = ApiKey::$api;
            fn entries(&self) -> &[$entry] {
                &self.$entries
            }
            fn topic($e: &$entry) -> Option<&str> {
                $topic
            }
            fn status(entry: &$entry) -> (i16, Option<&StrBytes>) {
                (entry.error_code, entry.error_message.as_ref())
            }
        }
    )*};
}

topic_answers! {
    CreateTopicsResponse: topics of CreatableTopicResult, CreateTopics,
        |e| Some(e.name.0.as_str());
    DeleteTopicsResponse: responses of DeletableTopicResult, DeleteTopics,
        |e| e.name.as_ref().map(|n| n.0.as_str());
    CreatePartitionsResponse: results of CreatePartitionsTopicResult, CreatePartitions,
        |e| Some(e.name.0.as_str());
}

impl Admin {
    /// The frame of the controller calls that answer topic by topic (CreateTopics,
    /// DeleteTopics, CreatePartitions), one home for the three: `count` inputs, each naming
    /// its topic (`topic`); the pending ones go to the controller in one request (`build`,
    /// given their indexes, the broker-side timeout and the negotiated version), retried as
    /// [`per_item`](Self::per_item) retries. Each input's answer is its topic's entry:
    /// `ok(topic, entry)`, or the entry's error tagged with the topic (after the recovery of
    /// [`after_controller_error`](Self::after_controller_error)), or an `UnexpectedResponse`
    /// error when the response does not mention the topic.
    async fn per_topic_at_controller<'a, R, T>(
        &self,
        count: usize,
        topic: impl Fn(usize) -> &'a str,
        build: impl Fn(&[usize], i32, i16) -> R,
        ok: impl Fn(&str, &<R::Response as TopicAnswers>::Entry) -> T,
    ) -> Result<Vec<Result<T>>>
    where
        R: Request,
        R::Response: TopicAnswers,
    {
        let timeout_ms = self.broker_timeout_ms();
        let (topic, build, ok) = (&topic, &build, &ok);
        self.per_item(count, |pending| async move {
            let resp: R::Response = self
                .send_to_controller(|version| Ok(build(&pending, timeout_ms, version)))
                .await?;
            let api = <R::Response as TopicAnswers>::API;
            let mut out = Vec::with_capacity(pending.len());
            for i in pending {
                let name = topic(i);
                let found = resp
                    .entries()
                    .iter()
                    .find(|e| <R::Response as TopicAnswers>::topic(e) == Some(name));
                let r = match found {
                    None => Err(missing(api, &format!("topic {name}"))),
                    Some(entry) => {
                        let (code, message) = <R::Response as TopicAnswers>::status(entry);
                        match code_error(code, message, api) {
                            Some(e) => {
                                self.after_controller_error(&e).await;
                                Err(e.on_topic(name.to_owned()))
                            }
                            None => Ok(ok(name, entry)),
                        }
                    }
                };
                out.push((i, r));
            }
            Ok(out)
        })
        .await
    }
}

impl Admin {
    /// Creates topics. One result per topic, in input order: a topic that exists already is
    /// `Err` with `TOPIC_ALREADY_EXISTS` while the others are created.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<Vec<Result<TopicCreated>>> {
        self.create_topics_mode(topics, false).await
    }

    /// Asks the controller to check that `topics` could be created, without creating them
    /// (CreateTopics `validate_only`). Results as [`create_topics`](Self::create_topics).
    pub async fn validate_create_topics(
        &self,
        topics: &[NewTopic],
    ) -> Result<Vec<Result<TopicCreated>>> {
        self.create_topics_mode(topics, true).await
    }

    async fn create_topics_mode(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<Result<TopicCreated>>> {
        self.per_topic_at_controller(
            topics.len(),
            |i| topics[i].name.as_str(),
            |pending, timeout_ms, _| {
                let wire = pending
                    .iter()
                    .map(|&i| {
                        let t = &topics[i];
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions.unwrap_or(-1))
                            .with_replication_factor(t.replication_factor.unwrap_or(-1))
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                CreateTopicsRequest::default()
                    .with_topics(wire)
                    .with_timeout_ms(timeout_ms)
                    .with_validate_only(validate_only)
            },
            |name, t| TopicCreated {
                name: name.to_owned(),
                topic_id: *t.topic_id.as_bytes(),
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                configs: t
                    .configs
                    .iter()
                    .flatten()
                    .map(|c| config_entry!(c))
                    .collect(),
            },
        )
        .await
    }

    /// Deletes topics. One result per topic, in input order (`UNKNOWN_TOPIC_OR_PARTITION` for
    /// a topic that does not exist).
    pub async fn delete_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<Vec<Result<()>>> {
        self.per_topic_at_controller(
            topics.len(),
            |i| topics[i].as_ref(),
            |pending, timeout_ms, version| {
                let names = pending.iter().map(|&i| topic_name(topics[i].as_ref()));
                let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                if version >= 6 {
                    req.topics = names
                        .map(|n| DeleteTopicState::default().with_name(Some(n)))
                        .collect();
                } else {
                    req.topic_names = names.collect();
                }
                req
            },
            |_, _| (),
        )
        .await
    }

    /// Lists the topics of the cluster, sorted by name.
    pub async fn list_topics(&self, internal: Internal) -> Result<Vec<TopicListing>> {
        let resp = self.single(|| self.fetch_metadata(None)).await?;
        let mut out: Vec<TopicListing> = resp
            .topics
            .iter()
            .filter(|t| internal == Internal::Include || !t.is_internal)
            .filter_map(|t| {
                Some(TopicListing {
                    name: t.name.as_ref()?.0.to_string(),
                    topic_id: *t.topic_id.as_bytes(),
                    is_internal: t.is_internal,
                    partitions: t.partitions.len(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Describes topics (partitions, leaders, replicas, in-sync replicas) without creating
    /// them. One result per topic, in input order (`UNKNOWN_TOPIC_OR_PARTITION` for a topic that
    /// does not exist).
    pub async fn describe_topics<S: AsRef<str>>(
        &self,
        topics: &[S],
    ) -> Result<Vec<Result<TopicDescription>>> {
        self.per_item(topics.len(), |pending| async move {
            let names: Vec<&str> = pending.iter().map(|&i| topics[i].as_ref()).collect();
            let resp = self.fetch_metadata(Some(&names)).await?;
            // The cluster's metadata reads the answer (one reading of a Metadata response for
            // the cache and for admin), into a fresh snapshot: nothing cached changes what is
            // described.
            let mut read = Metadata::default();
            read.apply(&resp, false);
            Ok(pending
                .iter()
                .zip(&names)
                .map(|(i, name)| {
                    let t = resp
                        .topics
                        .iter()
                        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == *name));
                    let r = match t {
                        None => Err(missing(ApiKey::Metadata, &format!("topic {name}"))),
                        Some(t) => match code_error(t.error_code, None, ApiKey::Metadata) {
                            Some(e) => Err(e.on_topic(*name)),
                            None => read
                                .topics
                                .remove(*name)
                                .ok_or_else(|| missing(ApiKey::Metadata, &format!("topic {name}"))),
                        },
                    };
                    (*i, r)
                })
                .collect())
        })
        .await
    }

    /// Describes the cluster: its id, controller and brokers (DescribeCluster, or Metadata
    /// where the broker has no DescribeCluster).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.single(|| async {
            let broker = self.any_broker().await?;
            let conn = broker.connection().await?;
            if conn.versions().range(ApiKey::DescribeCluster).is_none() {
                let resp = self.fetch_metadata(Some(&[])).await?;
                return Ok(ClusterDescription {
                    cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
                    controller: (resp.controller_id.0 >= 0).then_some(resp.controller_id.0),
                    brokers: brokers_of(&resp),
                });
            }
            let resp: DescribeClusterResponse = self
                .send(&broker, |_| Ok(DescribeClusterRequest::default()))
                .await?;
            if let Some(e) = code_error(
                resp.error_code,
                resp.error_message.as_ref(),
                ApiKey::DescribeCluster,
            ) {
                return Err(e.on_broker(broker.broker_id()));
            }
            let brokers = sorted_brokers(
                resp.brokers
                    .iter()
                    .map(|b| (b.broker_id.0, &b.host, b.port, b.rack.as_ref())),
            );
            Ok(ClusterDescription {
                cluster_id: Some(resp.cluster_id.to_string()),
                controller: (resp.controller_id.0 >= 0).then_some(resp.controller_id.0),
                brokers,
            })
        })
        .await
    }

    /// The connection for config requests to `target`: that broker, or any broker for topic
    /// resources.
    async fn config_broker(&self, target: Option<i32>) -> Result<BrokerConnection> {
        match target {
            Some(id) => self.cluster.connection_for_broker(id).await,
            None => self.any_broker().await,
        }
    }

    /// Describes the configs of topics or brokers. One result per resource, in input order;
    /// each is the resource's configs sorted by name.
    pub async fn describe_configs(
        &self,
        resources: &[ConfigResource],
    ) -> Result<Vec<Result<Vec<ConfigEntry>>>> {
        self.per_item(resources.len(), |pending| async move {
            self.per_config_target(
                pending,
                |i| &resources[i],
                |items| {
                    DescribeConfigsRequest::default().with_resources(
                        items
                            .iter()
                            .map(|&i| {
                                let (ty, name) = resources[i].type_and_name();
                                DescribeConfigsResource::default()
                                    .with_resource_type(ty)
                                    .with_resource_name(StrBytes::from_string(name))
                                    .with_configuration_keys(None)
                            })
                            .collect(),
                    )
                },
                |resp: &DescribeConfigsResponse, i| {
                    config_answer!(resp.results, &resources[i], ApiKey::DescribeConfigs, |r| {
                        let mut entries: Vec<ConfigEntry> =
                            r.configs.iter().map(|c| config_entry!(c)).collect();
                        entries.sort_by(|a, b| a.name.cmp(&b.name));
                        entries
                    })
                },
            )
            .await
        })
        .await
    }

    /// Changes configs of topics or brokers (IncrementalAlterConfigs). One result per
    /// resource, in input order.
    pub async fn incremental_alter_configs(
        &self,
        changes: &[(ConfigResource, Vec<AlterConfigOp>)],
    ) -> Result<Vec<Result<()>>> {
        self.per_item(changes.len(), |pending| async move {
            self.per_config_target(
                pending,
                |i| &changes[i].0,
                |items| {
                    IncrementalAlterConfigsRequest::default().with_resources(
                        items
                            .iter()
                            .map(|&i| {
                                let (ty, name) = changes[i].0.type_and_name();
                                AlterConfigsResource::default()
                                    .with_resource_type(ty)
                                    .with_resource_name(StrBytes::from_string(name))
                                    .with_configs(
                                        changes[i].1.iter().map(|op| op.to_wire()).collect(),
                                    )
                            })
                            .collect(),
                    )
                },
                |resp: &IncrementalAlterConfigsResponse, i| {
                    config_answer!(
                        resp.responses,
                        &changes[i].0,
                        ApiKey::IncrementalAlterConfigs,
                        |_| ()
                    )
                },
            )
            .await
        })
        .await
    }

    /// One request per config target for the `pending` items of DescribeConfigs or
    /// IncrementalAlterConfigs (a broker's own resources to that broker, topic and group
    /// resources to any broker, see [`by_config_target`]): `build` makes a target's request
    /// from its items, `answer` reads one item's answer from the response; a target whose
    /// broker or request failed gives each of its items that failure. The walk both config
    /// calls share.
    async fn per_config_target<'a, R, T>(
        &self,
        pending: Vec<usize>,
        resource: impl Fn(usize) -> &'a ConfigResource,
        build: impl Fn(&[usize]) -> R,
        answer: impl Fn(&R::Response, usize) -> Result<T>,
    ) -> Result<Vec<(usize, Result<T>)>>
    where
        R: Request,
    {
        let mut out = Vec::with_capacity(pending.len());
        for (target, items) in by_config_target(&pending, resource) {
            let broker = self.config_broker(target).await;
            let sent = self
                .send_for_items::<R, _, _>(broker, &items, &mut out, |_| Ok(build(&items)))
                .await;
            let Some(resp) = sent else {
                continue;
            };
            for i in items {
                out.push((i, answer(&resp, i)));
            }
        }
        Ok(out)
    }

    /// Adds partitions to topics. One result per topic, in input order
    /// (`INVALID_PARTITIONS` if the count is not larger than the current one).
    pub async fn create_partitions(&self, topics: &[NewPartitions]) -> Result<Vec<Result<()>>> {
        self.per_topic_at_controller(
            topics.len(),
            |i| topics[i].topic.as_str(),
            |pending, timeout_ms, _| {
                CreatePartitionsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(
                        pending
                            .iter()
                            .map(|&i| {
                                let t = &topics[i];
                                CreatePartitionsTopic::default()
                                    .with_name(topic_name(&t.topic))
                                    .with_count(t.total_count)
                                    .with_assignments(t.assignments.as_ref().map(|a| {
                                        a.iter()
                                            .map(|ids| {
                                                CreatePartitionsAssignment::default()
                                                    .with_broker_ids(
                                                        ids.iter().map(|&b| BrokerId(b)).collect(),
                                                    )
                                            })
                                            .collect()
                                    }))
                            })
                            .collect(),
                    )
            },
            |_, _| (),
        )
        .await
    }
}

/// Groups the pending items by where their config request goes: broker resources to that
/// broker (`Some(id)`), topic and group resources to any broker (`None`, one request for all of them).
fn by_config_target<'a>(
    pending: &[usize],
    resource: impl Fn(usize) -> &'a ConfigResource,
) -> Vec<(Option<i32>, Vec<usize>)> {
    let mut groups: Vec<(Option<i32>, Vec<usize>)> = Vec::new();
    for &i in pending {
        let target = match resource(i) {
            ConfigResource::Broker(id) => Some(*id),
            ConfigResource::Topic(_) | ConfigResource::Group(_) => None,
        };
        match groups.iter_mut().find(|(t, _)| *t == target) {
            Some((_, v)) => v.push(i),
            None => groups.push((target, vec![i])),
        }
    }
    groups
}
