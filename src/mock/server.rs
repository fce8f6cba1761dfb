//! Network side: one acceptor task per broker, one task per connection, one ticker task for
//! timeouts. Requests on a connection are served one at a time, in order (as Kafka does).

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::faults::{Faults, Pre};
use super::handlers;
use super::state::State;
use super::{MockClusterBuilder, RequestInfo, RequestLog};
use crate::error::{Error, Result};
use crate::protocol::frame::FrameDecoder;

pub(crate) struct BrokerSlot {
    pub id: i32,
    port: AtomicU16,
    up: AtomicBool,
    kill: watch::Sender<u64>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl BrokerSlot {
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    pub fn kill_connections(&self) {
        self.kill.send_modify(|n| *n += 1);
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken when partition data changes (produce, markers, leader moves): long-polling fetches.
    pub data_changed: Notify,
    /// Woken when a group changes: waiting JoinGroup / SyncGroup requests.
    pub groups_changed: Notify,
    faults: Mutex<Faults>,
    log: Mutex<RequestLog>,
    pub log_changed: Notify,
    log_capacity: usize,
    pub brokers: Vec<BrokerSlot>,
    pub max_request_size: usize,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// Whether ApiVersions advertises (and the brokers serve) the KIP-848 consumer group APIs.
    pub consumer_group_protocol: bool,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(state: State, b: &MockClusterBuilder, ids: &[i32]) -> Shared {
        Shared {
            state: Mutex::new(state),
            data_changed: Notify::new(),
            groups_changed: Notify::new(),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(RequestLog::new()),
            log_changed: Notify::new(),
            log_capacity: b.request_log_capacity,
            brokers: ids
                .iter()
                .map(|&id| BrokerSlot {
                    id,
                    port: AtomicU16::new(0),
                    up: AtomicBool::new(false),
                    kill: watch::Sender::new(0),
                    acceptor: Mutex::new(None),
                })
                .collect(),
            max_request_size: b.max_request_size,
            min_session_timeout: b.min_session_timeout,
            max_session_timeout: b.max_session_timeout,
            consumer_group_protocol: b.consumer_group_protocol,
            shutdown: watch::Sender::new(false),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log_lock(&self) -> MutexGuard<'_, RequestLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, info: RequestInfo) {
        {
            let mut log = self.log_lock();
            if self.log_capacity == 0 {
                return;
            }
            while log.len() >= self.log_capacity {
                log.pop_front();
            }
            log.push_back(info);
        }
        self.log_changed.notify_waiters();
    }

    pub fn stop(&self) {
        self.shutdown.send_replace(true);
        for b in &self.brokers {
            b.up.store(false, Ordering::SeqCst);
            if let Some(h) = b.acceptor.lock().unwrap_or_else(|e| e.into_inner()).take() {
                h.abort();
            }
            b.kill_connections();
        }
        self.data_changed.notify_waiters();
        self.groups_changed.notify_waiters();
    }

    fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn broker_addr(&self, id: i32) -> (String, u16) {
        let port = self
            .brokers
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.port())
            .unwrap_or(0);
        ("127.0.0.1".to_string(), port)
    }
}

/// Binds broker `i`'s port and spawns its acceptor.
pub(crate) fn start_broker(shared: &Arc<Shared>, i: usize, port: u16) -> Result<()> {
    let slot = &shared.brokers[i];
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listener = (|| -> std::io::Result<TcpListener> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    })()
    .map_err(|e| {
        Error::from(e)
            .message(format!("mock broker {} binding {addr}", slot.id))
            .on_broker(slot.id)
    })?;
    let bound = listener.local_addr().map_err(Error::from)?.port();
    slot.port.store(bound, Ordering::SeqCst);
    slot.up.store(true, Ordering::SeqCst);
    let handle = tokio::spawn(accept_loop(Arc::downgrade(shared), i, listener));
    *slot.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    Ok(())
}

/// Stops broker `i`'s acceptor and waits until its listener is closed.
pub(crate) async fn stop_acceptor(shared: &Arc<Shared>, i: usize) {
    let slot = &shared.brokers[i];
    slot.up.store(false, Ordering::SeqCst);
    let handle = slot
        .acceptor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(h) = handle {
        h.abort();
        let _ = h.await;
    }
}

async fn accept_loop(shared: std::sync::Weak<Shared>, i: usize, listener: TcpListener) {
    let Some(mut shutdown) = shared.upgrade().map(|s| s.shutdown.subscribe()) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.is_shutdown() {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(shared, i, stream));
            }
            Err(e) => {
                tracing::debug!(error = %e, "mock broker accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Expires group members, completes join rounds past their deadline, aborts transactions past
/// their timeout.
pub(crate) fn start_ticker(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let mut shutdown = shared.shutdown.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let now = std::time::Instant::now();
            let (groups, txns) = {
                let mut st = shared.lock();
                (st.tick_groups(now), st.expire_transactions(now))
            };
            if groups {
                shared.groups_changed.notify_waiters();
            }
            if txns {
                shared.data_changed.notify_waiters();
            }
        }
    });
}

