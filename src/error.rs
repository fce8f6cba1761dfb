//! The one error type of rekafka.
//!
//! Every fallible call in the crate returns [`Error`]. An error has a [`kind`](Error::kind) saying
//! what went wrong, optional [context](Error::context) saying where (API, broker, topic,
//! partition), and answers the three questions of Kafka's error taxonomy
//! ([KIP-1050](https://cwiki.apache.org/confluence/display/KAFKA/KIP-1050)):
//!
//! * [`is_retriable`](Error::is_retriable): the same operation may succeed if tried again (the
//!   client's own retry loops already do this within their time budget);
//! * [`is_abortable`](Error::is_abortable): inside a transaction, abort it and the producer stays
//!   usable;
//! * [`is_fatal`](Error::is_fatal): the client object (producer, transaction) cannot be used any
//!   more; close it and, if appropriate, create a new one.
//!
//! At most one of the three is true. An error that is none of them is an application-level error
//! (a bad record, an authorization failure on one topic, a missing topic) that the caller decides
//! about.
//!
//! ```
//! use rekafka::error::{Error, ErrorKind, KafkaCode};
//!
//! let e = Error::broker(KafkaCode::NotLeaderOrFollower);
//! assert!(e.is_retriable());
//! assert_eq!(e.kind(), &ErrorKind::Broker(KafkaCode::NotLeaderOrFollower));
//! assert_eq!(KafkaCode::from_code(90), KafkaCode::ProducerFenced);
//! ```

use std::fmt;
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;

/// The result type used throughout rekafka.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error type of rekafka.
///
/// Small (one pointer) so that `Result<T>` stays cheap on hot paths, and `Clone` (the cause is
/// shared) so that one failure can be handed to every request or record it affects.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: Option<String>,
    context: Context,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// A Kafka API (a request type) as errors name it: its key and Kafka's name for it.
///
/// rekafka's own type, so that errors do not change with the version of the protocol crate
/// underneath. `Display` and `Debug` give Kafka's name (`Produce`, `OffsetCommit`).
///
/// ```
/// use rekafka::error::Api;
///
/// let produce = Api::from_key(0);
/// assert_eq!(produce.key(), 0);
/// assert_eq!(produce.to_string(), "Produce");
/// assert_eq!(Api::from_key(-7).to_string(), "ApiKey(-7)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Api(i16);

impl Api {
    /// The API with this key (Kafka's `api_key`).
    pub const fn from_key(key: i16) -> Api {
        Api(key)
    }

    /// Its key, as sent in every request header.
    pub const fn key(self) -> i16 {
        self.0
    }

    pub(crate) fn of(api: ApiKey) -> Api {
        Api(api as i16)
    }

    /// The protocol crate's name for it, when the key is one it knows.
    pub(crate) fn known(self) -> Option<ApiKey> {
        ApiKey::try_from(self.0).ok()
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(k) => write!(f, "{k:?}"),
            None => write!(f, "ApiKey({})", self.0),
        }
    }
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where an error happened, as far as the layer that raised it knew.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The Kafka API of the request, if the error concerns one.
    pub api: Option<Api>,
    /// The broker (node id) the request went to, if known.
    pub broker: Option<i32>,
    /// The topic, if the error concerns one.
    pub topic: Option<String>,
    /// The partition, if the error concerns one.
    pub partition: Option<i32>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker answered with a Kafka error code.
    #[error("broker error {0}")]
    Broker(KafkaCode),
    /// Bytes from the network (or given to a decoder) are not valid Kafka protocol: truncated,
    /// inconsistent lengths, bad CRC, unknown compression, a length that exceeds its input.
    #[error("corrupt protocol data")]
    Corrupt,
    /// A record's key or value could not be deserialized: the application's bytes, not the
    /// protocol (see [`ConsumerRecord::deserialize`](crate::consumer::ConsumerRecord::deserialize),
    /// whose failures name the part and the record: `deserialization failed: value of
    /// orders-3@42: …`). Deserializers fail with it ([`Error::deserialization`]).
    #[error("deserialization failed")]
    Deserialization,
    /// A frame's declared size is larger than the configured maximum (or negative).
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The size the frame's length prefix declared.
        size: i64,
        /// The configured maximum frame size.
        max: usize,
    },
    /// No version of an API is supported by both the broker and this client.
    #[error("no version of {api:?} is supported by both broker and client")]
    UnsupportedVersion {
        /// The API.
        api: Api,
    },
    /// Encoding a request failed (a field set that the negotiated version cannot carry, a value
    /// out of range).
    #[error("request encoding failed")]
    Encode,
    /// Compressing or decompressing a record batch failed.
    #[error("compression failed")]
    Compression,
    /// A socket or other I/O failure.
    #[error("I/O error ({0})")]
    Io(std::io::ErrorKind),
    /// The connection to a broker was closed or is not usable.
    #[error("connection closed")]
    Disconnected,
    /// An operation did not finish within its time limit.
    #[error("timed out")]
    Timeout,
    /// A setting is invalid; the message names the setting.
    #[error("invalid configuration")]
    Config,
    /// Authentication with the broker failed (SASL or TLS).
    #[error("authentication failed")]
    Authentication,
    /// The client (or the object the call was made on) has been closed.
    #[error("client closed")]
    Closed,
    /// A memory or buffer bound was reached and waiting for room timed out.
    #[error("buffer full")]
    BufferFull,
    /// A response did not match its request (wrong correlation id, missing topic or partition).
    #[error("unexpected response")]
    UnexpectedResponse,
    /// A circuit breaker is open: the call failed fast without being tried.
    #[error("circuit breaker open")]
    CircuitOpen,
    /// The client object (a producer) hit an unrecoverable error earlier and refuses every
    /// call since; the source is that first error. Close it and create a new one.
    #[error("unrecoverable earlier error")]
    Fatal,
    /// The current transaction hit an error it cannot commit past (KIP-1050 "abortable"):
    /// abort it, after which the producer is usable again; the source is that first error.
    #[error("the transaction must be aborted")]
    Abortable,
    /// The record was part of a transaction that was aborted before it was sent (KIP-654's
    /// `TransactionAbortedException`); not fatal.
    #[error("the transaction was aborted")]
    TransactionAborted,
    /// The call is not allowed in the object's current state (a transactional call outside
    /// a transaction, `commit` while an abort is pending, two calls at once); the message
    /// names both.
    #[error("illegal state")]
    InvalidState,
    /// KIP-320: the partition's log was truncated below the consumer's position (an unclean
    /// leader election, or a leader change that lost records the consumer had read), found by
    /// validating the position with OffsetForLeaderEpoch after a leader change, with
    /// `auto.offset.reset=none` (with a reset policy the consumer repositions itself and sends
    /// [`ConsumerEvent::LogTruncated`](crate::consumer::ConsumerEvent::LogTruncated)). Java's
    /// `LogTruncationException`. Seek the partition to go on.
    #[error("log truncation detected")]
    LogTruncation {
        /// The first offset known to diverge from what the consumer read (the end offset the
        /// leader gave for the epoch of the last record read), if the leader knew that epoch.
        divergent_offset: Option<i64>,
    },
}

