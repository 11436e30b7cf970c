//! A small Kafka client connection for the command-line tools and tests: it negotiates versions
//! with ApiVersions, then sends any request at the highest version both sides know. It speaks
//! only the public protocol, so the tools work against any Kafka broker.

use std::collections::HashMap;

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use surety_core::errors::Errors;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::wire::frame::{finish_frame, read_frame, start_frame};

/// The largest response the tools accept.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    correlation_id: i32,
    version: i16,
}

/// One connection to one broker.
pub struct Connection {
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects and learns the broker's API versions.
    pub async fn connect(address: &str, client_id: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id.to_string()),
            versions: HashMap::new(),
        };
        let response: ApiVersionsResponse = conn
            .send_at(
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("surety"))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    ))),
                3,
            )
            .await?;
        if response.error_code != Errors::None.code() {
            bail!("ApiVersions failed with error {}", response.error_code);
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The highest version of `R` both this client and the broker support.
    pub fn version_of<R: Request + Message>(&self) -> anyhow::Result<i16> {
        let (min, max) = *self
            .versions
            .get(&R::KEY)
            .ok_or_else(|| anyhow!("the broker does not serve API key {}", R::KEY))?;
        let version = max.min(R::VERSIONS.max);
        if version < min.max(R::VERSIONS.min) {
            bail!(
                "no version of API key {} is supported by both sides",
                R::KEY
            );
        }
        Ok(version)
    }

    /// Sends `request` at the best common version and waits for its response.
    pub async fn send<R>(&mut self, request: R) -> anyhow::Result<R::Response>
    where
        R: Request + Message + Encodable + HeaderVersion,
        R::Response: Decodable + HeaderVersion,
    {
        let version = self.version_of::<R>()?;
        self.send_at(request, version).await
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send_at<R>(&mut self, request: R, version: i16) -> anyhow::Result<R::Response>
    where
        R: Request + Encodable + HeaderVersion,
        R::Response: Decodable + HeaderVersion,
    {
        self.write(&request, version).await?;
        self.read::<R>(version).await
    }

    /// Sends `request` without waiting for its response, which [`Connection::receive`] reads
    /// later: responses come back in the order their requests were sent.
    pub async fn send_pipelined<R>(&mut self, request: R) -> anyhow::Result<InFlight>
    where
        R: Request + Message + Encodable + HeaderVersion,
    {
        let version = self.version_of::<R>()?;
        self.write(&request, version).await?;
        Ok(InFlight {
            correlation_id: self.correlation_id,
            version,
        })
    }

    /// Reads the response to a request sent with [`Connection::send_pipelined`]; it must be the
    /// oldest one not yet read.
    pub async fn receive<R>(&mut self, sent: InFlight) -> anyhow::Result<R::Response>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        self.read_answer::<R>(sent.version, sent.correlation_id)
            .await
    }

    /// Sends a request whose response is not awaited (Produce with acks=0).
    pub async fn send_without_response<R>(&mut self, request: R) -> anyhow::Result<()>
    where
        R: Request + Message + Encodable + HeaderVersion,
    {
        let version = self.version_of::<R>()?;
        self.write(&request, version).await
    }

    async fn write<R: Request + Encodable + HeaderVersion>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<()> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut out = BytesMut::new();
        let at = start_frame(&mut out);
        header.encode(&mut out, R::header_version(version))?;
        request.encode(&mut out, version)?;
        finish_frame(&mut out, at);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn read<R: Request>(&mut self, version: i16) -> anyhow::Result<R::Response>
    where
        R::Response: Decodable + HeaderVersion,
    {
        self.read_answer::<R>(version, self.correlation_id).await
    }

    async fn read_answer<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> anyhow::Result<R::Response>
    where
        R::Response: Decodable + HeaderVersion,
    {
        let mut frame: Bytes = read_frame(&mut self.stream, MAX_RESPONSE)
            .await?
            .ok_or_else(|| anyhow!("the broker closed the connection"))?;
        let key = ApiKey::try_from(R::KEY).map_err(|()| anyhow!("unknown API key {}", R::KEY))?;
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
        if header.correlation_id != correlation_id {
            bail!(
                "response to correlation id {} arrived for {correlation_id}",
                header.correlation_id,
            );
        }
        R::Response::decode(&mut frame, version)
    }
}
