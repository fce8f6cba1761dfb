//! TLS with rustls: server verification against a CA file, the system's roots
//! (`ssl.ca.location=probe`) or the built-in Mozilla roots, SNI and name check from the
//! broker's host, client certificates for mTLS. The crypto provider is graviola (pure Rust) on
//! x86_64 and aarch64, ring elsewhere; the `tls-ring` and `tls-aws-lc-rs` features choose ring
//! or aws-lc-rs instead.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{EndpointIdentification, TlsConfig};
use crate::error::{Error, ErrorKind, Result};

/// The crypto provider the features select (see the module docs). graviola needs a CPU with
/// AES-NI, AVX2, ADX, BMI1 and PCLMULQDQ on x86_64 (AES, SHA2, PMULL on aarch64); without them
/// this is a Config error naming the `tls-ring` feature (graviola itself would panic).
fn provider() -> Result<Arc<rustls::crypto::CryptoProvider>> {
    #[cfg(feature = "tls-aws-lc-rs")]
    let p = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc-rs")))]
    let p = rustls::crypto::ring::default_provider();
    #[cfg(all(
        not(feature = "tls-ring"),
        not(feature = "tls-aws-lc-rs"),
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    let p = {
        if !graviola::util::is_cpu_supported() {
            return Err(Error::config(
                "TLS: this CPU lacks the instructions the default crypto provider (graviola) \
                 needs (x86_64: AES-NI, AVX2, ADX, BMI1, PCLMULQDQ; aarch64: AES, SHA2, PMULL); \
                 build rekafka with the `tls-ring` feature instead",
            ));
        }
        rustls_graviola::default_provider()
    };
    #[cfg(all(
        not(feature = "tls-ring"),
        not(feature = "tls-aws-lc-rs"),
        not(any(target_arch = "x86_64", target_arch = "aarch64"))
    ))]
    let p = rustls::crypto::ring::default_provider();
    Ok(Arc::new(p))
}

fn read_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::config(format!("{setting}: cannot read {}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("{setting}: bad PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{setting}: no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

fn parse_certs(pem: &str, setting: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("{setting}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{setting}: no certificate in the PEM text"
        )));
    }
    Ok(certs)
}

/// Where Linux distributions and BSDs keep the system CA bundle (librdkafka's `probe` list).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/ssl/cert.pem",
];

