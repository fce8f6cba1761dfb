//! SASL: settings, mechanisms (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) and the exchange
//! (SaslHandshake v1 then SaslAuthenticate, KIP-152), at connect and for KIP-368
//! re-authentication.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::Password;
use super::scram::{ScramClient, ScramHash};
use crate::connection::BoxTransport;
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::codec;
use crate::protocol::frame::FrameDecoder;
use crate::protocol::versions::ApiVersionRanges;

/// A SASL mechanism (Kafka's `sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password in clear (use it with TLS only).
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802, RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (RFC 7628) with a token from a [`TokenProvider`].
    OAuthBearer,
}

impl SaslMechanism {
    /// The mechanism's name on the wire, e.g. `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            "OAUTHBEARER" => Ok(SaslMechanism::OAuthBearer),
            _ => Err(Error::config(format!(
                "sasl.mechanism: {s:?} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, \
                 OAUTHBEARER)"
            ))),
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An OAuth 2 bearer token for `OAUTHBEARER`, as a [`TokenProvider`] returns it.
#[derive(Clone)]
#[non_exhaustive]
pub struct OAuthBearerToken {
    /// The token (a JWT, usually). Never shown in `Debug` output.
    pub value: Password,
    /// How long the token stays valid from when the provider returned it. The provider is
    /// asked for a new token once 80% of it has passed.
    pub lifetime: Duration,
    /// SASL extensions (KIP-342) sent with the token, as `key=value` pairs.
    pub extensions: Vec<(String, String)>,
}

impl OAuthBearerToken {
    /// A token valid for `lifetime`, without extensions.
    pub fn new(value: impl Into<String>, lifetime: Duration) -> OAuthBearerToken {
        OAuthBearerToken {
            value: Password::new(value),
            lifetime,
            extensions: Vec::new(),
        }
    }

    /// Adds a SASL extension (KIP-342).
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.push((key.into(), value.into()));
        self
    }
}

impl fmt::Debug for OAuthBearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthBearerToken")
            .field("value", &self.value)
            .field("lifetime", &self.lifetime)
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// The future a [`TokenProvider`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<OAuthBearerToken>> + Send + 'a>>;

/// Where `OAUTHBEARER` tokens come from (Java's login callback handler, librdkafka's
/// `oauthbearer_token_refresh_cb`).
///
/// Called when a connection authenticates and no cached token is left with more than 20% of
/// its lifetime; so, with KIP-368 re-authentication, again before the token expires. A
/// re-authentication also asks for a new token when the cached one would expire before a
/// session as long as the ending one (Kafka caps a session at its token's expiry). One call
/// at a time (concurrent connections wait for it and share the token). Implemented for every
/// `Fn() -> impl Future<Output = Result<OAuthBearerToken>>` closure:
///
/// ```
/// use std::time::Duration;
/// use rekafka::connection::security::{OAuthBearerToken, SaslConfig};
///
/// let sasl = SaslConfig::oauthbearer(|| async {
///     // fetch a token from the identity provider here
///     Ok(OAuthBearerToken::new("eyJhbGciOi...", Duration::from_secs(3600)))
/// });
/// ```
///
/// An error from the provider fails the connection attempt with that error (return an
/// [`ErrorKind::Authentication`] error for a definitive refusal, a retriable one such as
/// [`ErrorKind::Timeout`] for a passing failure).
pub trait TokenProvider: Send + Sync + 'static {
    /// Fetches a fresh token.
    fn token(&self) -> TokenFuture<'_>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OAuthBearerToken>> + Send + 'static,
{
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self())
    }
}

/// A [`TokenProvider`] with its cached token, shared by every clone of a [`SaslConfig`].
struct TokenSource {
    provider: Box<dyn TokenProvider>,
    cached: tokio::sync::Mutex<Option<(OAuthBearerToken, Instant)>>,
}

impl TokenSource {
    /// The cached token if less than 80% of its lifetime has passed and more than
    /// `min_remaining` of it is left, else a new one from the provider.
    ///
    /// `min_remaining` is zero for a first authentication and the ending session's lifetime
    /// for a re-authentication (KIP-368): Kafka ends an OAUTHBEARER session no later than its
    /// token expires, so re-authenticating with a token that expires sooner than the ending
    /// session lasted would only give a shorter session, and then re-authentications ever
    /// closer together (Kafka refuses one less than a second after the last with
    /// ILLEGAL_SASL_STATE). Observed with 4 s tokens against Kafka 4.4
    /// (`tests/security_kafka.rs`).
    async fn token(&self, min_remaining: Duration) -> Result<OAuthBearerToken> {
        let mut cached = self.cached.lock().await;
        if let Some((token, at)) = &*cached {
            let age = at.elapsed();
            if age < token.lifetime.mul_f64(0.8)
                && token.lifetime.saturating_sub(age) > min_remaining
            {
                return Ok(token.clone());
            }
        }
        let token = self.provider.token().await?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }
}

