//! The records a group coordinator keeps in `__consumer_offsets`, in Kafka's own key and value
//! schemas (`OffsetCommitKey` v1 / `OffsetCommitValue` v3, `GroupMetadataKey` v2 /
//! `GroupMetadataValue` v3), so a Kafka tool reading the topic understands them and a log
//! written by Kafka replays here. A null value is a tombstone. Replaying a partition in order
//! gives every group it holds: its latest generation and committed offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use surety_core::group::TopicPartition;

/// A committed offset with what Kafka keeps beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OffsetAndMetadata {
    pub(crate) offset: i64,
    /// The leader epoch of the last consumed record (-1 if unknown), for KIP-320 fencing.
    pub(crate) leader_epoch: i32,
    /// The client's opaque string.
    pub(crate) metadata: String,
    pub(crate) commit_timestamp: i64,
}

/// A member as the group metadata record stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
    pub(crate) subscription: Bytes,
    pub(crate) assignment: Bytes,
}

/// The group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredGroup {
    pub(crate) protocol_type: String,
    pub(crate) generation_id: i32,
    pub(crate) protocol: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) current_state_timestamp: i64,
    pub(crate) members: Vec<StoredMember>,
}

/// One record of `__consumer_offsets`, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoredRecord {
    /// A commit, or its deletion (`None`).
    Offset {
        group: String,
        partition: TopicPartition,
        value: Option<OffsetAndMetadata>,
    },
    /// A group's metadata, or its deletion (`None`).
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// The key of a committed offset.
pub(crate) fn offset_key(group: &str, partition: &TopicPartition) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, &partition.topic);
    b.put_i32(partition.partition);
    b.freeze()
}

/// The value of a committed offset.
pub(crate) fn offset_value(value: &OffsetAndMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_VALUE_VERSION);
    b.put_i64(value.offset);
    b.put_i32(value.leader_epoch);
    put_string(&mut b, &value.metadata);
    b.put_i64(value.commit_timestamp);
    b.freeze()
}

/// The key of a group's metadata.
pub(crate) fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_KEY_VERSION);
    put_string(&mut b, group);
    b.freeze()
}

/// The value of a group's metadata.
pub(crate) fn group_value(value: &StoredGroup) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut b, &value.protocol_type);
    b.put_i32(value.generation_id);
    put_nullable_string(&mut b, value.protocol.as_deref());
    put_nullable_string(&mut b, value.leader.as_deref());
    b.put_i64(value.current_state_timestamp);
    b.put_i32(value.members.len() as i32);
    for m in &value.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.group_instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Decodes one record; `None` for a key this broker does not know (Kafka's transaction and
/// newer-protocol records share nothing with these and are skipped, as Kafka's loader skips
/// what it does not own), or bytes that do not parse.
pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Option<StoredRecord> {
    let mut k = Reader(key);
    match k.i16()? {
        0 | 1 => {
            let group = k.string()?;
            let topic = k.string()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_offset_value(v)?),
            };
            Some(StoredRecord::Offset {
                group,
                partition: TopicPartition {
                    topic: Arc::from(topic),
                    partition,
                },
                value,
            })
        }
        2 => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(StoredRecord::Group { group, value })
        }
        _ => None,
    }
}

