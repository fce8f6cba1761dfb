//! The one retry decision: what to do after a request failed.

use crate::error::{Error, ErrorKind, KafkaCode};

/// What a caller should do after a request failed, as decided by [`recovery_for`].
///
/// Callers still own the budget (deadline, number of attempts) and the back-off between
/// attempts; this only says *how* to retry, or that retrying is pointless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Recovery {
    /// Send the same request to the same broker again (after the back-off).
    RetrySame,
    /// The client's metadata is stale: refresh it (for the topic concerned), look the leader up
    /// again and resend to whichever broker leads now.
    RefreshMetadata,
    /// The group or transaction coordinator moved or is not ready: invalidate the cached
    /// coordinator, look it up again and resend to it.
    RefreshCoordinator,
    /// The broker could not be reached or did not answer: send to another broker if any broker
    /// can serve the request; a request that must go to one broker (the leader, the
    /// coordinator) refreshes the metadata or coordinator first and resends to whoever it
    /// names, which may be the same broker once it is back.
    SwitchBroker,
    /// Retrying cannot help; hand the error to the application.
    GiveUp,
}

/// The one retry decision of rekafka: how to recover from `error`.
///
/// ```
/// use rekafka::cluster::{Recovery, recovery_for};
/// use rekafka::{Error, KafkaCode};
///
/// let e = Error::broker(KafkaCode::NotLeaderOrFollower);
/// assert_eq!(recovery_for(&e), Recovery::RefreshMetadata);
/// ```
pub fn recovery_for(error: &Error) -> Recovery {
    // Fatal errors (fenced producer, authentication, unsupported version, …) are never
    // retried, whatever their code would otherwise say.
    if error.is_fatal() {
        return Recovery::GiveUp;
    }
    match error.kind() {
        // Transport failures: the socket died, an I/O call failed, or the response did not come
        // within the request timeout. We choose SwitchBroker rather than RetrySame: the
        // connection layer already reconnects lazily, but only after a back-off, and a broker
        // that just dropped a connection or went silent is the one most likely to be down or
        // restarting. For any-broker requests (Metadata, FindCoordinator) another broker
        // answers at once; for leader-bound requests the caller refreshes metadata, as the
        // Java client does after a disconnect, so that a failed-over leader is found. With a
        // single broker this degenerates to RetrySame after the reconnect back-off.
        ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout => Recovery::SwitchBroker,
        ErrorKind::Broker(code) => recovery_for_code(*code),
        // Everything else (corrupt data, encoding, configuration, a closed client, a full
        // buffer, an unexpected response) is a bug or a local condition that resending does not
        // change.
        _ => Recovery::GiveUp,
    }
}

fn recovery_for_code(code: KafkaCode) -> Recovery {
    if code.is_coordinator_error() {
        // NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS: the
        // coordinator moved or is loading; look it up again (FindCoordinator retries the
        // latter two with back-off by itself).
        Recovery::RefreshCoordinator
    } else if code.is_metadata_error() || code == KafkaCode::NotController {
        // NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE,
        // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, … and NOT_CONTROLLER: the partition leader
        // (or controller) is not who we think; metadata must be refreshed before resending.
        Recovery::RefreshMetadata
    } else if code.is_retriable() {
        // Other retriable codes (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, NETWORK_EXCEPTION,
        // CONCURRENT_TRANSACTIONS, THROTTLING_QUOTA_EXCEEDED, …): the broker is right, it just
        // could not do it now.
        Recovery::RetrySame
    } else {
        // Non-retriable codes: an application-level error (authorization, invalid record,
        // offset out of range, …) for the caller to decide about.
        Recovery::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ApiKey;

    fn code(c: KafkaCode) -> Recovery {
        recovery_for(&Error::broker(c))
    }

    #[test]
    fn transport_errors_switch_broker() {
        for kind in [
            ErrorKind::Disconnected,
            ErrorKind::Timeout,
            ErrorKind::Io(std::io::ErrorKind::ConnectionRefused),
            ErrorKind::Io(std::io::ErrorKind::ConnectionReset),
        ] {
            assert_eq!(recovery_for(&Error::new(kind)), Recovery::SwitchBroker);
        }
    }

    #[test]
    fn metadata_errors_refresh_metadata() {
        for c in [
            KafkaCode::NotLeaderOrFollower,
            KafkaCode::UnknownTopicOrPartition,
            KafkaCode::LeaderNotAvailable,
            KafkaCode::FencedLeaderEpoch,
            KafkaCode::UnknownLeaderEpoch,
            KafkaCode::ReplicaNotAvailable,
            KafkaCode::UnknownTopicId,
            KafkaCode::KafkaStorageError,
            KafkaCode::NotController,
        ] {
            assert_eq!(code(c), Recovery::RefreshMetadata, "{c}");
        }
    }

    #[test]
    fn coordinator_errors_refresh_coordinator() {
        for c in [
            KafkaCode::NotCoordinator,
            KafkaCode::CoordinatorNotAvailable,
            KafkaCode::CoordinatorLoadInProgress,
        ] {
            assert_eq!(code(c), Recovery::RefreshCoordinator, "{c}");
        }
    }

    #[test]
    fn other_retriable_codes_retry_same() {
        for c in [
            KafkaCode::RequestTimedOut,
            KafkaCode::NotEnoughReplicas,
            KafkaCode::NetworkException,
            KafkaCode::ConcurrentTransactions,
            KafkaCode::ThrottlingQuotaExceeded,
            KafkaCode::CorruptMessage,
        ] {
            assert_eq!(code(c), Recovery::RetrySame, "{c}");
        }
    }

    #[test]
    fn non_retriable_and_fatal_give_up() {
        for c in [
            KafkaCode::TopicAuthorizationFailed,
            KafkaCode::OffsetOutOfRange,
            KafkaCode::MessageTooLarge,
            KafkaCode::ProducerFenced,
            KafkaCode::UnsupportedVersion,
            KafkaCode::BrokerNotAvailable,
            KafkaCode::Unknown(999),
        ] {
            assert_eq!(code(c), Recovery::GiveUp, "{c}");
        }
        let fenced = Error::broker(KafkaCode::InvalidProducerEpoch).api(ApiKey::EndTxn);
        assert_eq!(recovery_for(&fenced), Recovery::GiveUp);
        for kind in [
            ErrorKind::Closed,
            ErrorKind::Corrupt,
            ErrorKind::Config,
            ErrorKind::Encode,
            ErrorKind::UnexpectedResponse,
        ] {
            assert_eq!(recovery_for(&Error::new(kind)), Recovery::GiveUp);
        }
    }
}
