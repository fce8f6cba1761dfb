//! TLS and SASL settings of a connection, and the code that applies them when connecting.
//!
//! [`SecurityConfig`] is Kafka's `security.protocol` ([`SecurityProtocol`]) with its TLS
//! ([`TlsConfig`]) and SASL ([`SaslConfig`]) settings. It is a field of
//! [`ConnectionConfig`](super::ConnectionConfig), so every connection made with that config
//! uses it.
//!
//! ```
//! use rekafka::connection::ConnectionConfig;
//! use rekafka::connection::security::{SaslMechanism, SecurityProtocol};
//!
//! let mut config = ConnectionConfig::default();
//! for (k, v) in [
//!     ("security.protocol", "SASL_SSL"),
//!     ("sasl.mechanism", "SCRAM-SHA-512"),
//!     ("sasl.username", "alice"),
//!     ("sasl.password", "alice-secret"),
//!     ("ssl.ca.location", "/etc/kafka/ca.pem"),
//! ] {
//!     assert!(config.security.apply_property(k, v)?);
//! }
//! assert_eq!(config.security.protocol, SecurityProtocol::SaslSsl);
//! assert_eq!(config.security.sasl.mechanism, Some(SaslMechanism::ScramSha512));
//! // Passwords never show in Debug output.
//! assert!(!format!("{config:?}").contains("alice-secret"));
//! # Ok::<(), rekafka::Error>(())
//! ```

mod reauth;
mod sasl;
mod scram;
#[cfg(feature = "tls")]
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub(crate) use reauth::reauth_loop;
pub use sasl::{OAuthBearerToken, SaslConfig, SaslMechanism, TokenProvider};
pub(crate) use sasl::{RawExchange, SaslExchange, SaslSession, authenticate_raw, reauth_delay};
#[doc(hidden)]
pub use scram::fuzz_server_messages as fuzz_scram_server_messages;
pub use scram::{MAX_ITERATIONS as SCRAM_MAX_ITERATIONS, MIN_ITERATIONS as SCRAM_MIN_ITERATIONS};
#[cfg(feature = "tls")]
pub(crate) use tls::{connect as tls_connect, map_tls_error};

use crate::config::{self, Setting};
use crate::error::{Error, Result};

/// Kafka's `security.protocol`: whether the connection uses TLS and whether it authenticates
/// with SASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication. The default.
    #[default]
    Plaintext,
    /// TLS, no SASL (the broker may still authenticate the client by its certificate: mTLS).
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether the connection runs over TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the connection authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Kafka's name: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl FromStr for SecurityProtocol {
    type Err = Error;

    /// Parses Kafka's names, case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(Error::config(format!(
                "security.protocol: {s:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            ))),
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret (a password) that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Password {
        Password::new(s)
    }
}

impl From<String> for Password {
    fn from(s: String) -> Password {
        Password(s)
    }
}

/// Whether the broker's certificate must match the host name connected to (Kafka's
/// `ssl.endpoint.identification.algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EndpointIdentification {
    /// The certificate must be valid for the broker's host name or IP address (`https`, the
    /// default).
    #[default]
    Https,
    /// **Insecure.** The certificate chain is still verified against the trusted CAs, but
    /// not the name in it, so any holder of *any* certificate from those CAs can impersonate
    /// the broker. Kafka's `ssl.endpoint.identification.algorithm=` (empty) or librdkafka's
    /// `none`. Only for brokers whose certificates lack the right names, and only on networks
    /// you trust.
    DangerousNoHostnameVerification,
}

/// TLS settings, used when [`SecurityProtocol::uses_tls`]. Certificates and keys are PEM
/// files or PEM text (Java keystores are not supported; convert them with
/// `keytool`/`openssl`). Files are read at every connect (off the async threads), so a
/// rotated certificate is picked up by the next connection.
///
/// TLS 1.2 and 1.3 with rustls' safe defaults and the *ring* provider; SNI and the name check
/// use the host of the broker's `host:port` (an IP address is checked against the
/// certificate's IP SANs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file with the CA certificates that sign the brokers' certificates, a directory of
    /// such files (`*.pem`, `*.crt`, `*.cer`), or `probe`: the operating system's CA bundle
    /// (`/etc/ssl/certs/ca-certificates.crt` and the other usual places, as librdkafka)
    /// (`ssl.ca.location`). Default: `None`: the Mozilla root certificates built in
    /// (`webpki-roots`), unless [`ca_pem`](Self::ca_pem) is set.
    pub ca_location: Option<PathBuf>,
    /// The CA certificates as PEM text, instead of a file (librdkafka's `ssl.ca.pem`).
    /// Default: `None`.
    pub ca_pem: Option<String>,
    /// PEM file with the client certificate chain, for mutual TLS
    /// (`ssl.certificate.location`). Default: `None` (no client certificate).
    pub certificate_location: Option<PathBuf>,
    /// The client certificate chain as PEM text (`ssl.certificate.pem`). Default: `None`.
    pub certificate_pem: Option<String>,
    /// PEM file with the client's private key (PKCS#8, PKCS#1 or SEC1, unencrypted)
    /// (`ssl.key.location`). Default: `None`.
    pub key_location: Option<PathBuf>,
    /// The client's private key as PEM text (`ssl.key.pem`). Never shown in `Debug` output.
    /// Default: `None`.
    pub key_pem: Option<Password>,
    /// Whether the broker certificate must match the host name (`https`, the default) or not.
    pub endpoint_identification: EndpointIdentification,
}

