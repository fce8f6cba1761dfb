//! TLS and SASL against a real Apache Kafka: the listeners of `scripts/kafka.sh start --sasl
//! --ssl` (SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256/512 and unsecured OAUTHBEARER; SSL; SSL
//! requiring a client certificate; SASL_SSL). Every successful login produces a record and
//! fetches it back through the secured listener (the metadata routes the client to the other
//! brokers' addresses of the same listener); every refused one is a typed, fatal
//! `ErrorKind::Authentication` error.
//!
//! Needs the cluster's variables; the tests fail (they do not skip) without them:
//!
//! ```text
//! scripts/kafka.sh start --nodes 3 --sasl --ssl
//! eval "$(scripts/kafka.sh env)"
//! cargo test --test security_kafka
//! ```
//!
//! `sasl_ssl_reauthentication_keeps_the_connection` checks KIP-368 re-authentication against
//! Kafka: an OAUTHBEARER session ends at its token's expiry on any Kafka (4 s tokens force
//! re-authentications), and the SASL_SSL listener of `scripts/kafka.sh` gives every session
//! 5 s (`connections.max.reauth.ms`), which the SCRAM part relies on (a cluster started by a
//! `kafka.sh` older than that setting gives SCRAM sessions no end, so that part proves nothing
//! there).
//!
//! The brokers' certificate names IP 127.0.0.1 and DNS kafka.rekafka.test, not `localhost`: a
//! client that connects by `localhost:PORT` fails hostname verification.

mod common;
use common::unique;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use rekafka::admin::NewTopic;
use rekafka::connection::security::{
    OAuthBearerToken, SaslConfig, SecurityConfig, SecurityProtocol, TlsConfig,
};
use rekafka::connection::{BrokerConnection, Connection, ConnectionConfig};
use rekafka::consumer::{ConsumerConfig, StartOffset, TopicPartition};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::{Client, ClientConfig, ErrorKind, KafkaCode};
use tokio::time::Instant;

/// The addresses and files exported by `scripts/kafka.sh env` for a `--sasl --ssl` cluster.
struct Env {
    sasl: String,
    ssl: String,
    mtls: String,
    sasl_ssl: String,
    user: String,
    password: String,
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn env() -> Env {
    const NAMES: [&str; 10] = [
        "REKAFKA_SASL_BOOTSTRAP",
        "REKAFKA_SSL_BOOTSTRAP",
        "REKAFKA_MTLS_BOOTSTRAP",
        "REKAFKA_SASL_SSL_BOOTSTRAP",
        "REKAFKA_SASL_USER",
        "REKAFKA_SASL_PASSWORD",
        "REKAFKA_TLS_CA",
        "REKAFKA_TLS_OTHER_CA",
        "REKAFKA_TLS_CLIENT_CERT",
        "REKAFKA_TLS_CLIENT_KEY",
    ];
    let values: Vec<Option<String>> = NAMES
        .iter()
        .map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        .collect();
    let missing: Vec<&str> = NAMES
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    assert!(
        missing.is_empty(),
        "{} not set: these tests need Apache Kafka with SASL and TLS listeners. Run \
         `scripts/kafka.sh start --nodes 3 --sasl --ssl && eval \"$(scripts/kafka.sh env)\"` \
         (or source the `env` file of a running cluster's directory), then \
         `cargo test --test security_kafka`",
        missing.join(", ")
    );
    let v: Vec<String> = values.into_iter().flatten().collect();
    Env {
        sasl: v[0].clone(),
        ssl: v[1].clone(),
        mtls: v[2].clone(),
        sasl_ssl: v[3].clone(),
        user: v[4].clone(),
        password: v[5].clone(),
        ca: PathBuf::from(&v[6]),
        other_ca: PathBuf::from(&v[7]),
        client_cert: PathBuf::from(&v[8]),
        client_key: PathBuf::from(&v[9]),
    }
}

/// The first address of `list` that accepts a TCP connection (the shared test cluster may have
/// a node down while another suite injects faults), else the first.
fn first(list: &str) -> String {
    list.split(',')
        .find(|a| {
            a.parse::<std::net::SocketAddr>().is_ok_and(|sa| {
                std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2)).is_ok()
            })
        })
        .or_else(|| list.split(',').next())
        .unwrap_or_default()
        .to_owned()
}

