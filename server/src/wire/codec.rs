//! Request decoding and response encoding over the `kafka-protocol` crate.
//!
//! The crate decodes and encodes message bodies; this module adds what a broker must do around
//! them: read the API key and version before trusting anything else, refuse versions the broker
//! does not serve, answer an ApiVersions request at an unknown version in the v0 format (KIP-511)
//! so the client can retry lower, and pick each response's header version (ApiVersions' is always
//! v0, whatever the request's version, because clients parse it before they know ours).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};
use surety_core::errors::Errors;

use super::frame::{finish_frame, start_frame};
use super::response::{ResponseFrame, RunWriter};
use super::versions::{ServedApi, is_served_in, served_in};

/// A decoded request, ready for a handler.
#[derive(Debug)]
pub struct Request {
    /// The API.
    pub api_key: ApiKey,
    /// The API version the client chose.
    pub version: i16,
    /// The header, with the correlation id and client id.
    pub header: RequestHeader,
    /// The body.
    pub body: RequestKind,
}

/// What decoding a frame produced.
#[derive(Debug)]
pub enum Decoded {
    /// A request to handle.
    Request(Box<Request>),
    /// An answer that needs no handler (an ApiVersions request at an unknown version).
    Immediate(BytesMut),
    /// A request for a served API at a version the broker does not serve but can parse (newer
    /// than advertised): it is answered with `UNSUPPORTED_VERSION` where the response has room
    /// for an error, else the connection is closed.
    Unsupported(Box<Request>),
}

/// A frame the broker cannot answer. Kafka closes the connection for each of these; the error
/// says why, for the log.
#[derive(Debug)]
pub enum DecodeError {
    /// Too short to hold the API key, version and correlation id.
    Truncated(usize),
    /// An API key Kafka does not define.
    UnknownApiKey(i16),
    /// An API this broker does not serve, or a version of it outside the served range.
    UnsupportedVersion {
        /// The API key.
        api_key: i16,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not parse at the version given.
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated(len) => write!(f, "request of {len} bytes has no full header"),
            DecodeError::UnknownApiKey(key) => write!(f, "unknown API key {key}"),
            DecodeError::UnsupportedVersion { api_key, version } => {
                write!(f, "API key {api_key} version {version} is not supported")
            }
            DecodeError::Malformed {
                api_key,
                version,
                reason,
            } => write!(f, "malformed {api_key:?} v{version} request: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one frame (without its size prefix) for a listener serving `apis`.
pub fn decode_request(
    mut frame: Bytes,
    apis: &'static [ServedApi],
) -> Result<Decoded, DecodeError> {
    let is_served = |key, version| is_served_in(apis, key, version);
    let served = |key| served_in(apis, key);
    if frame.len() < 8 {
        return Err(DecodeError::Truncated(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey(raw_key))?;
    if api_key == ApiKey::ApiVersions && !is_served(api_key, version) {
        return Ok(Decoded::Immediate(unsupported_api_versions(
            apis,
            correlation_id,
        )));
    }
    let parseable = served(api_key).is_some() && {
        let valid = api_key.valid_versions();
        (valid.min..=valid.max).contains(&version)
    };
    if !is_served(api_key, version) && !parseable {
        return Err(DecodeError::UnsupportedVersion {
            api_key: raw_key,
            version,
        });
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed {
        api_key,
        version,
        reason: format!("{e:#}"),
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let body = decode_body(api_key, &mut frame, version).map_err(malformed)?;
    let request = Box::new(Request {
        api_key,
        version,
        header,
        body,
    });
    if is_served(api_key, version) {
        Ok(Decoded::Request(request))
    } else {
        Ok(Decoded::Unsupported(request))
    }
}

/// Decodes a body, turning a panic inside the decoder into an error: a client's bytes must never
/// take a connection task down with them.
fn decode_body(api_key: ApiKey, frame: &mut Bytes, version: i16) -> anyhow::Result<RequestKind> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        RequestKind::decode(api_key, frame, version)
    }))
    .unwrap_or_else(|_| Err(anyhow::anyhow!("the decoder panicked")))
    .inspect(|_| {
        if frame.has_remaining() {
            // Kafka ignores trailing bytes too; nothing to do but note it.
            tracing::debug!(
                "{api_key:?} v{version}: {} trailing bytes ignored",
                frame.remaining()
            );
        }
    })
}

/// The KIP-511 answer to an ApiVersions request at a version the broker does not know: a v0
/// body with `UNSUPPORTED_VERSION` and ApiVersions' own range, under a v0 header.
fn unsupported_api_versions(apis: &'static [ServedApi], correlation_id: i32) -> BytesMut {
    let range = served_in(apis, ApiKey::ApiVersions).expect("ApiVersions is served");
    let body = ApiVersionsResponse::default()
        .with_error_code(Errors::UnsupportedVersion.code())
        .with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ApiVersions as i16)
                .with_min_version(range.advertised_min)
                .with_max_version(range.max),
        ]);
    encode_frame(correlation_id, 0, &body, 0).expect("a v0 ApiVersions response encodes")
}

