//! Kafka's framing: every request and response is a 4-byte big-endian size, then that many
//! bytes. The size is checked against `socket.request.max.bytes`, and the body is then read as
//! its bytes arrive: memory follows what the peer has sent, never what it claims, so a peer
//! that announces a huge frame and goes quiet costs nothing. On the broker every buffered byte
//! is first taken from the request memory pool ([`MemoryPool`]).

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::network::memory_pool::{MemoryPool, Reservation};

/// The first buffer a body gets: a small frame arrives in one read and is allocated once at its
/// exact size; a large one grows by doubling from here, as its bytes come in.
const FIRST_CHUNK: usize = 64 * 1024;

/// Why a connection's next frame could not be read. Each closes the connection, as Kafka does.
#[derive(Debug)]
pub enum FrameError {
    /// The size prefix exceeds `socket.request.max.bytes` (or is negative).
    TooLarge {
        /// The size the peer announced.
        size: i32,
        /// The limit.
        max: usize,
    },
    /// The peer closed the connection part-way through a frame.
    Truncated,
    /// No byte arrived for `connections.max.idle.ms`.
    Idle(Duration),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => write!(
                f,
                "request of {size} bytes exceeds socket.request.max.bytes ({max})"
            ),
            FrameError::Truncated => write!(f, "connection closed in the middle of a request"),
            FrameError::Idle(idle) => write!(f, "idle for {} millis", idle.as_millis()),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A request's bytes, and the pool bytes they hold until the request is done with.
#[derive(Debug)]
pub struct Frame {
    /// The body, without its size prefix.
    pub body: Bytes,
    /// Returned to the pool when dropped.
    pub memory: Reservation,
}

/// How the broker reads a request: within a memory pool, and giving up on a silent peer.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits<'a> {
    /// `socket.request.max.bytes`.
    pub max_size: usize,
    /// Where the body's bytes are charged.
    pub pool: &'a MemoryPool,
    /// `connections.max.idle.ms`: the longest wait for the next byte (or for pool memory).
    pub idle: Duration,
    /// When the connection was last active (the idle clock starts here).
    pub active_since: Instant,
}

/// Reads one frame's body for a client (a response): no pool, no idle limit. `None` if the peer
/// closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_size: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = read_size(reader, max_size, None).await? else {
        return Ok(None);
    };
    let mut no_pool = Reservation::default();
    read_body(reader, size, None, &mut no_pool, None)
        .await
        .map(Some)
}

/// Reads one request on the broker: bytes are charged to `limits.pool` as they arrive, and
/// waiting longer than `limits.idle` for a byte (or for memory) is an error. `None` if the peer
/// closed the connection between requests.
pub async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: ReadLimits<'_>,
) -> Result<Option<Frame>, FrameError> {
    let idle = Some((limits.idle, limits.active_since));
    let Some(size) = read_size(reader, limits.max_size, idle).await? else {
        return Ok(None);
    };
    let mut memory = Reservation::default();
    let idle = Some((limits.idle, Instant::now()));
    let body = read_body(reader, size, Some(limits.pool), &mut memory, idle).await?;
    Ok(Some(Frame { body, memory }))
}

/// Runs `step` unless `idle` (a limit and the time of the last progress) runs out first.
async fn within<T>(
    idle: Option<(Duration, Instant)>,
    step: impl Future<Output = T>,
) -> Result<T, FrameError> {
    match idle {
        None => Ok(step.await),
        Some((limit, since)) => tokio::time::timeout_at(since + limit, step)
            .await
            .map_err(|_| FrameError::Idle(since.elapsed())),
    }
}

async fn read_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_size: usize,
    idle: Option<(Duration, Instant)>,
) -> Result<Option<usize>, FrameError> {
    let mut size = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        match within(idle, reader.read(&mut size[filled..])).await? {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max_size {
        return Err(FrameError::TooLarge {
            size,
            max: max_size,
        });
    }
    Ok(Some(size as usize))
}

/// Reads `size` bytes, growing the buffer only as bytes arrive (doubling, capped at `size`), and
/// charging every byte of capacity to `pool` before allocating it.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
    pool: Option<&MemoryPool>,
    memory: &mut Reservation,
    mut idle: Option<(Duration, Instant)>,
) -> Result<Bytes, FrameError> {
    // A `Vec`, whose `reserve_exact` allocates what was charged and no more.
    let mut body: Vec<u8> = Vec::new();
    // The first bytes land here, so a peer that sends nothing costs no allocation.
    let mut first = [0u8; 4096];
    while body.len() < size {
        let n = if body.capacity() == 0 {
            let want = size.min(first.len());
            let n = within(idle, reader.read(&mut first[..want])).await?;
            let n = check_read(n)?;
            let capacity = size.min(FIRST_CHUNK.max(n));
            if let Some(pool) = pool {
                within(idle, pool.grow(memory, capacity)).await?;
            }
            body.reserve_exact(capacity);
            body.extend_from_slice(&first[..n]);
            n
        } else {
            if body.len() == body.capacity() {
                let capacity = size.min(body.capacity() * 2);
                if let Some(pool) = pool {
                    within(idle, pool.grow(memory, capacity - body.capacity())).await?;
                }
                body.reserve_exact(capacity - body.len());
            }
            let room = size - body.len();
            let n = within(idle, reader.read_buf(&mut (&mut body).limit(room))).await?;
            check_read(n)?
        };
        if let Some((limit, _)) = idle {
            idle = Some((limit, Instant::now()));
        }
        debug_assert!(n > 0);
    }
    Ok(Bytes::from(body))
}

