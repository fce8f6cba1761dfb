//! SASL against an in-process fake broker that implements the server side itself: PLAIN,
//! SCRAM-SHA-256/512 (its own RFC 5802 server, written here independently of the client),
//! OAUTHBEARER, and KIP-368 session lifetimes. The fake broker enforces what Kafka enforces:
//! no request but ApiVersions/SASL before authentication, and a request after the session
//! expired closes the connection. So re-authentication that comes too late, or corrupts the
//! pipelined stream, fails these tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rekafka::ErrorKind;
use rekafka::connection::security::{
    OAuthBearerToken, SaslConfig, SaslMechanism, SecurityConfig, SecurityProtocol,
};
use rekafka::connection::{BrokerConnection, Connection, ConnectionConfig};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// The fake broker

#[derive(Clone, Default)]
struct Settings {
    /// user → password (PLAIN and SCRAM).
    users: HashMap<String, String>,
    /// Mechanisms the broker enables.
    mechanisms: Vec<&'static str>,
    /// KIP-368 session lifetime given on success (0: none).
    session_lifetime_ms: i64,
    /// Send a wrong SCRAM server signature.
    bad_server_signature: bool,
    /// Accepted OAUTHBEARER tokens start with this.
    token_prefix: String,
}

#[derive(Default)]
struct Stats {
    /// Successful authentications (first ones and re-authentications), per connection.
    auths: AtomicUsize,
    /// OAUTHBEARER tokens seen, in order.
    tokens: Mutex<Vec<String>>,
    /// Connections closed because a request came after the session expired.
    expired: AtomicUsize,
    /// Connections closed because a request came before authentication.
    unauthenticated: AtomicUsize,
    accepted: AtomicUsize,
    metadata: AtomicUsize,
}

struct FakeBroker {
    addr: SocketAddr,
    stats: Arc<Stats>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl FakeBroker {
    async fn start(settings: Settings) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let settings = Arc::new(settings);
        let accept = {
            let (stats, tasks) = (stats.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    stats.accepted.fetch_add(1, Ordering::SeqCst);
                    let h = tokio::spawn(serve(stream, settings.clone(), stats.clone()));
                    tasks.lock().unwrap().push(h.abort_handle());
                }
            })
        };
        tasks.lock().unwrap().push(accept.abort_handle());
        FakeBroker { addr, stats, tasks }
    }
}

fn response<M: Encodable>(api: ApiKey, version: i16, corr: i32, body: &M) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut b, api.response_header_version(version))
        .unwrap();
    body.encode(&mut b, version).unwrap();
    let size = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    b
}