/// SASL settings, used when the security protocol is `SASL_PLAINTEXT` or `SASL_SSL`.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct SaslConfig {
    /// The mechanism (`sasl.mechanism`). Default: `None`, which fails validation when SASL is
    /// used (Kafka's default, GSSAPI, is not supported).
    pub mechanism: Option<SaslMechanism>,
    /// The user name for PLAIN and SCRAM (`sasl.username`). Default: `None`.
    pub username: Option<String>,
    /// The password for PLAIN and SCRAM (`sasl.password`). Default: `None`. Never shown in
    /// `Debug` output.
    pub password: Option<Password>,
    token_source: Option<Arc<TokenSource>>,
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("token_provider", &self.token_source.as_ref().map(|_| ".."))
            .finish()
    }
}

impl SaslConfig {
    /// PLAIN with a user name and password.
    pub fn plain(username: impl Into<String>, password: impl Into<Password>) -> SaslConfig {
        SaslConfig::with_credentials(SaslMechanism::Plain, username, password)
    }

    /// SCRAM-SHA-256 or SCRAM-SHA-512 (or PLAIN) with a user name and password.
    pub fn with_credentials(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<Password>,
    ) -> SaslConfig {
        SaslConfig {
            mechanism: Some(mechanism),
            username: Some(username.into()),
            password: Some(password.into()),
            token_source: None,
        }
    }

    /// OAUTHBEARER with tokens from `provider`.
    pub fn oauthbearer(provider: impl TokenProvider) -> SaslConfig {
        SaslConfig {
            mechanism: Some(SaslMechanism::OAuthBearer),
            username: None,
            password: None,
            token_source: None,
        }
        .with_token_provider(provider)
    }

    /// Sets the OAUTHBEARER token provider (keeps the mechanism).
    pub fn with_token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.token_source = Some(Arc::new(TokenSource {
            provider: Box::new(provider),
            cached: tokio::sync::Mutex::new(None),
        }));
        self
    }

    /// Whether a token provider is set.
    pub fn has_token_provider(&self) -> bool {
        self.token_source.is_some()
    }

    /// Reads user name and password from a Java `sasl.jaas.config` value such as
    /// `org.apache.kafka.common.security.scram.ScramLoginModule required username="u"
    /// password="p";`. The login module must be the PLAIN or SCRAM one.
    pub fn apply_jaas_config(&mut self, value: &str) -> Result<()> {
        let bad = |why: &str| Error::config(format!("sasl.jaas.config: {why}"));
        let mut words = value
            .trim()
            .trim_end_matches(';')
            .splitn(3, char::is_whitespace);
        let module = words.next().unwrap_or_default();
        if !(module.ends_with("PlainLoginModule") || module.ends_with("ScramLoginModule")) {
            return Err(bad(&format!(
                "login module {module:?} is not supported (PlainLoginModule or ScramLoginModule)"
            )));
        }
        let flag = words.next().unwrap_or_default();
        if flag != "required" {
            return Err(bad("expected `required` after the login module"));
        }
        let mut rest = words.next().unwrap_or_default().trim();
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once('=')
                .ok_or_else(|| bad("expected key=\"value\""))?;
            let after = after.trim_start();
            let (val, after) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| bad("unterminated quoted value"))?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            match key.trim() {
                "username" => self.username = Some(val.to_owned()),
                "password" => self.password = Some(Password::new(val)),
                _ => {}
            }
            rest = after.trim();
        }
        Ok(())
    }

    /// Checks that the mechanism has what it needs; the error names the missing setting.
    pub fn validate(&self) -> Result<()> {
        match self.mechanism {
            None => Err(Error::config(
                "sasl.mechanism must be set for SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or \
                 OAUTHBEARER)",
            )),
            Some(SaslMechanism::OAuthBearer) => {
                if self.token_source.is_none() {
                    return Err(Error::config(
                        "sasl.mechanism OAUTHBEARER needs a token provider \
                         (SaslConfig::with_token_provider)",
                    ));
                }
                Ok(())
            }
            Some(m) => {
                if self.username.as_deref().is_none_or(str::is_empty) {
                    return Err(Error::config(format!("sasl.username must be set for {m}")));
                }
                if self.password.is_none() {
                    return Err(Error::config(format!("sasl.password must be set for {m}")));
                }
                Ok(())
            }
        }
    }
}

