//! The in-flight table of one connection: which requests wait for which response, their
//! request timeouts, and failing them all when the connection dies. No I/O happens here; the
//! callers ([`Connection`](super::Connection)), the reader and the writer share it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::codec::{self};

/// The longest interval between two checks of the in-flight table for requests in flight
/// longer than the request timeout (see [`sweep_interval`]).
pub(crate) const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest such interval.
pub(crate) const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(5);

/// How often the reader checks the table for expired requests whose caller is gone, and how
/// early a caller whose own deadline passed may declare its request expired: a tenth of the
/// request timeout, between 5 ms and 1 s.
pub(crate) fn sweep_interval(request_timeout: Duration) -> Duration {
    (request_timeout / 10).clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL)
}

/// The in-flight table, shared by the callers, the reader and the writer.
pub(crate) struct Table {
    pub(crate) broker_id: i32,
    /// [`ConnectionConfig::request_timeout`].
    pub(crate) request_timeout: Duration,
    /// How many sent-without-response ids are remembered (`max_in_flight`).
    pub(crate) max_no_response: usize,
    pub(crate) state: Mutex<State>,
    /// Set to `true` once the connection is dead or closed; both tasks watch it.
    pub(crate) dead: watch::Sender<bool>,
}

pub(crate) struct State {
    /// Requests waiting for a response (their caller waits, or gave up). Each holds an in-flight
    /// permit (re-authentication requests excepted, which run while the re-authentication task
    /// holds every permit), so there are never more than `max_in_flight`.
    pub(crate) in_flight: HashMap<i32, Entry>,
    pub(crate) next_correlation: i32,
    /// Requests sent without expecting a response, in the order written (at most
    /// `max_no_response`, the oldest forgotten first): a broker that answers them anyway
    /// (Tansu) has its answer recognised and discarded.
    pub(crate) no_response: VecDeque<(i32, ApiKey)>,
    /// Why the connection is dead, once it is.
    pub(crate) error: Option<Error>,
}

pub(crate) struct Entry {
    pub(crate) api: ApiKey,
    pub(crate) waiter: Waiter,
    /// When the request was handed to the writer.
    pub(crate) sent: Instant,
    /// The in-flight slot, released when the entry leaves the table.
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum Waiter {
    /// A caller waits for the response frame.
    Caller(oneshot::Sender<Result<Bytes>>),
    /// The caller was dropped, or gave up before the request was in flight for the whole
    /// request timeout; the response is read and discarded, the slot is held until then.
    Abandoned,
}

/// How a request is registered in the table.
pub(crate) enum Registration {
    /// A caller waits for the response; the entry holds the permit (if any).
    Caller(oneshot::Sender<Result<Bytes>>, Option<OwnedSemaphorePermit>),
    /// Sent without expecting a response (acks=0 produce). Kafka does not answer, some brokers
    /// (Tansu) do; either way nothing waits and no slot is held once the frame is written.
    NoResponse,
}

/// Whether correlation id `a` was assigned before `b`, allowing for wrap-around.
pub(crate) fn precedes(a: i32, b: i32) -> bool {
    b.wrapping_sub(a) > 0
}

impl Table {
    /// An empty table whose first correlation id is `next_correlation`, and the receiver of
    /// its dead signal.
    pub(crate) fn new(
        broker_id: i32,
        request_timeout: Duration,
        max_no_response: usize,
        next_correlation: i32,
    ) -> (Table, watch::Receiver<bool>) {
        let (dead, dead_rx) = watch::channel(false);
        let table = Table {
            broker_id,
            request_timeout,
            max_no_response,
            state: Mutex::new(State {
                in_flight: HashMap::new(),
                next_correlation,
                no_response: VecDeque::new(),
                error: None,
            }),
            dead,
        };
        (table, dead_rx)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if one ever did, the table is still
        // consistent (every update is a single map operation).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn error(&self) -> Option<Error> {
        self.lock().error.clone()
    }

