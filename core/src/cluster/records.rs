//! The records of the metadata log: KRaft's record types, reduced to what Surety's cluster
//! decides on, in a compact binary format of our own.
//!
//! Every record starts with a type byte and a version byte, so a later version can add fields
//! and an old reader refuses what it cannot read instead of misreading it. Integers are
//! big-endian and fixed-width, strings are UTF-8 behind a `u16` length, lists are behind a
//! `u32` count. Broker ids are written as Kafka's `int32` (a `node.id` is never negative), and
//! a partition's leader as `int32` with -1 for none.
//!
//! The log is read back after crashes and by every broker, so [`MetadataRecord::decode`] must
//! survive any bytes: a torn or foreign record is an error, never a panic, and no allocation is
//! sized by a count before the bytes it announces are there.

use std::collections::BTreeSet;
use std::fmt;

use crate::replication::{BrokerId, PartitionState};

/// A topic's id: Kafka's UUID, as its 16 bytes.
pub type TopicId = [u8; 16];

/// The longest string a record can carry, in bytes. The cluster controller refuses longer
/// names and configs before they reach a record; [`MetadataRecord::encode`] would cut them.
pub const MAX_STRING_LEN: usize = u16::MAX as usize;

/// The largest broker id a record can carry: Kafka's `node.id` is an `int32`.
pub const MAX_BROKER_ID: BrokerId = i32::MAX as BrokerId;

/// One entry of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum MetadataRecord {
    /// KRaft's RegisterBrokerRecord. A registration starts a new incarnation of the broker,
    /// fenced until it heartbeats.
    RegisterBroker {
        /// The broker's `node.id`, as partitions' replica lists name it.
        broker_id: BrokerId,
        /// The offset of this record in the metadata log: unique and growing, so a request
        /// from an earlier incarnation is told apart by it.
        broker_epoch: i64,
        /// Where clients and other brokers reach this broker (its advertised listener).
        host: String,
        /// The advertised listener's port.
        port: u16,
    },
    /// FenceBrokerRecord: the broker's session expired; it may lead nothing and its partitions
    /// move elsewhere.
    FenceBroker {
        /// Leads nothing and joins no ISR from here on.
        broker_id: BrokerId,
        /// The incarnation fenced: a record for an earlier one no longer applies.
        broker_epoch: i64,
    },
    /// UnfenceBrokerRecord: the broker heartbeats and has caught up; it may lead again.
    UnfenceBroker {
        /// May lead and join ISRs again.
        broker_id: BrokerId,
        /// The incarnation unfenced: a record for an earlier one no longer applies.
        broker_epoch: i64,
    },
    /// TopicRecord plus the topic's config overrides (ConfigRecord).
    Topic {
        /// Unique among live topics; brokers name the partition directories after it.
        name: String,
        /// Unique for all time, so a topic deleted and created again is not mistaken for the old.
        topic_id: TopicId,
        /// The overrides of the broker defaults, in the order the request gave them.
        configs: Vec<(String, String)>,
    },
    /// PartitionRecord: a new partition's assignment (preferred leader first) and initial state.
    Partition {
        /// The topic, which a `Topic` record created earlier in the log.
        topic_id: TopicId,
        /// The partition's index within the topic.
        partition: i32,
        /// The brokers holding a copy; elections try them in this order.
        replicas: Vec<BrokerId>,
        /// Leader, epochs and ISR at creation.
        state: PartitionState,
    },
    /// PartitionChangeRecord, carrying the whole new state rather than the changed fields:
    /// applying one needs nothing but the record.
    PartitionChange {
        /// By id: a name may be reused after a deletion, an id never.
        topic_id: TopicId,
        /// The partition's index within the topic.
        partition: i32,
        /// Leader, leader epoch, ISR and partition epoch after the change.
        state: PartitionState,
    },
    /// RemoveTopicRecord: the topic and all its partitions are gone.
    RemoveTopic {
        /// By id, so a topic created again under the same name is not hit.
        topic_id: TopicId,
    },
    /// ProducerIdsRecord: a block of producer ids went to a broker, so none is handed out twice,
    /// not even after the controller restarts.
    ProducerIds {
        /// Who holds the block; the ids are unique cluster-wide all the same.
        broker_id: BrokerId,
        /// That broker's incarnation when it asked.
        broker_epoch: i64,
        /// The first id of the next block: every id below it is taken.
        next_producer_id: i64,
    },
}

