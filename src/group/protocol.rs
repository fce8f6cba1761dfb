//! Kafka's `ConsumerProtocol` payloads: the subscription a member sends in JoinGroup and the
//! assignment the leader hands out in SyncGroup.
//!
//! The bytes are Kafka's own (`ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`,
//! a big-endian `i16` version followed by the fields of that version), so Java, librdkafka and
//! rekafka members can share one group. Decoding is bounded by the input: every length is checked
//! against the bytes that remain before anything is allocated. A payload of a newer version
//! than this client knows is read as the newest known version (later versions only append
//! fields), as the Java client does.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Error, Result};

/// The newest subscription version this client writes (v3: owned partitions, generation, rack).
pub const SUBSCRIPTION_VERSION: i16 = 3;
/// The newest assignment version this client writes.
pub const ASSIGNMENT_VERSION: i16 = 3;

/// A member's subscription (JoinGroup protocol metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscription {
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// Assignor-specific user data.
    pub user_data: Option<Bytes>,
    /// The partitions the member owns now, by topic (v1+; cooperative rebalancing needs it).
    pub owned_partitions: BTreeMap<String, Vec<i32>>,
    /// The generation in which the member owned them (v2+); -1 if unknown.
    pub generation_id: i32,
    /// The member's rack (v3+).
    pub rack_id: Option<String>,
}

impl Subscription {
    /// A subscription to `topics` with nothing owned.
    pub fn new(topics: Vec<String>) -> Subscription {
        Subscription {
            topics,
            user_data: None,
            owned_partitions: BTreeMap::new(),
            generation_id: -1,
            rack_id: None,
        }
    }

    /// Encodes at [`SUBSCRIPTION_VERSION`].
    pub fn encode(&self) -> Bytes {
        self.encode_version(SUBSCRIPTION_VERSION)
    }

    /// Encodes at `version` (0–3); fields the version does not have are left out.
    pub fn encode_version(&self, version: i16) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_i16(version);
        b.put_i32(self.topics.len() as i32);
        for t in &self.topics {
            put_string(&mut b, t);
        }
        put_bytes(&mut b, self.user_data.as_deref());
        if version >= 1 {
            put_topic_partitions(&mut b, &self.owned_partitions);
        }
        if version >= 2 {
            b.put_i32(self.generation_id);
        }
        if version >= 3 {
            match &self.rack_id {
                Some(r) => put_string(&mut b, r),
                None => b.put_i16(-1),
            }
        }
        b.freeze()
    }

    /// Decodes a subscription; a corrupt payload is an [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) error.
    pub fn decode(data: &[u8]) -> Result<Subscription> {
        let mut r = Reader { data, pos: 0 };
        let version = r.i16()?;
        if version < 0 {
            return Err(Error::corrupt(format!(
                "subscription version {version} is negative"
            )));
        }
        let n = r.count(2)?;
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            topics.push(r.string()?.unwrap_or_default());
        }
        let user_data = r.bytes()?;
        let mut s = Subscription {
            topics,
            user_data,
            ..Subscription::default()
        };
        s.generation_id = -1;
        if version >= 1 && !r.at_end() {
            s.owned_partitions = r.topic_partitions()?;
        }
        if version >= 2 && !r.at_end() {
            s.generation_id = r.i32()?;
        }
        if version >= 3 && !r.at_end() {
            s.rack_id = r.string()?;
        }
        Ok(s)
    }
}

/// A member's assignment (SyncGroup payload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assignment {
    /// The assigned partitions by topic.
    pub partitions: BTreeMap<String, Vec<i32>>,
    /// Assignor-specific user data.
    pub user_data: Option<Bytes>,
}

impl Assignment {
    /// An assignment of `partitions` without user data.
    pub fn new(partitions: BTreeMap<String, Vec<i32>>) -> Assignment {
        Assignment {
            partitions,
            user_data: None,
        }
    }

    /// Encodes at [`ASSIGNMENT_VERSION`].
    pub fn encode(&self) -> Bytes {
        self.encode_version(ASSIGNMENT_VERSION)
    }

    /// Encodes at `version` (0–3: every version has the same fields).
    pub fn encode_version(&self, version: i16) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_i16(version);
        put_topic_partitions(&mut b, &self.partitions);
        put_bytes(&mut b, self.user_data.as_deref());
        b.freeze()
    }

    /// Decodes an assignment. An empty payload (what the coordinator sends a member the leader
    /// gave nothing) is an empty assignment.
    pub fn decode(data: &[u8]) -> Result<Assignment> {
        if data.is_empty() {
            return Ok(Assignment::default());
        }
        let mut r = Reader { data, pos: 0 };
        let version = r.i16()?;
        if version < 0 {
            return Err(Error::corrupt(format!(
                "assignment version {version} is negative"
            )));
        }
        let partitions = r.topic_partitions()?;
        let user_data = if r.at_end() { None } else { r.bytes()? };
        Ok(Assignment {
            partitions,
            user_data,
        })
    }
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_bytes(b: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.put_i32(v.len() as i32);
            b.put_slice(v);
        }
        None => b.put_i32(-1),
    }
}