    /// Registers a request about to be handed to the writer and returns its correlation id.
    /// Ids are assigned in hand-off order, which is the order frames are written.
    pub(crate) fn register(&self, api: ApiKey, registration: Registration) -> Result<i32> {
        let mut st = self.lock();
        if let Some(e) = &st.error {
            return Err(e.clone().api(api));
        }
        let mut corr = st.next_correlation;
        while st.in_flight.contains_key(&corr) || st.no_response.iter().any(|(c, _)| *c == corr) {
            corr = corr.wrapping_add(1);
        }
        st.next_correlation = corr.wrapping_add(1);
        match registration {
            Registration::NoResponse => {
                if st.no_response.len() >= self.max_no_response {
                    // Long unanswered: Kafka never answers these. Should the broker answer it
                    // after all, the response is discarded as unknown.
                    st.no_response.pop_front();
                }
                st.no_response.push_back((corr, api));
            }
            Registration::Caller(tx, permit) => {
                st.in_flight.insert(
                    corr,
                    Entry {
                        api,
                        waiter: Waiter::Caller(tx),
                        sent: Instant::now(),
                        _permit: permit,
                    },
                );
            }
        }
        Ok(corr)
    }

    /// The caller of `corr` is gone: keep the entry (and its in-flight slot) so the response is
    /// recognised and discarded when it comes.
    pub(crate) fn abandon(&self, corr: i32) {
        let mut st = self.lock();
        if let Some(entry) = st.in_flight.get_mut(&corr) {
            entry.waiter = Waiter::Abandoned;
        }
    }

    /// The caller of `corr` reached its deadline without a response. If the request has been
    /// in flight for (about) the whole request timeout, the broker is considered stuck: the
    /// connection is killed (as Java's `NetworkClient` does), every other request in flight fails
    /// with [`ErrorKind::Disconnected`], and `true` is returned. Otherwise (the caller spent
    /// part of its time waiting for a slot) the entry is abandoned and keeps its slot until the
    /// response comes or the entry itself expires (see [`expire_abandoned`](Self::expire_abandoned)).
    pub(crate) fn time_out(&self, corr: i32, now: Instant) -> bool {
        let slack = sweep_interval(self.request_timeout);
        let expired = {
            let mut st = self.lock();
            let Some(entry) = st.in_flight.get_mut(&corr) else {
                return false;
            };
            if now + slack >= entry.sent + self.request_timeout {
                st.in_flight.remove(&corr)
            } else {
                entry.waiter = Waiter::Abandoned;
                None
            }
        };
        let Some(entry) = expired else {
            return false;
        };
        tracing::warn!(
            broker = self.broker_id,
            correlation_id = corr,
            api = ?entry.api,
            timeout = ?self.request_timeout,
            "disconnecting: request timed out"
        );
        self.fail_at(self.timeout_disconnect(entry.api, corr), false, Some(now));
        true
    }

    /// Kills the connection if a request whose caller is gone has been in flight longer than
    /// the request timeout (called periodically by the reader task). Requests whose caller
    /// still waits are left to the caller's own timer.
    pub(crate) fn expire_abandoned(&self, now: Instant) {
        let expired = {
            let st = self.lock();
            st.in_flight
                .iter()
                .find(|(_, e)| {
                    matches!(e.waiter, Waiter::Abandoned) && now >= e.sent + self.request_timeout
                })
                .map(|(corr, e)| (*corr, e.api))
        };
        if let Some((corr, api)) = expired {
            tracing::warn!(
                broker = self.broker_id,
                correlation_id = corr,
                ?api,
                timeout = ?self.request_timeout,
                "disconnecting: abandoned request timed out"
            );
            self.fail_at(self.timeout_disconnect(api, corr), false, Some(now));
        }
    }

    /// The error the other requests in flight get when a request timed out.
    pub(crate) fn timeout_disconnect(&self, api: ApiKey, corr: i32) -> Error {
        Error::with_message(
            ErrorKind::Disconnected,
            format!(
                "disconnected: a {api:?} request (correlation id {corr}) got no response within \
                 the request timeout of {:?}",
                self.request_timeout
            ),
        )
        .on_broker(self.broker_id)
    }