pub(crate) enum Outcome {
    Respond(BytesMut),
    NoResponse,
    Close,
}

/// Per-connection context handed to the handlers.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub broker: i32,
    /// The client id of the request being handled.
    pub client_id: String,
}

async fn serve_connection(shared: Arc<Shared>, i: usize, stream: TcpStream) {
    let slot = &shared.brokers[i];
    let mut kill = slot.kill.subscribe();
    kill.borrow_and_update();
    let mut shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow_and_update() {
        return;
    }
    let ctx = Ctx {
        shared: shared.clone(),
        broker: slot.id,
        client_id: String::new(),
    };
    let (mut rd, mut wr) = stream.into_split();
    let decoder = FrameDecoder::new(shared.max_request_size);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let frame: Bytes = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            match decoder.frame_len(&buf) {
                // The size prefix is only a claim: grow with the bytes that arrived.
                Ok(Some(n)) => buf.reserve(n.saturating_sub(buf.len()).min(buf.len().max(8192))),
                _ => buf.reserve(8192),
            }
            // `biased`, stop signals first: once `broker_down` has returned, a request that
            // arrives is never served (an unbiased select may pick the read).
            tokio::select! {
                biased;
                _ = kill.changed() => return,
                _ = shutdown.changed() => return,
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
            }
        };
        if kill.has_changed().unwrap_or(true) || shutdown.has_changed().unwrap_or(true) {
            return;
        }
        let outcome = tokio::select! {
            biased;
            _ = kill.changed() => return,
            _ = shutdown.changed() => return,
            o = handlers::handle_frame(&ctx, frame) => o,
        };
        match outcome {
            Outcome::Respond(out) => {
                let rtt = shared.faults().rtt.get(&ctx.broker).copied();
                if let Some(rtt) = rtt {
                    tokio::select! {
                        _ = tokio::time::sleep(rtt) => {}
                        _ = kill.changed() => return,
                        _ = shutdown.changed() => return,
                    }
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
            Outcome::NoResponse => {}
            Outcome::Close => return,
        }
    }
}

/// Applies the before-request faults; waits while the request is held.
pub(crate) async fn pre_faults(shared: &Shared, info: &RequestInfo) -> Pre {
    let pre = shared.faults().before(info);
    let Pre::Hold(inner) = pre else {
        return pre;
    };
    inner.matched.fetch_add(1, Ordering::SeqCst);
    inner.held.fetch_add(1, Ordering::SeqCst);
    inner.changed.notify_waiters();
    // Counts the request out of `held` also when the connection task is cancelled.
    struct Waiting(Arc<super::faults::HoldInner>);
    impl Drop for Waiting {
        fn drop(&mut self) {
            self.0.held.fetch_sub(1, Ordering::SeqCst);
            self.0.changed.notify_waiters();
        }
    }
    let waiting = Waiting(inner);
    loop {
        let released = waiting.0.release.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if waiting.0.released.load(Ordering::SeqCst) {
            break;
        }
        released.await;
    }
    drop(waiting);
    Pre::Pass
}
