//! The records a group coordinator keeps in `__consumer_offsets`, in Kafka's own key and value
//! schemas (`OffsetCommitKey` v1 / `OffsetCommitValue` v3, `GroupMetadataKey` v2 /
//! `GroupMetadataValue` v3), so a Kafka tool reading the topic understands them and a log
//! written by Kafka replays here. A null value is a tombstone. Replaying a partition in order
//! gives every group it holds: its latest generation and committed offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::TopicPartition;
use super::codec::{MalformedError, Reader, put_nullable_bytes, put_nullable_string, put_string};

/// A committed offset with what Kafka keeps beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset the group consumes.
    pub offset: i64,
    /// The leader epoch of the last consumed record (-1 if unknown), for KIP-320 fencing.
    pub leader_epoch: i32,
    /// The client's opaque string.
    pub metadata: String,
    /// When the broker stored the commit (ms since the epoch); retention counts from it.
    pub commit_timestamp: i64,
}

/// A member as the group metadata record stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// Its wire id, which a restarted broker keeps recognising.
    pub member_id: String,
    /// `group.instance.id`, for a static member.
    pub group_instance_id: Option<String>,
    /// As DescribeGroups reports it.
    pub client_id: String,
    /// As DescribeGroups reports it.
    pub client_host: String,
    /// How long a rebalance waits for it.
    pub rebalance_timeout_ms: i32,
    /// Its session, which starts again when the group is loaded.
    pub session_timeout_ms: i32,
    /// Its subscription for the generation's protocol.
    pub subscription: Bytes,
    /// What the leader gave it.
    pub assignment: Bytes,
}

/// The group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGroup {
    /// `consumer` for consumers; empty for a group that never had members.
    pub protocol_type: String,
    /// The generation, which goes on from here after a load.
    pub generation_id: i32,
    /// The generation's protocol; `None` for an empty group.
    pub protocol: Option<String>,
    /// The generation's leader.
    pub leader: Option<String>,
    /// When the record was written (ms since the epoch).
    pub current_state_timestamp: i64,
    /// The generation's members and their assignments.
    pub members: Vec<StoredMember>,
}

/// One record of `__consumer_offsets`, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredRecord {
    /// A commit, or its deletion (`None`).
    Offset {
        /// Whose.
        group: String,
        /// Where.
        partition: TopicPartition,
        /// `None`: deleted.
        value: Option<OffsetAndMetadata>,
    },
    /// A group's metadata, or its deletion (`None`).
    Group {
        /// Whose.
        group: String,
        /// `None`: deleted.
        value: Option<StoredGroup>,
    },
}

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// The key of a committed offset.
pub fn offset_key(group: &str, partition: &TopicPartition) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, &partition.topic);
    b.put_i32(partition.partition);
    b.freeze()
}

/// The value of a committed offset.
pub fn offset_value(value: &OffsetAndMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_VALUE_VERSION);
    b.put_i64(value.offset);
    b.put_i32(value.leader_epoch);
    put_string(&mut b, &value.metadata);
    b.put_i64(value.commit_timestamp);
    b.freeze()
}

/// The key of a group's metadata.
pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_KEY_VERSION);
    put_string(&mut b, group);
    b.freeze()
}

/// The value of a group's metadata.
pub fn group_value(value: &StoredGroup) -> Bytes {
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
        put_nullable_bytes(&mut b, Some(&m.subscription));
        put_nullable_bytes(&mut b, Some(&m.assignment));
    }
    b.freeze()
}

/// Decodes one record; `None` for a key this broker does not know (Kafka's transaction and
/// newer-protocol records share nothing with these and are skipped, as Kafka's loader skips
/// what it does not own), or bytes that do not parse.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<StoredRecord> {
    decode_record(key, value).ok().flatten()
}

fn decode_record(key: &[u8], value: Option<&[u8]>) -> Result<Option<StoredRecord>, MalformedError> {
    let mut k = Reader(key);
    Ok(Some(match k.i16()? {
        0 | 1 => {
            let group = k.string()?.to_string();
            let topic = k.string()?;
            let partition = k.i32()?;
            let value = value.map(decode_offset_value).transpose()?;
            StoredRecord::Offset {
                group,
                partition: TopicPartition { topic, partition },
                value,
            }
        }
        2 => {
            let group = k.string()?.to_string();
            let value = value.map(decode_group_value).transpose()?;
            StoredRecord::Group { group, value }
        }
        _ => return Ok(None),
    }))
}

fn decode_offset_value(v: &[u8]) -> Result<OffsetAndMetadata, MalformedError> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(MalformedError);
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?.to_string();
    let commit_timestamp = r.i64()?;
    Ok(OffsetAndMetadata {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

fn decode_group_value(v: &[u8]) -> Result<StoredGroup, MalformedError> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(MalformedError);
    }
    let text = |s: Option<Arc<str>>| s.map(|s| s.to_string());
    let protocol_type = r.string()?.to_string();
    let generation_id = r.i32()?;
    let protocol = text(r.nullable_string()?);
    let leader = text(r.nullable_string()?);
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.len()?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = r.string()?.to_string();
        let group_instance_id = if version >= 3 {
            text(r.nullable_string()?)
        } else {
            None
        };
        let client_id = r.string()?.to_string();
        let client_host = r.string()?.to_string();
        let (rebalance_timeout_ms, session_timeout_ms) = if version == 0 {
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            let s = r.i32()?;
            (s, s)
        } else {
            (r.i32()?, r.i32()?)
        };
        let subscription = r.nullable_bytes()?.unwrap_or_default();
        let assignment = r.nullable_bytes()?.unwrap_or_default();
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
    Ok(StoredGroup {
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
pub struct ReplayedGroup {
    /// Its last stored generation, if any survives.
    pub metadata: Option<StoredGroup>,
    /// Its committed offsets.
    pub offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
}

/// Applies one replayed record: the newest record of a key wins, a tombstone removes it.
pub fn replay(groups: &mut BTreeMap<String, ReplayedGroup>, record: StoredRecord) {
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
