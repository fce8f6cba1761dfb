//! An in-process fake broker with a SASL server side of its own: PLAIN, SCRAM-SHA-256/512 (an
//! RFC 5802 server written here, independently of the client), OAUTHBEARER (with Kafka's error
//! challenge), and KIP-368 session lifetimes. Like Kafka, it closes a connection that sends a
//! request other than ApiVersions/SASL before authenticating, or after its session expired.
//! The broker itself (connections, frames, ApiVersions) is the shared `fake_broker`; this
//! file is its SASL script. Declared once in the `fake` test binary (`tests/fake/main.rs`),
//! beside `fake_broker`, which it reaches as `crate::fake_broker`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, MetadataRequest, MetadataResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::connection::security::{SaslConfig, SecurityConfig, SecurityProtocol};
use rekafka::connection::{Connection, ConnectionConfig};
use sha2::Digest;
use tokio::time::Instant;

use crate::fake_broker::{self, ConnState, FakeRequest, Reply};

// ---------------------------------------------------------------------------------------------
// The fake broker

#[derive(Clone, Default)]
pub struct Settings {
    /// user → password (PLAIN and SCRAM).
    pub users: HashMap<String, String>,
    /// Mechanisms the broker enables.
    pub mechanisms: Vec<&'static str>,
    /// KIP-368 session lifetime given on success (0: none).
    pub session_lifetime_ms: i64,
    /// Send a wrong SCRAM server signature.
    pub bad_server_signature: bool,
    /// Accepted OAUTHBEARER tokens start with this.
    pub token_prefix: String,
}

#[derive(Default)]
pub struct Stats {
    /// Successful authentications (first ones and re-authentications), per connection.
    pub auths: AtomicUsize,
    /// OAUTHBEARER tokens seen, in order.
    pub tokens: Mutex<Vec<String>>,
    /// Connections closed because a request came after the session expired.
    pub expired: AtomicUsize,
    /// Connections closed because a request came before authentication.
    pub unauthenticated: AtomicUsize,
    pub metadata: AtomicUsize,
}

/// The shared fake broker (`addr`, `accepted`, ...) running the SASL script, and its stats.
pub struct FakeBroker {
    pub stats: Arc<Stats>,
    broker: fake_broker::FakeBroker,
}

impl std::ops::Deref for FakeBroker {
    type Target = fake_broker::FakeBroker;

    fn deref(&self) -> &fake_broker::FakeBroker {
        &self.broker
    }
}

impl FakeBroker {
    pub async fn start(settings: Settings) -> FakeBroker {
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        let broker = fake_broker::FakeBroker::builder()
            .api(ApiKey::Metadata, 0, 12)
            .api(ApiKey::SaslHandshake, 0, 1)
            .api(ApiKey::SaslAuthenticate, 0, 2)
            .start(move |req: &FakeRequest, conn: &mut ConnState| {
                let outcome = handle(req, &settings, &st, conn.get());
                // A request naming a topic `slow-…` takes 20 ms (the broker works through a
                // connection's requests in order, so later ones wait too).
                if req.frame.windows(5).any(|w| w == b"slow-") {
                    Reply::stall(Duration::from_millis(20), outcome)
                } else {
                    outcome
                }
            })
            .await;
        FakeBroker { stats, broker }
    }
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    sha512: bool,
    salted: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

pub fn hmac(sha512: bool, key: &[u8], data: &[u8]) -> Vec<u8> {
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

pub fn h(sha512: bool, data: &[u8]) -> Vec<u8> {
    if sha512 {
        sha2::Sha512::digest(data).to_vec()
    } else {
        sha2::Sha256::digest(data).to_vec()
    }
}

/// PBKDF2 (Hi) written out per RFC 2898 with one block.
pub fn pbkdf2(sha512: bool, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
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
pub struct SaslConn {
    mechanism: Option<String>,
    scram: Option<ScramServer>,
    authenticated: bool,
    expires: Option<Instant>,
    /// An OAUTHBEARER error challenge was sent; the client's %x01 is next.
    oauth_challenged: bool,
}

pub fn auth_response(
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

pub fn handle(req: &FakeRequest, settings: &Settings, stats: &Stats, st: &mut SaslConn) -> Reply {
    let api = req.api;
    match api {
        ApiKey::ApiVersions => Reply::Builtin,
        ApiKey::SaslHandshake => {
            let q: SaslHandshakeRequest = req.decode();
            let mech = q.mechanism.as_str().to_owned();
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
            req.respond(&resp)
        }
        ApiKey::SaslAuthenticate => {
            let q: SaslAuthenticateRequest = req.decode();
            let lifetime = settings.session_lifetime_ms;
            let bytes = q.auth_bytes.to_vec();
            let Some(mech) = st.mechanism.clone() else {
                let r = auth_response(34, Some("no handshake"), vec![], 0);
                return req.respond(&r);
            };
            let success = |st: &mut SaslConn, server_bytes: Vec<u8>| {
                st.authenticated = true;
                st.mechanism = None;
                st.expires =
                    (lifetime > 0).then(|| Instant::now() + Duration::from_millis(lifetime as u64));
                stats.auths.fetch_add(1, Ordering::SeqCst);
                auth_response(0, None, server_bytes, lifetime)
            };
            let fail = |st: &mut SaslConn, msg: &str| {
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
                                return req.respond(&r);
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
            req.respond(&r)
        }
        _ => {
            if !st.authenticated {
                stats.unauthenticated.fetch_add(1, Ordering::SeqCst);
                return Reply::Close;
            }
            if st.expires.is_some_and(|e| Instant::now() > e) {
                // Kafka (KIP-368): a request other than re-authentication after the session
                // expired closes the connection.
                stats.expired.fetch_add(1, Ordering::SeqCst);
                return Reply::Close;
            }
            assert_eq!(
                api,
                ApiKey::Metadata,
                "the fake broker only serves Metadata"
            );
            stats.metadata.fetch_add(1, Ordering::SeqCst);
            let q: MetadataRequest = req.decode();
            let topics = q
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| MetadataResponseTopic::default().with_name(t.name))
                .collect();
            // The broker's own address.
            let brokers = Some(req.addr)
                .map(|a| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(1))
                        .with_host(StrBytes::from_string(a.ip().to_string()))
                        .with_port(i32::from(a.port()))
                })
                .into_iter()
                .collect();
            let resp = MetadataResponse::default()
                .with_topics(topics)
                .with_brokers(brokers)
                .with_controller_id(BrokerId(1));
            req.respond(&resp)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub fn users() -> HashMap<String, String> {
    HashMap::from([
        ("alice".to_owned(), "alice-secret".to_owned()),
        ("b,o=b".to_owned(), "pässwörd".to_owned()),
    ])
}

pub fn config(sasl: SaslConfig) -> ConnectionConfig {
    ConnectionConfig::default()
        .with_request_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5))
        .with_security(
            SecurityConfig::default()
                .with_protocol(SecurityProtocol::SaslPlaintext)
                .with_sasl(sasl),
        )
}

pub fn topic_request(name: &str) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned())))),
    ]))
}

pub async fn echo(conn: &Connection, name: &str) -> rekafka::Result<()> {
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

pub fn all_mechanisms() -> Vec<&'static str> {
    vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
}