/// The port of the first address of `list`.
fn port(list: &str) -> String {
    first(list)
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Builds a client from `bootstrap`, `props` and `security` (if given, set before the
/// properties), produces one record and fetches it back.
async fn round_trip(
    what: &str,
    bootstrap: &str,
    security: Option<SecurityConfig>,
    props: &[(&str, String)],
) {
    let mut config = ClientConfig::default();
    if let Some(s) = security {
        config.security = s;
    }
    let mut builder = Client::builder()
        .config(config)
        .property("bootstrap.servers", bootstrap)
        .property("client.id", "rekafka-security-kafka")
        .property("request.timeout.ms", "20000")
        .property("socket.connection.setup.timeout.ms", "10000");
    for (k, v) in props {
        builder = builder.property(k, v);
    }
    let client = builder
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{what}: connecting: {e}"));
    // The brokers are known at addresses of the same listener (a node another suite stopped
    // is not listed, so a subset of the bootstrap list).
    let listed: Vec<String> = client
        .cluster()
        .metadata()
        .brokers
        .values()
        .map(|b| format!("{}:{}", b.host, b.port))
        .collect();
    let listener: Vec<&str> = bootstrap.split(',').collect();
    assert!(!listed.is_empty(), "{what}: no broker in the metadata");
    for a in &listed {
        assert!(
            listener.contains(&a.as_str()),
            "{what}: broker advertised at {a}, not an address of this listener {bootstrap}"
        );
    }

    let topic = unique(&format!("sec-{}", what.replace([' ', '/'], "-")));
    for r in client
        .admin()
        .create_topics(&[NewTopic::new(&topic, 1)])
        .await
        .unwrap_or_else(|e| panic!("{what}: create_topics: {e}"))
    {
        // TOPIC_ALREADY_EXISTS: the name is unique to this run, so it was our own request,
        // retried by the admin client after a lost answer.
        if let Err(e) = r
            && e.kafka_code() != Some(KafkaCode::TopicAlreadyExists)
        {
            panic!("{what}: create {topic}: {e}");
        }
    }
    let value = format!("{what} {}", unique("value"));
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: producer: {e}"));
    let md = producer
        .send_and_wait(
            Record::new(topic.as_str())
                .with_key("k")
                .with_value(value.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: produce: {e}"));
    producer.close().await;

    let consumer = client
        .consumer(ConsumerConfig::new())
        .unwrap_or_else(|e| panic!("{what}: consumer: {e}"));
    consumer
        .assign([(
            TopicPartition::new(&topic, md.partition),
            StartOffset::Offset(md.offset),
        )])
        .unwrap_or_else(|e| panic!("{what}: assign: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let recs = consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap_or_else(|e| panic!("{what}: poll: {e}"));
        assert!(recs.errors().is_empty(), "{what}: {:?}", recs.errors());
        found = recs.iter().find(|r| r.offset == md.offset).map(|r| {
            (
                r.key.as_ref().map(|k| k.to_vec()),
                r.value.as_ref().map(|v| v.to_vec()),
            )
        });
    }
    let _ = consumer.close().await;
    let _ = client.admin().delete_topics(&[topic.as_str()]).await;
    client.close().await;
    assert_eq!(
        found,
        Some((Some(b"k".to_vec()), Some(value.into_bytes()))),
        "{what}: the record produced at {md:?} fetched back"
    );
}

/// Building a client must fail with a fatal `Authentication` error; returns its text.
async fn refused(
    what: &str,
    bootstrap: &str,
    security: Option<SecurityConfig>,
    props: &[(&str, String)],
) -> String {
    let mut config = ClientConfig::default();
    if let Some(s) = security {
        config.security = s;
    }
    let mut builder = Client::builder()
        .config(config)
        .property("bootstrap.servers", bootstrap)
        .property("request.timeout.ms", "10000")
        .property("socket.connection.setup.timeout.ms", "10000");
    for (k, v) in props {
        builder = builder.property(k, v);
    }
    let e = match builder.connect().await {
        Ok(client) => {
            client.close().await;
            panic!("{what}: the client connected; it must be refused")
        }
        Err(e) => e,
    };
    eprintln!("{what}: {e}");
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{what}: {e}");
    assert!(e.is_fatal() && !e.is_retriable(), "{what}: {e}");
    e.to_string()
}

fn sasl_props(mechanism: &str, user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SASL_PLAINTEXT".into()),
        ("sasl.mechanism", mechanism.into()),
        ("sasl.username", user.into()),
        ("sasl.password", password.into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain() {
    let env = env();
    round_trip(
        "PLAIN",
        &env.sasl,
        None,
        &sasl_props("PLAIN", &env.user, &env.password),
    )
    .await;
    // The other PLAIN user of the listener's JAAS config, through sasl.jaas.config.
    round_trip(
        "PLAIN jaas",
        &env.sasl,
        None,
        &[
            ("security.protocol", "SASL_PLAINTEXT".into()),
            ("sasl.mechanism", "PLAIN".into()),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 username=\"admin\" password=\"admin-secret\";"
                    .into(),
            ),
        ],
    )
    .await;
    let msg = refused(
        "PLAIN wrong password",
        &env.sasl,
        None,
        &sasl_props("PLAIN", &env.user, "wrong-password"),
    )
    .await;
    assert!(msg.contains("SASL_AUTHENTICATION_FAILED"), "{msg}");
    refused(
        "PLAIN unknown user",
        &env.sasl,
        None,
        &sasl_props("PLAIN", "mallory", &env.password),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_sha_256() {
    let env = env();
    let m = "SCRAM-SHA-256";
    round_trip(m, &env.sasl, None, &sasl_props(m, &env.user, &env.password)).await;
    let msg = refused(
        "SCRAM-SHA-256 wrong password",
        &env.sasl,
        None,
        &sasl_props(m, &env.user, "wrong-password"),
    )
    .await;
    assert!(msg.contains("SASL_AUTHENTICATION_FAILED"), "{msg}");
    // A user with no SCRAM credential (admin has only a PLAIN password).
    refused(
        "SCRAM-SHA-256 unknown user",
        &env.sasl,
        None,
        &sasl_props(m, "admin", "admin-secret"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_sha_512() {
    let env = env();
    let m = "SCRAM-SHA-512";
    round_trip(m, &env.sasl, None, &sasl_props(m, &env.user, &env.password)).await;
    let msg = refused(
        "SCRAM-SHA-512 wrong password",
        &env.sasl,
        None,
        &sasl_props(m, &env.user, "wrong-password"),
    )
    .await;
    assert!(msg.contains("SASL_AUTHENTICATION_FAILED"), "{msg}");
}

/// An unsecured JWS (`alg: none`, empty signature), as Kafka's
/// `OAuthBearerUnsecuredValidatorCallbackHandler` accepts: `sub` is the principal, `exp` and
/// `iat` in seconds.
fn unsecured_jws(sub: &str, lifetime: Duration) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = b64(r#"{"alg":"none"}"#);
    let claims = b64(&format!(
        r#"{{"sub":"{sub}","iat":{now},"exp":{},"scope":"test"}}"#,
        now + lifetime.as_secs()
    ));
    format!("{header}.{claims}.")
}

fn oauth_security(token: impl Fn() -> String + Send + Sync + 'static) -> SecurityConfig {
    let token = std::sync::Arc::new(token);
    SecurityConfig::default()
        .with_protocol(SecurityProtocol::SaslPlaintext)
        .with_sasl(SaslConfig::oauthbearer(move || {
            let token = token.clone();
            async move { Ok(OAuthBearerToken::new(token(), Duration::from_secs(3600))) }
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_oauthbearer_unsecured_jws() {
    let env = env();
    round_trip(
        "OAUTHBEARER",
        &env.sasl,
        Some(oauth_security(|| {
            unsecured_jws("alice", Duration::from_secs(3600))
        })),
        &[],
    )
    .await;
    // Not a JWS at all, and one that expired an hour ago: refused by the validator.
    let msg = refused(
        "OAUTHBEARER not a token",
        &env.sasl,
        Some(oauth_security(|| "not-a-jwt".to_owned())),
        &[],
    )
    .await;
    assert!(msg.contains("SASL_AUTHENTICATION_FAILED"), "{msg}");
    refused(
        "OAUTHBEARER expired",
        &env.sasl,
        Some(oauth_security(|| {
            let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none"}"#),
                b64(r#"{"sub":"alice","iat":1000000000,"exp":1000003600}"#)
            )
        })),
        &[],
    )
    .await;
}

fn ssl_props(ca: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SSL".into()),
        ("ssl.ca.location", path(ca)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_right_ca() {
    let env = env();
    round_trip("SSL", &env.ssl, None, &ssl_props(&env.ca)).await;
    // The CA as PEM text (ssl.ca.pem) works the same.
    let pem = std::fs::read_to_string(&env.ca).unwrap_or_else(|e| panic!("{:?}: {e}", env.ca));
    round_trip(
        "SSL ca pem",
        &env.ssl,
        None,
        &[("security.protocol", "SSL".into()), ("ssl.ca.pem", pem)],
    )
    .await;
    // ssl.ca.location as a directory of CA files: the other CA and ours.
    let dir = std::env::temp_dir().join(unique("rekafka-cas"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
    std::fs::copy(&env.other_ca, dir.join("a-other.pem")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&env.ca, dir.join("b-ours.crt")).unwrap_or_else(|e| panic!("{e}"));
    round_trip("SSL ca dir", &env.ssl, None, &ssl_props(&dir)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_wrong_ca_is_refused() {
    let env = env();
    let msg = refused("SSL wrong CA", &env.ssl, None, &ssl_props(&env.other_ca)).await;
    assert!(msg.contains("certificate"), "{msg}");
    // The built-in public roots do not trust the test CA either.
    refused(
        "SSL public roots",
        &env.ssl,
        None,
        &[("security.protocol", "SSL".into())],
    )
    .await;
    // Plaintext against the TLS listener fails (within the connect timeout), it does not hang.
    let plain = ConnectionConfig::default().with_connect_timeout(Duration::from_secs(5));
    assert!(
        Connection::connect(&first(&env.ssl), -1, &plain)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls_wrong_hostname_is_refused() {
    let env = env();
    // The CA is right, but the certificate does not name "localhost".
    let localhost = format!("localhost:{}", port(&env.ssl));
    let msg = refused("SSL by localhost", &localhost, None, &ssl_props(&env.ca)).await;
    assert!(msg.to_lowercase().contains("name"), "{msg}");
    // ssl.endpoint.identification.algorithm=none accepts the name (the chain is still checked:
    // with the wrong CA it is refused).
    let mut lax = ssl_props(&env.ca);
    lax.push(("ssl.endpoint.identification.algorithm", "none".into()));
    let config = ConnectionConfig::default()
        .with_connect_timeout(Duration::from_secs(10))
        .with_security({
            let mut s = SecurityConfig::default();
            for (k, v) in &lax {
                assert!(s.apply_property(k, v).unwrap_or_else(|e| panic!("{e}")));
            }
            s
        });
    let conn = Connection::connect(&localhost, -1, &config)
        .await
        .unwrap_or_else(|e| panic!("no hostname verification: {e}"));
    conn.send(kafka_protocol::messages::MetadataRequest::default())
        .await
        .unwrap_or_else(|e| panic!("metadata without hostname verification: {e}"));
    conn.close().await;
    let mut lax_wrong_ca = config.clone();
    lax_wrong_ca.security.tls.ca_location = Some(env.other_ca.clone());
    let e = Connection::connect(&localhost, -1, &lax_wrong_ca)
        .await
        .err()
        .unwrap_or_else(|| panic!("no hostname verification, wrong CA: connected"));
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let env = env();
    let mut props = ssl_props(&env.ca);
    props.push(("ssl.certificate.location", path(&env.client_cert)));
    props.push(("ssl.key.location", path(&env.client_key)));
    round_trip("mTLS", &env.mtls, None, &props).await;
    // The certificate and key as PEM text (ssl.certificate.pem, ssl.key.pem).
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let mut pem = ssl_props(&env.ca);
    pem.push(("ssl.certificate.pem", read(&env.client_cert)));
    pem.push(("ssl.key.pem", read(&env.client_key)));
    let mut security = SecurityConfig::default();
    for (k, v) in &pem {
        assert!(
            security
                .apply_property(k, v)
                .unwrap_or_else(|e| panic!("{k}: {e}"))
        );
    }
    assert!(
        !format!("{security:?}").contains("PRIVATE KEY"),
        "the key shows in Debug output"
    );
    round_trip("mTLS pem", &env.mtls, Some(security), &[]).await;
    // Without a client certificate the broker refuses the handshake.
    refused(
        "mTLS without a certificate",
        &env.mtls,
        None,
        &ssl_props(&env.ca),
    )
    .await;
    // A certificate from a CA the broker does not trust: refused too.
    let dir = std::env::temp_dir().join(unique("rekafka-rogue-client"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
    let (cert, key) = rogue_client_certificate(&dir);
    let mut rogue = ssl_props(&env.ca);
    rogue.push(("ssl.certificate.location", path(&cert)));
    rogue.push(("ssl.key.location", path(&key)));
    refused("mTLS untrusted certificate", &env.mtls, None, &rogue).await;
    let _ = std::fs::remove_dir_all(&dir);
    // The client certificate is not needed (nor refused) on the listener without client
    // authentication.
    round_trip("SSL with a client certificate", &env.ssl, None, &props).await;
}

/// A client certificate and key (PEM files in `dir`) from a fresh CA that the brokers do not
/// trust.
fn rogue_client_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "rogue CA");
    let ca = ca.self_signed(&ca_key).unwrap_or_else(|e| panic!("{e}"));
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        CertificateParams::new(vec!["rekafka-client".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
    params
        .distinguished_name
        .push(DnType::CommonName, "rekafka-client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .unwrap_or_else(|e| panic!("{e}"));
    let (c, k) = (dir.join("rogue.pem"), dir.join("rogue.key"));
    std::fs::write(&c, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&k, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    (c, k)
}

#[tokio::test]
async fn mutual_tls_with_config_types() {
    // The same through the typed TlsConfig, on a single connection.
    let env = env();
    let config = ConnectionConfig::default()
        .with_connect_timeout(Duration::from_secs(10))
        .with_security(
            SecurityConfig::default()
                .with_protocol(SecurityProtocol::Ssl)
                .with_tls(
                    TlsConfig::default()
                        .with_ca_location(&env.ca)
                        .with_client_certificate(&env.client_cert, &env.client_key),
                ),
        );
    let conn = Connection::connect(&first(&env.mtls), -1, &config)
        .await
        .unwrap_or_else(|e| panic!("mTLS: {e}"));
    let md = conn
        .send(kafka_protocol::messages::MetadataRequest::default())
        .await
        .unwrap_or_else(|e| panic!("mTLS metadata: {e}"));
    assert!(!md.brokers.is_empty());
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl() {
    let env = env();
    for m in ["SCRAM-SHA-512", "PLAIN"] {
        let mut props = sasl_props(m, &env.user, &env.password);
        props[0].1 = "SASL_SSL".into();
        props.push(("ssl.ca.location", path(&env.ca)));
        round_trip(&format!("SASL_SSL {m}"), &env.sasl_ssl, None, &props).await;
    }
    let mut props = sasl_props("SCRAM-SHA-256", &env.user, "wrong-password");
    props[0].1 = "SASL_SSL".into();
    props.push(("ssl.ca.location", path(&env.ca)));
    let msg = refused("SASL_SSL wrong password", &env.sasl_ssl, None, &props).await;
    assert!(msg.contains("SASL_AUTHENTICATION_FAILED"), "{msg}");
    // The TLS check comes first: the right password behind the wrong CA is refused too.
    let mut props = sasl_props("SCRAM-SHA-256", &env.user, &env.password);
    props[0].1 = "SASL_SSL".into();
    props.push(("ssl.ca.location", path(&env.other_ca)));
    refused("SASL_SSL wrong CA", &env.sasl_ssl, None, &props).await;
}

#[tokio::test]
async fn an_unauthenticated_client_is_refused_by_the_sasl_listener() {
    // PLAINTEXT against a SASL listener: Kafka answers ApiVersions, then closes the connection
    // at the first other request.
    let env = env();
    let plain = ConnectionConfig::default()
        .with_connect_timeout(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(10));
    match Connection::connect(&first(&env.sasl), -1, &plain).await {
        Err(e) => assert_eq!(e.kind(), &ErrorKind::Disconnected, "{e}"),
        Ok(conn) => {
            let e = conn
                .send(kafka_protocol::messages::MetadataRequest::default())
                .await
                .err()
                .unwrap_or_else(|| panic!("metadata answered without authentication"));
            assert_eq!(e.kind(), &ErrorKind::Disconnected, "{e}");
        }
    }
}

#[tokio::test]
async fn broker_connection_surfaces_an_authentication_error_without_retrying() {
    // A wrong SCRAM password through BrokerConnection: every request gets the typed error
    // (one connection attempt each, after the back-off), none is retried behind its back.
    let env = env();
    let mut security = SecurityConfig::default();
    for (k, v) in sasl_props("SCRAM-SHA-512", &env.user, "wrong-password") {
        assert!(
            security
                .apply_property(k, &v)
                .unwrap_or_else(|e| panic!("{k}: {e}"))
        );
    }
    let config = ConnectionConfig::default()
        .with_connect_timeout(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(10))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .with_security(security);
    let bc = BrokerConnection::new(-1, first(&env.sasl), config);
    for _ in 0..2 {
        let e = bc
            .send(kafka_protocol::messages::MetadataRequest::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("metadata answered with a wrong password"));
        assert_eq!(e.kind(), &ErrorKind::Authentication, "{e}");
        assert!(e.is_fatal() && !e.is_retriable(), "{e}");
    }
    assert_eq!(bc.failures().await, 2);
    bc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_reauthentication_keeps_the_connection() {
    // The SASL_SSL listener of scripts/kafka.sh gives 5 s sessions (connections.max.reauth.ms,
    // KIP-368): Kafka closes a connection used after its session expired unless the client
    // re-authenticated in time. One connection, requests flowing, across several sessions.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let env = env();
    let addr = first(&env.sasl_ssl);
    let tls = TlsConfig::default().with_ca_location(&env.ca);
    let connection = |sasl: SaslConfig| {
        ConnectionConfig::default()
            .with_connect_timeout(Duration::from_secs(10))
            .with_request_timeout(Duration::from_secs(10))
            .with_security(
                SecurityConfig::default()
                    .with_protocol(SecurityProtocol::SaslSsl)
                    .with_tls(tls.clone())
                    .with_sasl(sasl),
            )
    };

    // OAUTHBEARER with 4 s tokens: each re-authentication needs a fresh token, so the provider's
    // calls count the logins. Three logins prove two re-authentications on one connection.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let sasl = SaslConfig::oauthbearer(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok(OAuthBearerToken::new(
                unsecured_jws("alice", Duration::from_secs(4)),
                Duration::from_secs(4),
            ))
        }
    });
    let conn = Connection::connect(&addr, -1, &connection(sasl))
        .await
        .unwrap_or_else(|e| panic!("OAUTHBEARER over SASL_SSL: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut requests = 0;
    while calls.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        conn.send(kafka_protocol::messages::MetadataRequest::default())
            .await
            .unwrap_or_else(|e| {
                panic!("request {requests} on the re-authenticating connection: {e}")
            });
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        calls.load(Ordering::SeqCst) >= 3,
        "no re-authentication within 60 s: Kafka ends an OAUTHBEARER session when its token \
         expires (4 s here), so the client should have logged in again"
    );
    assert!(!conn.is_closed(), "{:?}", conn.error());
    conn.close().await;

    // SCRAM-SHA-512: requests keep flowing on one connection across three 5 s sessions
    // (connections.max.reauth.ms of the SASL_SSL listener); Kafka would have closed it after the
    // first had the client not re-authenticated.
    let sasl = SaslConfig::with_credentials(
        rekafka::connection::security::SaslMechanism::ScramSha512,
        env.user.clone(),
        env.password.as_str(),
    );
    let conn = Connection::connect(&addr, -1, &connection(sasl))
        .await
        .unwrap_or_else(|e| panic!("SCRAM over SASL_SSL: {e}"));
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        conn.send(kafka_protocol::messages::MetadataRequest::default())
            .await
            .unwrap_or_else(|e| panic!("SCRAM connection after re-authentications: {e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!conn.is_closed(), "{:?}", conn.error());
    conn.close().await;
}
