//! API version negotiation.
//!
//! A client first sends ApiVersions at the newest version it knows. A broker that does not know
//! that version answers `UNSUPPORTED_VERSION` with a **v0 body** listing what it supports
//! (KIP-511); the client then retries at the newest ApiVersions version the broker listed. From
//! the answer, each API is used at the highest version that both sides support; when there is
//! none the request fails with [`ErrorKind::UnsupportedVersion`].
//!
//! ```
//! use kafka_protocol::messages::{ApiVersionsResponse, MetadataRequest, api_versions_response::ApiVersion};
//! use rekafka::protocol::versions::ApiVersionRanges;
//!
//! let resp = ApiVersionsResponse::default().with_api_keys(vec![
//!     ApiVersion::default().with_api_key(3).with_min_version(0).with_max_version(9),
//! ]);
//! let ranges = ApiVersionRanges::from_response(&resp);
//! assert_eq!(ranges.negotiate::<MetadataRequest>().unwrap(), 9);
//! ```

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Message, Request, StrBytes, VersionRange};

use super::codec::api_key;
use super::guard;
use crate::error::{Error, ErrorKind, KafkaCode, Result};

/// The newest ApiVersions version this client sends first.
pub const API_VERSIONS_LATEST: i16 = ApiVersionsRequest::VERSIONS.max;

/// The client's own upper bound for an API, below what `kafka-protocol` can encode, where
/// Kafka's schema or the semantics this client implements say so.
pub fn client_cap(api: ApiKey) -> Option<i16> {
    match api {
        // Versions 4+ are for brokers only ("versions 3 and below are for clients").
        ApiKey::AddPartitionsToTxn => Some(3),
        // v12+ means the client implements transactions V2 (KIP-890 part 2): the broker adds
        // partitions implicitly. This client registers partitions with AddPartitionsToTxn.
        ApiKey::Produce => Some(11),
        ApiKey::EndTxn => Some(4),
        ApiKey::TxnOffsetCommit => Some(4),
        // v13+ identifies topics by id only; this client addresses topics by name.
        ApiKey::Fetch => Some(12),
        _ => None,
    }
}

/// The versions of request `R` this client can use.
pub fn client_range<R: Request>() -> VersionRange {
    let mut range = R::VERSIONS;
    if let Ok(api) = ApiKey::try_from(R::KEY)
        && let Some(cap) = client_cap(api)
    {
        range.max = range.max.min(cap);
    }
    range
}

/// The version ranges a broker supports, by API key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiVersionRanges {
    ranges: Vec<Option<VersionRange>>,
}

impl ApiVersionRanges {
    /// The ranges listed in an ApiVersions response.
    pub fn from_response(resp: &ApiVersionsResponse) -> ApiVersionRanges {
        let mut ranges: Vec<Option<VersionRange>> = Vec::new();
        for k in &resp.api_keys {
            // Keys are small non-negative numbers; ignore anything else rather than allocate.
            let Ok(idx) = usize::try_from(k.api_key) else {
                continue;
            };
            if idx > 1024 || k.min_version > k.max_version {
                continue;
            }
            if ranges.len() <= idx {
                ranges.resize(idx + 1, None);
            }
            ranges[idx] = Some(VersionRange {
                min: k.min_version,
                max: k.max_version,
            });
        }
        ApiVersionRanges { ranges }
    }

    /// The broker's range for an API, if it supports it at all.
    pub fn range(&self, api: ApiKey) -> Option<VersionRange> {
        self.ranges.get(api as i16 as usize).copied().flatten()
    }

    /// The highest version of `api` in both the broker's range and `client`.
    pub fn negotiate_key(&self, api: ApiKey, client: VersionRange) -> Result<i16> {
        let Some(broker) = self.range(api) else {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(api),
            })
            .message("the broker does not support this API"));
        };
        let both = broker.intersect(&client);
        if both.is_empty() {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(api),
            })
            .message(format!(
                "broker supports {}..={}, client {}..={}",
                broker.min, broker.max, client.min, client.max
            )));
        }
        Ok(both.max)
    }

    /// The highest version of request `R` that both sides support.
    pub fn negotiate<R: Request>(&self) -> Result<i16> {
        self.negotiate_key(api_key::<R>()?, client_range::<R>())
    }
}

/// The ApiVersions request a client sends, naming itself (KIP-511).
pub fn api_versions_request(software_name: &str, software_version: &str) -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_string(software_name.to_owned()))
        .with_client_software_version(StrBytes::from_string(software_version.to_owned()))
}

/// What an ApiVersions response says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ApiVersionsOutcome {
    /// The broker answered at the requested version: these are its ranges.
    Supported {
        /// The version the response was decoded at.
        version: i16,
        /// The broker's ranges.
        ranges: ApiVersionRanges,
    },
    /// The broker does not support the requested version; retry at this one (KIP-511).
    RetryWith(i16),
}

