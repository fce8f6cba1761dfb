//! A TCP fault proxy per broker (issue 22, item 2), Toxiproxy-style, on tokio.
//!
//! `scripts/kafka.sh start --proxy` makes every node advertise the proxy's port on its PROXIED
//! listener, so a client bootstrapping through the proxies reaches every broker through them,
//! while the brokers replicate over PLAINTEXT, untouched. Each [`FaultProxy`] forwards one
//! proxy port to one broker port and applies [`Faults`] to every connection, live:
//!
//! * `blackhole`: no byte moves in either direction (connections stay open, new ones are
//!   accepted and stall): a network partition as the client sees it. Bytes are held, not lost,
//!   as TCP would, so a healed connection carries on.
//! * `refuse`: new connections are reset at once (a broker that is "down" for this client).
//! * [`FaultProxy::reset_all`]: every open connection is reset (RST) now.
//! * `delay`: each chunk is forwarded after this latency (each direction).
//! * `throttle`: at most this many bytes per second per direction per connection.
//! * `slice`: every write carries at most this many bytes (partial frames on the wire).
//! * `cut_per_mille`: each chunk (either direction), with this chance in 1000, is cut in the
//!   middle: half of it is written, then the connection is reset (a request or response cut
//!   mid-frame).
//! * `chunk`: each read (chunk) takes at most this many bytes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The faults a proxy applies. `Faults::default()` forwards faithfully.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Hold every byte (both directions) until cleared.
    pub blackhole: bool,
    /// Reset new connections at once.
    pub refuse: bool,
    /// Latency added to every chunk.
    pub delay: Duration,
    /// Bytes per second per direction per connection.
    pub throttle: Option<u64>,
    /// The most bytes one write carries.
    pub slice: Option<usize>,
    /// The chance, per 1000 chunks (either direction), of a cut mid-chunk.
    pub cut_per_mille: u32,
    /// The most bytes one chunk (one read) carries (at most 64 KiB). With `cut_per_mille` it
    /// makes the chance of a cut follow the bytes forwarded rather than how the client happens
    /// to group its writes (a producer sending few large requests fills whole 64 KiB reads).
    pub chunk: Option<usize>,
}

struct Control {
    faults: watch::Sender<Faults>,
    /// Bumped by `reset_all`; a connection opened under an older generation resets.
    generation: watch::Sender<u64>,
    connections: AtomicU64,
    cuts: AtomicU64,
    seed: AtomicU64,
}

/// One proxy: a listening port forwarding to one broker.
#[derive(Clone)]
pub struct FaultProxy {
    /// The proxy's address (what the broker advertises).
    pub listen: SocketAddr,
    /// The broker's address.
    pub upstream: SocketAddr,
    ctl: Arc<Control>,
}

impl FaultProxy {
    /// Binds `listen` and forwards to `upstream`, on the current tokio runtime (which must
    /// outlive the proxy's users).
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let ctl = Arc::new(Control {
            faults: watch::channel(Faults::default()).0,
            generation: watch::channel(0).0,
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(listen.port())),
        });
        let c = ctl.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let c = c.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    if c.faults.borrow().refuse {
                        let _ = client.set_zero_linger();
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        let _ = client.set_zero_linger();
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    connection(client, server, c).await;
                });
            }
        });
        Ok(FaultProxy {
            listen,
            upstream,
            ctl,
        })
    }

    /// Replaces the faults.
    pub fn set(&self, faults: Faults) {
        self.ctl.faults.send_replace(faults);
    }

    /// Changes the faults in place.
    pub fn modify(&self, f: impl FnOnce(&mut Faults)) {
        self.ctl.faults.send_modify(f);
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        self.ctl.faults.borrow().clone()
    }

    /// Forwards faithfully again (open connections carry on).
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Resets every open connection.
    pub fn reset_all(&self) {
        self.ctl.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.ctl.connections.load(Ordering::Relaxed)
    }

    /// Connections cut mid-frame so far.
    pub fn cuts(&self) -> u64 {
        self.ctl.cuts.load(Ordering::Relaxed)
    }
}

enum End {
    Eof,
    Reset,
}

async fn connection(mut client: TcpStream, mut server: TcpStream, ctl: Arc<Control>) {
    let mut generation = ctl.generation.subscribe();
    generation.borrow_and_update();
    let end = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        tokio::select! {
            e = pump(cr, sw, &ctl) => e,
            e = pump(sr, cw, &ctl) => e,
            _ = generation.changed() => End::Reset,
        }
    };
    if let End::Reset = end {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// A xorshift step on the proxy's shared seed.
fn random(ctl: &Control) -> u64 {
    let mut x = ctl.seed.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    ctl.seed.store(x, Ordering::Relaxed);
    x
}

/// Waits while the proxy is blackholed.
async fn through_blackhole(ctl: &Control) -> Faults {
    let mut rx = ctl.faults.subscribe();
    loop {
        let f = rx.borrow_and_update().clone();
        if !f.blackhole {
            return f;
        }
        if rx.changed().await.is_err() {
            return f;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    ctl: &Control,
) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        through_blackhole(ctl).await;
        let room = ctl
            .faults
            .borrow()
            .chunk
            .unwrap_or(buf.len())
            .clamp(1, buf.len());
        let n = match from.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => return End::Eof,
            Ok(n) => n,
        };
        // Faults as of now: a blackhole that began while reading holds this chunk.
        let f = through_blackhole(ctl).await;
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        let mut chunk = &buf[..n];
        let mut cut = false;
        if f.cut_per_mille > 0 && n >= 2 && random(ctl) % 1000 < u64::from(f.cut_per_mille) {
            chunk = &buf[..n / 2];
            cut = true;
        }
        let slice = f.slice.unwrap_or(usize::MAX).max(1);
        while !chunk.is_empty() {
            let k = chunk.len().min(slice);
            if to.write_all(&chunk[..k]).await.is_err() {
                return End::Eof;
            }
            if let Some(bps) = f.throttle {
                let micros = (k as u64).saturating_mul(1_000_000) / bps.max(1);
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            chunk = &chunk[k..];
        }
        if cut {
            ctl.cuts.fetch_add(1, Ordering::Relaxed);
            let _ = to.flush().await;
            return End::Reset;
        }
    }
}