    /// Routes a response frame to its caller, or discards it.
    pub(crate) fn dispatch(&self, frame: Bytes) -> Result<()> {
        let corr = codec::response_correlation_id(&frame)?;
        let mut st = self.lock();
        // A broker answers the requests of a connection in order, so requests sent before this
        // one without expecting a response will never be answered now (Kafka does not answer
        // acks=0 produce requests); forget them.
        let mut no_response = None;
        while let Some(&(first, api)) = st.no_response.front() {
            if !precedes(first, corr) && first != corr {
                break;
            }
            st.no_response.pop_front();
            if first == corr {
                no_response = Some(api);
            }
        }
        if let Some(api) = no_response {
            drop(st);
            tracing::trace!(
                broker = self.broker_id,
                correlation_id = corr,
                ?api,
                "discarding the response to a request sent without expecting one"
            );
            return Ok(());
        }
        let Some(entry) = st.in_flight.remove(&corr) else {
            drop(st);
            tracing::warn!(
                broker = self.broker_id,
                correlation_id = corr,
                len = frame.len(),
                "discarding a response with an unknown correlation id"
            );
            return Ok(());
        };
        drop(st);
        match entry.waiter {
            Waiter::Caller(tx) => {
                if tx.send(Ok(frame)).is_err() {
                    tracing::trace!(broker = self.broker_id, correlation_id = corr, api = ?entry.api, "caller gone, response discarded");
                }
            }
            Waiter::Abandoned => {
                tracing::debug!(broker = self.broker_id, correlation_id = corr, api = ?entry.api, "discarding the late response of an abandoned request");
            }
        }
        Ok(())
    }

    /// Marks the connection dead with `error` and fails every request in flight with it.
    /// Keeps the first error unless `replace` (used by `close`, so later calls see `Closed`).
    pub(crate) fn fail(&self, error: Error, replace: bool) {
        self.fail_at(error, replace, None);
    }