fn auth_error(message: impl Into<String>) -> Error {
    Error::with_message(ErrorKind::Authentication, message)
}

/// One round trip of the SASL exchange: at connect over the raw transport, for
/// re-authentication over the running connection.
pub(crate) trait SaslExchange {
    fn versions(&self) -> &ApiVersionRanges;
    fn handshake(
        &mut self,
        request: SaslHandshakeRequest,
        version: i16,
    ) -> impl Future<Output = Result<SaslHandshakeResponse>> + Send;
    fn authenticate(
        &mut self,
        request: SaslAuthenticateRequest,
        version: i16,
    ) -> impl Future<Output = Result<SaslAuthenticateResponse>> + Send;
}

/// A SASL authentication of one connection. Cheap to clone (shares the token cache).
#[derive(Clone, Debug)]
pub(crate) struct SaslSession {
    config: SaslConfig,
}

impl SaslSession {
    pub(crate) fn new(config: &SaslConfig) -> SaslSession {
        SaslSession {
            config: config.clone(),
        }
    }

    /// Authenticates over `ex`; a re-authentication (KIP-368) gives `ending`, the lifetime of
    /// the session it replaces. Returns the session lifetime the broker gave, if any.
    pub(crate) async fn run<E: SaslExchange + Send>(
        &self,
        ex: &mut E,
        ending: Option<Duration>,
    ) -> Result<Option<Duration>> {
        let mechanism = self
            .config
            .mechanism
            .ok_or_else(|| Error::config("sasl.mechanism must be set for SASL"))?;
        let hs_version = match ex.versions().range(ApiKey::SaslHandshake) {
            None => {
                return Err(auth_error(
                    "the broker does not support SASL (no SaslHandshake in ApiVersions); is \
                     this a SASL listener?",
                ));
            }
            Some(_) => ex
                .versions()
                .negotiate::<SaslHandshakeRequest>()
                .map_err(|e| e.api(ApiKey::SaslHandshake))?,
        };
        if hs_version < 1 {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(ApiKey::SaslAuthenticate),
            })
            .message("the broker predates SaslAuthenticate (Kafka < 1.0); not supported"));
        }
        let auth_version = ex
            .versions()
            .negotiate::<SaslAuthenticateRequest>()
            .map_err(|e| e.api(ApiKey::SaslAuthenticate))?;

        let hs = ex
            .handshake(
                SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism.name())),
                hs_version,
            )
            .await?;
        if let Some(code) = KafkaCode::from_i16(hs.error_code) {
            let enabled: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            let msg = if code == KafkaCode::UnsupportedSaslMechanism {
                format!(
                    "the broker does not enable SASL mechanism {mechanism}; it enables {enabled:?}"
                )
            } else {
                format!("SaslHandshake for {mechanism} failed with {code}")
            };
            return Err(auth_error(msg).api(ApiKey::SaslHandshake));
        }

        let mut step = async |bytes: Vec<u8>| -> Result<SaslAuthenticateResponse> {
            let resp = ex
                .authenticate(
                    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
                    auth_version,
                )
                .await?;
            if let Some(code) = KafkaCode::from_i16(resp.error_code) {
                let detail = resp
                    .error_message
                    .as_ref()
                    .map(|m| format!(": {}", m.as_str()))
                    .unwrap_or_default();
                return Err(auth_error(format!(
                    "SASL {mechanism} authentication failed with {code}{detail}"
                ))
                .api(ApiKey::SaslAuthenticate));
            }
            Ok(resp)
        };

        let last = match mechanism {
            SaslMechanism::Plain => {
                let user = self.config.username.as_deref().unwrap_or_default();
                let pass = self
                    .config
                    .password
                    .as_ref()
                    .map(Password::expose)
                    .unwrap_or_default();
                let mut msg = Vec::with_capacity(user.len() + pass.len() + 2);
                msg.push(0);
                msg.extend_from_slice(user.as_bytes());
                msg.push(0);
                msg.extend_from_slice(pass.as_bytes());
                step(msg).await?
            }
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let hash = if mechanism == SaslMechanism::ScramSha256 {
                    ScramHash::Sha256
                } else {
                    ScramHash::Sha512
                };
                let user = self.config.username.as_deref().unwrap_or_default();
                let password = self
                    .config
                    .password
                    .as_ref()
                    .map(|p| p.expose().as_bytes().to_vec())
                    .unwrap_or_default();
                let mut client = ScramClient::new(hash, user)?;
                let first = step(client.client_first().into_bytes()).await?;
                let server_first = client.parse_server_first(&first.auth_bytes)?;
                let (salt, iterations) = (server_first.salt.clone(), server_first.iterations);
                // Up to MAX_ITERATIONS HMACs: off the async threads.
                let salted = tokio::task::spawn_blocking(move || {
                    hash.salted_password(&password, &salt, iterations)
                })
                .await
                .map_err(|e| auth_error(format!("SCRAM key derivation task failed: {e}")))??;
                let final_msg = client.client_final(&first.auth_bytes, &server_first, &salted)?;
                let last = step(final_msg.into_bytes()).await?;
                client.verify_server_final(&last.auth_bytes)?;
                last
            }
            SaslMechanism::OAuthBearer => {
                let Some(source) = &self.config.token_source else {
                    return Err(Error::config(
                        "sasl.mechanism OAUTHBEARER needs a token provider",
                    ));
                };
                let token = source.token(ending.unwrap_or_default()).await?;
                check_token(&token)?;
                let mut msg = format!("n,,\x01auth=Bearer {}\x01", token.value.expose());
                for (k, v) in &token.extensions {
                    msg.push_str(&format!("{k}={v}\x01"));
                }
                msg.push('\x01');
                let resp = step(msg.into_bytes()).await?;
                if !resp.auth_bytes.is_empty() {
                    // RFC 7628 section 3.2.3: the server refused the token with an error
                    // challenge (JSON); the client answers %x01 and the server then fails the
                    // exchange (Kafka: SASL_AUTHENTICATION_FAILED).
                    let challenge = String::from_utf8_lossy(&resp.auth_bytes).into_owned();
                    let detail = match step(vec![1]).await {
                        Err(e) => e.message_text().unwrap_or_default().to_owned(),
                        Ok(_) => "the broker did not fail the exchange".to_owned(),
                    };
                    return Err(auth_error(format!(
                        "OAUTHBEARER token refused by the broker: {challenge} ({detail})"
                    ))
                    .api(ApiKey::SaslAuthenticate));
                }
                resp
            }
        };
        Ok((last.session_lifetime_ms > 0)
            .then(|| Duration::from_millis(last.session_lifetime_ms.unsigned_abs())))
    }
}