fn check_read(read: io::Result<usize>) -> Result<usize, FrameError> {
    match read {
        Ok(0) => Err(FrameError::Truncated),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Starts a frame in `out`: reserves the size prefix, to be filled by [`finish_frame`].
pub fn start_frame(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_i32(0);
    at
}

/// Writes the size of the frame begun at `at` into its prefix.
pub fn finish_frame(out: &mut BytesMut, at: usize) {
    let size = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_oversized_or_torn_ones_are_refused() {
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 9, b'x'];
        assert_eq!(
            read_frame(&mut input, 100).await.unwrap().unwrap().as_ref(),
            b"abc"
        );
        assert!(matches!(
            read_frame(&mut input, 100).await,
            Err(FrameError::Truncated)
        ));
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 100).await.unwrap().is_none());
        let mut big: &[u8] = &[0, 0, 1, 0];
        assert!(matches!(
            read_frame(&mut big, 100).await,
            Err(FrameError::TooLarge { size: 256, .. })
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 100).await,
            Err(FrameError::TooLarge { size: -1, .. })
        ));
    }

    fn limits(pool: &MemoryPool, idle_ms: u64) -> ReadLimits<'_> {
        ReadLimits {
            max_size: 1 << 30,
            pool,
            idle: Duration::from_millis(idle_ms),
            active_since: Instant::now(),
        }
    }

    #[tokio::test]
    async fn a_large_frame_is_read_whole_and_charged_to_the_pool_until_dropped() {
        let size = 1_000_000usize;
        let mut input = (size as i32).to_be_bytes().to_vec();
        input.extend((0..size).map(|i| i as u8));
        let pool = MemoryPool::new(Some(2 * size));
        let frame = read_request(&mut input.as_slice(), limits(&pool, 1000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.body.as_ref(), &input[4..]);
        assert!(frame.memory.bytes() >= size && frame.memory.bytes() <= 2 * size);
        assert_eq!(pool.available(), 2 * size - frame.memory.bytes());
        drop(frame);
        assert_eq!(pool.available(), 2 * size);
    }

    #[tokio::test]
    async fn a_claimed_size_costs_only_the_bytes_that_arrived() {
        // A peer claims 100 MB, sends 10 bytes and goes quiet.
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        tokio::io::AsyncWriteExt::write_all(&mut client, &100_000_000i32.to_be_bytes())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, &[7; 10])
            .await
            .unwrap();
        let pool = MemoryPool::new(Some(200_000_000));
        let reading = read_request(&mut server, limits(&pool, 100_000));
        let quiet = tokio::time::timeout(Duration::from_millis(100), reading).await;
        assert!(quiet.is_err(), "nothing more arrived");
        // The reservation was dropped with the unfinished read; while it ran it held at most
        // the first chunk.
        assert_eq!(pool.available(), 200_000_000);
    }

    #[tokio::test]
    async fn a_silent_peer_is_idle_and_a_spent_pool_makes_readers_wait() {
        let (_client, mut server) = tokio::io::duplex(64);
        let pool = MemoryPool::new(Some(1 << 20));
        let started = std::time::Instant::now();
        let idle = read_request(&mut server, limits(&pool, 100)).await;
        assert!(matches!(idle, Err(FrameError::Idle(_))), "{idle:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));

        // With the pool spent, a frame whose bytes have arrived still waits (and goes idle).
        let spent = MemoryPool::new(Some(100));
        let mut all = Reservation::default();
        spent.grow(&mut all, 100).await;
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c'];
        let waited = read_request(&mut input, limits(&spent, 100)).await;
        assert!(matches!(waited, Err(FrameError::Idle(_))), "{waited:?}");
        drop(all);
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c'];
        let frame = read_request(&mut input, limits(&spent, 100)).await.unwrap();
        assert_eq!(frame.unwrap().body.as_ref(), b"abc");
    }

    #[test]
    fn a_finished_frame_carries_its_size() {
        let mut out = BytesMut::new();
        let at = start_frame(&mut out);
        out.put_slice(b"hello");
        finish_frame(&mut out, at);
        assert_eq!(out.as_ref(), &[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    }
}
