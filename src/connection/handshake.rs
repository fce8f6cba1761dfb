//! Setting a connection up: the TLS handshake and the ApiVersions negotiation (KIP-511).

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{BoxTransport, ConnectionConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::codec::{self};
use crate::protocol::frame::FrameDecoder;
use crate::protocol::versions::{
    API_VERSIONS_LATEST, ApiVersionRanges, ApiVersionsOutcome, api_versions_request,
    decode_api_versions,
};

/// The name this client gives itself in ApiVersions (KIP-511).
pub(crate) const SOFTWARE_NAME: &str = "rekafka";

/// The TLS handshake of [`Connection::connect`](super::Connection::connect), within the connect deadline.
#[cfg(feature = "tls")]
pub(crate) async fn tls_handshake(
    stream: TcpStream,
    addr: &str,
    broker_id: i32,
    config: &ConnectionConfig,
    deadline: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    match tokio::time::timeout_at(
        deadline,
        super::security::tls_connect(stream, addr, &config.security.tls),
    )
    .await
    {
        Ok(r) => r.map_err(|e| e.on_broker(broker_id)),
        Err(_) => Err(Error::with_message(
            ErrorKind::Timeout,
            format!(
                "TLS handshake with {addr} not done within {:?}",
                config.connect_timeout
            ),
        )
        .on_broker(broker_id)),
    }
}

#[cfg(not(feature = "tls"))]
pub(crate) async fn tls_handshake(
    _stream: TcpStream,
    _addr: &str,
    _broker_id: i32,
    config: &ConnectionConfig,
    _deadline: Instant,
) -> Result<TcpStream> {
    Err(Error::config(format!(
        "security.protocol {}: this build of rekafka has no TLS (cargo feature `tls`)",
        config.security.protocol
    )))
}

/// Without TLS there is no TLS error to classify.
#[cfg(not(feature = "tls"))]
pub(crate) fn map_tls_error(e: Error) -> Error {
    e
}

/// ApiVersions at the newest version, falling back as the broker says (KIP-511). Returns the
/// broker's ranges and the next correlation id; leftover bytes stay in `buf`.
pub(crate) async fn negotiate_versions(
    io: &mut BoxTransport,
    buf: &mut BytesMut,
    decoder: FrameDecoder,
    client_id: &str,
) -> Result<(ApiVersionRanges, i32)> {
    let mut version = API_VERSIONS_LATEST;
    let request = api_versions_request(SOFTWARE_NAME, env!("CARGO_PKG_VERSION"));
    for correlation_id in 0..4 {
        let mut out = BytesMut::new();
        codec::encode_request(&request, version, correlation_id, Some(client_id), &mut out)?;
        io.write_all(&out).await?;
        io.flush().await?;
        let frame = loop {
            if let Some(frame) = decoder.decode(buf)? {
                break frame;
            }
            if io.read_buf(buf).await? == 0 {
                return Err(Error::with_message(
                    ErrorKind::Disconnected,
                    "connection closed during the ApiVersions handshake",
                ));
            }
        };
        let (got, outcome) = decode_api_versions(frame, version)?;
        if got != correlation_id {
            return Err(Error::with_message(
                ErrorKind::UnexpectedResponse,
                format!(
                    "ApiVersions answered with correlation id {got}, expected {correlation_id}"
                ),
            ));
        }
        match outcome {
            ApiVersionsOutcome::Supported { ranges, .. } => {
                return Ok((ranges, correlation_id + 1));
            }
            ApiVersionsOutcome::RetryWith(v) => version = v,
        }
    }
    Err(Error::with_message(
        ErrorKind::UnexpectedResponse,
        "ApiVersions negotiation did not settle on a version",
    ))
}