/// Checks a provider's token against RFC 7628's grammar, as Kafka does: a non-empty token of
/// printable characters without spaces, extension keys of letters only (not `auth`), values
/// without control characters.
fn check_token(token: &OAuthBearerToken) -> Result<()> {
    let bad = |why: String| auth_error(format!("OAUTHBEARER token provider: {why}"));
    let value = token.value.expose();
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "the token is empty or has characters other than printable ASCII".to_owned(),
        ));
    }
    for (k, v) in &token.extensions {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphabetic()) || k == "auth" {
            return Err(bad(format!(
                "SASL extension key {k:?} must be letters only and not `auth`"
            )));
        }
        if v.chars().any(|c| c.is_control()) {
            return Err(bad(format!(
                "SASL extension {k:?} has a control character in its value"
            )));
        }
    }
    Ok(())
}

/// When to re-authenticate a session of `lifetime`: at a random point between 80% and 90% of
/// it, as Kafka's clients do (so that connections made together do not all re-authenticate at
/// once).
pub(crate) fn reauth_delay(lifetime: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    lifetime.mul_f64(0.80 + 0.10 * r)
}

/// The SASL exchange over the raw transport, before the connection's tasks start.
pub(crate) struct RawExchange<'a> {
    pub io: &'a mut BoxTransport,
    pub buf: &'a mut BytesMut,
    pub decoder: FrameDecoder,
    pub client_id: &'a str,
    pub next_correlation: &'a mut i32,
    pub versions: &'a ApiVersionRanges,
}

impl RawExchange<'_> {
    async fn round_trip<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        let api = codec::api_key::<R>()?;
        let corr = *self.next_correlation;
        *self.next_correlation = corr.wrapping_add(1);
        let mut out = BytesMut::new();
        codec::encode_request(request, version, corr, Some(self.client_id), &mut out)?;
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        let frame = loop {
            if let Some(frame) = self.decoder.decode(self.buf)? {
                break frame;
            }
            if self.io.read_buf(self.buf).await? == 0 {
                return Err(Error::with_message(
                    ErrorKind::Disconnected,
                    "connection closed by the broker during SASL authentication",
                )
                .api(api));
            }
        };
        let (header, response) = codec::decode_response::<R>(frame, version)?;
        if header.correlation_id != corr {
            return Err(Error::with_message(
                ErrorKind::UnexpectedResponse,
                format!(
                    "response has correlation id {}, expected {corr}",
                    header.correlation_id
                ),
            )
            .api(api));
        }
        Ok(response)
    }
}

