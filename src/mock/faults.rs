//! Fault injection state: error queues, connection kills, holds, dropped responses, delays.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::RequestInfo;
use crate::protocol::ApiKey;

/// A predicate over requests, for [`MockCluster::hold`](super::MockCluster::hold) and
/// [`MockCluster::drop_responses`](super::MockCluster::drop_responses).
pub type RequestMatcher = Arc<dyn Fn(&RequestInfo) -> bool + Send + Sync>;

pub(crate) struct HoldInner {
    pub released: AtomicBool,
    pub release: Notify,
    pub held: AtomicUsize,
    pub matched: AtomicUsize,
    pub changed: Notify,
}

/// Requests held by [`MockCluster::hold`](super::MockCluster::hold): every request that
/// matches waits (before it is applied) until [`release`](HeldRequests::release) is called or
/// this handle is dropped.
pub struct HeldRequests {
    pub(crate) inner: Arc<HoldInner>,
}

impl fmt::Debug for HeldRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldRequests")
            .field("held", &self.held())
            .field("matched", &self.matched())
            .field("released", &self.is_released())
            .finish()
    }
}

impl HeldRequests {
    /// Lets every held request (and every later matching request) through.
    pub fn release(&self) {
        self.inner.released.store(true, Ordering::SeqCst);
        self.inner.release.notify_waiters();
    }

    /// Whether [`release`](HeldRequests::release) was called.
    pub fn is_released(&self) -> bool {
        self.inner.released.load(Ordering::SeqCst)
    }

    /// How many requests are waiting right now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// How many requests matched so far (held now or earlier).
    pub fn matched(&self) -> usize {
        self.inner.matched.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have matched (and were held, unless released).
    pub async fn wait_matched(&self, n: usize) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.matched() >= n {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for HeldRequests {
    fn drop(&mut self) {
        self.release();
    }
}

pub(crate) struct Hold {
    pub matcher: RequestMatcher,
    pub inner: Arc<HoldInner>,
}

pub(crate) struct DropRule {
    pub matcher: RequestMatcher,
    pub remaining: usize,
}

#[derive(Default)]
pub(crate) struct Faults {
    pub errors: HashMap<ApiKey, VecDeque<i16>>,
    /// Errors with a delay before the error response is sent (zero: none).
    pub broker_errors: HashMap<(i32, ApiKey), VecDeque<(i16, Duration)>>,
    pub partition_errors: HashMap<(String, i32, ApiKey), VecDeque<i16>>,
    /// Topic → errors for the next Metadata responses that include it.
    pub topic_errors: HashMap<String, VecDeque<i16>>,
    /// API key → how many more requests of it pass before one closes its connection.
    pub close_on: Vec<(ApiKey, u64)>,
    pub rtt: HashMap<i32, Duration>,
    pub holds: Vec<Hold>,
    pub drops: Vec<DropRule>,
    /// Advertised version ranges narrowed (`Some`) or removed (`None`) per API.
    pub versions: HashMap<ApiKey, Option<(i16, i16)>>,
}

/// What to do with a request before applying it.
pub(crate) enum Pre {
    Pass,
    Close,
    Error(i16, Duration),
    Hold(Arc<HoldInner>),
}

impl Faults {
    pub fn before(&mut self, info: &RequestInfo) -> Pre {
        let mut close = false;
        self.close_on.retain_mut(|(api, left)| {
            if *api != info.api_key {
                return true;
            }
            if *left <= 1 {
                close = true;
                false
            } else {
                *left -= 1;
                true
            }
        });
        if close {
            return Pre::Close;
        }
        self.holds
            .retain(|h| !h.inner.released.load(Ordering::SeqCst));
        if let Some(h) = self.holds.iter().find(|h| (h.matcher)(info)) {
            return Pre::Hold(h.inner.clone());
        }
        if let Some(q) = self.errors.get_mut(&info.api_key)
            && let Some(code) = q.pop_front()
        {
            return Pre::Error(code, Duration::ZERO);
        }
        if let Some(q) = self.broker_errors.get_mut(&(info.broker, info.api_key))
            && let Some((code, delay)) = q.pop_front()
        {
            return Pre::Error(code, delay);
        }
        Pre::Pass
    }

    /// Whether the response to this (applied) request is to be dropped.
    pub fn drop_response(&mut self, info: &RequestInfo) -> bool {
        let mut hit = false;
        for d in self.drops.iter_mut() {
            if d.remaining > 0 && (d.matcher)(info) {
                d.remaining -= 1;
                hit = true;
                break;
            }
        }
        self.drops.retain(|d| d.remaining > 0);
        hit
    }

    pub fn topic_error(&mut self, topic: &str) -> Option<i16> {
        if self.topic_errors.is_empty() {
            return None;
        }
        self.topic_errors.get_mut(topic).and_then(|q| q.pop_front())
    }

    pub fn partition_error(&mut self, api: ApiKey, topic: &str, partition: i32) -> Option<i16> {
        if self.partition_errors.is_empty() {
            return None;
        }
        self.partition_errors
            .get_mut(&(topic.to_string(), partition, api))
            .and_then(|q| q.pop_front())
    }
}
