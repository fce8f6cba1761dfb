//! Error handling on top of the consumer and producer: the vocabulary of Spring for Apache
//! Kafka's listener containers.
//!
//! This layer uses only the public API of the layers below it. So far it holds the parts that do
//! not depend on a running consumer:
//!
//! * [back-off policies](BackOff): [`FixedBackOff`], [`ExponentialBackOff`] (also with a retry
//!   limit, Spring's `ExponentialBackOffWithMaxRetries`);
//! * [error classification](Classifier): which handler errors are retried, walking the error's
//!   `source()` chain;
//! * the [failed-record tracker](FailedRecordTracker): delivery attempts per partition, the
//!   decision between retry and recovery, a cap on recovery failures, and a [`RetryState`] that
//!   travels in commit metadata so attempt counts survive rebalances and restarts;
//! * [dead-letter headers](dead_letter) exactly as Spring writes them, and reading them back;
//! * the [error handlers](CommonErrorHandler): the one decision about every failure (a
//!   [`Disposition`]), with Spring's handlers ([`DefaultErrorHandler`], [`LoggingErrorHandler`],
//!   [`ContainerStoppingErrorHandler`], [`DelegatingErrorHandler`]);
//! * the [dead-letter publisher](DeadLetterPublisher) (Spring's
//!   `DeadLetterPublishingRecoverer`) and [republishing to the tail](RepublishToTail) of the
//!   record's own topic before dead-lettering.
//! * [non-blocking retries](retry_topic) through retry topics and a dead-letter topic (Spring's
//!   `@RetryableTopic`), run by one handle;
//! * the [share container](ShareContainer): the listener container over a share group
//!   (KIP-932), acknowledging each record by its outcome;
//! * [typed records](TypedConsumer): a container over keys and values made by deserializers
//!   (Spring's `ErrorHandlingDeserializer`).

mod adapter;
mod backoff;
mod classify;
mod consumer;
mod container;
pub mod dead_letter;
pub mod dead_letter_publisher;
mod error_handler;
mod events;
mod fetch_failure;
mod handler;
mod panic_guard;
pub mod republish;
pub mod retry_topic;
mod share;
mod tracker;
mod transactional;
mod typed;

pub use adapter::{ListenerConsumerRecord, deserialization_check};
pub use backoff::{
    BackOff, BackOffExecution, BackOffFn, ExponentialBackOff, FixedBackOff, Retries,
};
pub use classify::{
    Classifier, DeserializationFailed, HandlerError, RecordPart, error_class, register_error_type,
    typed_error,
};
pub use consumer::{CommittedOffsets, ContainerConsumer, ListenerRecord, OffsetToCommit};
pub use container::{
    AckMode, Acknowledgment, ContainerBuilder, ContainerEvent, ContainerHandle, ListenerContainer,
    OnFenced, Seeks, StopReason, StopTimedOut,
};
pub use dead_letter::{
    DeadLetterHeaders, DeadLetterInfo, OriginalHeaders, PreviousExceptionHeaders, Provenance,
    error_chain,
};
pub use dead_letter_publisher::{
    DEFAULT_BATCH_SIZE, DeadLetterError, DeadLetterPublisher, DeadLetterPublisherBuilder,
    Destination, DltNaming, MissingDestination, PartitionVerification, PublishWait,
    PublisherConnections, SendTimeout, default_producer_config,
};
pub use error_handler::{
    BatchFailure, BatchRetry, CommonErrorHandler, ContainerStoppingErrorHandler,
    DelegatingErrorHandler, Disposition, LoggingErrorHandler, OtherFailure, RecordFailure,
    RecoveryPolicy,
};
pub use events::{Events, HaltedPartition};
pub use fetch_failure::PartitionFailurePolicy;
pub use handler::{
    BatchListenerFailed, BoxFuture, DefaultErrorHandler, DeliveryAttemptHeader, FailedPosition,
    ListenerFailure, LoggingRecoverer, Recoverer, RecovererFn, Recovery, RecoveryHalt,
    RetryListener, SharedError,
};
pub use republish::{REPUBLISH_COUNT_HEADER, RepublishToTail, republish_count};
pub use share::{
    DEFAULT_DELIVERY_COUNT_LIMIT, DEFAULT_SHARE_POLL_TIMEOUT, ShareContainer,
    ShareContainerBuilder, ShareContainerEvent, ShareContainerHandle, ShareListenerRecord,
};
pub use tracker::{
    Decision, FailedRecordTracker, PartitionKey, RecoveryFailureDecision, RetryState,
};
pub use transactional::TransactionalDeadLetters;
pub use typed::{TypedConsumer, TypedRecord};

/// The delivery-attempt header Spring writes (`kafka_deliveryAttempt`): a 4-byte big-endian
/// integer counting deliveries from 1.
pub const DELIVERY_ATTEMPT_HEADER: &str = "kafka_deliveryAttempt";

/// Encodes a delivery attempt as the `kafka_deliveryAttempt` header value.
pub fn delivery_attempt_header_value(attempt: u32) -> [u8; 4] {
    i32::try_from(attempt).unwrap_or(i32::MAX).to_be_bytes()
}