    /// As [`fail`](Self::fail); when the connection is closed because a request timed out
    /// (`timed_out_at` is the moment), every other request that has itself been in flight for
    /// the whole request timeout fails with [`ErrorKind::Timeout`] rather than
    /// [`ErrorKind::Disconnected`]: its caller's own timer is due too, and which of the two fires
    /// first is a matter of scheduling.
    pub(crate) fn fail_at(&self, error: Error, replace: bool, timed_out_at: Option<Instant>) {
        let entries: Vec<Entry> = {
            let mut st = self.lock();
            if st.error.is_some() && !replace {
                return;
            }
            st.error = Some(error.clone());
            st.no_response.clear();
            st.in_flight.drain().map(|(_, e)| e).collect()
        };
        if !entries.is_empty() {
            tracing::debug!(broker = self.broker_id, count = entries.len(), %error, "failing requests in flight");
        }
        for entry in entries {
            if let Waiter::Caller(tx) = entry.waiter {
                let own_timeout =
                    timed_out_at.is_some_and(|now| now >= entry.sent + self.request_timeout);
                let e = if own_timeout {
                    Error::with_message(
                        ErrorKind::Timeout,
                        format!(
                            "no response within the request timeout of {:?}",
                            self.request_timeout
                        ),
                    )
                    .on_broker(self.broker_id)
                } else {
                    error.clone()
                };
                let _ = tx.send(Err(e.api(entry.api)));
            }
        }
        self.dead.send_replace(true);
    }
}

/// The error in-flight requests get when the connection fails because of `cause`.
pub(crate) fn disconnected(broker_id: i32, cause: Error) -> Error {
    if cause.kind() == &ErrorKind::Disconnected {
        return cause.on_broker(broker_id);
    }
    Error::with_message(ErrorKind::Disconnected, cause.to_string())
        .with_source(cause)
        .on_broker(broker_id)
}

/// Abandons a handed-off request when the caller's future is dropped before its response
/// arrived (the entry keeps its slot until the response comes or the connection dies).
pub(crate) struct InFlight<'a> {
    pub(crate) table: &'a Table,
    pub(crate) correlation_id: i32,
    pub(crate) armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.table.abandon(self.correlation_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(1000);

    fn table() -> Table {
        Table::new(7, TIMEOUT, 5, 1).0
    }

    fn caller(t: &Table) -> (i32, oneshot::Receiver<Result<Bytes>>) {
        let (tx, rx) = oneshot::channel();
        let corr = t
            .register(ApiKey::Metadata, Registration::Caller(tx, None))
            .unwrap();
        (corr, rx)
    }

    fn response(corr: i32) -> Bytes {
        // size is not part of the frame the reader hands over; header v0: correlation id.
        Bytes::copy_from_slice(&corr.to_be_bytes())
    }

    fn backdate(t: &Table, corr: i32, by: Duration) {
        let mut st = t.lock();
        let e = st.in_flight.get_mut(&corr).unwrap();
        e.sent -= by;
    }

    #[tokio::test]
    async fn responses_reach_their_caller_by_correlation_id_in_any_order() {
        let t = table();
        let (a, rx_a) = caller(&t);
        let (b, rx_b) = caller(&t);
        assert_eq!((a, b), (1, 2));
        t.dispatch(response(b)).unwrap();
        t.dispatch(response(a)).unwrap();
        assert_eq!(&rx_a.await.unwrap().unwrap()[..], &a.to_be_bytes());
        assert_eq!(&rx_b.await.unwrap().unwrap()[..], &b.to_be_bytes());
        assert!(t.lock().in_flight.is_empty());
    }

    #[tokio::test]
    async fn a_timed_out_request_fails_the_connection_its_peers_are_disconnected() {
        let t = table();
        let (stuck, _rx_stuck) = caller(&t);
        let (_other, rx_other) = caller(&t);
        backdate(&t, stuck, TIMEOUT);
        assert!(t.time_out(stuck, Instant::now()));
        let e = rx_other.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Disconnected);
        assert!(
            e.to_string().contains(&format!("correlation id {stuck}")),
            "{e}"
        );
        assert!(t.error().is_some());
        // Nothing registers on a dead table.
        let (tx, _rx) = oneshot::channel();
        assert!(
            t.register(ApiKey::Metadata, Registration::Caller(tx, None))
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_peer_whose_own_timeout_passed_gets_timeout_not_disconnected() {
        // The caller of `late` timed out first (its task ran first), though `early` was sent
        // before it: `early`'s caller, whose own deadline passed too, is told `Timeout`.
        let t = table();
        let (early, rx_early) = caller(&t);
        let (late, _rx_late) = caller(&t);
        backdate(&t, early, TIMEOUT + Duration::from_millis(50));
        backdate(&t, late, TIMEOUT);
        assert!(t.time_out(late, Instant::now()));
        let e = rx_early.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Timeout, "{e}");
        assert!(e.is_retriable());
    }

    #[tokio::test]
    async fn a_caller_out_of_time_before_its_request_was_long_in_flight_only_abandons_it() {
        let t = table();
        let (corr, _rx) = caller(&t);
        // Sent just now (the caller spent its time waiting for a slot): not expired.
        assert!(!t.time_out(corr, Instant::now()));
        assert!(t.error().is_none());
        assert!(matches!(
            t.lock().in_flight.get(&corr).map(|e| &e.waiter),
            Some(Waiter::Abandoned)
        ));
        // The reader's sweep kills the connection once it has been in flight that long.
        t.expire_abandoned(Instant::now() + TIMEOUT);
        assert!(t.error().is_some());
        assert!(t.lock().in_flight.is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_request_keeps_its_slot_until_its_response_is_read() {
        let t = table();
        let (corr, _rx) = caller(&t);
        t.abandon(corr);
        assert_eq!(t.lock().in_flight.len(), 1);
        t.dispatch(response(corr)).unwrap();
        assert!(t.lock().in_flight.is_empty());
        assert!(t.error().is_none());
    }

    #[tokio::test]
    async fn an_unknown_correlation_id_is_discarded() {
        let t = table();
        let (corr, _rx) = caller(&t);
        t.dispatch(response(corr + 100)).unwrap();
        assert_eq!(t.lock().in_flight.len(), 1);
    }

    #[test]
    fn correlation_order_survives_wrap_around() {
        assert!(precedes(1, 2));
        assert!(!precedes(2, 1));
        assert!(precedes(i32::MAX, i32::MIN));
    }

    #[test]
    fn the_sweep_interval_is_a_tenth_of_the_timeout_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_millis(400)),
            Duration::from_millis(40)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(10)),
            MIN_SWEEP_INTERVAL
        );
        assert_eq!(sweep_interval(Duration::from_secs(60)), MAX_SWEEP_INTERVAL);
    }
}
