//! SASL against an in-process fake broker that implements the server side itself: PLAIN,
//! SCRAM-SHA-256/512 (its own RFC 5802 server, written here independently of the client),
//! OAUTHBEARER, and KIP-368 session lifetimes. The fake broker enforces what Kafka enforces:
//! no request but ApiVersions/SASL before authentication, and a request after the session
//! expired closes the connection. So re-authentication that comes too late, or corrupts the
//! pipelined stream, fails these tests.

use crate::{fake_sasl, security_support};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_sasl::*;
use rekafka::ErrorKind;
use rekafka::connection::security::{OAuthBearerToken, SaslConfig, SaslMechanism};
use rekafka::connection::{BrokerConnection, Connection};
use tokio::time::Instant;
// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn plain_and_scram_authenticate_then_requests_work() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        ..Settings::default()
    })
    .await;
    for mech in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        for (user, pass) in [("alice", "alice-secret"), ("b,o=b", "pässwörd")] {
            let sasl = SaslConfig::with_credentials(mech, user, pass);
            let conn = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
                .await
                .unwrap_or_else(|e| panic!("{mech} as {user}: {e}"));
            echo(&conn, "after-auth").await.unwrap();
            conn.close().await;
        }
    }
    assert_eq!(broker.stats.auths.load(Ordering::SeqCst), 6);
    assert_eq!(broker.stats.unauthenticated.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_password_is_a_fatal_authentication_error() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        ..Settings::default()
    })
    .await;
    for mech in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        let sasl = SaslConfig::with_credentials(mech, "alice", "wrong");
        let started = Instant::now();
        let e = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Authentication, "{mech}: {e}");
        assert!(e.is_fatal() && !e.is_retriable(), "{e}");
        assert!(e.to_string().contains("SASL_AUTHENTICATION_FAILED"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // An unknown user fails the same way.
    let sasl = SaslConfig::with_credentials(SaslMechanism::ScramSha512, "mallory", "x");
    let e = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
}

#[tokio::test]
async fn wrong_server_signature_is_an_authentication_error() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        bad_server_signature: true,
        ..Settings::default()
    })
    .await;
    for mech in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let sasl = SaslConfig::with_credentials(mech, "alice", "alice-secret");
        let e = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("server signature"), "{e}");
        assert!(e.is_fatal());
    }
}

#[tokio::test]
async fn mechanism_not_enabled_names_the_enabled_ones() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: vec!["SCRAM-SHA-512"],
        ..Settings::default()
    })
    .await;
    let sasl = SaslConfig::plain("alice", "alice-secret");
    let e = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
    assert!(e.to_string().contains("SCRAM-SHA-512"), "{e}");
    assert!(e.is_fatal());
}

