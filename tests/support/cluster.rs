//! The failover suite's own three-node Kafka cluster (never the shared one: the tests kill,
//! pause and restart brokers), with a [`FaultProxy`] in front of each node.
//!
//! The first scenario starts it: `scripts/kafka.sh stop` then `start --nodes 3 --proxy` with
//! `KAFKA_CLUSTER_DIR=<repo>/target/kafka-failover`. A reaper process (its own process group,
//! so Ctrl-C on the test does not take it along) waits for the test process to exit and then
//! runs `scripts/kafka.sh stop`. `FAILOVER_KEEP_CLUSTER=1` reuses a running cluster in that
//! directory and leaves it running (for working on the suite).
//!
//! The proxies run on a runtime of their own (a thread), so they outlive each test's runtime.
//! Scenarios take [`exclusive`] so that they never overlap, and [`FailoverCluster::heal`] puts
//! every broker and proxy back before and after each.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::proxy::FaultProxy;

/// The cluster and its proxies.
pub struct FailoverCluster {
    /// The repository root.
    pub root: PathBuf,
    /// `KAFKA_CLUSTER_DIR`.
    pub dir: PathBuf,
    /// The PLAINTEXT bootstrap (no proxy): what verifiers use.
    pub direct: Vec<String>,
    /// The proxies' addresses: what clients under test use.
    pub proxied: Vec<String>,
    /// The proxy of node `i + 1`.
    pub proxies: Vec<FaultProxy>,
    /// The PLAINTEXT address of node `i + 1`.
    pub node_addr: Vec<String>,
}

/// Serialises scenarios: they share one cluster and kill its brokers.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cluster, started on first use.
pub fn cluster() -> &'static FailoverCluster {
    static C: OnceLock<FailoverCluster> = OnceLock::new();
    C.get_or_init(start)
}

fn kafka_sh(root: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(root.join("scripts/kafka.sh"))
        .args(args)
        .env("KAFKA_CLUSTER_DIR", dir)
        .env(
            "KAFKA_HEAP_OPTS",
            std::env::var("KAFKA_HEAP_OPTS").unwrap_or_else(|_| "-Xms128m -Xmx512m".into()),
        )
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/kafka.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn start() -> FailoverCluster {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/kafka-failover");
    let keep = std::env::var("FAILOVER_KEEP_CLUSTER").is_ok_and(|v| v == "1");
    let running = keep && kafka_sh(&root, &dir, &["status"]).0 && dir.join("env").exists();
    if !running {
        let _ = kafka_sh(&root, &dir, &["stop"]);
        let (ok, text) = kafka_sh(&root, &dir, &["start", "--nodes", "3", "--proxy"]);
        assert!(
            ok,
            "scripts/kafka.sh start --nodes 3 --proxy failed:\n{text}"
        );
    }
    if !keep {
        // The reaper: stops the cluster when this process is gone, however it ends.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; KAFKA_CLUSTER_DIR='{dir}' '{sh}' stop",
            pid = std::process::id(),
            dir = dir.display(),
            sh = root.join("scripts/kafka.sh").display(),
        );
        let log = std::fs::File::create(dir.join("reaper.log")).expect("reaper log");
        let log2 = log.try_clone().expect("reaper log");
        use std::os::unix::process::CommandExt;
        // Never waited for: it outlives this process by design (and is reaped by init).
        #[allow(clippy::zombie_processes)]
        let _reaper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .expect("reaper");
    }
    let env = std::fs::read_to_string(dir.join("env")).expect("env file");
    let vars: HashMap<String, String> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let list = |k: &str| -> Vec<String> {
        vars.get(k)
            .unwrap_or_else(|| panic!("{k} missing from {}/env", dir.display()))
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let direct = list("REKAFKA_BOOTSTRAP");
    let proxied = list("REKAFKA_PROXY_BOOTSTRAP");
    let map: Vec<(u16, u16)> = list("REKAFKA_PROXY_MAP")
        .iter()
        .map(|m| {
            let (a, b) = m.split_once('=').expect("proxyport=brokerport");
            (a.parse().expect("port"), b.parse().expect("port"))
        })
        .collect();
    // The proxies, on a runtime of their own for the life of the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("failover-proxies".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let mut proxies = Vec::new();
                for (proxy, broker) in map {
                    let listen: SocketAddr = ([127, 0, 0, 1], proxy).into();
                    let upstream: SocketAddr = ([127, 0, 0, 1], broker).into();
                    proxies.push(
                        FaultProxy::start(listen, upstream)
                            .await
                            .expect("proxy bind"),
                    );
                }
                tx.send(proxies).expect("hand over");
                std::future::pending::<()>().await;
            });
        })
        .expect("proxy thread");
    let proxies = rx.recv().expect("proxies");
    let node_addr = direct.clone();
    FailoverCluster {
        root,
        dir,
        direct,
        proxied,
        proxies,
        node_addr,
    }
}

