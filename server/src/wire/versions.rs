//! Which API versions the broker advertises in ApiVersions, and which it serves.
//!
//! Clients read the broker's release from these ranges (kafka-python guesses it from them;
//! librdkafka switches features on by them), so the maxima are Apache Kafka 3.7's: a release
//! every client in the wild knows. The minima are the oldest versions a client that writes
//! record-batch v2 may send, which is also where the `kafka-protocol` crate's decoders start
//! (Kafka 4.0 dropped the older ones, KIP-896). Two exceptions, both Kafka's own:
//!
//! - Produce is advertised from v0 although v0-2 are not served: librdkafka before 2.11.1 turns
//!   gzip, snappy and lz4 off unless the Produce range includes v0, and Kafka 4.x keeps
//!   advertising v0 for that reason (KAFKA-18659). No client that has read our ranges sends v0-2
//!   once v3 is available; one that does has its connection closed.
//! - Fetch stops at v12: v13 onwards names topics by id only.

use kafka_protocol::messages::ApiKey;

/// One API the broker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedApi {
    /// The API.
    pub key: ApiKey,
    /// The lowest version advertised.
    pub advertised_min: i16,
    /// The lowest version served (above `advertised_min` only for Produce).
    pub served_min: i16,
    /// The highest version advertised and served.
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ServedApi {
    ServedApi {
        key,
        advertised_min: min,
        served_min: min,
        max,
    }
}

/// Every API the broker answers, with the range it advertises.
pub const SERVED_APIS: &[ServedApi] = &[
    ServedApi {
        key: ApiKey::Produce,
        advertised_min: 0,
        served_min: 3,
        max: 10,
    },
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 8),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::InitProducerId, 0, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 8),
    api(ApiKey::OffsetFetch, 1, 8),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 4),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
];

/// What a controller's listener answers (KRaft's controller APIs): brokers register,
/// heartbeat, propose ISR changes, take producer-id blocks and read the metadata log with Fetch;
/// brokers forward the topic admin requests they receive.
pub const CONTROLLER_APIS: &[ServedApi] = &[
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::BrokerRegistration, 0, 4),
    api(ApiKey::BrokerHeartbeat, 0, 1),
    api(ApiKey::AlterPartition, 2, 3),
    api(ApiKey::AllocateProducerIds, 0, 0),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DescribeCluster, 0, 1),
];

/// The served range of `key` among `apis`, or `None` if it is not served.
pub fn served_in(apis: &'static [ServedApi], key: ApiKey) -> Option<&'static ServedApi> {
    apis.iter().find(|a| a.key == key)
}

/// The served range of `key` on a broker's listener.
pub fn served(key: ApiKey) -> Option<&'static ServedApi> {
    served_in(SERVED_APIS, key)
}

/// Whether `version` of `key` is served among `apis`.
pub fn is_served_in(apis: &'static [ServedApi], key: ApiKey, version: i16) -> bool {
    served_in(apis, key).is_some_and(|a| (a.served_min..=a.max).contains(&version))
}

/// Whether `version` of `key` is served on a broker's listener.
pub fn is_served(key: ApiKey, version: i16) -> bool {
    is_served_in(SERVED_APIS, key, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_one_the_codec_can_decode_and_encode() {
        for a in SERVED_APIS.iter().chain(CONTROLLER_APIS) {
            let valid = a.key.valid_versions();
            assert!(
                valid.min <= a.served_min && a.max <= valid.max,
                "{:?}: served {}..={} but the codec knows {}",
                a.key,
                a.served_min,
                a.max,
                valid
            );
            assert!(a.advertised_min <= a.served_min);
        }
    }

    #[test]
    fn metadata_is_advertised_from_v4_at_least_as_kafka_python_requires() {
        let m = served(ApiKey::Metadata).unwrap();
        assert!(m.max >= 4 && m.advertised_min <= 4);
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert!(is_served(ApiKey::JoinGroup, 0));
        assert!(!is_served(ApiKey::OffsetCommit, 1));
    }
}