impl SaslExchange for RawExchange<'_> {
    fn versions(&self) -> &ApiVersionRanges {
        self.versions
    }

    async fn handshake(
        &mut self,
        request: SaslHandshakeRequest,
        version: i16,
    ) -> Result<SaslHandshakeResponse> {
        self.round_trip(&request, version).await
    }

    async fn authenticate(
        &mut self,
        request: SaslAuthenticateRequest,
        version: i16,
    ) -> Result<SaslAuthenticateResponse> {
        self.round_trip(&request, version).await
    }
}

/// Authenticates over the raw transport at connect. Returns the session lifetime.
pub(crate) async fn authenticate_raw(
    session: &SaslSession,
    ex: &mut RawExchange<'_>,
) -> Result<Option<Duration>> {
    session.run(ex, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_config() {
        let mut c = SaslConfig::default();
        c.apply_jaas_config(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3 cret";"#,
        )
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_ref().map(Password::expose), Some("s3 cret"));
        let e = c
            .apply_jaas_config("com.sun.security.auth.module.Krb5LoginModule required;")
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
    }

    #[test]
    fn token_grammar() {
        let ok = OAuthBearerToken::new("eyJ.abc-_~", Duration::from_secs(1))
            .with_extension("traceId", "x y");
        check_token(&ok).unwrap();
        for bad in [
            OAuthBearerToken::new("", Duration::from_secs(1)),
            OAuthBearerToken::new("a b", Duration::from_secs(1)),
            OAuthBearerToken::new("a\x01", Duration::from_secs(1)),
            OAuthBearerToken::new("t", Duration::from_secs(1)).with_extension("auth", "x"),
            OAuthBearerToken::new("t", Duration::from_secs(1)).with_extension("k1", "x"),
            OAuthBearerToken::new("t", Duration::from_secs(1)).with_extension("k", "a\x01b"),
        ] {
            let e = check_token(&bad).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Authentication, "{bad:?}");
        }
    }

    #[test]
    fn reauth_delay_is_80_to_90_percent() {
        for _ in 0..100 {
            let d = reauth_delay(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(90),
                "{d:?}"
            );
        }
    }

    /// An OAUTHBEARER config whose token source hands out `t0`, `t1`, ... (each valid for
    /// `lifetime`), and the count of its calls: what the token caching tests observe.
    fn counting_tokens(lifetime: Duration) -> (SaslConfig, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        let config = SaslConfig::oauthbearer(move || {
            let n = c2.fetch_add(1, Ordering::SeqCst);
            async move { Ok(OAuthBearerToken::new(format!("t{n}"), lifetime)) }
        });
        (config, calls)
    }

    #[tokio::test]
    async fn token_is_cached_until_80_percent_of_its_lifetime() {
        let (config, calls) = counting_tokens(Duration::from_millis(200));
        let src = config.token_source.clone().unwrap();
        let zero = Duration::ZERO;
        assert_eq!(src.token(zero).await.unwrap().value.expose(), "t0");
        assert_eq!(src.token(zero).await.unwrap().value.expose(), "t0");
        tokio::time::sleep(Duration::from_millis(170)).await;
        assert_eq!(src.token(zero).await.unwrap().value.expose(), "t1");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(!format!("{config:?}").contains("t1"));
    }

    #[tokio::test]
    async fn reauthentication_does_not_reuse_a_token_that_would_shorten_the_session() {
        let (config, calls) = counting_tokens(Duration::from_secs(100));
        let src = config.token_source.clone().unwrap();
        assert_eq!(
            src.token(Duration::ZERO).await.unwrap().value.expose(),
            "t0"
        );
        // Less than 80% of the token's lifetime has passed, but a session of 100 s (as long as
        // the token) is ending: the cached token, with less than 100 s left, would give a
        // shorter one. A new token.
        assert_eq!(
            src.token(Duration::from_secs(100))
                .await
                .unwrap()
                .value
                .expose(),
            "t1"
        );
        // A session bounded by the broker's connections.max.reauth.ms (10 s here): the cached
        // token outlasts the next one, so it is reused.
        assert_eq!(
            src.token(Duration::from_secs(10))
                .await
                .unwrap()
                .value
                .expose(),
            "t1"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