/// Decodes an ApiVersions response frame (without its size prefix) to a request made at
/// `version`, handling the KIP-511 fallback: an `UNSUPPORTED_VERSION` answer carries a v0 body,
/// from which the version to retry with is taken.
pub fn decode_api_versions(frame: Bytes, version: i16) -> Result<(i32, ApiVersionsOutcome)> {
    let api = ApiKey::ApiVersions;
    // The ApiVersions response header is v0 at every version, so clients can always read it.
    let (header, used) = guard::decode::<ResponseHeader>(&frame, 0).map_err(|e| e.api(api))?;
    let body = frame.slice(used..);
    let error_code = match body.get(..2) {
        Some(b) => i16::from_be_bytes([b[0], b[1]]),
        None => return Err(Error::corrupt("ApiVersions response without an error code").api(api)),
    };
    if error_code == KafkaCode::UnsupportedVersion.code() && version > 0 {
        let (v0, _) = guard::decode::<ApiVersionsResponse>(&body, 0).map_err(|e| e.api(api))?;
        let ranges = ApiVersionRanges::from_response(&v0);
        let retry = ranges
            .negotiate_key(api, ApiVersionsRequest::VERSIONS)
            .unwrap_or(0)
            .min(version - 1);
        return Ok((header.correlation_id, ApiVersionsOutcome::RetryWith(retry)));
    }
    let (resp, _) = guard::decode::<ApiVersionsResponse>(&body, version).map_err(|e| e.api(api))?;
    if let Some(code) = KafkaCode::from_i16(resp.error_code) {
        return Err(Error::broker(code).api(api));
    }
    Ok((
        header.correlation_id,
        ApiVersionsOutcome::Supported {
            version,
            ranges: ApiVersionRanges::from_response(&resp),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{AddPartitionsToTxnRequest, FetchRequest, ProduceRequest};
    use kafka_protocol::protocol::Encodable;

    fn ranges(list: &[(i16, i16, i16)]) -> ApiVersionRanges {
        ApiVersionRanges::from_response(
            &ApiVersionsResponse::default().with_api_keys(
                list.iter()
                    .map(|&(k, a, b)| {
                        ApiVersion::default()
                            .with_api_key(k)
                            .with_min_version(a)
                            .with_max_version(b)
                    })
                    .collect(),
            ),
        )
    }

    #[test]
    fn negotiates_highest_common_and_caps() {
        let r = ranges(&[(0, 0, 13), (1, 0, 17), (24, 0, 5)]);
        assert_eq!(r.negotiate::<ProduceRequest>().unwrap(), 11);
        assert_eq!(r.negotiate::<FetchRequest>().unwrap(), 12);
        assert_eq!(r.negotiate::<AddPartitionsToTxnRequest>().unwrap(), 3);
        let r = ranges(&[(0, 0, 2)]);
        let e = r.negotiate::<ProduceRequest>().unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(ApiKey::Produce)
            }
        );
        assert!(e.is_fatal());
        let e = r.negotiate::<FetchRequest>().unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(ApiKey::Fetch)
            }
        );
    }

    #[test]
    fn kip_511_fallback() {
        // A broker that knows ApiVersions only up to v2 answers v4 with error 35 and a v0 body.
        let v0 = ApiVersionsResponse::default()
            .with_error_code(35)
            .with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(18)
                    .with_min_version(0)
                    .with_max_version(2),
            ]);
        let mut b = BytesMut::new();
        b.put_i32(5);
        v0.encode(&mut b, 0).unwrap();
        let (corr, out) = decode_api_versions(b.freeze(), 4).unwrap();
        assert_eq!(corr, 5);
        assert_eq!(out, ApiVersionsOutcome::RetryWith(2));
        // Without an ApiVersions entry the retry is at v0.
        let v0 = ApiVersionsResponse::default().with_error_code(35);
        let mut b = BytesMut::new();
        b.put_i32(6);
        v0.encode(&mut b, 0).unwrap();
        assert_eq!(
            decode_api_versions(b.freeze(), 3).unwrap().1,
            ApiVersionsOutcome::RetryWith(0)
        );
    }

    #[test]
    fn supported_answer() {
        let resp = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(3)
                .with_min_version(0)
                .with_max_version(12),
        ]);
        let mut b = BytesMut::new();
        b.put_i32(1);
        resp.encode(&mut b, 4).unwrap();
        let (_, out) = decode_api_versions(b.freeze(), 4).unwrap();
        let ApiVersionsOutcome::Supported { ranges, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            ranges.range(ApiKey::Metadata),
            Some(VersionRange { min: 0, max: 12 })
        );
        assert_eq!(ranges.range(ApiKey::Produce), None);
    }
}
