//! The network layer, in the shape of Kafka's: an acceptor that applies the connection quotas,
//! and a task per connection that reads requests, has the broker answer them, and writes the
//! answers in the order the requests came. Kafka mutes a connection until its request is
//! answered; here a produce request is appended as soon as it is read and the next request is
//! read while it waits for its followers (at most [`MAX_APPENDED_UNANSWERED`] of them), so a
//! client's pipelined produce requests are still appended in the order sent. Any other request
//! waits for every earlier answer and is answered before anything more is read, so a client
//! that never reads its socket holds a few small produce answers or one response, never one
//! per request it sent.
//!
//! Memory is bounded by bytes, not by counts a client chooses: a request's body is read as its
//! bytes arrive and every buffered byte is charged to the broker-wide request pool
//! (`queued.max.request.bytes`, [`memory_pool`]); a response is one frame per connection, and a
//! fetch response refers to the stored batches instead of copying them. A connection with no
//! bytes moving for `connections.max.idle.ms` is closed.

pub mod memory_pool;
pub mod quotas;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::{Broker, Outcome, unsupported};
use crate::config::BrokerConfig;
use crate::controller::ControllerServer;
use crate::wire::codec::{DecodeError, Decoded, Request, decode_request, encode_response};
use crate::wire::frame::{Frame, FrameError, ReadLimits, read_request};
use crate::wire::response::ResponseFrame;
use crate::wire::versions::{CONTROLLER_APIS, SERVED_APIS, ServedApi};
use memory_pool::MemoryPool;
use quotas::{ConnectionQuotas, ConnectionSlot};

/// What a listener answers: a broker's (clients and followers) or a controller's (brokers).
/// Both go through the same connection handling, as Kafka's socket server serves both.
#[derive(Clone)]
pub enum Service {
    /// A broker's listener.
    Broker(Arc<Broker>),
    /// A controller's listener (`controller.listener.names`).
    Controller(Arc<ControllerServer>),
}

impl Service {
    fn config(&self) -> &BrokerConfig {
        match self {
            Service::Broker(b) => b.config(),
            Service::Controller(c) => c.config(),
        }
    }

