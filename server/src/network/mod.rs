//! The network layer, in the shape of Kafka's: an acceptor that applies the connection quotas,
//! and a task per connection that reads a request, has the broker answer it, and writes the
//! answer before it reads the next one — Kafka mutes a channel the same way, so a client's
//! pipelined produce requests are appended in the order sent, and a client that never reads its
//! socket holds one response, not one per request it sent.
//!
//! Memory is bounded by bytes, not by counts a client chooses: a request's body is read as its
//! bytes arrive and every buffered byte is charged to the broker-wide request pool
//! (`queued.max.request.bytes`, [`memory_pool`]); a response is one frame per connection, and a
//! fetch response refers to the stored batches instead of copying them. A connection with no
//! bytes moving for `connections.max.idle.ms` is closed.

pub mod memory_pool;
pub mod quotas;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::{Broker, Outcome, unsupported};
use crate::config::BrokerConfig;
use crate::controller::ControllerServer;
use crate::wire::codec::{Decoded, Request, decode_request, encode_response};
use crate::wire::frame::{FrameError, ReadLimits, read_request};
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

impl Connection {
    async fn run(self, mut stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let config = self.service.config();
        let idle = Duration::from_millis(config.connections_max_idle_ms);
        let mut active_since = Instant::now();
        loop {
            let limits = ReadLimits {
                max_size: config.socket_request_max_bytes,
                pool: &self.pool,
                idle,
                active_since,
            };
            let frame = tokio::select! {
                frame = read_request(&mut stream, limits) => frame,
                _ = shutdown.changed() => break,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(FrameError::Idle(for_how_long)) => {
                    self.log_idle(for_how_long);
                    break;
                }
                // A peer that goes away mid-request is routine (and, under attack, a log flood
                // at one line per connection): debug, as Kafka logs disconnections. A size over
                // the limit is a protocol violation worth an operator's eye.
                Err(e @ (FrameError::Truncated | FrameError::Io(_))) => {
                    tracing::debug!("{}: closing connection: {e}", self.peer);
                    break;
                }
                Err(e) => {
                    tracing::info!("{}: closing connection: {e}", self.peer);
                    break;
                }
            };
            // The request's bytes stay charged to the pool until it has been handled.
            let answer = self.answer(frame.body).await;
            drop(frame.memory);
            match answer {
                Answer::Respond(response) => {
                    let started = Instant::now();
                    match response.write_to(&mut stream, idle).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.log_idle(started.elapsed());
                            break;
                        }
                        Err(e) => {
                            tracing::debug!("{}: write failed: {e}", self.peer);
                            break;
                        }
                    }
                }
                Answer::Nothing => {}
                Answer::Close => break,
            }
            active_since = Instant::now();
        }
    }

    /// Kafka's words for the same event.
    fn log_idle(&self, for_how_long: Duration) {
        tracing::info!(
            "About to close the idle connection from {} due to being idle for {} millis",
            self.peer,
            for_how_long.as_millis()
        );
    }

    async fn answer(&self, frame: bytes::Bytes) -> Answer {
        let peer = self.peer;
        match decode_request(frame, self.service.apis()) {
            Ok(Decoded::Immediate(reply)) => Answer::Respond(reply.into()),
            Ok(Decoded::Unsupported(request)) => {
                let (api_key, version) = (request.api_key, request.version);
                let Some(body) = unsupported::response(&request.body, version) else {
                    tracing::info!(
                        "{peer}: closing connection: {api_key:?} v{version} is not served"
                    );
                    return Answer::Close;
                };
                match encode_response(api_key, version, request.header.correlation_id, &body) {
                    Ok(frame) => Answer::Respond(frame),
                    Err(e) => {
                        tracing::error!(
                            "{peer}: cannot encode the {api_key:?} v{version} error: {e:#}"
                        );
                        Answer::Close
                    }
                }
            }
            Ok(Decoded::Request(request)) => {
                let (api_key, version) = (request.api_key, request.version);
                let correlation_id = request.header.correlation_id;
                match self.service.handle(*request, peer).await {
                    Outcome::NoResponse => Answer::Nothing,
                    Outcome::Close => Answer::Close,
                    Outcome::Respond(body) => {
                        match encode_response(api_key, version, correlation_id, &body) {
                            Ok(frame) => Answer::Respond(frame),
                            Err(e) => {
                                tracing::error!(
                                    "{peer}: cannot encode the {api_key:?} v{version} response: {e:#}"
                                );
                                Answer::Close
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::info!("{peer}: closing connection: {e}");
                Answer::Close
            }
        }
    }
}
