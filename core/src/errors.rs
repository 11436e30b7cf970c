//! Kafka's error codes under Kafka's names, in one table.
//!
//! The broker, the producer client and the sans-IO actors answer with the same names, so each
//! code is written down once, here, instead of as a bare number at every use. The names, codes
//! and retriable flags are those of Kafka's `org.apache.kafka.common.protocol.Errors`, for the
//! errors this code base sends or tells apart; Kafka's other codes can be added as they are
//! needed.
//!
//! This crate does not depend on `kafka-protocol` (the actors stay free of the wire format), so
//! it carries its own table. A test in the server checks every entry's code, name and retriable
//! flag against `kafka-protocol`'s `ResponseError`: that is what catches a wrong number, such as
//! the 108 (`NEW_LEADER_ELECTED`) replication once sent for `INVALID_UPDATE_VERSION` (95).

use std::fmt;

/// In a trace an error is its wire code: what Kafka fixes, and what a reader of the trace
/// matches against a response.
#[cfg(feature = "trace")]
impl serde::Serialize for Errors {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i16(self.code())
    }
}

#[cfg(feature = "trace")]
impl<'de> serde::Deserialize<'de> for Errors {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <i16 as serde::Deserialize>::deserialize(deserializer)?;
        Errors::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {code}")))
    }
}

macro_rules! errors {
    ($($variant:ident = $code:literal, $name:literal, $retriable:literal;)*) => {
        /// A Kafka error code, by name. `None` is success, as in Kafka.
        ///
        /// Variants are declared in code order, so the derived order is the codes' order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(i16)]
        pub enum Errors {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($code), ").")]
                $variant = $code,
            )*
        }

        impl Errors {
            /// Every entry in code order, so a check can cover the whole table.
            pub const ALL: &[Errors] = &[$(Errors::$variant,)*];

            /// What a response carries: Kafka fixes the codes, not the names.
            pub const fn code(self) -> i16 {
                self as i16
            }

            /// The error a wire code stands for, or `None` for a code not in the table.
            pub const fn from_code(code: i16) -> Option<Errors> {
                match code {
                    $($code => Some(Errors::$variant),)*
                    _ => None,
                }
            }

            /// Kafka's name, e.g. `NOT_LEADER_OR_FOLLOWER`: what Kafka's logs and tools print.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Errors::$variant => $name,)*
                }
            }

            /// Whether Kafka's exception for this error is a `RetriableException`: the same
            /// request may succeed if sent again (after refreshing metadata, say).
            pub const fn is_retriable(self) -> bool {
                match self {
                    $(Errors::$variant => $retriable,)*
                }
            }
        }
    };
}