macro_rules! kafka_codes {
    ($( ($name:ident, $code:expr, $kname:expr, $retriable:expr, $msg:expr), )*) => {
        /// Every error code of the Kafka protocol, named as Kafka names it.
        ///
        /// Codes this version of rekafka does not know are kept as [`KafkaCode::Unknown`].
        /// The list and the retriable flags follow Apache Kafka's `Errors` table (4.1); the
        /// one deliberate difference is that `CONCURRENT_TRANSACTIONS` is retriable, as the
        /// transaction manager of every client treats it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum KafkaCode {
            $(
                #[doc = $msg]
                $name,
            )*
            /// A code this version of rekafka does not know.
            Unknown(i16),
        }

        impl KafkaCode {
            /// The code for a numeric value; `None` for 0 (no error).
            pub const fn from_i16(code: i16) -> Option<KafkaCode> {
                if code == 0 {
                    return None;
                }
                Some(Self::from_code(code))
            }

            /// The code for a non-zero numeric value. `0` is mapped to `Unknown(0)`; use
            /// [`from_i16`](Self::from_i16) to treat 0 as success.
            pub const fn from_code(code: i16) -> KafkaCode {
                match code {
                    $( $code => KafkaCode::$name, )*
                    other => KafkaCode::Unknown(other),
                }
            }

            /// The numeric code on the wire.
            pub const fn code(self) -> i16 {
                match self {
                    $( KafkaCode::$name => $code, )*
                    KafkaCode::Unknown(c) => c,
                }
            }

            /// Kafka's name for the code, e.g. `NOT_LEADER_OR_FOLLOWER`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( KafkaCode::$name => $kname, )*
                    KafkaCode::Unknown(_) => "UNKNOWN",
                }
            }

            /// Kafka's description of the code.
            pub const fn description(self) -> &'static str {
                match self {
                    $( KafkaCode::$name => $msg, )*
                    KafkaCode::Unknown(_) => "An error code this client does not know.",
                }
            }

            /// Whether Kafka marks the error retriable (its exception is a `RetriableException`).
            pub const fn is_retriable(self) -> bool {
                match self {
                    $( KafkaCode::$name => $retriable, )*
                    KafkaCode::Unknown(_) => false,
                }
            }
        }
    };
}

