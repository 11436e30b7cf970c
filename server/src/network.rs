//! The network layer, in the shape of Kafka's: an acceptor, a task per connection that reads
//! requests and hands them to the broker one at a time in arrival order (as Kafka's processor
//! mutes a connection while its request is being handled, so a client's pipelined produce
//! requests are appended in the order sent), and a writer task per connection that sends the
//! responses in that same order. Between the two sits a bounded queue
//! (`queued.max.requests`): when a client reads responses slower than it sends requests, the
//! connection stops reading instead of buffering without limit.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::broker::{Broker, Outcome, unsupported};
use crate::wire::codec::{Decoded, decode_request, encode_response};
use crate::wire::frame::read_frame;

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        connection(stream, peer, broker, shutdown).await;
                    });
                }
                // Out of file descriptors and the like: log, pause, keep serving.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (responses, mut queue) = mpsc::channel::<BytesMut>(broker.config().queued_max_requests);
    let writing = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            if let Err(e) = writer.write_all(&frame).await {
                tracing::debug!("{peer}: write failed: {e}");
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let max = broker.config().socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, max) => frame,
            _ = shutdown.changed() => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::info!("{peer}: closing connection: {e}");
                break;
            }
        };
        let response = match decode_request(frame) {
            Ok(Decoded::Immediate(reply)) => Some(reply),
            Ok(Decoded::Unsupported(request)) => {
                let (api_key, version) = (request.api_key, request.version);
                let Some(body) = unsupported::response(&request.body, version) else {
                    tracing::info!(
                        "{peer}: closing connection: {api_key:?} v{version} is not served"
                    );
                    break;
                };
                match encode_response(api_key, version, request.header.correlation_id, &body) {
                    Ok(frame) => Some(frame),
                    Err(e) => {
                        tracing::error!(
                            "{peer}: cannot encode the {api_key:?} v{version} error: {e:#}"
                        );
                        break;
                    }
                }
            }
            Ok(Decoded::Request(request)) => {
                let (api_key, version) = (request.api_key, request.version);
                let correlation_id = request.header.correlation_id;
                match broker.handle(*request).await {
                    Outcome::NoResponse => None,
                    Outcome::Close => break,
                    Outcome::Respond(body) => {
                        match encode_response(api_key, version, correlation_id, &body) {
                            Ok(frame) => Some(frame),
                            Err(e) => {
                                tracing::error!(
                                    "{peer}: cannot encode the {api_key:?} v{version} response: {e:#}"
                                );
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::info!("{peer}: closing connection: {e}");
                break;
            }
        };
        if let Some(frame) = response
            && responses.send(frame).await.is_err()
        {
            break;
        }
    }
    drop(responses);
    let _ = writing.await;
}