/// The server side of one SCRAM exchange.
struct ScramServer {
    sha512: bool,
    salted: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

fn hmac(sha512: bool, key: &[u8], data: &[u8]) -> Vec<u8> {
    if sha512 {
        let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    } else {
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
}

fn h(sha512: bool, data: &[u8]) -> Vec<u8> {
    if sha512 {
        sha2::Sha512::digest(data).to_vec()
    } else {
        sha2::Sha256::digest(data).to_vec()
    }
}

/// PBKDF2 (Hi) written out per RFC 2898 with one block.
fn pbkdf2(sha512: bool, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&[0, 0, 0, 1]);
    let mut u = hmac(sha512, password, &block);
    let mut acc = u.clone();
    for _ in 1..iterations {
        u = hmac(sha512, password, &u);
        acc.iter_mut().zip(&u).for_each(|(a, b)| *a ^= b);
    }
    acc
}

#[derive(Default)]
struct ConnState {
    mechanism: Option<String>,
    scram: Option<ScramServer>,
    authenticated: bool,
    expires: Option<Instant>,
    /// An OAUTHBEARER error challenge was sent; the client's %x01 is next.
    oauth_challenged: bool,
}

enum Outcome {
    Reply(BytesMut),
    Close,
}

async fn serve(mut stream: TcpStream, settings: Arc<Settings>, stats: Arc<Stats>) {
    let mut buf = BytesMut::new();
    let mut st = ConnState::default();
    loop {
        while buf.len() >= 4 {
            let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + size {
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            match handle(frame, &settings, &stats, &mut st) {
                Outcome::Reply(b) => {
                    if stream.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Outcome::Close => return,
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn auth_response(
    error: i16,
    msg: Option<&str>,
    bytes: Vec<u8>,
    lifetime: i64,
) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(error)
        .with_error_message(msg.map(|m| StrBytes::from_string(m.to_owned())))
        .with_auth_bytes(Bytes::from(bytes))
        .with_session_lifetime_ms(lifetime)
}

fn handle(frame: Bytes, settings: &Settings, stats: &Stats, st: &mut ConnState) -> Outcome {
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).unwrap();
    let mut body = frame.clone();
    let header = RequestHeader::decode(&mut body, api.request_header_version(version)).unwrap();
    let corr = header.correlation_id;
    let reply = |b: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        b(&mut out);
        Outcome::Reply(out)
    };
    match api {
        ApiKey::ApiVersions => {
            let range = |k: ApiKey, min, max| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            };
            let resp = ApiVersionsResponse::default().with_api_keys(vec![
                range(ApiKey::ApiVersions, 0, 3),
                range(ApiKey::Metadata, 0, 12),
                range(ApiKey::SaslHandshake, 0, 1),
                range(ApiKey::SaslAuthenticate, 0, 2),
            ]);
            let v = version.min(3);
            reply(&|out| out.extend_from_slice(&response(api, v, corr, &resp)))
        }
        ApiKey::SaslHandshake => {
            let req = SaslHandshakeRequest::decode(&mut body, version).unwrap();
            let mech = req.mechanism.as_str().to_owned();
            let enabled = settings.mechanisms.contains(&mech.as_str());
            let resp = SaslHandshakeResponse::default()
                .with_error_code(if enabled { 0 } else { 33 })
                .with_mechanisms(
                    settings
                        .mechanisms
                        .iter()
                        .map(|m| StrBytes::from_static_str(m))
                        .collect(),
                );
            st.mechanism = enabled.then_some(mech);
            st.scram = None;
            reply(&|out| out.extend_from_slice(&response(api, version, corr, &resp)))
        }
        ApiKey::SaslAuthenticate => {
            let req = SaslAuthenticateRequest::decode(&mut body, version).unwrap();
            let lifetime = settings.session_lifetime_ms;
            let bytes = req.auth_bytes.to_vec();
            let Some(mech) = st.mechanism.clone() else {
                let r = auth_response(34, Some("no handshake"), vec![], 0);
                return reply(&|out| out.extend_from_slice(&response(api, version, corr, &r)));
            };
            let success = |st: &mut ConnState, server_bytes: Vec<u8>| {
                st.authenticated = true;
                st.mechanism = None;
                st.expires =
                    (lifetime > 0).then(|| Instant::now() + Duration::from_millis(lifetime as u64));
                stats.auths.fetch_add(1, Ordering::SeqCst);
                auth_response(0, None, server_bytes, lifetime)
            };
            let fail = |st: &mut ConnState, msg: &str| {
                st.mechanism = None;
                auth_response(58, Some(msg), vec![], 0)
            };
            let r = match mech.as_str() {
                "PLAIN" => {
                    let parts: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
                    let ok = parts.len() == 3
                        && settings
                            .users
                            .get(std::str::from_utf8(parts[1]).unwrap_or(""))
                            .is_some_and(|p| p.as_bytes() == parts[2]);
                    if ok {
                        success(st, vec![])
                    } else {
                        fail(st, "Invalid username or password")
                    }
                }
                "OAUTHBEARER" if st.oauth_challenged => {
                    // The client's %x01 after our error challenge: fail, as Kafka does.
                    st.oauth_challenged = false;
                    let ok = bytes == [1];
                    fail(st, if ok { "invalid_token" } else { "expected %x01" })
                }
                "OAUTHBEARER" => {
                    let s = String::from_utf8(bytes).unwrap();
                    let token = s
                        .split('\x01')
                        .find_map(|kv| kv.strip_prefix("auth=Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    let ok = s.starts_with("n,,\x01") && s.ends_with("\x01\x01");
                    stats.tokens.lock().unwrap().push(token.clone());
                    if ok && token.starts_with(&settings.token_prefix) {
                        success(st, vec![])
                    } else {
                        // Kafka (RFC 7628 3.2.2): an error challenge first, the failure after
                        // the client's %x01.
                        st.oauth_challenged = true;
                        auth_response(0, None, br#"{"status":"invalid_token"}"#.to_vec(), 0)
                    }
                }
                "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                    let sha512 = mech == "SCRAM-SHA-512";
                    let s = String::from_utf8(bytes).unwrap();
                    match st.scram.take() {
                        None => {
                            let bare = s.strip_prefix("n,,").unwrap().to_owned();
                            let user = bare
                                .strip_prefix("n=")
                                .and_then(|r| r.split(',').next())
                                .unwrap()
                                .replace("=2C", ",")
                                .replace("=3D", "=");
                            let cnonce = bare.split(",r=").nth(1).unwrap().to_owned();
                            let Some(password) = settings.users.get(&user) else {
                                let r = fail(st, "unknown user");
                                return reply(&|out| {
                                    out.extend_from_slice(&response(api, version, corr, &r))
                                });
                            };
                            let salt = b"fake-broker-salt".to_vec();
                            let nonce = format!("{cnonce}srvNONCE42");
                            let server_first = format!("r={nonce},s={},i=4096", B64.encode(&salt));
                            st.scram = Some(ScramServer {
                                sha512,
                                salted: pbkdf2(sha512, password.as_bytes(), &salt, 4096),
                                client_first_bare: bare,
                                server_first: server_first.clone(),
                                nonce,
                            });
                            st.mechanism = Some(mech.clone());
                            auth_response(0, None, server_first.into_bytes(), 0)
                        }
                        Some(sc) => {
                            let (without_proof, proof) = s.rsplit_once(",p=").unwrap();
                            let nonce_ok = without_proof == format!("c=biws,r={}", sc.nonce);
                            let auth_message = format!(
                                "{},{},{without_proof}",
                                sc.client_first_bare, sc.server_first
                            );
                            let client_key = hmac(sc.sha512, &sc.salted, b"Client Key");
                            let stored_key = h(sc.sha512, &client_key);
                            let client_sig = hmac(sc.sha512, &stored_key, auth_message.as_bytes());
                            let proof = B64.decode(proof).unwrap_or_default();
                            let recovered: Vec<u8> =
                                proof.iter().zip(&client_sig).map(|(a, b)| a ^ b).collect();
                            if nonce_ok && h(sc.sha512, &recovered) == stored_key {
                                let server_key = hmac(sc.sha512, &sc.salted, b"Server Key");
                                let mut sig = hmac(sc.sha512, &server_key, auth_message.as_bytes());
                                if settings.bad_server_signature {
                                    sig[0] ^= 0xff;
                                }
                                success(st, format!("v={}", B64.encode(sig)).into_bytes())
                            } else {
                                fail(
                                    st,
                                    "Authentication failed during authentication due to invalid credentials with SASL mechanism",
                                )
                            }
                        }
                    }
                }
                _ => fail(st, "unknown mechanism"),
            };
            reply(&|out| out.extend_from_slice(&response(api, version, corr, &r)))
        }
        _ => {
            if !st.authenticated {
                stats.unauthenticated.fetch_add(1, Ordering::SeqCst);
                return Outcome::Close;
            }
            if st.expires.is_some_and(|e| Instant::now() > e) {
                // Kafka (KIP-368): a request other than re-authentication after the session
                // expired closes the connection.
                stats.expired.fetch_add(1, Ordering::SeqCst);
                return Outcome::Close;
            }
            assert_eq!(
                api,
                ApiKey::Metadata,
                "the fake broker only serves Metadata"
            );
            stats.metadata.fetch_add(1, Ordering::SeqCst);
            let req = MetadataRequest::decode(&mut body, version).unwrap();
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| MetadataResponseTopic::default().with_name(t.name))
                .collect();
            let resp = MetadataResponse::default().with_topics(topics);
            reply(&|out| out.extend_from_slice(&response(api, version, corr, &resp)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn users() -> HashMap<String, String> {
    HashMap::from([
        ("alice".to_owned(), "alice-secret".to_owned()),
        ("b,o=b".to_owned(), "pässwörd".to_owned()),
    ])
}

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

fn topic_request(name: &str) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned())))),
    ]))
}

async fn echo(conn: &Connection, name: &str) -> rekafka::Result<()> {
    let resp = conn.send(topic_request(name)).await?;
    let got = resp.topics[0]
        .name
        .as_ref()
        .map(|n| n.0.as_str().to_owned());
    assert_eq!(
        got.as_deref(),
        Some(name),
        "response does not match its request"
    );
    Ok(())
}

fn all_mechanisms() -> Vec<&'static str> {
    vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
}

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
    assert_eq!(broker.stats.accepted.load(Ordering::SeqCst), 2);
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
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap().unwrap();
    }
    assert!(total > 100, "only {total} requests went through");
    assert!(!conn.is_closed(), "{:?}", conn.error());
    // Same connection all along, re-authenticated about every 800–900 ms.
    assert_eq!(broker.stats.accepted.load(Ordering::SeqCst), 1);
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