/// The ApiVersions body listing every API in `apis`.
pub fn api_versions_body(apis: &'static [ServedApi]) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        apis.iter()
            .map(|a| {
                ApiVersion::default()
                    .with_api_key(a.key as i16)
                    .with_min_version(a.advertised_min)
                    .with_max_version(a.max)
            })
            .collect(),
    )
}

/// Encodes a response to `request` as a whole frame, size prefix included. A fetch response's
/// record bytes are not copied: the frame refers to them where the log left them.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<ResponseFrame> {
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let ResponseKind::Fetch(fetch) = body {
        let shared: Vec<Bytes> = fetch
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|p| p.records.clone())
            .collect();
        let size = header.compute_size(header_version)? + fetch.compute_size(version)?;
        let mut out = RunWriter::new(&shared);
        out.put_i32(i32::try_from(size)?);
        header.encode(&mut out, header_version)?;
        fetch.encode(&mut out, version)?;
        anyhow::ensure!(
            out.offset() == size + 4,
            "the fetch response encoded to {} bytes, not the {size} computed",
            out.offset() - 4
        );
        return Ok(out.finish());
    }
    let mut out = BytesMut::with_capacity(64);
    let at = start_frame(&mut out);
    header.encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    finish_frame(&mut out, at);
    Ok(out.into())
}