#[tokio::test]
async fn broker_connection_surfaces_authentication_errors_without_retrying() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        ..Settings::default()
    })
    .await;
    let sasl = SaslConfig::with_credentials(SaslMechanism::ScramSha256, "alice", "wrong");
    let bc = BrokerConnection::new(
        1,
        broker.addr.to_string(),
        config(sasl).with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(300)),
    );
    for _ in 0..2 {
        let started = Instant::now();
        let e = bc.send(topic_request("t")).await.unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
        assert!(e.is_fatal());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // One connect attempt per request: the error is surfaced, not retried in a loop.
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 2);
    bc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_reauthenticates_before_expiry_while_requests_flow() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        // Long enough that a loaded machine still re-authenticates in time (80–90%: 100–200 ms
        // of slack), short enough for several rounds.
        session_lifetime_ms: 1000,
        token_prefix: "tok-".to_owned(),
        ..Settings::default()
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    // Tokens live 1 s: asked for again after 80% (800 ms), so every re-authentication (at
    // 800–900 ms) fetches a fresh one before the old one expires.
    let sasl = SaslConfig::oauthbearer(move || {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok(
                OAuthBearerToken::new(format!("tok-{n}"), Duration::from_millis(1000))
                    .with_extension("traceId", "abc"),
            )
        }
    });
    let conn = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
        .await
        .unwrap();
    let stop = Instant::now() + Duration::from_millis(4500);
    let mut workers = Vec::new();
    for w in 0..8 {
        let conn = conn.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop {
                echo(&conn, &format!("w{w}-{n}")).await?;
                n += 1;
            }
            Ok::<u32, rekafka::Error>(n)
        }));
    }
    // Callers that give up on slow requests (20 ms at the broker) after 5 ms: their responses
    // arrive late, around the re-authentications, and must be discarded without disturbing
    // anyone else's. Paced (one every ~50 ms each) so that the broker keeps up: a client that
    // floods a broker with requests it abandons outruns any session lifetime.
    let mut abandoners = Vec::new();
    for w in 0..2 {
        let conn = conn.clone();
        abandoners.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop {
                let r = tokio::time::timeout(
                    Duration::from_millis(5),
                    echo(&conn, &format!("slow-{w}-{n}")),
                )
                .await;
                if let Ok(r) = r {
                    r?;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(45)).await;
            }
            Ok::<u32, rekafka::Error>(n)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap().unwrap();
    }
    for a in abandoners {
        assert!(a.await.unwrap().unwrap() > 10);
    }
    assert!(total > 100, "only {total} requests went through");
    assert!(!conn.is_closed(), "{:?}", conn.error());
    // Same connection all along, re-authenticated about every 800–900 ms.
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(broker.stats.expired.load(Ordering::SeqCst), 0);
    let auths = broker.stats.auths.load(Ordering::SeqCst);
    assert!(auths >= 5, "only {auths} authentications in 4.5 s");
    // The provider was asked again before the tokens expired, and those tokens were used.
    let tokens = broker.stats.tokens.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "provider called {calls:?} times"
    );
    assert!(distinct.len() >= 4, "tokens used: {tokens:?}");
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "a token was used twice: {tokens:?}"
    );
    conn.close().await;
}