    fn apis(&self) -> &'static [ServedApi] {
        match self {
            Service::Broker(_) => SERVED_APIS,
            Service::Controller(_) => CONTROLLER_APIS,
        }
    }

    async fn handle(&self, request: Request, peer: SocketAddr) -> Outcome {
        match self {
            Service::Broker(b) => b.handle(request, peer).await,
            Service::Controller(c) => c.handle(request).await,
        }
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let config = service.config();
    let quotas = ConnectionQuotas::new(config.connection_limits.clone());
    let pool = MemoryPool::new(config.queued_max_request_bytes);
    loop {
        let accepted = tokio::select! {
            accepted = async {
                quotas.wait_to_accept().await;
                listener.accept().await
            } => accepted,
            _ = shutdown.changed() => return Ok(()),
        };
        match accepted {
            Ok((stream, peer)) => match quotas.admit(peer.ip()) {
                Ok(slot) => {
                    let connection = Connection {
                        peer,
                        service: service.clone(),
                        pool: pool.clone(),
                        _slot: slot,
                    };
                    let shutdown = shutdown.clone();
                    tokio::spawn(connection.run(stream, shutdown));
                }
                // Dropping the socket closes it, as Kafka's acceptor does.
                Err(too_many) => tracing::info!("{too_many}"),
            },
            // Out of file descriptors and the like: log, pause, keep serving.
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection.
struct Connection {
    peer: SocketAddr,
    service: Service,
    pool: MemoryPool,
    /// Holds the connection's place in the quotas until it closes.
    _slot: ConnectionSlot,
}

/// What answering one request produced.
enum Answer {
    Respond(ResponseFrame),
    Nothing,
    Close,
}

/// An answer still being worked out; it may borrow the connection.
type Answering<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// A read of the next request in progress. It owns the socket's read half and hands it back
/// with the frame, so it can stay pending while earlier answers are written (a read dropped
/// half-way would lose the bytes it took).
type Reading =
    Pin<Box<dyn Future<Output = (OwnedReadHalf, Result<Option<Frame>, FrameError>)> + Send>>;

/// How a request joins the connection's queue of answers.
enum Begun<'a> {
    /// A produce request already appended: the next request may be read while it waits.
    Appended(Answering<'a>),
    /// Anything else: answered after every earlier answer, with nothing read meanwhile.
    InOrder(Answering<'a>),
}

/// Produce requests a connection appends before the oldest is answered. Kafka mutes a
/// connection until its request is answered, so with `acks=all` a producer's next batch waits a
/// whole replication round trip before it is even appended; reading on lets one connection keep
/// a client's `max.in.flight.requests.per.connection` (5 by default) batches moving, appended in
/// the order sent and answered in that order. Each holds only its small answer: the request's
/// bytes went back to the pool when it was appended.
const MAX_APPENDED_UNANSWERED: usize = 5;

impl Connection {
    async fn run(self, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let idle = Duration::from_millis(self.service.config().connections_max_idle_ms);
        let (reader, mut writer) = stream.into_split();
        let mut reader = Some(reader);
        let mut reading: Option<Reading> = None;
        let mut waiting: VecDeque<Answering<'_>> = VecDeque::new();
        let mut active_since = Instant::now();
        loop {
            if waiting.len() < MAX_APPENDED_UNANSWERED {
                if let Some(reader) = reader.take() {
                    reading = Some(self.read(reader, active_since));
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                answer = async { waiting.front_mut().expect("not empty").await },
                    if !waiting.is_empty() =>
                {
                    waiting.pop_front();
                    if !self.send(answer, &mut writer, idle).await {
                        break;
                    }
                    active_since = Instant::now();
                }
                (read_half, frame) = async { reading.as_mut().expect("reading").await },
                    if reading.is_some() =>
                {
                    reading = None;
                    reader = Some(read_half);
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        // The peer finished sending: what it asked for is still answered.
                        Ok(None) => {
                            self.send_all(&mut waiting, &mut writer, idle).await;
                            break;
                        }
                        Err(e) => {
                            self.log_read_error(e);
                            break;
                        }
                    };
                    active_since = Instant::now();
                    match self.begin(frame) {
                        Begun::Appended(answering) => waiting.push_back(answering),
                        Begun::InOrder(answering) => {
                            if !self.send_all(&mut waiting, &mut writer, idle).await
                                || !self.send(answering.await, &mut writer, idle).await
                            {
                                break;
                            }
                            active_since = Instant::now();
                        }
                    }
                }
            }
        }
    }

    /// Starts reading the next request; the idle clock runs from `active_since`.
    fn read(&self, mut reader: OwnedReadHalf, active_since: Instant) -> Reading {
        let pool = self.pool.clone();
        let config = self.service.config();
        let max_size = config.socket_request_max_bytes;
        let idle = Duration::from_millis(config.connections_max_idle_ms);
        Box::pin(async move {
            let limits = ReadLimits {
                max_size,
                pool: &pool,
                idle,
                active_since,
            };
            let frame = read_request(&mut reader, limits).await;
            (reader, frame)
        })
    }

    fn log_read_error(&self, error: FrameError) {
        match error {
            FrameError::Idle(for_how_long) => self.log_idle(for_how_long),
            // A peer that goes away mid-request is routine (and, under attack, a log flood at
            // one line per connection): debug, as Kafka logs disconnections. A size over the
            // limit is a protocol violation worth an operator's eye.
            e @ (FrameError::Truncated | FrameError::Io(_)) => {
                tracing::debug!("{}: closing connection: {e}", self.peer);
            }
            e => tracing::info!("{}: closing connection: {e}", self.peer),
        }
    }

    /// Writes `answer`; false if the connection is to close.
    async fn send(&self, answer: Answer, writer: &mut OwnedWriteHalf, idle: Duration) -> bool {
        match answer {
            Answer::Respond(response) => {
                let started = Instant::now();
                match response.write_to(writer, idle).await {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        self.log_idle(started.elapsed());
                        false
                    }
                    Err(e) => {
                        tracing::debug!("{}: write failed: {e}", self.peer);
                        false
                    }
                }
            }
            Answer::Nothing => true,
            Answer::Close => false,
        }
    }

    /// Waits for and writes every queued answer, oldest first; false if the connection is to
    /// close.
    async fn send_all(
        &self,
        waiting: &mut VecDeque<Answering<'_>>,
        writer: &mut OwnedWriteHalf,
        idle: Duration,
    ) -> bool {
        while let Some(answering) = waiting.pop_front() {
            if !self.send(answering.await, writer, idle).await {
                return false;
            }
        }
        true
    }

    /// Kafka's words for the same event.
    fn log_idle(&self, for_how_long: Duration) {
        tracing::info!(
            "About to close the idle connection from {} due to being idle for {} millis",
            self.peer,
            for_how_long.as_millis()
        );
    }

    /// Decodes a request and starts answering it. A produce request is appended here, before
    /// anything after it is read.
    fn begin(&self, frame: Frame) -> Begun<'_> {
        let Frame { body, memory } = frame;
        let decoded = decode_request(body, self.service.apis());
        let request = match (decoded, &self.service) {
            (Ok(Decoded::Request(request)), Service::Broker(broker)) => {
                let (api_key, version) = (request.api_key, request.version);
                let correlation_id = request.header.correlation_id;
                match broker.append_produce(request) {
                    Ok(appended) => {
                        // Appended: its bytes are in the log, as Kafka releases a request's
                        // buffer once its handler returns.
                        drop(memory);
                        if appended.closes() {
                            return Begun::InOrder(Box::pin(std::future::ready(Answer::Close)));
                        }
                        return Begun::Appended(Box::pin(async move {
                            let outcome = appended.answer(broker).await;
                            self.encode(api_key, version, correlation_id, outcome)
                        }));
                    }
                    Err(request) => Ok(Decoded::Request(request)),
                }
            }
            (decoded, _) => decoded,
        };
        Begun::InOrder(Box::pin(async move {
            let answer = self.answer(request).await;
            // The request's bytes stay charged to the pool until it has been handled.
            drop(memory);
            answer
        }))
    }

    async fn answer(&self, decoded: Result<Decoded, DecodeError>) -> Answer {
        let peer = self.peer;
        match decoded {
            Ok(Decoded::Immediate(reply)) => Answer::Respond(reply.into()),
            Ok(Decoded::Unsupported(request)) => {
                let (api_key, version) = (request.api_key, request.version);
                let Some(body) = unsupported::response(&request.body, version) else {
                    tracing::info!(
                        "{peer}: closing connection: {api_key:?} v{version} is not served"
                    );
                    return Answer::Close;
                };
                self.encode(
                    api_key,
                    version,
                    request.header.correlation_id,
                    Outcome::Respond(Box::new(body)),
                )
            }
            Ok(Decoded::Request(request)) => {
                let (api_key, version) = (request.api_key, request.version);
                let correlation_id = request.header.correlation_id;
                let outcome = self.service.handle(*request, peer).await;
                self.encode(api_key, version, correlation_id, outcome)
            }
            Err(e) => {
                tracing::info!("{peer}: closing connection: {e}");
                Answer::Close
            }
        }
    }

    fn encode(
        &self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        outcome: Outcome,
    ) -> Answer {
        match outcome {
            Outcome::NoResponse => Answer::Nothing,
            Outcome::Close => Answer::Close,
            Outcome::Respond(body) => {
                match encode_response(api_key, version, correlation_id, &body) {
                    Ok(frame) => Answer::Respond(frame),
                    Err(e) => {
                        tracing::error!(
                            "{}: cannot encode the {api_key:?} v{version} response: {e:#}",
                            self.peer
                        );
                        Answer::Close
                    }
                }
            }
        }
    }
}