kafka_codes! {
    (UnknownServerError, -1, "UNKNOWN_SERVER_ERROR", false, "The server experienced an unexpected error when processing the request."),
    (OffsetOutOfRange, 1, "OFFSET_OUT_OF_RANGE", false, "The requested offset is not within the range of offsets maintained by the server."),
    (CorruptMessage, 2, "CORRUPT_MESSAGE", true, "This message has failed its CRC checksum, exceeds the valid size, has a null key for a compacted topic, or is otherwise corrupt."),
    (UnknownTopicOrPartition, 3, "UNKNOWN_TOPIC_OR_PARTITION", true, "This server does not host this topic-partition."),
    (InvalidFetchSize, 4, "INVALID_FETCH_SIZE", false, "The requested fetch size is invalid."),
    (LeaderNotAvailable, 5, "LEADER_NOT_AVAILABLE", true, "There is no leader for this topic-partition as we are in the middle of a leadership election."),
    (NotLeaderOrFollower, 6, "NOT_LEADER_OR_FOLLOWER", true, "For requests intended only for the leader, this error indicates that the broker is not the current leader. For requests intended for any replica, this error indicates that the broker is not a replica of the topic partition."),
    (RequestTimedOut, 7, "REQUEST_TIMED_OUT", true, "The request timed out."),
    (BrokerNotAvailable, 8, "BROKER_NOT_AVAILABLE", false, "The broker is not available."),
    (ReplicaNotAvailable, 9, "REPLICA_NOT_AVAILABLE", true, "The replica is not available for the requested topic-partition. Produce/Fetch requests and other requests intended only for the leader or follower return NOT_LEADER_OR_FOLLOWER if the broker is not a replica of the topic-partition."),
    (MessageTooLarge, 10, "MESSAGE_TOO_LARGE", false, "The request included a message larger than the max message size the server will accept."),
    (StaleControllerEpoch, 11, "STALE_CONTROLLER_EPOCH", false, "The controller moved to another broker."),
    (OffsetMetadataTooLarge, 12, "OFFSET_METADATA_TOO_LARGE", false, "The metadata field of the offset request was too large."),
    (NetworkException, 13, "NETWORK_EXCEPTION", true, "The server disconnected before a response was received."),
    (CoordinatorLoadInProgress, 14, "COORDINATOR_LOAD_IN_PROGRESS", true, "The coordinator is loading and hence can't process requests."),
    (CoordinatorNotAvailable, 15, "COORDINATOR_NOT_AVAILABLE", true, "The coordinator is not available."),
    (NotCoordinator, 16, "NOT_COORDINATOR", true, "This is not the correct coordinator."),
    (InvalidTopicException, 17, "INVALID_TOPIC_EXCEPTION", false, "The request attempted to perform an operation on an invalid topic."),
    (RecordListTooLarge, 18, "RECORD_LIST_TOO_LARGE", false, "The request included message batch larger than the configured segment size on the server."),
    (NotEnoughReplicas, 19, "NOT_ENOUGH_REPLICAS", true, "Messages are rejected since there are fewer in-sync replicas than required."),
    (NotEnoughReplicasAfterAppend, 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", true, "Messages are written to the log, but to fewer in-sync replicas than required."),
    (InvalidRequiredAcks, 21, "INVALID_REQUIRED_ACKS", false, "Produce request specified an invalid value for required acks."),
    (IllegalGeneration, 22, "ILLEGAL_GENERATION", false, "Specified group generation id is not valid."),
    (InconsistentGroupProtocol, 23, "INCONSISTENT_GROUP_PROTOCOL", false, "The group member's supported protocols are incompatible with those of existing members or first group member tried to join with empty protocol type or empty protocol list."),
    (InvalidGroupId, 24, "INVALID_GROUP_ID", false, "The configured groupId is invalid."),
    (UnknownMemberId, 25, "UNKNOWN_MEMBER_ID", false, "The coordinator is not aware of this member."),
    (InvalidSessionTimeout, 26, "INVALID_SESSION_TIMEOUT", false, "The session timeout is not within the range allowed by the broker (as configured by group.min.session.timeout.ms and group.max.session.timeout.ms)."),
    (RebalanceInProgress, 27, "REBALANCE_IN_PROGRESS", false, "The group is rebalancing, so a rejoin is needed."),
    (InvalidCommitOffsetSize, 28, "INVALID_COMMIT_OFFSET_SIZE", false, "The committing offset data size is not valid."),
    (TopicAuthorizationFailed, 29, "TOPIC_AUTHORIZATION_FAILED", false, "Topic authorization failed."),
    (GroupAuthorizationFailed, 30, "GROUP_AUTHORIZATION_FAILED", false, "Group authorization failed."),
    (ClusterAuthorizationFailed, 31, "CLUSTER_AUTHORIZATION_FAILED", false, "Cluster authorization failed."),
    (InvalidTimestamp, 32, "INVALID_TIMESTAMP", false, "The timestamp of the message is out of acceptable range."),
    (UnsupportedSaslMechanism, 33, "UNSUPPORTED_SASL_MECHANISM", false, "The broker does not support the requested SASL mechanism."),
    (IllegalSaslState, 34, "ILLEGAL_SASL_STATE", false, "Request is not valid given the current SASL state."),
    (UnsupportedVersion, 35, "UNSUPPORTED_VERSION", false, "The version of API is not supported."),
    (TopicAlreadyExists, 36, "TOPIC_ALREADY_EXISTS", false, "Topic with this name already exists."),
    (InvalidPartitions, 37, "INVALID_PARTITIONS", false, "Number of partitions is below 1."),
    (InvalidReplicationFactor, 38, "INVALID_REPLICATION_FACTOR", false, "Replication factor is below 1 or larger than the number of available brokers."),
    (InvalidReplicaAssignment, 39, "INVALID_REPLICA_ASSIGNMENT", false, "Replica assignment is invalid."),
    (InvalidConfig, 40, "INVALID_CONFIG", false, "Configuration is invalid."),
    (NotController, 41, "NOT_CONTROLLER", true, "This is not the correct controller for this cluster."),
    (InvalidRequest, 42, "INVALID_REQUEST", false, "This most likely occurs because of a request being malformed by the client library or the message was sent to an incompatible broker. See the broker logs for more details."),
    (UnsupportedForMessageFormat, 43, "UNSUPPORTED_FOR_MESSAGE_FORMAT", false, "The message format version on the broker does not support the request."),
    (PolicyViolation, 44, "POLICY_VIOLATION", false, "Request parameters do not satisfy the configured policy."),
    (OutOfOrderSequenceNumber, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER", false, "The broker received an out of order sequence number."),
    (DuplicateSequenceNumber, 46, "DUPLICATE_SEQUENCE_NUMBER", false, "The broker received a duplicate sequence number."),
    (InvalidProducerEpoch, 47, "INVALID_PRODUCER_EPOCH", false, "Producer attempted to produce with an old epoch."),
    (InvalidTxnState, 48, "INVALID_TXN_STATE", false, "The producer attempted a transactional operation in an invalid state."),
    (InvalidProducerIdMapping, 49, "INVALID_PRODUCER_ID_MAPPING", false, "The producer attempted to use a producer id which is not currently assigned to its transactional id."),
    (InvalidTransactionTimeout, 50, "INVALID_TRANSACTION_TIMEOUT", false, "The transaction timeout is larger than the maximum value allowed by the broker (as configured by transaction.max.timeout.ms)."),
    (ConcurrentTransactions, 51, "CONCURRENT_TRANSACTIONS", true, "The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing."),
    (TransactionCoordinatorFenced, 52, "TRANSACTION_COORDINATOR_FENCED", false, "Indicates that the transaction coordinator sending a WriteTxnMarker is no longer the current coordinator for a given producer."),
    (TransactionalIdAuthorizationFailed, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", false, "Transactional Id authorization failed."),
    (SecurityDisabled, 54, "SECURITY_DISABLED", false, "Security features are disabled."),
    (OperationNotAttempted, 55, "OPERATION_NOT_ATTEMPTED", false, "The broker did not attempt to execute this operation. This may happen for batched RPCs where some operations in the batch failed, causing the broker to respond without trying the rest."),
    (KafkaStorageError, 56, "KAFKA_STORAGE_ERROR", true, "Disk error when trying to access log file on the disk."),
    (LogDirNotFound, 57, "LOG_DIR_NOT_FOUND", false, "The user-specified log directory is not found in the broker config."),
    (SaslAuthenticationFailed, 58, "SASL_AUTHENTICATION_FAILED", false, "SASL Authentication failed."),
    (UnknownProducerId, 59, "UNKNOWN_PRODUCER_ID", false, "This exception is raised by the broker if it could not locate the producer metadata associated with the producerId in question. This could happen if, for instance, the producer's records were deleted because their retention time had elapsed. Once the last records of the producerId are removed, the producer's metadata is removed from the broker, and future appends by the producer will return this exception."),
    (ReassignmentInProgress, 60, "REASSIGNMENT_IN_PROGRESS", false, "A partition reassignment is in progress."),
    (DelegationTokenAuthDisabled, 61, "DELEGATION_TOKEN_AUTH_DISABLED", false, "Delegation Token feature is not enabled."),
    (DelegationTokenNotFound, 62, "DELEGATION_TOKEN_NOT_FOUND", false, "Delegation Token is not found on server."),
    (DelegationTokenOwnerMismatch, 63, "DELEGATION_TOKEN_OWNER_MISMATCH", false, "Specified Principal is not valid Owner/Renewer."),
    (DelegationTokenRequestNotAllowed, 64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", false, "Delegation Token requests are not allowed on PLAINTEXT/1-way SSL channels and on delegation token authenticated channels."),
    (DelegationTokenAuthorizationFailed, 65, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", false, "Delegation Token authorization failed."),
    (DelegationTokenExpired, 66, "DELEGATION_TOKEN_EXPIRED", false, "Delegation Token is expired."),
    (InvalidPrincipalType, 67, "INVALID_PRINCIPAL_TYPE", false, "Supplied principalType is not supported."),
    (NonEmptyGroup, 68, "NON_EMPTY_GROUP", false, "The group is not empty."),
    (GroupIdNotFound, 69, "GROUP_ID_NOT_FOUND", false, "The group id does not exist."),
    (FetchSessionIdNotFound, 70, "FETCH_SESSION_ID_NOT_FOUND", true, "The fetch session ID was not found."),
    (InvalidFetchSessionEpoch, 71, "INVALID_FETCH_SESSION_EPOCH", true, "The fetch session epoch is invalid."),
    (ListenerNotFound, 72, "LISTENER_NOT_FOUND", true, "There is no listener on the leader broker that matches the listener on which metadata request was processed."),
    (TopicDeletionDisabled, 73, "TOPIC_DELETION_DISABLED", false, "Topic deletion is disabled."),
    (FencedLeaderEpoch, 74, "FENCED_LEADER_EPOCH", true, "The leader epoch in the request is older than the epoch on the broker."),
    (UnknownLeaderEpoch, 75, "UNKNOWN_LEADER_EPOCH", true, "The leader epoch in the request is newer than the epoch on the broker."),
    (UnsupportedCompressionType, 76, "UNSUPPORTED_COMPRESSION_TYPE", false, "The requesting client does not support the compression type of given partition."),
    (StaleBrokerEpoch, 77, "STALE_BROKER_EPOCH", false, "Broker epoch has changed."),
    (OffsetNotAvailable, 78, "OFFSET_NOT_AVAILABLE", true, "The leader high watermark has not caught up from a recent leader election so the offsets cannot be guaranteed to be monotonically increasing."),
    (MemberIdRequired, 79, "MEMBER_ID_REQUIRED", false, "The group member needs to have a valid member id before actually entering a consumer group."),
    (PreferredLeaderNotAvailable, 80, "PREFERRED_LEADER_NOT_AVAILABLE", true, "The preferred leader was not available."),
    (GroupMaxSizeReached, 81, "GROUP_MAX_SIZE_REACHED", false, "The consumer group has reached its max size."),
    (FencedInstanceId, 82, "FENCED_INSTANCE_ID", false, "The broker rejected this static consumer since another consumer with the same group.instance.id has registered with a different member.id."),
    (EligibleLeadersNotAvailable, 83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", true, "Eligible topic partition leaders are not available."),
    (ElectionNotNeeded, 84, "ELECTION_NOT_NEEDED", true, "Leader election not needed for topic partition."),
    (NoReassignmentInProgress, 85, "NO_REASSIGNMENT_IN_PROGRESS", false, "No partition reassignment is in progress."),
    (GroupSubscribedToTopic, 86, "GROUP_SUBSCRIBED_TO_TOPIC", false, "Deleting offsets of a topic is forbidden while the consumer group is actively subscribed to it."),
    (InvalidRecord, 87, "INVALID_RECORD", false, "This record has failed the validation on broker and hence will be rejected."),
    (UnstableOffsetCommit, 88, "UNSTABLE_OFFSET_COMMIT", true, "There are unstable offsets that need to be cleared."),
    (ThrottlingQuotaExceeded, 89, "THROTTLING_QUOTA_EXCEEDED", true, "The throttling quota has been exceeded."),
    (ProducerFenced, 90, "PRODUCER_FENCED", false, "There is a newer producer with the same transactionalId which fences the current one."),
    (ResourceNotFound, 91, "RESOURCE_NOT_FOUND", false, "A request illegally referred to a resource that does not exist."),
    (DuplicateResource, 92, "DUPLICATE_RESOURCE", false, "A request illegally referred to the same resource twice."),
    (UnacceptableCredential, 93, "UNACCEPTABLE_CREDENTIAL", false, "Requested credential would not meet criteria for acceptability."),
    (InconsistentVoterSet, 94, "INCONSISTENT_VOTER_SET", false, "Indicates that the either the sender or recipient of a voter-only request is not one of the expected voters"),
    (InvalidUpdateVersion, 95, "INVALID_UPDATE_VERSION", false, "The given update version was invalid."),
    (FeatureUpdateFailed, 96, "FEATURE_UPDATE_FAILED", false, "Unable to update finalized features due to an unexpected server error."),
    (PrincipalDeserializationFailure, 97, "PRINCIPAL_DESERIALIZATION_FAILURE", false, "Request principal deserialization failed during forwarding. This indicates an internal error on the broker cluster security setup."),
    (SnapshotNotFound, 98, "SNAPSHOT_NOT_FOUND", false, "Requested snapshot was not found"),
    (PositionOutOfRange, 99, "POSITION_OUT_OF_RANGE", false, "Requested position is not greater than or equal to zero, and less than the size of the snapshot."),
    (UnknownTopicId, 100, "UNKNOWN_TOPIC_ID", true, "This server does not host this topic ID."),
    (DuplicateBrokerRegistration, 101, "DUPLICATE_BROKER_REGISTRATION", false, "This broker ID is already in use."),
    (BrokerIdNotRegistered, 102, "BROKER_ID_NOT_REGISTERED", false, "The given broker ID was not registered."),
    (InconsistentTopicId, 103, "INCONSISTENT_TOPIC_ID", true, "The log's topic ID did not match the topic ID in the request"),
    (InconsistentClusterId, 104, "INCONSISTENT_CLUSTER_ID", false, "The clusterId in the request does not match that found on the server"),
    (TransactionalIdNotFound, 105, "TRANSACTIONAL_ID_NOT_FOUND", false, "The transactionalId could not be found"),
    (FetchSessionTopicIdError, 106, "FETCH_SESSION_TOPIC_ID_ERROR", true, "The fetch session encountered inconsistent topic ID usage"),
    (IneligibleReplica, 107, "INELIGIBLE_REPLICA", false, "The new ISR contains at least one ineligible replica."),
    (NewLeaderElected, 108, "NEW_LEADER_ELECTED", false, "The AlterPartition request successfully updated the partition state but the leader has changed."),
    (OffsetMovedToTieredStorage, 109, "OFFSET_MOVED_TO_TIERED_STORAGE", false, "The requested offset is moved to tiered storage."),
    (FencedMemberEpoch, 110, "FENCED_MEMBER_EPOCH", false, "The member epoch is fenced by the group coordinator. The member must abandon all its partitions and rejoin."),
    (UnreleasedInstanceId, 111, "UNRELEASED_INSTANCE_ID", false, "The instance ID is still used by another member in the consumer group. That member must leave first."),
    (UnsupportedAssignor, 112, "UNSUPPORTED_ASSIGNOR", false, "The assignor or its version range is not supported by the consumer group."),
    (StaleMemberEpoch, 113, "STALE_MEMBER_EPOCH", false, "The member epoch is stale. The member must retry after receiving its updated member epoch via the ConsumerGroupHeartbeat API."),
    (MismatchedEndpointType, 114, "MISMATCHED_ENDPOINT_TYPE", false, "The request was sent to an endpoint of the wrong type."),
    (UnsupportedEndpointType, 115, "UNSUPPORTED_ENDPOINT_TYPE", false, "This endpoint type is not supported yet."),
    (UnknownControllerId, 116, "UNKNOWN_CONTROLLER_ID", false, "This controller ID is not known."),
    (UnknownSubscriptionId, 117, "UNKNOWN_SUBSCRIPTION_ID", false, "Client sent a push telemetry request with an invalid or outdated subscription ID."),
    (TelemetryTooLarge, 118, "TELEMETRY_TOO_LARGE", false, "Client sent a push telemetry request larger than the maximum size the broker will accept."),
    (InvalidRegistration, 119, "INVALID_REGISTRATION", false, "The controller has considered the broker registration to be invalid."),
    (TransactionAbortable, 120, "TRANSACTION_ABORTABLE", false, "The server encountered an error with the transaction. The client can abort the transaction to continue using this transactional ID."),
    (InvalidRecordState, 121, "INVALID_RECORD_STATE", false, "The record state is invalid. The acknowledgement of delivery could not be completed."),
    (ShareSessionNotFound, 122, "SHARE_SESSION_NOT_FOUND", true, "The share session was not found."),
    (InvalidShareSessionEpoch, 123, "INVALID_SHARE_SESSION_EPOCH", true, "The share session epoch is invalid."),
    (FencedStateEpoch, 124, "FENCED_STATE_EPOCH", false, "The share coordinator rejected the request because the share-group state epoch did not match."),
    (InvalidVoterKey, 125, "INVALID_VOTER_KEY", false, "The voter key doesn't match the receiving replica's key."),
    (DuplicateVoter, 126, "DUPLICATE_VOTER", false, "The voter is already part of the set of voters."),
    (VoterNotFound, 127, "VOTER_NOT_FOUND", false, "The voter is not part of the set of voters."),
    (InvalidRegularExpression, 128, "INVALID_REGULAR_EXPRESSION", false, "The regular expression is not valid."),
    (RebootstrapRequired, 129, "REBOOTSTRAP_REQUIRED", false, "Client metadata is stale, client should rebootstrap to obtain new metadata."),
    (StreamsInvalidTopology, 130, "STREAMS_INVALID_TOPOLOGY", false, "The supplied topology is invalid."),
    (StreamsInvalidTopologyEpoch, 131, "STREAMS_INVALID_TOPOLOGY_EPOCH", false, "The supplied topology epoch is invalid."),
    (StreamsTopologyFenced, 132, "STREAMS_TOPOLOGY_FENCED", false, "The supplied topology epoch is outdated."),
    (ShareSessionLimitReached, 133, "SHARE_SESSION_LIMIT_REACHED", true, "The limit of share sessions has been reached."),
}

impl KafkaCode {
    /// Whether the error means the client's metadata is stale and must be refreshed before the
    /// request is retried (leader moved, topic unknown, epochs out of date).
    pub const fn is_metadata_error(self) -> bool {
        matches!(
            self,
            KafkaCode::UnknownTopicOrPartition
                | KafkaCode::LeaderNotAvailable
                | KafkaCode::NotLeaderOrFollower
                | KafkaCode::ReplicaNotAvailable
                | KafkaCode::FencedLeaderEpoch
                | KafkaCode::UnknownLeaderEpoch
                | KafkaCode::ListenerNotFound
                | KafkaCode::UnknownTopicId
                | KafkaCode::InconsistentTopicId
                | KafkaCode::KafkaStorageError
                | KafkaCode::PreferredLeaderNotAvailable
                | KafkaCode::EligibleLeadersNotAvailable
                | KafkaCode::OffsetNotAvailable
        )
    }

    /// Whether the error means a group or transaction coordinator moved or is loading, so the
    /// coordinator must be looked up again.
    pub const fn is_coordinator_error(self) -> bool {
        matches!(
            self,
            KafkaCode::NotCoordinator
                | KafkaCode::CoordinatorNotAvailable
                | KafkaCode::CoordinatorLoadInProgress
        )
    }
}

impl fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaCode::Unknown(c) => write!(f, "UNKNOWN({c})"),
            other => write!(f, "{} ({})", other.name(), other.code()),
        }
    }
}

impl Error {
    /// A new error of the given kind.
    pub fn new(kind: ErrorKind) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: None,
                context: Context::default(),
                source: None,
            }),
        }
    }

    /// A new error of the given kind with a message.
    pub fn with_message(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind).message(message)
    }

    /// An error for a Kafka error code returned by a broker.
    pub fn broker(code: KafkaCode) -> Error {
        Error::new(ErrorKind::Broker(code))
    }

    /// An error for malformed input.
    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::with_message(ErrorKind::Corrupt, message)
    }

    /// A deserializer's failure ([`ErrorKind::Deserialization`]); the message says what is
    /// wrong with the bytes.
    ///
    /// ```
    /// let e = rekafka::Error::deserialization("not valid UTF-8");
    /// assert_eq!(e.to_string(), "deserialization failed: not valid UTF-8");
    /// ```
    pub fn deserialization(message: impl Into<String>) -> Error {
        Error::with_message(ErrorKind::Deserialization, message)
    }

    /// An error for an invalid setting; the message should name the setting.
    pub fn config(message: impl Into<String>) -> Error {
        Error::with_message(ErrorKind::Config, message)
    }

    /// An error for a failed compression or decompression.
    pub fn compression(message: impl Into<String>) -> Error {
        Error::with_message(ErrorKind::Compression, message)
    }

    /// Sets (replaces) the message.
    pub fn message(mut self, message: impl Into<String>) -> Error {
        self.inner.message = Some(message.into());
        self
    }

    /// Attaches an underlying cause (what [`std::error::Error::source`] then returns).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// Attaches an underlying cause given as a boxed error.
    pub fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Error {
        self.inner.source = Some(Arc::from(source));
        self
    }

    /// Records the API the error concerns (kept if already set).
    pub(crate) fn api(mut self, api: ApiKey) -> Error {
        self.inner.context.api.get_or_insert(Api::of(api));
        self
    }

    /// Records the broker the error concerns (kept if already set).
    pub(crate) fn on_broker(mut self, broker: i32) -> Error {
        self.inner.context.broker.get_or_insert(broker);
        self
    }

    /// Records the topic and partition the error concerns (kept if already set).
    pub(crate) fn on_partition(mut self, topic: impl Into<String>, partition: i32) -> Error {
        if self.inner.context.topic.is_none() {
            self.inner.context.topic = Some(topic.into());
        }
        self.inner.context.partition.get_or_insert(partition);
        self
    }

    /// Records the topic the error concerns (kept if already set).
    pub fn on_topic(mut self, topic: impl Into<String>) -> Error {
        if self.inner.context.topic.is_none() {
            self.inner.context.topic = Some(topic.into());
        }
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The Kafka error code, if the broker answered with one.
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        match self.inner.kind {
            ErrorKind::Broker(code) => Some(code),
            _ => None,
        }
    }

    /// Where the error happened, as far as known.
    pub fn context(&self) -> &Context {
        &self.inner.context
    }

    /// The message, if one was given.
    pub fn message_text(&self) -> Option<&str> {
        self.inner.message.as_deref()
    }

    /// Whether the same operation may succeed if tried again (KIP-1050 "retriable").
    ///
    /// True for Kafka codes Kafka marks retriable, for transport failures (I/O, a dropped
    /// connection) and for timeouts.
    pub fn is_retriable(&self) -> bool {
        if self.is_fatal() {
            return false;
        }
        match &self.inner.kind {
            ErrorKind::Broker(code) => code.is_retriable(),
            ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout => true,
            _ => false,
        }
    }

    /// Whether the client object the call was made on can no longer be used (KIP-1050 "fatal"
    /// and "application-recoverable": close it and create a new one).
    ///
    /// True for a fenced producer, authentication and cluster or transactional-id authorization
    /// failures, an API version the broker cannot serve, invalid configuration, and
    /// `INVALID_PRODUCER_EPOCH` answered to a transaction-control request.
    pub fn is_fatal(&self) -> bool {
        match &self.inner.kind {
            ErrorKind::Broker(code) => match code {
                KafkaCode::ProducerFenced
                | KafkaCode::TransactionalIdAuthorizationFailed
                | KafkaCode::ClusterAuthorizationFailed
                | KafkaCode::SaslAuthenticationFailed
                | KafkaCode::UnsupportedSaslMechanism
                | KafkaCode::IllegalSaslState
                | KafkaCode::UnsupportedVersion
                | KafkaCode::UnsupportedForMessageFormat
                | KafkaCode::FencedInstanceId
                | KafkaCode::InvalidTxnState => true,
                KafkaCode::InvalidProducerEpoch => matches!(
                    self.inner.context.api.and_then(Api::known),
                    Some(
                        ApiKey::EndTxn
                            | ApiKey::AddPartitionsToTxn
                            | ApiKey::AddOffsetsToTxn
                            | ApiKey::TxnOffsetCommit
                            | ApiKey::InitProducerId
                    )
                ),
                _ => false,
            },
            ErrorKind::UnsupportedVersion { .. }
            | ErrorKind::Config
            | ErrorKind::Authentication
            | ErrorKind::Fatal => true,
            _ => false,
        }
    }

    /// Whether, inside a transaction, aborting the transaction leaves the producer usable
    /// (KIP-1050 "abortable").
    ///
    /// True for `TRANSACTION_ABORTABLE` and for the per-record and per-topic failures a
    /// transaction cannot commit past (a rejected record, a topic authorization failure, a lost
    /// producer id or sequence, a local delivery timeout).
    pub fn is_abortable(&self) -> bool {
        if self.is_fatal() {
            return false;
        }
        match &self.inner.kind {
            ErrorKind::Broker(code) => {
                matches!(
                    code,
                    KafkaCode::TransactionAbortable
                        | KafkaCode::TopicAuthorizationFailed
                        | KafkaCode::GroupAuthorizationFailed
                        | KafkaCode::MessageTooLarge
                        | KafkaCode::RecordListTooLarge
                        | KafkaCode::InvalidRecord
                        | KafkaCode::InvalidTimestamp
                        | KafkaCode::CorruptMessage
                        | KafkaCode::UnknownProducerId
                        | KafkaCode::OutOfOrderSequenceNumber
                        | KafkaCode::InvalidProducerEpoch
                        | KafkaCode::InvalidTopicException
                        | KafkaCode::PolicyViolation
                ) && !code.is_retriable()
            }
            ErrorKind::Abortable => true,
            ErrorKind::Timeout => false,
            _ => false,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(m) = &self.inner.message {
            d.field("message", m);
        }
        if self.inner.context != Context::default() {
            d.field("context", &self.inner.context);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.kind)?;
        if let Some(m) = &self.inner.message {
            write!(f, ": {m}")?;
        }
        let c = &self.inner.context;
        if let Some(api) = c.api {
            write!(f, " [api {api:?}]")?;
        }
        if let Some(b) = c.broker {
            write!(f, " [broker {b}]")?;
        }
        match (&c.topic, c.partition) {
            (Some(t), Some(p)) => write!(f, " [{t}-{p}]")?,
            (Some(t), None) => write!(f, " [{t}]")?,
            _ => {}
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

impl From<KafkaCode> for Error {
    fn from(code: KafkaCode) -> Error {
        Error::broker(code)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Disconnected,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            k => ErrorKind::Io(k),
        };
        Error::new(kind).with_source(e)
    }
}

/// Wraps an error of the `kafka-protocol` crate (an `anyhow::Error`): a decode failure becomes
/// [`ErrorKind::Corrupt`].
pub(crate) fn from_decode(e: anyhow::Error) -> Error {
    Error::corrupt(format!("{e:#}"))
}

/// Wraps an encode failure of the `kafka-protocol` crate into [`ErrorKind::Encode`].
pub(crate) fn from_encode(e: anyhow::Error) -> Error {
    Error::with_message(ErrorKind::Encode, format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in -1i16..=140 {
            if c == 0 {
                assert!(KafkaCode::from_i16(0).is_none());
                continue;
            }
            let k = KafkaCode::from_code(c);
            assert_eq!(k.code(), c);
        }
        assert_eq!(KafkaCode::from_code(6).name(), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(KafkaCode::from_code(17).name(), "INVALID_TOPIC_EXCEPTION");
        assert_eq!(KafkaCode::from_code(1000), KafkaCode::Unknown(1000));
    }

    #[test]
    fn taxonomy_is_exclusive() {
        for c in -1i16..=140 {
            for api in [None, Some(ApiKey::Produce), Some(ApiKey::EndTxn)] {
                let mut e = Error::broker(KafkaCode::from_code(c));
                if let Some(api) = api {
                    e = e.api(api);
                }
                let n = [e.is_retriable(), e.is_abortable(), e.is_fatal()]
                    .iter()
                    .filter(|b| **b)
                    .count();
                assert!(n <= 1, "{e}: more than one category");
            }
        }
    }

    #[test]
    fn kip_1050_examples() {
        assert!(Error::broker(KafkaCode::NotLeaderOrFollower).is_retriable());
        assert!(Error::broker(KafkaCode::ConcurrentTransactions).is_retriable());
        assert!(Error::broker(KafkaCode::ProducerFenced).is_fatal());
        assert!(Error::broker(KafkaCode::TransactionAbortable).is_abortable());
        let produce_epoch = Error::broker(KafkaCode::InvalidProducerEpoch).api(ApiKey::Produce);
        assert!(produce_epoch.is_abortable() && !produce_epoch.is_fatal());
        let endtxn_epoch = Error::broker(KafkaCode::InvalidProducerEpoch).api(ApiKey::EndTxn);
        assert!(endtxn_epoch.is_fatal());
        assert!(Error::new(ErrorKind::Disconnected).is_retriable());
        assert!(Error::config("linger: negative").is_fatal());
        assert!(!Error::corrupt("x").is_retriable());
    }

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn display_has_context() {
        let e = Error::broker(KafkaCode::NotLeaderOrFollower)
            .api(ApiKey::Produce)
            .on_broker(3)
            .on_partition("t", 2);
        let s = e.to_string();
        assert!(s.contains("NOT_LEADER_OR_FOLLOWER (6)"), "{s}");
        assert!(s.contains("[broker 3]") && s.contains("[t-2]"), "{s}");
    }
}
