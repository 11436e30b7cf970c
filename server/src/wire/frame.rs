//! Kafka's framing: every request and response is a 4-byte big-endian size, then that many
//! bytes. The size is checked against `socket.request.max.bytes` before anything is allocated,
//! so a hostile or confused peer cannot make the broker reserve gigabytes.

use std::fmt;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

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
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads one frame's body, or `None` if the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_size: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        match reader.read(&mut size[filled..]).await {
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
    let mut body = BytesMut::zeroed(size as usize);
    match reader.read_exact(&mut body).await {
        Ok(_) => Ok(Some(body.freeze())),
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

    #[test]
    fn a_finished_frame_carries_its_size() {
        let mut out = BytesMut::new();
        let at = start_frame(&mut out);
        out.put_slice(b"hello");
        finish_frame(&mut out, at);
        assert_eq!(out.as_ref(), &[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    }
}
