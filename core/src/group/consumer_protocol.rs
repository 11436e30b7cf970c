//! The consumer protocol: how consumers encode their subscription (in JoinGroup's protocol
//! metadata) and the leader encodes each member's assignment (in SyncGroup), byte for byte as
//! Kafka's `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment` schemas lay them out.
//! The coordinator never reads these bytes; consumers of different clients in one group do, so
//! ours must read what librdkafka or the Java client writes, and write what they read.
//!
//! Decoding accepts every version (fields a version adds are read and, where not needed,
//! ignored). An eager consumer's subscription is written as version 0, which every client
//! reads; a cooperative one's as version 2, the first to carry what KIP-429 and KIP-792 need
//! (the partitions the member owns, and the generation it owned them in).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{Reader, put_nullable_bytes, put_string};
use super::message::TopicPartition;

/// A member's subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The topics it wants.
    pub topics: Vec<Arc<str>>,
    /// The assignor's user data.
    pub user_data: Option<Bytes>,
    /// The partitions it owned (version 1+; cooperative rebalancing reads it).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation it owned them in (version 2+, KIP-792; -1 when unknown): when two
    /// members claim one partition, the newer claim is the true one.
    pub generation_id: i32,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
        }
    }
}

/// A member's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Its partitions, grouped by topic in the encoding.
    pub partitions: Vec<TopicPartition>,
    /// The assignor's user data.
    pub user_data: Option<Bytes>,
}

pub use super::codec::MalformedError;

impl Subscription {
    /// Version 0 bytes: what an eager consumer sends.
    pub fn encode(&self) -> Bytes {
        self.encode_version(0)
    }

    /// Version 2 bytes, with the owned partitions and their generation: what a cooperative
    /// consumer sends.
    pub fn encode_cooperative(&self) -> Bytes {
        self.encode_version(2)
    }

    fn encode_version(&self, version: i16) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(version);
        out.put_i32(self.topics.len() as i32);
        for topic in &self.topics {
            put_string(&mut out, topic);
        }
        put_nullable_bytes(&mut out, self.user_data.as_deref());
        if version >= 1 {
            put_topic_partitions(&mut out, &self.owned_partitions);
        }
        if version >= 2 {
            out.put_i32(self.generation_id);
        }
        out.freeze()
    }

    /// Reads any version.
    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedError> {
        let mut r = Reader(bytes);
        let version = r.i16()?;
        let count = r.len()?;
        let mut topics = Vec::with_capacity(count.min(r.0.len()));
        for _ in 0..count {
            topics.push(r.string()?);
        }
        let user_data = trailing_user_data(&mut r)?;
        let owned_partitions = if version >= 1 && r.remaining() > 0 {
            topic_partitions(&mut r)?
        } else {
            Vec::new()
        };
        let generation_id = if version >= 2 && r.remaining() >= 4 {
            r.i32()?
        } else {
            -1
        };
        Ok(Subscription {
            topics,
            user_data,
            owned_partitions,
            generation_id,
        })
    }
}

impl Assignment {
    /// Version 0 bytes, partitions grouped by topic in the order given.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(0);
        put_topic_partitions(&mut out, &self.partitions);
        put_nullable_bytes(&mut out, self.user_data.as_deref());
        out.freeze()
    }

    /// Reads any version. Empty bytes are an empty assignment (what a coordinator gives a
    /// member the leader left out).
    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedError> {
        if bytes.is_empty() {
            return Ok(Assignment {
                partitions: Vec::new(),
                user_data: None,
            });
        }
        let mut r = Reader(bytes);
        let _version = r.i16()?;
        let partitions = topic_partitions(&mut r)?;
        let user_data = trailing_user_data(&mut r)?;
        Ok(Assignment {
            partitions,
            user_data,
        })
    }
}

/// The user data that ends both schemas: absent at the very end is how some clients write an
/// empty v0 trailer.
fn trailing_user_data(r: &mut Reader<'_>) -> Result<Option<Bytes>, MalformedError> {
    if r.remaining() == 0 {
        return Ok(None);
    }
    r.nullable_bytes()
}

/// Topics with their partitions, grouped by topic in the order given, as both schemas lay
/// them out.
fn put_topic_partitions(out: &mut BytesMut, partitions: &[TopicPartition]) {
    let mut groups: Vec<(&Arc<str>, Vec<i32>)> = Vec::new();
    for tp in partitions {
        match groups.iter_mut().find(|(t, _)| **t == tp.topic) {
            Some((_, ps)) => ps.push(tp.partition),
            None => groups.push((&tp.topic, vec![tp.partition])),
        }
    }
    out.put_i32(groups.len() as i32);
    for (topic, partitions) in groups {
        put_string(out, topic);
        out.put_i32(partitions.len() as i32);
        for p in partitions {
            out.put_i32(p);
        }
    }
}

/// Topics with their partitions, as both schemas group them.
fn topic_partitions(r: &mut Reader<'_>) -> Result<Vec<TopicPartition>, MalformedError> {
    let topics = r.len()?;
    let mut out = Vec::new();
    for _ in 0..topics {
        let topic = r.string()?;
        let count = r.len()?;
        if count > r.remaining() / 4 {
            return Err(MalformedError);
        }
        for _ in 0..count {
            out.push(TopicPartition {
                topic: topic.clone(),
                partition: r.i32()?,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }

    #[test]
    fn version_0_bytes_are_kafkas() {
        let s = Subscription {
            topics: vec![Arc::from("ab")],
            ..Subscription::default()
        };
        assert_eq!(
            &s.encode()[..],
            &[0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Subscription::decode(&s.encode()), Ok(s));
        let a = Assignment {
            partitions: vec![tp("t", 0), tp("t", 2), tp("u", 1)],
            user_data: Some(Bytes::from_static(b"x")),
        };
        assert_eq!(Assignment::decode(&a.encode()), Ok(a));
        assert_eq!(Assignment::decode(&[]).unwrap().partitions, vec![]);
    }

    #[test]
    fn a_version_1_subscription_carries_owned_partitions() {
        let mut bytes = BytesMut::new();
        bytes.put_i16(1);
        bytes.put_i32(1);
        put_string(&mut bytes, "t");
        bytes.put_i32(-1);
        bytes.put_i32(1);
        put_string(&mut bytes, "t");
        bytes.put_i32(1);
        bytes.put_i32(3);
        let s = Subscription::decode(&bytes).unwrap();
        assert_eq!(s.owned_partitions, vec![tp("t", 3)]);
        assert_eq!(s.generation_id, -1);
    }

    #[test]
    fn a_cooperative_subscription_round_trips_as_version_2() {
        let s = Subscription {
            topics: vec![Arc::from("t"), Arc::from("u")],
            user_data: None,
            owned_partitions: vec![tp("t", 0), tp("t", 2), tp("u", 1)],
            generation_id: 7,
        };
        let bytes = s.encode_cooperative();
        assert_eq!(&bytes[..2], &[0, 2]);
        assert_eq!(Subscription::decode(&bytes), Ok(s));
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        assert_eq!(
            Assignment::decode(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff]),
            Err(MalformedError)
        );
        assert_eq!(
            Subscription::decode(&[0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(MalformedError)
        );
        assert_eq!(Subscription::decode(&[0]), Err(MalformedError));
    }
}
