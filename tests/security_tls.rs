//! TLS against a real TLS server: Debian's stunnel terminates TLS in front of a private,
//! plaintext Tansu (Tansu itself has no working TLS listener, see docs/broker-quirks.md). A CA,
//! server and client certificates are generated for each run (rcgen).
//!
//! Tansu advertises the stunnel address, so metadata routes clients back through TLS.
//!
//! Starts its own broker and stunnel: `cargo test --test security_tls` (stunnel from
//! `scripts/setup.sh`).

mod security_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rekafka::ErrorKind;
use rekafka::connection::security::{
    EndpointIdentification, SecurityConfig, SecurityProtocol, TlsConfig,
};
use rekafka::connection::{BrokerConnection, Connection, ConnectionConfig};
use security_support::{Stunnel, Tansu, free_port, temp_dir};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// Writes `<name>.pem` and `<name>.key` signed by `ca`; returns their paths.
fn leaf(
    dir: &Path,
    ca: &Ca,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn write_ca(dir: &Path, ca: &Ca, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, ca.cert.pem()).unwrap();
    p
}

struct Setup {
    _tansu: Tansu,
    _stunnel: Stunnel,
    dir: PathBuf,
    /// TLS, server cert for 127.0.0.1 and localhost; Tansu advertises this one.
    tls: u16,
    /// TLS with a server cert for another name only.
    wrong_name: u16,
    /// TLS requiring a client certificate from the CA.
    mtls: u16,
    ca: PathBuf,
    other_ca: PathBuf,
    client: (PathBuf, PathBuf),
    rogue_client: (PathBuf, PathBuf),
}

