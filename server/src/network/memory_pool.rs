//! The broker-wide budget for request bytes held in memory (`queued.max.request.bytes`, KIP-72).
//!
//! Every byte of a request body the broker buffers is first taken from this pool, and goes back
//! when the request has been handled. When the pool is spent, connections wait for it before
//! reading more from their sockets: backpressure, so memory never grows past the budget however
//! many clients send at once, and no request that was read is ever dropped for lack of memory.
//! Unlike Kafka's pool, which reserves a request's whole claimed size as soon as its size
//! prefix arrives, this one is charged as bytes arrive, so a client claiming a huge request and
//! sending nothing holds nothing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A budget of bytes shared by every connection.
#[derive(Clone, Debug)]
pub struct MemoryPool {
    bytes: Arc<Semaphore>,
}

/// Bytes taken from a [`MemoryPool`]; they go back when this is dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl MemoryPool {
    /// A pool of `bytes`; `None` for Kafka's unbounded setting (-1).
    pub fn new(bytes: Option<usize>) -> Self {
        let bytes = bytes
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        MemoryPool {
            bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Bytes not taken now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Adds `bytes` to `reservation`, waiting (in arrival order) until the pool has them.
    pub async fn grow(&self, reservation: &mut Reservation, bytes: usize) {
        if bytes == 0 {
            return;
        }
        // Requests are bounded by `socket.request.max.bytes` (< 2^31), so this always fits.
        let n = u32::try_from(bytes).expect("a request chunk fits in u32");
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the pool's semaphore is never closed");
        match &mut reservation.permit {
            Some(held) => held.merge(permit),
            None => reservation.permit = Some(permit),
        }
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_spent_pool_makes_the_next_taker_wait_until_bytes_come_back() {
        let pool = MemoryPool::new(Some(100));
        let mut first = Reservation::default();
        pool.grow(&mut first, 60).await;
        pool.grow(&mut first, 30).await;
        assert_eq!((first.bytes(), pool.available()), (90, 10));
        let mut second = Reservation::default();
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.grow(&mut second, 20));
        assert!(waiting.await.is_err(), "only 10 bytes were free");
        drop(first);
        pool.grow(&mut second, 20).await;
        assert_eq!((second.bytes(), pool.available()), (20, 80));
    }

    #[test]
    fn unbounded_is_kafkas_minus_one() {
        assert_eq!(MemoryPool::new(None).available(), Semaphore::MAX_PERMITS);
    }
}