errors! {
    UnknownServerError = -1, "UNKNOWN_SERVER_ERROR", false;
    None = 0, "NONE", false;
    OffsetOutOfRange = 1, "OFFSET_OUT_OF_RANGE", false;
    CorruptMessage = 2, "CORRUPT_MESSAGE", true;
    UnknownTopicOrPartition = 3, "UNKNOWN_TOPIC_OR_PARTITION", true;
    LeaderNotAvailable = 5, "LEADER_NOT_AVAILABLE", true;
    NotLeaderOrFollower = 6, "NOT_LEADER_OR_FOLLOWER", true;
    RequestTimedOut = 7, "REQUEST_TIMED_OUT", true;
    MessageTooLarge = 10, "MESSAGE_TOO_LARGE", false;
    // Never sent by a broker: a client's name for a connection that broke with the request in
    // flight.
    NetworkException = 13, "NETWORK_EXCEPTION", true;
    CoordinatorLoadInProgress = 14, "COORDINATOR_LOAD_IN_PROGRESS", true;
    CoordinatorNotAvailable = 15, "COORDINATOR_NOT_AVAILABLE", true;
    NotCoordinator = 16, "NOT_COORDINATOR", true;
    InvalidTopicException = 17, "INVALID_TOPIC_EXCEPTION", false;
    RecordListTooLarge = 18, "RECORD_LIST_TOO_LARGE", false;
    NotEnoughReplicas = 19, "NOT_ENOUGH_REPLICAS", true;
    NotEnoughReplicasAfterAppend = 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", true;
    InvalidRequiredAcks = 21, "INVALID_REQUIRED_ACKS", false;
    IllegalGeneration = 22, "ILLEGAL_GENERATION", false;
    InconsistentGroupProtocol = 23, "INCONSISTENT_GROUP_PROTOCOL", false;
    InvalidGroupId = 24, "INVALID_GROUP_ID", false;
    UnknownMemberId = 25, "UNKNOWN_MEMBER_ID", false;
    InvalidSessionTimeout = 26, "INVALID_SESSION_TIMEOUT", false;
    RebalanceInProgress = 27, "REBALANCE_IN_PROGRESS", false;
    InvalidCommitOffsetSize = 28, "INVALID_COMMIT_OFFSET_SIZE", false;
    InvalidTimestamp = 32, "INVALID_TIMESTAMP", false;
    UnsupportedVersion = 35, "UNSUPPORTED_VERSION", false;
    TopicAlreadyExists = 36, "TOPIC_ALREADY_EXISTS", false;
    InvalidPartitions = 37, "INVALID_PARTITIONS", false;
    InvalidReplicationFactor = 38, "INVALID_REPLICATION_FACTOR", false;
    InvalidReplicaAssignment = 39, "INVALID_REPLICA_ASSIGNMENT", false;
    InvalidConfig = 40, "INVALID_CONFIG", false;
    InvalidRequest = 42, "INVALID_REQUEST", false;
    PolicyViolation = 44, "POLICY_VIOLATION", false;
    OutOfOrderSequenceNumber = 45, "OUT_OF_ORDER_SEQUENCE_NUMBER", false;
    DuplicateSequenceNumber = 46, "DUPLICATE_SEQUENCE_NUMBER", false;
    InvalidProducerEpoch = 47, "INVALID_PRODUCER_EPOCH", false;
    KafkaStorageError = 56, "KAFKA_STORAGE_ERROR", true;
    UnknownProducerId = 59, "UNKNOWN_PRODUCER_ID", false;
    NonEmptyGroup = 68, "NON_EMPTY_GROUP", false;
    GroupIdNotFound = 69, "GROUP_ID_NOT_FOUND", false;
    FencedLeaderEpoch = 74, "FENCED_LEADER_EPOCH", true;
    UnknownLeaderEpoch = 75, "UNKNOWN_LEADER_EPOCH", true;
    UnsupportedCompressionType = 76, "UNSUPPORTED_COMPRESSION_TYPE", false;
    StaleBrokerEpoch = 77, "STALE_BROKER_EPOCH", false;
    OffsetNotAvailable = 78, "OFFSET_NOT_AVAILABLE", true;
    MemberIdRequired = 79, "MEMBER_ID_REQUIRED", false;
    GroupMaxSizeReached = 81, "GROUP_MAX_SIZE_REACHED", false;
    FencedInstanceId = 82, "FENCED_INSTANCE_ID", false;
    GroupSubscribedToTopic = 86, "GROUP_SUBSCRIBED_TO_TOPIC", false;
    InvalidRecord = 87, "INVALID_RECORD", false;
    InvalidUpdateVersion = 95, "INVALID_UPDATE_VERSION", false;
    UnknownTopicId = 100, "UNKNOWN_TOPIC_ID", true;
    BrokerIdNotRegistered = 102, "BROKER_ID_NOT_REGISTERED", false;
    IneligibleReplica = 107, "INELIGIBLE_REPLICA", false;
    NewLeaderElected = 108, "NEW_LEADER_ELECTED", false;
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Errors;

    #[test]
    fn codes_round_trip_in_order() {
        for pair in Errors::ALL.windows(2) {
            assert!(
                pair[0].code() < pair[1].code(),
                "{pair:?} out of code order"
            );
            assert!(pair[0] < pair[1]);
        }
        for &e in Errors::ALL {
            assert_eq!(Errors::from_code(e.code()), Some(e));
        }
        assert_eq!(Errors::from_code(4), None);
    }

    #[test]
    fn names_are_kafkas() {
        for &e in Errors::ALL {
            let camel: String = e
                .name()
                .split('_')
                .map(|w| w[..1].to_owned() + &w[1..].to_ascii_lowercase())
                .collect();
            assert_eq!(camel, format!("{e:?}"));
        }
        assert_eq!(
            Errors::NotLeaderOrFollower.to_string(),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(Errors::InvalidUpdateVersion.code(), 95);
        assert_eq!(Errors::NewLeaderElected.code(), 108);
    }
}