fn setup(name: &str) -> Setup {
    let dir = temp_dir(&format!("tls-{name}"));
    let ca_ = ca("rekafka test CA");
    let other = ca("some other CA");
    let ca_path = write_ca(&dir, &ca_, "ca");
    let other_path = write_ca(&dir, &other, "other-ca");
    let server = leaf(
        &dir,
        &ca_,
        "server",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let misnamed = leaf(
        &dir,
        &ca_,
        "misnamed",
        &["broker.example.invalid"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(
        &dir,
        &ca_,
        "client",
        &["client"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue = leaf(
        &dir,
        &other,
        "rogue",
        &["client"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let (tls, wrong_name, mtls) = (free_port(), free_port(), free_port());
    let tansu = Tansu::start(
        &format!("tls-{name}"),
        false,
        Some(&format!("127.0.0.1:{tls}")),
    );
    let t = &tansu.addr;
    let services = format!(
        "[tls]\naccept = 127.0.0.1:{tls}\nconnect = {t}\ncert = {}\nkey = {}\n\n\
         [wrong-name]\naccept = 127.0.0.1:{wrong_name}\nconnect = {t}\ncert = {}\nkey = {}\n\n\
         [mtls]\naccept = 127.0.0.1:{mtls}\nconnect = {t}\ncert = {}\nkey = {}\n\
         CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
        server.0.display(),
        server.1.display(),
        misnamed.0.display(),
        misnamed.1.display(),
        server.0.display(),
        server.1.display(),
        ca_path.display(),
    );
    let stunnel = Stunnel::start(&dir, &services, &[tls, wrong_name, mtls]);
    Setup {
        _tansu: tansu,
        _stunnel: stunnel,
        dir,
        tls,
        wrong_name,
        mtls,
        ca: ca_path,
        other_ca: other_path,
        client,
        rogue_client: rogue,
    }
}

fn config(tls: TlsConfig) -> ConnectionConfig {
    ConnectionConfig::default()
        .with_request_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5))
        .with_security(
            SecurityConfig::default()
                .with_protocol(SecurityProtocol::Ssl)
                .with_tls(tls),
        )
}

async fn metadata_round_trip(addr: &str, config: &ConnectionConfig) -> rekafka::Result<String> {
    let conn = Connection::connect(addr, -1, config).await?;
    let md = conn.send(MetadataRequest::default()).await?;
    conn.close().await;
    let b = md.brokers.first().expect("a broker in the metadata");
    Ok(format!("{}:{}", b.host.as_str(), b.port))
}

fn assert_fatal_tls(e: &rekafka::Error, what: &str) {
    eprintln!("{what}: {e}");
    assert_eq!(e.kind(), &ErrorKind::Authentication, "{what}: {e}");
    assert!(e.is_fatal() && !e.is_retriable(), "{what}: {e}");
}

#[tokio::test]
async fn tls_server_verification() {
    let s = setup("verify");
    let good = config(TlsConfig::default().with_ca_location(&s.ca));

    // The right CA: a Metadata round trip through TLS, by IP and by host name (SNI).
    let advertised = metadata_round_trip(&format!("127.0.0.1:{}", s.tls), &good)
        .await
        .unwrap();
    assert_eq!(advertised, format!("127.0.0.1:{}", s.tls));
    metadata_round_trip(&format!("localhost:{}", s.tls), &good)
        .await
        .unwrap();

    // ssl.ca.location as a directory of CA files, and ssl.ca.pem as PEM text.
    let cas = s.dir.join("cas");
    std::fs::create_dir_all(&cas).unwrap();
    std::fs::copy(&s.other_ca, cas.join("a-other.pem")).unwrap();
    std::fs::copy(&s.ca, cas.join("b-ours.crt")).unwrap();
    metadata_round_trip(
        &format!("127.0.0.1:{}", s.tls),
        &config(TlsConfig::default().with_ca_location(&cas)),
    )
    .await
    .unwrap();
    let mut pem = config(TlsConfig::default());
    assert!(
        pem.security
            .apply_property("ssl.ca.pem", &std::fs::read_to_string(&s.ca).unwrap())
            .unwrap()
    );
    metadata_round_trip(&format!("127.0.0.1:{}", s.tls), &pem)
        .await
        .unwrap();

    // Routing back through the advertised address with a BrokerConnection works too.
    let bc = BrokerConnection::new(111, advertised, good.clone());
    bc.send(MetadataRequest::default()).await.unwrap();
    bc.close().await;

    // The cluster layer over TLS: bootstrap, metadata, a leader, the leader's connection (the
    // advertised stunnel address), all through TLS.
    let cluster = rekafka::cluster::Cluster::connect(
        rekafka::cluster::ClusterConfig::new([format!("localhost:{}", s.tls)])
            .with_connection(good.clone()),
    )
    .await
    .unwrap();
    let topic = format!("tls-topic-{}", std::process::id());
    let (leader, _epoch) = cluster.leader_for(&topic, 0).await.unwrap();
    let leader_conn = cluster.connection_for_broker(leader).await.unwrap();
    assert_eq!(leader_conn.addr(), format!("127.0.0.1:{}", s.tls));
    leader_conn.send(MetadataRequest::default()).await.unwrap();
    cluster.close().await;

    // A CA that did not sign the server certificate: a verification error, fatal.
    let wrong_ca = config(TlsConfig::default().with_ca_location(&s.other_ca));
    let e = metadata_round_trip(&format!("127.0.0.1:{}", s.tls), &wrong_ca)
        .await
        .unwrap_err();
    assert_fatal_tls(&e, "wrong CA");
    assert!(e.to_string().contains("certificate"), "{e}");

    // The built-in public roots do not trust the test CA either.
    let e = metadata_round_trip(
        &format!("127.0.0.1:{}", s.tls),
        &config(TlsConfig::default()),
    )
    .await
    .unwrap_err();
    assert_fatal_tls(&e, "public roots");

    // Plaintext against the TLS port does not hang: it fails within the connect timeout.
    let plain = ConnectionConfig::default().with_connect_timeout(Duration::from_secs(2));
    assert!(
        Connection::connect(&format!("127.0.0.1:{}", s.tls), -1, &plain)
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn hostname_verification_and_its_explicit_opt_out() {
    let s = setup("hostname");
    let addr = format!("127.0.0.1:{}", s.wrong_name);
    // The certificate is from the trusted CA but for another name: refused by default.
    let e = metadata_round_trip(&addr, &config(TlsConfig::default().with_ca_location(&s.ca)))
        .await
        .unwrap_err();
    assert_fatal_tls(&e, "wrong name");
    // ssl.endpoint.identification.algorithm=none accepts it (the chain is still verified)...
    let mut lax = config(TlsConfig::default());
    assert!(
        lax.security
            .apply_property("ssl.ca.location", s.ca.to_str().unwrap())
            .unwrap()
    );
    assert!(
        lax.security
            .apply_property("ssl.endpoint.identification.algorithm", "none")
            .unwrap()
    );
    assert_eq!(
        lax.security.tls.endpoint_identification,
        EndpointIdentification::DangerousNoHostnameVerification
    );
    metadata_round_trip(&addr, &lax).await.unwrap();
    // ...but not a certificate from an untrusted CA.
    let mut lax_wrong_ca = lax.clone();
    lax_wrong_ca.security.tls.ca_location = Some(s.other_ca.clone());
    let e = metadata_round_trip(&addr, &lax_wrong_ca).await.unwrap_err();
    assert_fatal_tls(&e, "no hostname check, wrong CA");
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn mutual_tls() {
    let s = setup("mtls");
    let addr = format!("127.0.0.1:{}", s.mtls);
    // With a client certificate from the CA stunnel trusts: works.
    let with_cert = config(
        TlsConfig::default()
            .with_ca_location(&s.ca)
            .with_client_certificate(&s.client.0, &s.client.1),
    );
    metadata_round_trip(&addr, &with_cert).await.unwrap();
    // The same with the certificate and key given as PEM text (ssl.certificate.pem/ssl.key.pem).
    let mut pem = config(TlsConfig::default().with_ca_location(&s.ca));
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
    assert!(
        pem.security
            .apply_property("ssl.certificate.pem", &read(&s.client.0))
            .unwrap()
    );
    assert!(
        pem.security
            .apply_property("ssl.key.pem", &read(&s.client.1))
            .unwrap()
    );
    assert!(
        !format!("{pem:?}").contains("PRIVATE KEY"),
        "the key shows in Debug output"
    );
    metadata_round_trip(&addr, &pem).await.unwrap();

    // Without one: refused, with a typed error and without hanging.
    let without = config(TlsConfig::default().with_ca_location(&s.ca));
    let e = metadata_round_trip(&addr, &without).await.unwrap_err();
    assert_fatal_tls(&e, "no client certificate");

    // With one from another CA: refused.
    let rogue = config(
        TlsConfig::default()
            .with_ca_location(&s.ca)
            .with_client_certificate(&s.rogue_client.0, &s.rogue_client.1),
    );
    let e = metadata_round_trip(&addr, &rogue).await.unwrap_err();
    assert_fatal_tls(&e, "untrusted client certificate");
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_scram_with_reauthentication_over_tls() {
    use rekafka::connection::security::{SaslConfig, SaslMechanism};
    use security_support::fake_sasl::{FakeBroker, Settings, all_mechanisms, echo, users};
    use std::sync::atomic::Ordering;

    // The fake SASL broker (real SCRAM server side, 1 s sessions) behind stunnel: TLS, then
    // SASL, then re-authentication on the TLS stream while requests flow.
    let s = setup("sasl-ssl");
    let broker = FakeBroker::start(Settings {
        users: users(),
        mechanisms: all_mechanisms(),
        session_lifetime_ms: 1000,
        ..Settings::default()
    })
    .await;
    let port = free_port();
    let dir = s.dir.join("sasl");
    std::fs::create_dir_all(&dir).unwrap();
    let _stunnel = Stunnel::start(
        &dir,
        &format!(
            "[sasl-ssl]\naccept = 127.0.0.1:{port}\nconnect = {}\ncert = {}\nkey = {}\n",
            broker.addr,
            s.dir.join("server.pem").display(),
            s.dir.join("server.key").display(),
        ),
        &[port],
    );
    let mut config = config(TlsConfig::default().with_ca_location(&s.ca));
    config.security.protocol = SecurityProtocol::SaslSsl;
    config.security.sasl =
        SaslConfig::with_credentials(SaslMechanism::ScramSha512, "alice", "alice-secret");
    let conn = Connection::connect(&format!("localhost:{port}"), -1, &config)
        .await
        .unwrap();
    let stop = tokio::time::Instant::now() + Duration::from_millis(3000);
    let mut workers = Vec::new();
    for w in 0..4 {
        let conn = conn.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while tokio::time::Instant::now() < stop {
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
    assert_eq!(broker.stats.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(broker.stats.expired.load(Ordering::SeqCst), 0);
    assert!(broker.stats.auths.load(Ordering::SeqCst) >= 3);
    conn.close().await;

    // A wrong password over TLS: the same fatal Authentication error.
    config.security.sasl =
        SaslConfig::with_credentials(SaslMechanism::ScramSha512, "alice", "wrong");
    let e = Connection::connect(&format!("localhost:{port}"), -1, &config)
        .await
        .unwrap_err();
    assert_fatal_tls(&e, "SASL_SSL wrong password");
    let _ = std::fs::remove_dir_all(&s.dir);
}