/// Why bytes are not a [`MetadataRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataDecodeError {
    /// The bytes end before the record does.
    Truncated,
    /// A record type this version does not know.
    UnknownType(u8),
    /// A record version this version does not know (written by a newer one).
    UnknownVersion {
        /// The record's type byte.
        record_type: u8,
        /// Its version byte.
        version: u8,
    },
    /// A string is not UTF-8.
    InvalidUtf8,
    /// A broker id is negative, or a leader is below -1.
    InvalidBrokerId(i32),
    /// Bytes follow the record.
    TrailingBytes(usize),
}

impl fmt::Display for MetadataDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataDecodeError::Truncated => write!(f, "metadata record truncated"),
            MetadataDecodeError::UnknownType(t) => write!(f, "unknown metadata record type {t}"),
            MetadataDecodeError::UnknownVersion {
                record_type,
                version,
            } => write!(
                f,
                "unknown version {version} of metadata record type {record_type}"
            ),
            MetadataDecodeError::InvalidUtf8 => write!(f, "metadata record string is not UTF-8"),
            MetadataDecodeError::InvalidBrokerId(id) => {
                write!(f, "invalid broker id {id} in metadata record")
            }
            MetadataDecodeError::TrailingBytes(n) => {
                write!(f, "{n} bytes follow the metadata record")
            }
        }
    }
}

impl std::error::Error for MetadataDecodeError {}

const REGISTER_BROKER: u8 = 1;
const FENCE_BROKER: u8 = 2;
const UNFENCE_BROKER: u8 = 3;
const TOPIC: u8 = 4;
const PARTITION: u8 = 5;
const PARTITION_CHANGE: u8 = 6;
const REMOVE_TOPIC: u8 = 7;
const PRODUCER_IDS: u8 = 8;

/// Every record type is at its first version.
const VERSION: u8 = 0;