#[tokio::test]
async fn failed_reauthentication_kills_the_connection_with_an_authentication_error() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        session_lifetime_ms: 300,
        token_prefix: "good-".to_owned(),
        ..Settings::default()
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    // The first token is good, later ones are refused.
    let sasl = SaslConfig::oauthbearer(move || {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        async move {
            let value = if n == 0 {
                "good-0".to_owned()
            } else {
                format!("revoked-{n}")
            };
            Ok(OAuthBearerToken::new(value, Duration::from_millis(100)))
        }
    });
    let conn = Connection::connect(&broker.addr.to_string(), 1, &config(sasl))
        .await
        .unwrap();
    echo(&conn, "before").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !conn.is_closed() {
        assert!(
            Instant::now() < deadline,
            "re-authentication did not fail the connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = conn.send(topic_request("after")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
    assert!(e.is_fatal());
    assert!(e.to_string().contains("invalid_token"), "{e}");
}

/// Runs librdkafka (confluent-kafka from `.tools/py`, installed by scripts/setup.sh) as a SASL
/// client against the fake broker; returns whether it got metadata, and what it printed.
fn librdkafka_login(addr: &str, mechanism: &str, user: &str, password: &str) -> (bool, String) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = r#"
import sys
from confluent_kafka.admin import AdminClient
addr, mech, user, pw, timeout = sys.argv[1:6]
a = AdminClient({"bootstrap.servers": addr, "security.protocol": "SASL_PLAINTEXT",
                 "sasl.mechanisms": mech, "sasl.username": user, "sasl.password": pw,
                 "log_level": "0"})
try:
    a.list_topics(timeout=float(timeout))
    print("OK")
except Exception as e:
    print("FAIL", e)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        // A refused login only shows as a timeout: keep it short for the wrong password.
        .args([
            addr,
            mechanism,
            user,
            password,
            if password == "wrong" { "1.5" } else { "10" },
        ])
        .env("PYTHONPATH", root.join(".tools/py"))
        .output()
        .expect("run python3 (scripts/setup.sh installs confluent-kafka into .tools/py)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("OK") || stdout.starts_with("FAIL"),
        "librdkafka helper failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        stdout.starts_with("OK"),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The fake broker's server side is checked against an independent client, librdkafka: so
/// the successes above are not one implementation agreeing with itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_authenticates_against_the_fake_broker_too() {
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        ..Settings::default()
    })
    .await;
    let addr = broker.addr.to_string();
    for mech in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let before = broker.stats.auths.load(Ordering::SeqCst);
        let (a, m) = (addr.clone(), mech.to_owned());
        let (ok, out) =
            tokio::task::spawn_blocking(move || librdkafka_login(&a, &m, "alice", "alice-secret"))
                .await
                .unwrap();
        assert!(ok, "librdkafka could not log in with {mech}: {out}");
        assert!(broker.stats.auths.load(Ordering::SeqCst) > before, "{mech}");
        let (a, m) = (addr.clone(), mech.to_owned());
        let (ok, out) =
            tokio::task::spawn_blocking(move || librdkafka_login(&a, &m, "alice", "wrong"))
                .await
                .unwrap();
        assert!(
            !ok,
            "librdkafka logged in with a wrong password ({mech}): {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_scram_with_reauthentication_over_tls() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rekafka::connection::security::{SecurityProtocol, TlsConfig};
    use security_support::TlsFront;

    // The fake SASL broker (real SCRAM server side, 1 s sessions) behind an in-process TLS
    // terminator: TLS, then SASL, then re-authentication on the TLS stream while requests flow.
    // (Real Kafka's SASL_SSL listener, re-authentication included, is tested in
    // security_kafka.rs; this fake also checks the number of logins on the broker side.)
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fake broker CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&server_key, &ca, &ca_key).unwrap();

    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        session_lifetime_ms: 1000,
        ..Settings::default()
    })
    .await;
    let front = TlsFront::start(&server.pem(), &server_key.serialize_pem(), broker.addr).await;
    let addr = format!("localhost:{}", front.addr.port());
    let mut config = config(SaslConfig::with_credentials(
        SaslMechanism::ScramSha512,
        "alice",
        "alice-secret",
    ));
    config.security.protocol = SecurityProtocol::SaslSsl;
    config.security.tls = TlsConfig::default();
    assert!(
        config
            .security
            .apply_property("ssl.ca.pem", &ca.pem())
            .unwrap()
    );
    let conn = Connection::connect(&addr, -1, &config).await.unwrap();
    // Requests flow until the connection has re-authenticated at least twice (each session
    // lasts 1 s; the deadline only bounds a hang).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    for w in 0..4 {
        let conn = conn.clone();
        let stats = broker.stats.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while (n <= 10 || stats.auths.load(Ordering::SeqCst) < 3) && Instant::now() < deadline {
                echo(&conn, &format!("tls-w{w}-{n}")).await?;
                n += 1;
            }
            Ok::<u32, rekafka::Error>(n)
        }));
    }
    for w in workers {
        assert!(w.await.unwrap().unwrap() > 10);
    }
    assert!(!conn.is_closed(), "{:?}", conn.error());
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(broker.stats.expired.load(Ordering::SeqCst), 0);
    let auths = broker.stats.auths.load(Ordering::SeqCst);
    assert!(
        auths >= 3,
        "{auths} authentications: no re-authentication within 60 s"
    );
    conn.close().await;

    // A wrong password over TLS: a fatal Authentication error.
    config.security.sasl =
        SaslConfig::with_credentials(SaslMechanism::ScramSha512, "alice", "wrong");
    let e = Connection::connect(&addr, -1, &config).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
    assert!(e.is_fatal() && !e.is_retriable(), "{e}");
}