/// A node's state as `scripts/kafka.sh status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Running,
    /// SIGSTOPped.
    Paused,
    /// Not running.
    Stopped,
}

impl FailoverCluster {
    /// Runs `scripts/kafka.sh ARGS` on a blocking thread; panics if it fails.
    pub async fn sh(&self, args: &[&str]) -> String {
        let (root, dir) = (self.root.clone(), self.dir.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (ok, text) = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            kafka_sh(&root, &dir, &a)
        })
        .await
        .expect("kafka.sh task");
        assert!(ok, "scripts/kafka.sh failed:\n{text}");
        text
    }

    /// SIGKILLs node `n`.
    pub async fn kill(&self, n: i32) {
        eprintln!("[failover] kill node {n}");
        self.sh(&["kill", &n.to_string()]).await;
    }

    /// SIGSTOPs node `n`.
    pub async fn pause(&self, n: i32) {
        eprintln!("[failover] pause node {n}");
        self.sh(&["pause", &n.to_string()]).await;
    }

    /// SIGCONTs node `n`.
    pub async fn resume(&self, n: i32) {
        eprintln!("[failover] resume node {n}");
        self.sh(&["resume", &n.to_string()]).await;
    }

    /// Stops (SIGTERM) node `n` if it runs, starts it, waits until it is registered.
    pub async fn restart(&self, n: i32) {
        eprintln!("[failover] restart node {n}");
        self.sh(&["restart", &n.to_string()]).await;
    }

    /// Stops node `n` cleanly (SIGTERM; a controlled shutdown) without starting it again.
    pub async fn stop_node(&self, n: i32) {
        eprintln!("[failover] stop node {n}");
        let pid =
            std::fs::read_to_string(self.dir.join(format!("node{n}/pid"))).unwrap_or_default();
        let pid = pid.trim().to_owned();
        if pid.is_empty() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state(n).await != NodeState::Stopped && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.state(n).await != NodeState::Stopped {
            self.kill(n).await;
        }
    }

    /// The state of every node (index 0 = node 1).
    pub async fn states(&self) -> Vec<NodeState> {
        let (root, dir) = (self.root.clone(), self.dir.clone());
        let (_, text) = tokio::task::spawn_blocking(move || kafka_sh(&root, &dir, &["status"]))
            .await
            .expect("status task");
        let mut v = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("node ")) {
            v.push(if line.contains(": running") {
                NodeState::Running
            } else if line.contains(": paused") {
                NodeState::Paused
            } else {
                NodeState::Stopped
            });
        }
        v
    }

    /// The state of node `n`.
    pub async fn state(&self, n: i32) -> NodeState {
        self.states()
            .await
            .get((n - 1) as usize)
            .copied()
            .unwrap_or(NodeState::Stopped)
    }

    /// Heals every proxy, resumes paused nodes, restarts stopped ones, then waits (at most
    /// 90 s) until the internal topics are fully replicated again, so the next scenario starts
    /// from a healthy cluster.
    ///
    /// Stopped nodes restart concurrently: `kafka.sh restart` waits until the node lists every
    /// broker, which with two nodes down happens only once both are back.
    pub async fn heal(&'static self) {
        for p in &self.proxies {
            p.heal();
        }
        let states = self.states().await;
        let mut restarts = Vec::new();
        for (i, s) in states.iter().enumerate() {
            let n = i as i32 + 1;
            match s {
                NodeState::Running => {}
                NodeState::Paused => self.resume(n).await,
                NodeState::Stopped => restarts.push(tokio::spawn(self.restart(n))),
            }
        }
        for r in restarts {
            r.await.expect("restart");
        }
        self.await_full_isr(&[], Duration::from_secs(90)).await;
    }

    /// Waits until every partition of `topics` and of the internal topics has all 3 replicas
    /// in sync, at most `within`; returns whether it happened.
    pub async fn await_full_isr(&self, topics: &[&str], within: Duration) -> bool {
        let Ok(c) = rekafka::cluster::Cluster::connect(rekafka::cluster::ClusterConfig::new(
            self.direct.clone(),
        ))
        .await
        else {
            return false;
        };
        let mut names: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
        names.push("__consumer_offsets".into());
        names.push("__transaction_state".into());
        let deadline = Instant::now() + within;
        let ok = loop {
            let _ = c.refresh().await;
            let mut all = true;
            for t in &names {
                match c.partitions(t).await {
                    Ok(parts) => {
                        if parts.iter().any(|p| p.isr.len() < 3 || p.leader < 0) {
                            all = false;
                        }
                    }
                    Err(_) if t.starts_with("__") => {}
                    Err(_) => all = false,
                }
            }
            if all {
                break true;
            }
            if Instant::now() >= deadline {
                eprintln!("[failover] partitions of {names:?} not fully in sync after {within:?}");
                break false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        c.close().await;
        ok
    }

    /// Node `n`'s proxy.
    pub fn proxy(&self, n: i32) -> &FaultProxy {
        &self.proxies[(n - 1) as usize]
    }
}