fn put_topic_partitions(b: &mut BytesMut, tps: &BTreeMap<String, Vec<i32>>) {
    b.put_i32(tps.len() as i32);
    for (t, ps) in tps {
        put_string(b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(*p);
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| Error::corrupt("consumer protocol payload is truncated"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i16(&mut self) -> Result<i16> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }

    fn i32(&mut self) -> Result<i32> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// An array length, checked against the remaining bytes (each element at least `min` bytes).
    fn count(&mut self, min: usize) -> Result<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min) > self.data.len() - self.pos {
            return Err(Error::corrupt(format!(
                "consumer protocol array of {n} elements exceeds its payload"
            )));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        let s = self.take(n as usize)?;
        String::from_utf8(s.to_vec())
            .map(Some)
            .map_err(|e| Error::corrupt("consumer protocol string is not UTF-8").with_source(e))
    }

    fn bytes(&mut self) -> Result<Option<Bytes>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(Bytes::copy_from_slice(self.take(n as usize)?)))
    }

    fn topic_partitions(&mut self) -> Result<BTreeMap<String, Vec<i32>>> {
        let n = self.count(6)?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let topic = self.string()?.unwrap_or_default();
            let m = self.count(4)?;
            let mut ps = Vec::with_capacity(m);
            for _ in 0..m {
                ps.push(self.i32()?);
            }
            out.entry(topic).or_insert_with(Vec::new).extend(ps);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    #[test]
    fn subscription_known_bytes_v0() {
        // Kafka's ConsumerProtocol v0: version, [topics], user_data (null).
        let s = Subscription::new(vec!["ab".into()]);
        let bytes = s.encode_version(0);
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Subscription::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn subscription_round_trip_and_matches_kafka_schema() {
        let mut s = Subscription::new(vec!["t1".into(), "t2".into()]);
        s.owned_partitions.insert("t1".into(), vec![0, 2]);
        s.generation_id = 7;
        s.rack_id = Some("r1".into());
        s.user_data = Some(Bytes::from_static(b"ud"));
        for v in 0..=3 {
            let bytes = s.encode_version(v);
            // The kafka-protocol crate's generated schema reads the same bytes.
            let mut body = bytes.slice(2..);
            let k = ConsumerProtocolSubscription::decode(&mut body, v).unwrap();
            assert_eq!(k.topics.len(), 2);
            let back = Subscription::decode(&bytes).unwrap();
            assert_eq!(back.topics, s.topics);
            if v >= 1 {
                assert_eq!(back.owned_partitions, s.owned_partitions);
                assert_eq!(k.owned_partitions[0].partitions, vec![0, 2]);
            }
            if v >= 2 {
                assert_eq!(back.generation_id, 7);
            }
            if v >= 3 {
                assert_eq!(back.rack_id.as_deref(), Some("r1"));
            }
        }
    }

    #[test]
    fn assignment_round_trip_and_kafka_bytes() {
        let mut parts = BTreeMap::new();
        parts.insert("t".to_string(), vec![1, 3]);
        let a = Assignment::new(parts);
        let bytes = a.encode_version(0);
        assert_eq!(
            &bytes[..],
            &[
                0, 0, // version
                0, 0, 0, 1, // one topic
                0, 1, b't', // "t"
                0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, // [1, 3]
                0xff, 0xff, 0xff, 0xff // null user data
            ]
        );
        assert_eq!(Assignment::decode(&bytes).unwrap(), a);
        // Encoded by the kafka-protocol crate, decoded by us.
        let k = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default()
                .with_topic(StrBytes::from_static_str("t").into())
                .with_partitions(vec![1, 3]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        k.encode(&mut buf, 3).unwrap();
        assert_eq!(Assignment::decode(&buf).unwrap(), a);
    }

    #[test]
    fn hostile_payloads_are_errors() {
        assert!(Subscription::decode(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(Assignment::decode(&[0, 1, 0, 0, 0, 1, 0, 9, b'x']).is_err());
        assert!(Subscription::decode(&[0]).is_err());
        assert_eq!(Assignment::decode(&[]).unwrap(), Assignment::default());
    }
}
