//! TLS with rustls (ring provider): server verification against a CA file or the built-in
//! Mozilla roots, SNI and name check from the broker's host, client certificates for mTLS.

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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// Builds the rustls client configuration (reads the PEM files: blocking, call it off the
/// async threads).
pub(crate) fn client_config(tls: &TlsConfig) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_location {
        Some(path) => {
            for cert in read_certs(path, "ssl.ca.location")? {
                roots.add(cert).map_err(|e| {
                    Error::config(format!(
                        "ssl.ca.location: unusable CA certificate in {}: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let roots = Arc::new(roots);
    let provider = provider();
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
    let config = match (&tls.certificate_location, &tls.key_location) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "ssl.certificate.location")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::config(format!(
                    "ssl.key.location: no usable unencrypted private key in {}: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::config(format!("ssl.key.location: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::config(
                "ssl.certificate.location and ssl.key.location must be set together",
            ));
        }
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
            .source(rustls_error_clone(tls));
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
    fn default_config_builds_with_webpki_roots() {
        client_config(&TlsConfig::default()).unwrap();
        let e = client_config(&TlsConfig::default().with_ca_location("/nonexistent/ca.pem"))
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(e.message_text().unwrap().contains("ssl.ca.location"));
    }
}