impl TlsConfig {
    /// Checks that each item comes from one source and that a client certificate comes with
    /// its key; the error names the settings.
    pub fn validate(&self) -> Result<()> {
        if self.ca_location.is_some() && self.ca_pem.is_some() {
            return Err(Error::config(
                "ssl.ca.location and ssl.ca.pem are both set; use one",
            ));
        }
        if self.certificate_location.is_some() && self.certificate_pem.is_some() {
            return Err(Error::config(
                "ssl.certificate.location and ssl.certificate.pem are both set; use one",
            ));
        }
        if self.key_location.is_some() && self.key_pem.is_some() {
            return Err(Error::config(
                "ssl.key.location and ssl.key.pem are both set; use one",
            ));
        }
        let has_cert = self.certificate_location.is_some() || self.certificate_pem.is_some();
        let has_key = self.key_location.is_some() || self.key_pem.is_some();
        if has_cert != has_key {
            return Err(Error::config(
                "a client certificate (ssl.certificate.location/.pem) and its key \
                 (ssl.key.location/.pem) must be set together",
            ));
        }
        Ok(())
    }

    /// Sets [`ca_location`](Self::ca_location).
    pub fn with_ca_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_location = Some(path.into());
        self
    }

    /// Sets [`certificate_location`](Self::certificate_location) and
    /// [`key_location`](Self::key_location).
    pub fn with_client_certificate(
        mut self,
        certificate: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.certificate_location = Some(certificate.into());
        self.key_location = Some(key.into());
        self
    }

    /// Sets [`endpoint_identification`](Self::endpoint_identification).
    pub fn with_endpoint_identification(mut self, e: EndpointIdentification) -> Self {
        self.endpoint_identification = e;
        self
    }
}

/// `security.protocol` with its TLS and SASL settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Default: PLAINTEXT.
    pub protocol: SecurityProtocol,
    /// TLS settings (for SSL and SASL_SSL). Default: verify against the built-in roots.
    pub tls: TlsConfig,
    /// SASL settings (for SASL_PLAINTEXT and SASL_SSL). Default: none set.
    pub sasl: SaslConfig,
}

impl SecurityConfig {
    /// The settings [`apply_property`](Self::apply_property) knows (see
    /// [`config`] and `docs/configuration.md`).
    pub const SETTINGS: &'static [Setting] = config::SECURITY;