/// The CA certificates of `ssl.ca.location`: one PEM file, every `*.pem`/`*.crt`/`*.cer`
/// file of a directory, or `probe`: the system bundle.
fn read_ca_location(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    const SETTING: &str = "ssl.ca.location";
    if path.as_os_str() == "probe" {
        let Some(bundle) = SYSTEM_CA_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
        else {
            return Err(Error::config(format!(
                "{SETTING}=probe: no system CA bundle found (looked for {})",
                SYSTEM_CA_BUNDLES.join(", ")
            )));
        };
        return read_certs(bundle, SETTING);
    }
    if !path.is_dir() {
        return read_certs(path, SETTING);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::config(format!("{SETTING}: cannot read {}: {e}", path.display())))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "pem" | "crt" | "cer"))
        })
        .collect();
    files.sort();
    let mut certs = Vec::new();
    for f in files {
        certs.extend(read_certs(&f, SETTING)?);
    }
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{SETTING}: no *.pem, *.crt or *.cer certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the rustls client configuration (reads the PEM files: blocking, call it off the
/// async threads).
pub(crate) fn client_config(tls: &TlsConfig) -> Result<ClientConfig> {
    tls.validate()?;
    let mut roots = RootCertStore::empty();
    let cas = match (&tls.ca_pem, &tls.ca_location) {
        (Some(pem), _) => Some(("ssl.ca.pem", parse_certs(pem, "ssl.ca.pem")?)),
        (None, Some(path)) => Some(("ssl.ca.location", read_ca_location(path)?)),
        (None, None) => None,
    };
    match cas {
        // A system bundle may hold a certificate webpki cannot use; skip those, as every
        // client does with system stores.
        Some((_, certs))
            if tls.ca_pem.is_none() && tls.ca_location.as_deref() == Some(Path::new("probe")) =>
        {
            let (added, skipped) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(format!(
                    "ssl.ca.location=probe: none of the {skipped} system CA certificates is usable"
                )));
            }
        }
        Some((setting, certs)) => {
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    Error::config(format!("{setting}: unusable CA certificate: {e}"))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let roots = Arc::new(roots);
    let provider = provider()?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?;
    let builder = match tls.endpoint_identification {
        EndpointIdentification::Https => builder.with_root_certificates(roots),
        EndpointIdentification::DangerousNoHostnameVerification => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::config(format!("ssl.ca.location: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoHostnameVerifier { inner }))
        }
    };
    let chain = match (&tls.certificate_pem, &tls.certificate_location) {
        (Some(pem), _) => Some(parse_certs(pem, "ssl.certificate.pem")?),
        (None, Some(path)) => Some(read_certs(path, "ssl.certificate.location")?),
        (None, None) => None,
    };
    let key = match (&tls.key_pem, &tls.key_location) {
        (Some(pem), _) => Some(
            PrivateKeyDer::from_pem_slice(pem.expose().as_bytes()).map_err(|e| {
                Error::config(format!(
                    "ssl.key.pem: no usable unencrypted private key: {e}"
                ))
            })?,
        ),
        (None, Some(path)) => Some(PrivateKeyDer::from_pem_file(path).map_err(|e| {
            Error::config(format!(
                "ssl.key.location: no usable unencrypted private key in {}: {e}",
                path.display()
            ))
        })?),
        (None, None) => None,
    };
    let config = match (chain, key) {
        (Some(chain), Some(key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::config(format!("ssl.key.location/ssl.key.pem: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Runs the TLS handshake over `tcp` to the broker at `addr` (`host:port`): SNI and the name
/// check use the host. A certificate or handshake failure is an
/// [`ErrorKind::Authentication`] error (fatal: retrying does not help).
pub(crate) async fn connect(
    tcp: TcpStream,
    addr: &str,
    tls: &TlsConfig,
) -> Result<TlsStream<TcpStream>> {
    let tls_config = tls.clone();
    let config = tokio::task::spawn_blocking(move || client_config(&tls_config))
        .await
        .map_err(|e| Error::config(format!("TLS setup task failed: {e}")))??;
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::config(format!("TLS: {host:?} is not a valid server name: {e}")))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| map_tls_error(Error::from(e).message(format!("TLS handshake with {addr}"))))
}

/// Turns an error caused by TLS (a rustls error inside an I/O error) into an
/// [`ErrorKind::Authentication`] error; other errors are returned unchanged.
pub(crate) fn map_tls_error(e: Error) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            let what = match tls {
                rustls::Error::InvalidCertificate(_) => "the broker's certificate was rejected",
                rustls::Error::AlertReceived(_) => "the broker rejected the TLS handshake",
                _ => "TLS failed",
            };
            let context = e
                .message_text()
                .map(|m| format!("{m}: "))
                .unwrap_or_default();
            return Error::with_message(
                ErrorKind::Authentication,
                format!("{context}{what}: {tls}"),
            )
            .with_source(rustls_error_clone(tls));
        }
        cause = c.source();
    }
    e
}

fn rustls_error_clone(e: &rustls::Error) -> rustls::Error {
    e.clone()
}

/// Verifies the chain like the default verifier but accepts a certificate whose names do not
/// match the host (`ssl.endpoint.identification.algorithm=none`).
#[derive(Debug)]
struct NoHostnameVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NoHostnameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(host_of("broker1:9093"), "broker1");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("broker"), "broker");
    }

    #[test]
    fn probe_reads_the_system_bundle_when_there_is_one() {
        match SYSTEM_CA_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
            Some(_) => assert!(read_ca_location(Path::new("probe")).unwrap().len() > 10),
            None => {
                let e = read_ca_location(Path::new("probe")).unwrap_err();
                assert!(e.message_text().unwrap().contains("probe"));
            }
        }
        if SYSTEM_CA_BUNDLES.iter().any(|p| Path::new(p).is_file()) {
            client_config(&TlsConfig::default().with_ca_location("probe")).unwrap();
        }
    }

    #[test]
    fn default_config_builds_with_webpki_roots() {
        client_config(&TlsConfig::default()).unwrap();
        let e = client_config(&TlsConfig::default().with_ca_location("/nonexistent/ca.pem"))
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(e.message_text().unwrap().contains("ssl.ca.location"));
    }
}
