//! Helpers of the security tests: a private Tansu (through `scripts/broker.sh`, stopped when its
//! guard drops), and an in-process TLS terminator. The fake SASL broker (`fake_sasl.rs`) is
//! declared in the `fake` test binary (`tests/fake/main.rs`), beside the shared
//! `support/fake_broker.rs`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 (bound and released: a small race, fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A Tansu broker of this test alone.
pub struct Tansu {
    pub addr: String,
    pidfile: PathBuf,
}

impl Tansu {
    /// Starts Tansu; `auth` adds `--authentication`, `advertised` overrides the advertised
    /// `host:port`.
    pub fn start(name: &str, auth: bool, advertised: Option<&str>) -> Tansu {
        let pidfile = root()
            .join("target")
            .join(format!("tansu-{name}-{}.pid", std::process::id()));
        let mut cmd = Command::new(root().join("scripts/broker.sh"));
        cmd.arg("start")
            .env("TANSU_PIDFILE", &pidfile)
            .env("TANSU_AUTH", if auth { "1" } else { "0" })
            .stderr(Stdio::inherit());
        match advertised {
            Some(a) => cmd.env("TANSU_ADVERTISED", a),
            None => cmd.env_remove("TANSU_ADVERTISED"),
        };
        let out = cmd.output().expect("run scripts/broker.sh");
        assert!(out.status.success(), "scripts/broker.sh start failed");
        let line = String::from_utf8_lossy(&out.stdout);
        let addr = line
            .trim()
            .strip_prefix("export REKAFKA_BOOTSTRAP=")
            .unwrap_or_else(|| panic!("unexpected broker.sh output {line:?}"))
            .to_owned();
        Tansu { addr, pidfile }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/broker.sh"))
            .arg("stop")
            .env("TANSU_PIDFILE", &self.pidfile)
            .status();
    }
}

/// A TLS terminator in this process (rustls, the *ring* provider): accepts TLS on a free port
/// of 127.0.0.1 with the given server certificate and forwards the plaintext to `upstream`.
/// Stops accepting when dropped.
pub struct TlsFront {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// `cert_pem` and `key_pem`: the server's certificate and private key as PEM text.
    pub async fn start(cert_pem: &str, key_pem: &str, upstream: std::net::SocketAddr) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { addr, task }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh temporary directory under target/.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = root().join("target").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