fn encode_frame<T: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
) -> anyhow::Result<BytesMut> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = BytesMut::new();
    let at = start_frame(&mut out);
    header.encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    finish_frame(&mut out, at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::versions::SERVED_APIS;
    use bytes::BufMut;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame_of<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut out = BytesMut::new();
        header
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn a_metadata_request_decodes_with_its_header() {
        let frame = frame_of(ApiKey::Metadata, 4, 7, &MetadataRequest::default());
        let Decoded::Request(r) = decode_request(frame, SERVED_APIS).unwrap() else {
            panic!("expected a request")
        };
        assert_eq!(
            (r.api_key, r.version, r.header.correlation_id),
            (ApiKey::Metadata, 4, 7)
        );
        assert!(matches!(r.body, RequestKind::Metadata(_)));
    }

    #[test]
    fn a_newer_version_than_served_is_parsed_for_an_error_answer() {
        let frame = frame_of(ApiKey::Metadata, 13, 7, &MetadataRequest::default());
        assert!(matches!(
            decode_request(frame, SERVED_APIS),
            Ok(Decoded::Unsupported(_))
        ));
    }

    #[test]
    fn an_api_versions_request_at_an_unknown_version_gets_the_v0_error_reply() {
        let mut frame = BytesMut::new();
        frame.put_i16(18);
        frame.put_i16(99);
        frame.put_i32(5);
        frame.put_slice(b"\x00\x04test\x00garbage");
        let Decoded::Immediate(reply) = decode_request(frame.freeze(), SERVED_APIS).unwrap() else {
            panic!("expected an immediate reply")
        };
        // size, correlation id, error 35, one api key: ApiVersions 0..=3.
        assert_eq!(
            reply.as_ref(),
            &[
                0, 0, 0, 16, 0, 0, 0, 5, 0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, 3
            ]
        );
    }

    #[test]
    fn unserved_and_unknown_apis_and_short_or_garbled_frames_are_errors() {
        let frame = frame_of(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
        assert!(matches!(
            decode_request(frame.clone(), SERVED_APIS),
            Ok(Decoded::Request(_))
        ));
        for cut in 0..frame.len() {
            // Every truncation is an error or (where the fields happen to end) a request.
            let _ = decode_request(frame.slice(..cut), SERVED_APIS);
        }
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 0, 0]), SERVED_APIS),
            Err(DecodeError::Truncated(3))
        ));
        assert!(matches!(
            decode_request(
                Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1]),
                SERVED_APIS
            ),
            Err(DecodeError::UnknownApiKey(0x7f00))
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 1]), SERVED_APIS),
            Err(DecodeError::UnsupportedVersion {
                api_key: 0,
                version: 2
            })
        ));
        assert!(matches!(
            decode_request(
                Bytes::from_static(&[0, 3, 0, 4, 0, 0, 0, 1, 0xff]),
                SERVED_APIS
            ),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn a_fetch_response_refers_to_its_records_and_encodes_as_a_copy_would() {
        use kafka_protocol::messages::FetchResponse;
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        let big = Bytes::from(vec![9u8; 100_000]);
        let small = Bytes::from_static(b"a few stored bytes");
        let partitions = [Some(big.clone()), Some(small), None]
            .into_iter()
            .enumerate()
            .map(|(i, records)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(42)
                    .with_records(records)
            })
            .collect();
        let body = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(partitions),
        ]));
        for version in [4, 11, 12, 16] {
            let frame = encode_response(ApiKey::Fetch, version, 5, &body).unwrap();
            let header = ResponseHeader::default().with_correlation_id(5);
            let mut copy = BytesMut::new();
            let at = start_frame(&mut copy);
            header
                .encode(&mut copy, ApiKey::Fetch.response_header_version(version))
                .unwrap();
            body.encode(&mut copy, version).unwrap();
            finish_frame(&mut copy, at);
            assert_eq!(frame.to_bytes(), copy.freeze(), "v{version}");
            assert_eq!(
                frame.runs().len(),
                3,
                "v{version}: before, the records, after"
            );
            assert_eq!(
                frame.runs()[1].as_ptr(),
                big.as_ptr(),
                "v{version}: not copied"
            );
        }
    }

    /// Core carries its own copy of Kafka's error table (it has no `kafka-protocol`
    /// dependency); this keeps the copy honest: code, name and retriable flag of every entry.
    #[test]
    fn cores_error_table_agrees_with_kafka_protocol() {
        use kafka_protocol::error::ResponseError;
        assert_eq!(Errors::None.code(), 0);
        assert_eq!(ResponseError::try_from_code(0), None);
        for &error in Errors::ALL.iter().filter(|&&e| e != Errors::None) {
            let theirs = ResponseError::try_from_code(error.code())
                .unwrap_or_else(|| panic!("{error:?}: no error for code {}", error.code()));
            assert!(
                !matches!(theirs, ResponseError::Unknown(_)),
                "{error:?}: kafka-protocol knows no error {}",
                error.code()
            );
            assert_eq!(theirs.code(), error.code(), "{error:?}");
            let camel: String = error
                .name()
                .split('_')
                .map(|w| w[..1].to_owned() + &w[1..].to_ascii_lowercase())
                .collect();
            assert_eq!(
                camel,
                format!("{theirs:?}"),
                "{} ({})",
                error.name(),
                error.code()
            );
            assert_eq!(format!("{error:?}"), format!("{theirs:?}"));
            assert_eq!(error.is_retriable(), theirs.is_retriable(), "{error:?}");
        }
    }

    /// Core reads and writes the consumer protocol's bytes itself (it has no `kafka-protocol`
    /// dependency); this keeps it byte-compatible with Kafka's schemas in both directions.
    #[test]
    fn cores_consumer_protocol_agrees_with_kafka_protocol() {
        use bytes::{Buf, BufMut};
        use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Assigned;
        use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as Owned;
        use kafka_protocol::messages::{
            ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
        };
        use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
        use surety_core::group::TopicPartition;
        use surety_core::group::consumer_protocol::{Assignment, Subscription};

        let name = |t: &str| TopicName(StrBytes::from_string(t.to_string()));
        let tp = |t: &str, p| TopicPartition {
            topic: std::sync::Arc::from(t),
            partition: p,
        };
        for version in 0..=3 {
            let theirs = ConsumerProtocolSubscription::default()
                .with_topics(vec![
                    StrBytes::from_static_str("a"),
                    StrBytes::from_static_str("b"),
                ])
                .with_user_data(Some(Bytes::from_static(b"u")))
                .with_owned_partitions(vec![
                    Owned::default()
                        .with_topic(name("a"))
                        .with_partitions(vec![2]),
                ])
                .with_generation_id(5);
            // As Kafka's `ConsumerProtocol` frames it: the version, then the struct.
            let mut bytes = BytesMut::new();
            bytes.put_i16(version);
            theirs.encode(&mut bytes, version).unwrap();
            let ours = Subscription::decode(&bytes).unwrap();
            assert_eq!(ours.topics.len(), 2, "v{version}");
            assert_eq!(ours.user_data.as_deref(), Some(&b"u"[..]), "v{version}");
            let owned = if version >= 1 {
                vec![tp("a", 2)]
            } else {
                vec![]
            };
            assert_eq!(ours.owned_partitions, owned, "v{version}");
            let generation = if version >= 2 { 5 } else { -1 };
            assert_eq!(ours.generation_id, generation, "v{version}");

            let theirs = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                Assigned::default()
                    .with_topic(name("a"))
                    .with_partitions(vec![0, 1]),
                Assigned::default()
                    .with_topic(name("b"))
                    .with_partitions(vec![4]),
            ]);
            let mut bytes = BytesMut::new();
            bytes.put_i16(version);
            theirs.encode(&mut bytes, version).unwrap();
            let ours = Assignment::decode(&bytes).unwrap();
            assert_eq!(
                ours.partitions,
                vec![tp("a", 0), tp("a", 1), tp("b", 4)],
                "v{version}"
            );
        }
        let ours = Assignment {
            partitions: vec![tp("a", 0), tp("b", 1), tp("a", 3)],
            user_data: None,
        };
        let mut bytes = ours.encode();
        assert_eq!(bytes.get_i16(), 0);
        let theirs = ConsumerProtocolAssignment::decode(&mut bytes, 0).unwrap();
        let as_pairs: Vec<(String, Vec<i32>)> = theirs
            .assigned_partitions
            .iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect();
        assert_eq!(
            as_pairs,
            [("a".to_string(), vec![0, 3]), ("b".to_string(), vec![1])]
        );
        let ours = Subscription {
            topics: vec![std::sync::Arc::from("a")],
            ..Subscription::default()
        };
        let mut bytes = ours.encode();
        assert_eq!(bytes.get_i16(), 0);
        let theirs = ConsumerProtocolSubscription::decode(&mut bytes, 0).unwrap();
        assert_eq!(theirs.topics.len(), 1);
        let ours = Subscription {
            topics: vec![std::sync::Arc::from("a")],
            user_data: None,
            owned_partitions: vec![tp("a", 1), tp("a", 4)],
            generation_id: 9,
        };
        let mut bytes = ours.encode_cooperative();
        assert_eq!(bytes.get_i16(), 2);
        let theirs = ConsumerProtocolSubscription::decode(&mut bytes, 2).unwrap();
        assert_eq!(theirs.owned_partitions.len(), 1);
        assert_eq!(theirs.owned_partitions[0].partitions, vec![1, 4]);
        assert_eq!(theirs.generation_id, 9);
    }
}