fn decode_offset_value(v: &[u8]) -> Option<OffsetAndMetadata> {
    let mut r = Reader(v);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    (0..=3).contains(&version).then_some(OffsetAndMetadata {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

fn decode_group_value(v: &[u8]) -> Option<StoredGroup> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let session_timeout_first = version == 0;
        let (rebalance_timeout_ms, session_timeout_ms) = if session_timeout_first {
            let s = r.i32()?;
            (s, s)
        } else {
            (r.i32()?, r.i32()?)
        };
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(StoredMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(StoredGroup {
        protocol_type,
        generation_id,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// A group as replaying its partition leaves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadedGroup {
    pub(crate) metadata: Option<StoredGroup>,
    pub(crate) offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
}

/// Applies one replayed record: the newest record of a key wins, a tombstone removes it.
pub(crate) fn replay(groups: &mut BTreeMap<String, LoadedGroup>, record: StoredRecord) {
    match record {
        StoredRecord::Offset {
            group,
            partition,
            value,
        } => {
            let loaded = groups.entry(group.clone()).or_default();
            match value {
                Some(v) => {
                    loaded.offsets.insert(partition, v);
                }
                None => {
                    loaded.offsets.remove(&partition);
                    if loaded.offsets.is_empty() && loaded.metadata.is_none() {
                        groups.remove(&group);
                    }
                }
            }
        }
        StoredRecord::Group { group, value } => match value {
            Some(v) => groups.entry(group).or_default().metadata = Some(v),
            None => {
                if let Some(loaded) = groups.get_mut(&group) {
                    loaded.metadata = None;
                    if loaded.offsets.is_empty() {
                        groups.remove(&group);
                    }
                }
            }
        },
    }
}

fn put_string(b: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, bytes: &[u8]) {
    b.put_i32(bytes.len() as i32);
    b.put_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let bytes = self.take(len as usize)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }

    fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Bytes::new());
        }
        Some(Bytes::copy_from_slice(self.take(len as usize)?))
    }
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
    fn offset_records_are_kafkas_bytes_and_read_back() {
        let key = offset_key("g", &tp("t", 3));
        // version 1, "g", "t", partition 3: as Kafka's OffsetCommitKey writes it.
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let value = OffsetAndMetadata {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        let bytes = offset_value(&value);
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(bytes.len(), 2 + 8 + 4 + 3 + 8);
        assert_eq!(
            decode(&key, Some(&bytes)),
            Some(StoredRecord::Offset {
                group: "g".into(),
                partition: tp("t", 3),
                value: Some(value),
            })
        );
    }

    #[test]
    fn an_older_offset_value_written_by_kafka_reads() {
        // OffsetCommitValue v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v = BytesMut::new();
        v.put_i16(1);
        v.put_i64(9);
        put_string(&mut v, "");
        v.put_i64(5);
        v.put_i64(6);
        let key = offset_key("g", &tp("t", 0));
        let Some(StoredRecord::Offset { value, .. }) = decode(&key, Some(&v)) else {
            panic!("decodes");
        };
        assert_eq!(value.unwrap().offset, 9);
    }

    #[test]
    fn group_records_round_trip_and_replay_keeps_the_newest() {
        let group = StoredGroup {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol: Some("range".into()),
            leader: Some("c-1".into()),
            current_state_timestamp: 10,
            members: vec![StoredMember {
                member_id: "c-1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let key = group_key("g");
        let record = decode(&key, Some(&group_value(&group))).unwrap();
        assert_eq!(
            record,
            StoredRecord::Group {
                group: "g".into(),
                value: Some(group.clone()),
            }
        );
        let mut groups = BTreeMap::new();
        replay(&mut groups, record);
        let commit = |offset| StoredRecord::Offset {
            group: "g".into(),
            partition: tp("t", 0),
            value: Some(OffsetAndMetadata {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            }),
        };
        replay(&mut groups, commit(5));
        replay(&mut groups, commit(8));
        assert_eq!(groups["g"].offsets[&tp("t", 0)].offset, 8);
        assert_eq!(groups["g"].metadata.as_ref().unwrap().generation_id, 4);
        replay(
            &mut groups,
            StoredRecord::Offset {
                group: "g".into(),
                partition: tp("t", 0),
                value: None,
            },
        );
        replay(
            &mut groups,
            StoredRecord::Group {
                group: "g".into(),
                value: None,
            },
        );
        assert!(groups.is_empty());
        assert_eq!(decode(&[0, 9, 1], None), None);
        assert_eq!(decode(&[0], None), None);
    }
}