impl MetadataRecord {
    /// The record as the metadata log stores it.
    ///
    /// Broker ids above [`MAX_BROKER_ID`] do not read back, and strings are cut (at a character
    /// boundary) to [`MAX_STRING_LEN`] bytes; the cluster controller refuses both before they
    /// reach a record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        match self {
            MetadataRecord::RegisterBroker {
                broker_id,
                broker_epoch,
                host,
                port,
            } => {
                w.header(REGISTER_BROKER);
                w.broker(*broker_id);
                w.i64(*broker_epoch);
                w.string(host);
                w.0.extend_from_slice(&port.to_be_bytes());
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => {
                w.header(FENCE_BROKER);
                w.broker(*broker_id);
                w.i64(*broker_epoch);
            }
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                w.header(UNFENCE_BROKER);
                w.broker(*broker_id);
                w.i64(*broker_epoch);
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                configs,
            } => {
                w.header(TOPIC);
                w.string(name);
                w.0.extend_from_slice(topic_id);
                w.count(configs.len());
                for (key, value) in configs {
                    w.string(key);
                    w.string(value);
                }
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                state,
            } => {
                w.header(PARTITION);
                w.0.extend_from_slice(topic_id);
                w.i32(*partition);
                w.brokers(replicas.iter().copied(), replicas.len());
                w.state(state);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                state,
            } => {
                w.header(PARTITION_CHANGE);
                w.0.extend_from_slice(topic_id);
                w.i32(*partition);
                w.state(state);
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                w.header(REMOVE_TOPIC);
                w.0.extend_from_slice(topic_id);
            }
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            } => {
                w.header(PRODUCER_IDS);
                w.broker(*broker_id);
                w.i64(*broker_epoch);
                w.i64(*next_producer_id);
            }
        }
        w.0
    }

    /// Reads one record, which must span all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, MetadataDecodeError> {
        let mut r = Reader(bytes);
        let record_type = r.u8()?;
        if !(REGISTER_BROKER..=PRODUCER_IDS).contains(&record_type) {
            return Err(MetadataDecodeError::UnknownType(record_type));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(MetadataDecodeError::UnknownVersion {
                record_type,
                version,
            });
        }
        let record = match record_type {
            REGISTER_BROKER => MetadataRecord::RegisterBroker {
                broker_id: r.broker()?,
                broker_epoch: r.i64()?,
                host: r.string()?,
                port: u16::from_be_bytes(r.array()?),
            },
            FENCE_BROKER => MetadataRecord::FenceBroker {
                broker_id: r.broker()?,
                broker_epoch: r.i64()?,
            },
            UNFENCE_BROKER => MetadataRecord::UnfenceBroker {
                broker_id: r.broker()?,
                broker_epoch: r.i64()?,
            },
            TOPIC => {
                let name = r.string()?;
                let topic_id = r.array()?;
                let mut configs = Vec::new();
                for _ in 0..r.count()? {
                    configs.push((r.string()?, r.string()?));
                }
                MetadataRecord::Topic {
                    name,
                    topic_id,
                    configs,
                }
            }
            PARTITION => MetadataRecord::Partition {
                topic_id: r.array()?,
                partition: r.i32()?,
                replicas: r.brokers()?,
                state: r.state()?,
            },
            PARTITION_CHANGE => MetadataRecord::PartitionChange {
                topic_id: r.array()?,
                partition: r.i32()?,
                state: r.state()?,
            },
            REMOVE_TOPIC => MetadataRecord::RemoveTopic {
                topic_id: r.array()?,
            },
            _ => MetadataRecord::ProducerIds {
                broker_id: r.broker()?,
                broker_epoch: r.i64()?,
                next_producer_id: r.i64()?,
            },
        };
        match r.0.len() {
            0 => Ok(record),
            n => Err(MetadataDecodeError::TrailingBytes(n)),
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn header(&mut self, record_type: u8) {
        self.0.extend_from_slice(&[record_type, VERSION]);
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn broker(&mut self, id: BrokerId) {
        self.i32(id as i32);
    }

    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u32).to_be_bytes());
    }

    fn brokers(&mut self, ids: impl Iterator<Item = BrokerId>, n: usize) {
        self.count(n);
        for id in ids {
            self.broker(id);
        }
    }

    fn string(&mut self, s: &str) {
        let mut len = s.len().min(MAX_STRING_LEN);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..len]);
    }

    fn state(&mut self, state: &PartitionState) {
        self.i32(state.leader.map_or(-1, |l| l as i32));
        self.i32(state.leader_epoch);
        self.brokers(state.isr.iter().copied(), state.isr.len());
        self.i32(state.partition_epoch);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MetadataDecodeError> {
        if self.0.len() < n {
            return Err(MetadataDecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MetadataDecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, MetadataDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i32(&mut self) -> Result<i32, MetadataDecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, MetadataDecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A list's length. Only a bound for reading: each element fails on its own when the
    /// bytes run out, so a hostile count costs nothing.
    fn count(&mut self) -> Result<u32, MetadataDecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn broker(&mut self) -> Result<BrokerId, MetadataDecodeError> {
        let id = self.i32()?;
        BrokerId::try_from(id).map_err(|_| MetadataDecodeError::InvalidBrokerId(id))
    }

    fn brokers<B: FromIterator<BrokerId>>(&mut self) -> Result<B, MetadataDecodeError> {
        let n = self.count()?;
        (0..n).map(|_| self.broker()).collect()
    }

    fn string(&mut self) -> Result<String, MetadataDecodeError> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MetadataDecodeError::InvalidUtf8)
    }

    fn state(&mut self) -> Result<PartitionState, MetadataDecodeError> {
        let leader = match self.i32()? {
            -1 => None,
            id => {
                Some(BrokerId::try_from(id).map_err(|_| MetadataDecodeError::InvalidBrokerId(id))?)
            }
        };
        let leader_epoch = self.i32()?;
        let isr: BTreeSet<BrokerId> = self.brokers()?;
        Ok(PartitionState {
            leader,
            leader_epoch,
            isr,
            partition_epoch: self.i32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn broker() -> impl Strategy<Value = BrokerId> {
        0..=MAX_BROKER_ID
    }

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", "[a-z._-]{0,300}"]
    }

    fn state() -> impl Strategy<Value = PartitionState> {
        (
            proptest::option::of(broker()),
            any::<i32>(),
            proptest::collection::btree_set(broker(), 0..5),
            any::<i32>(),
        )
            .prop_map(
                |(leader, leader_epoch, isr, partition_epoch)| PartitionState {
                    leader,
                    leader_epoch,
                    isr,
                    partition_epoch,
                },
            )
    }

    fn record() -> impl Strategy<Value = MetadataRecord> {
        prop_oneof![
            (broker(), any::<i64>(), string(), any::<u16>()).prop_map(
                |(broker_id, broker_epoch, host, port)| MetadataRecord::RegisterBroker {
                    broker_id,
                    broker_epoch,
                    host,
                    port
                }
            ),
            (broker(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| {
                MetadataRecord::FenceBroker {
                    broker_id,
                    broker_epoch,
                }
            }),
            (broker(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| {
                MetadataRecord::UnfenceBroker {
                    broker_id,
                    broker_epoch,
                }
            }),
            (
                string(),
                any::<TopicId>(),
                proptest::collection::vec((string(), string()), 0..4)
            )
                .prop_map(|(name, topic_id, configs)| MetadataRecord::Topic {
                    name,
                    topic_id,
                    configs
                }),
            (
                any::<TopicId>(),
                any::<i32>(),
                proptest::collection::vec(broker(), 0..5),
                state()
            )
                .prop_map(|(topic_id, partition, replicas, state)| {
                    MetadataRecord::Partition {
                        topic_id,
                        partition,
                        replicas,
                        state,
                    }
                }),
            (any::<TopicId>(), any::<i32>(), state()).prop_map(|(topic_id, partition, state)| {
                MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    state,
                }
            }),
            any::<TopicId>().prop_map(|topic_id| MetadataRecord::RemoveTopic { topic_id }),
            (broker(), any::<i64>(), any::<i64>()).prop_map(
                |(broker_id, broker_epoch, next_producer_id)| MetadataRecord::ProducerIds {
                    broker_id,
                    broker_epoch,
                    next_producer_id
                }
            ),
        ]
    }

    proptest! {
        /// Every record reads back as written, and no prefix of it reads as a record: a torn
        /// write at the log's end is caught, not half applied.
        #[test]
        fn records_round_trip(record in record()) {
            let bytes = record.encode();
            prop_assert_eq!(MetadataRecord::decode(&bytes), Ok(record));
            for len in 0..bytes.len() {
                prop_assert!(MetadataRecord::decode(&bytes[..len]).is_err());
            }
        }

        /// Whatever the bytes, decoding answers without panicking.
        #[test]
        fn decode_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MetadataRecord::decode(&bytes);
        }

        /// Bytes that start like a record stress the field readers rather than the type check.
        #[test]
        fn decode_survives_any_body(
            record_type in 0u8..10,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![record_type, VERSION];
            bytes.extend(body);
            let _ = MetadataRecord::decode(&bytes);
        }
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        let change = MetadataRecord::RemoveTopic { topic_id: [7; 16] }.encode();
        let mut trailing = change.clone();
        trailing.push(0);
        assert_eq!(
            MetadataRecord::decode(&trailing),
            Err(MetadataDecodeError::TrailingBytes(1))
        );
        assert_eq!(
            MetadataRecord::decode(&[99, 0]),
            Err(MetadataDecodeError::UnknownType(99))
        );
        assert_eq!(
            MetadataRecord::decode(&[REMOVE_TOPIC, 1]),
            Err(MetadataDecodeError::UnknownVersion {
                record_type: REMOVE_TOPIC,
                version: 1
            })
        );
        let mut bad_host = MetadataRecord::RegisterBroker {
            broker_id: 1,
            broker_epoch: 0,
            host: "ab".into(),
            port: 9092,
        }
        .encode();
        bad_host[16] = 0xff;
        assert_eq!(
            MetadataRecord::decode(&bad_host),
            Err(MetadataDecodeError::InvalidUtf8)
        );
        let fenced_minus_one = [
            FENCE_BROKER,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        assert_eq!(
            MetadataRecord::decode(&fenced_minus_one),
            Err(MetadataDecodeError::InvalidBrokerId(-1))
        );
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let host = "é".repeat(MAX_STRING_LEN);
        let bytes = MetadataRecord::RegisterBroker {
            broker_id: 1,
            broker_epoch: 0,
            host,
            port: 1,
        }
        .encode();
        let Ok(MetadataRecord::RegisterBroker { host, .. }) = MetadataRecord::decode(&bytes) else {
            panic!("cut record does not read back");
        };
        assert_eq!(host.len(), MAX_STRING_LEN - 1);
    }
}
