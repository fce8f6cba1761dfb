//! How a transactional request's error is classified (KIP-1050): retriable, abortable, fatal.

use super::*;

pub(super) fn abortable(e: &Error) -> Error {
    if *e.kind() == ErrorKind::Abortable {
        return e.clone();
    }
    Error::with_message(
        ErrorKind::Abortable,
        format!("the transaction cannot be committed and must be aborted: {e}"),
    )
    .with_source(e.clone())
}

/// How the transaction manager treats an error of a coordinator request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Retry (after a back-off); `refresh`: look the coordinator up again first.
    Retry {
        refresh: bool,
    },
    Abortable,
    Fatal,
}

pub(super) fn classify(api: ApiKey, e: &Error) -> Class {
    match e.kind() {
        ErrorKind::Broker(code) => match code {
            KafkaCode::NotCoordinator | KafkaCode::CoordinatorNotAvailable => {
                Class::Retry { refresh: true }
            }
            KafkaCode::CoordinatorLoadInProgress
            | KafkaCode::ConcurrentTransactions
            | KafkaCode::UnknownTopicOrPartition
            | KafkaCode::RequestTimedOut
            | KafkaCode::NetworkException => Class::Retry { refresh: false },
            // EndTxn's outcome is unknown: resend the same EndTxn until it is confirmed or
            // refused; never report it as done.
            KafkaCode::UnknownServerError if api == ApiKey::EndTxn => {
                Class::Retry { refresh: false }
            }
            // A zombie consumer's offsets (KIP-447): the transaction must be aborted, the
            // producer stays usable.
            KafkaCode::UnknownMemberId
            | KafkaCode::IllegalGeneration
            | KafkaCode::FencedInstanceId
            | KafkaCode::RebalanceInProgress
                if api == ApiKey::TxnOffsetCommit =>
            {
                Class::Abortable
            }
            _ if e.is_fatal() => Class::Fatal,
            _ if code.is_retriable() => Class::Retry { refresh: false },
            _ => Class::Abortable,
        },
        ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout => {
            Class::Retry { refresh: true }
        }
        _ if e.is_fatal() => Class::Fatal,
        _ => Class::Abortable,
    }
}