    /// Every key [`apply_property`](Self::apply_property) knows, aliases included.
    pub fn property_names() -> impl Iterator<Item = &'static str> + Clone {
        config::names(Self::SETTINGS)
    }

    /// Sets [`protocol`](Self::protocol).
    pub fn with_protocol(mut self, protocol: SecurityProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets [`tls`](Self::tls).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`sasl`](Self::sasl).
    pub fn with_sasl(mut self, sasl: SaslConfig) -> Self {
        self.sasl = sasl;
        self
    }

    /// Applies one Java/librdkafka-style property. `Ok(false)`: not a key of this config;
    /// `Err` ([`ErrorKind::Config`](crate::ErrorKind::Config)): a known key with a bad value
    /// (or a Java keystore setting, which is not supported: use PEM files).
    pub fn apply_property(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(s) = config::find(Self::SETTINGS, key) else {
            return Ok(false);
        };
        let path = |v: &str| s.text(v).map(|t| t.map(PathBuf::from));
        match s.key {
            "security.protocol" => self.protocol = s.choice(value)?.parse()?,
            "sasl.mechanism" => self.sasl.mechanism = Some(s.choice(value)?.parse()?),
            "sasl.username" => self.sasl.username = Some(value.to_owned()),
            "sasl.password" => self.sasl.password = Some(Password::new(value)),
            "sasl.jaas.config" => self.sasl.apply_jaas_config(value)?,
            "ssl.ca.location" => self.tls.ca_location = path(value)?,
            "ssl.certificate.location" => self.tls.certificate_location = path(value)?,
            "ssl.key.location" => self.tls.key_location = path(value)?,
            "ssl.ca.pem" => self.tls.ca_pem = s.text(value)?,
            "ssl.certificate.pem" => self.tls.certificate_pem = s.text(value)?,
            "ssl.key.pem" => self.tls.key_pem = s.text(value)?.map(Password::from),
            "ssl.key.password" => {
                if !value.is_empty() {
                    return Err(Error::config(
                        "ssl.key.password: encrypted private keys are not supported; decrypt the \
                         key (openssl pkcs8 -in key.pem -out plain.pem) and set ssl.key.location",
                    ));
                }
            }
            "ssl.endpoint.identification.algorithm" => {
                self.tls.endpoint_identification = match s.choice(value)? {
                    "https" => EndpointIdentification::Https,
                    _ => EndpointIdentification::DangerousNoHostnameVerification,
                }
            }
            "ssl.truststore.location"
            | "ssl.truststore.password"
            | "ssl.truststore.type"
            | "ssl.keystore.location"
            | "ssl.keystore.password"
            | "ssl.keystore.type" => {
                return Err(Error::config(format!(
                    "{key}: Java keystores are not supported; rekafka reads PEM files: use \
                     ssl.ca.location (CA certificates), ssl.certificate.location and \
                     ssl.key.location (client certificate and unencrypted key)"
                )));
            }
            other => return Err(config::unhandled(other)),
        }
        Ok(true)
    }

    /// Checks the settings: the error ([`ErrorKind::Config`](crate::ErrorKind::Config)) names
    /// the missing or bad one.
    pub fn validate(&self) -> Result<()> {
        if self.protocol.uses_tls() {
            #[cfg(not(feature = "tls"))]
            return Err(Error::config(format!(
                "security.protocol {}: this build of rekafka has no TLS (cargo feature `tls`)",
                self.protocol
            )));
            #[cfg(feature = "tls")]
            self.tls.validate()?;
        }
        if self.protocol.uses_sasl() {
            self.sasl.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn properties() {
        let mut c = SecurityConfig::default();
        assert!(c.apply_property("security.protocol", "sasl_ssl").unwrap());
        assert_eq!(c.protocol, SecurityProtocol::SaslSsl);
        assert!(
            c.apply_property("sasl.mechanisms", "SCRAM-SHA-256")
                .unwrap()
        );
        assert_eq!(c.sasl.mechanism, Some(SaslMechanism::ScramSha256));
        assert!(c.apply_property("sasl.username", "bob").unwrap());
        assert!(c.apply_property("sasl.password", "hunter2").unwrap());
        assert!(c.apply_property("ssl.ca.location", "/tmp/ca.pem").unwrap());
        assert!(
            c.apply_property("ssl.endpoint.identification.algorithm", "none")
                .unwrap()
        );
        assert_eq!(
            c.tls.endpoint_identification,
            EndpointIdentification::DangerousNoHostnameVerification
        );
        assert!(!c.apply_property("linger.ms", "5").unwrap());
        c.validate().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("bob"));

        for (k, v) in [
            ("security.protocol", "TLS"),
            ("sasl.mechanism", "GSSAPI"),
            ("ssl.endpoint.identification.algorithm", "ldap"),
            ("ssl.truststore.location", "/x.jks"),
            ("ssl.key.password", "secret"),
        ] {
            let e = c.apply_property(k, v).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Config);
            assert!(e.message_text().unwrap().contains(k), "{e}");
        }
        for k in SecurityConfig::property_names() {
            let mut c = SecurityConfig::default();
            // Every listed key is known (Ok(true) or a value error, never Ok(false)).
            assert!(!matches!(c.apply_property(k, "x"), Ok(false)), "{k}");
        }
    }

    #[test]
    fn tls_sources_must_not_conflict() {
        let mut c = SecurityConfig::default().with_protocol(SecurityProtocol::Ssl);
        c.validate().unwrap();
        c.apply_property("ssl.ca.location", "/a.pem").unwrap();
        c.apply_property("ssl.ca.pem", "-----BEGIN CERTIFICATE-----")
            .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.message_text().unwrap().contains("ssl.ca.pem"), "{e}");
        let mut c = SecurityConfig::default().with_protocol(SecurityProtocol::SaslSsl);
        c.sasl = SaslConfig::plain("u", "p");
        c.apply_property("ssl.certificate.location", "/c.pem")
            .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.message_text().unwrap().contains("ssl.key"), "{e}");
        c.apply_property("ssl.key.pem", "secret key text").unwrap();
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("secret key text"));
    }

    #[test]
    fn validation_names_the_setting() {
        let c = SecurityConfig::default().with_protocol(SecurityProtocol::SaslPlaintext);
        let e = c.validate().unwrap_err();
        assert!(e.message_text().unwrap().contains("sasl.mechanism"), "{e}");
        let mut c = c;
        c.sasl.mechanism = Some(SaslMechanism::Plain);
        let e = c.validate().unwrap_err();
        assert!(e.message_text().unwrap().contains("sasl.username"), "{e}");
    }
}
