//! Helpers of the security tests: a private Tansu (through `scripts/broker.sh`) and a private
//! stunnel, each stopped when its guard drops.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub mod fake_sasl;
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

/// A stunnel process of this test alone, killed on drop.
pub struct Stunnel {
    child: Child,
    pub log: PathBuf,
}

impl Stunnel {
    /// Starts `stunnel` with `services` (the `[name]` sections) appended to a global part that
    /// keeps it in the foreground; waits until every port in `ports` accepts connections.
    pub fn start(dir: &Path, services: &str, ports: &[u16]) -> Stunnel {
        let bin = ["stunnel", "stunnel4"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-version")
                    .stderr(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("stunnel is not installed: run scripts/setup.sh (apt-get install stunnel4)");
        let log = dir.join("stunnel.log");
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 5\noutput = {}\n\n{services}",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel");
        let mut s = Stunnel { child, log };
        for p in ports {
            if !wait_port(*p, Duration::from_secs(10)) {
                let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                let _ = s.child.kill();
                panic!("stunnel did not listen on {p}; log:\n{log}");
            }
        }
        s
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
