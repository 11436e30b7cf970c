//! `buffer.memory` as Kafka's producer spends it: a fixed budget, a free list of
//! `batch.size`-sized buffers for reuse, and callers that find too little memory waiting up to
//! `max.block.ms` in FIFO order.
//!
//! The budget is split four ways at every moment: buffers on the free list, memory not yet
//! turned into buffers (`non_pooled`), memory a waiting caller has already collected towards its
//! request, and buffers handed out. Their sum is always `buffer.memory`
//! ([`BufferPool::accounted`] lets tests check it while buffers are out).
//!
//! Waiting is FIFO: a caller that cannot be served at once joins the back of a queue, and only
//! the caller at the front collects memory as it is freed (so a large request is not starved by a
//! stream of small ones). When the front caller is done (served or timed out, returning what it
//! collected), the next one is woken if any memory is left.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocateError {
    /// The request exceeds the whole budget and could never be served (Kafka's
    /// `RecordTooLargeException` for `buffer.memory`).
    LargerThanBudget {
        /// Bytes asked for.
        size: usize,
        /// `buffer.memory`.
        budget: usize,
    },
    /// Not enough memory was freed within `max.block.ms` (Kafka's `BufferExhaustedException`).
    BufferExhausted {
        /// Bytes asked for.
        size: usize,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl fmt::Display for AllocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocateError::LargerThanBudget { size, budget } => write!(
                f,
                "a buffer of {size} bytes is larger than buffer.memory ({budget} bytes)"
            ),
            AllocateError::BufferExhausted { size, waited } => write!(
                f,
                "failed to allocate {size} bytes within max.block.ms ({} ms)",
                waited.as_millis()
            ),
        }
    }
}

impl std::error::Error for AllocateError {}

/// One caller waiting for memory.
struct Waiter {
    wake: Condvar,
}

struct State {
    free: VecDeque<Vec<u8>>,
    non_pooled: usize,
    /// Bytes collected by waiting callers towards their requests.
    collected: usize,
    waiters: VecDeque<Arc<Waiter>>,
}

impl State {
    /// Moves free-list buffers back into `non_pooled` until `size` bytes are there (or the
    /// free list is empty).
    fn free_up(&mut self, size: usize) {
        while self.non_pooled < size {
            match self.free.pop_back() {
                Some(buffer) => self.non_pooled += buffer.capacity(),
                None => break,
            }
        }
    }

    fn wake_front_if_memory(&self) {
        if (self.non_pooled > 0 || !self.free.is_empty())
            && let Some(front) = self.waiters.front()
        {
            front.wake.notify_one();
        }
    }
}

/// The producer's memory budget. Cheap to clone; clones share the budget.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    budget: usize,
    poolable_size: usize,
    state: Mutex<State>,
}

impl BufferPool {
    /// A pool of `buffer_memory` bytes whose `batch_size` buffers are kept for reuse.
    pub fn new(buffer_memory: usize, batch_size: usize) -> Self {
        BufferPool {
            inner: Arc::new(Inner {
                budget: buffer_memory,
                poolable_size: batch_size,
                state: Mutex::new(State {
                    free: VecDeque::new(),
                    non_pooled: buffer_memory,
                    collected: 0,
                    waiters: VecDeque::new(),
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer with capacity `size` (a pooled one when `size` is the batch size and one is
    /// free), waiting up to `max_block` for memory.
    pub fn allocate(&self, size: usize, max_block: Duration) -> Result<Vec<u8>, AllocateError> {
        let budget = self.inner.budget;
        if size > budget {
            return Err(AllocateError::LargerThanBudget { size, budget });
        }
        let poolable = self.inner.poolable_size;
        let mut state = self.lock();
        if state.waiters.is_empty() {
            if size == poolable
                && let Some(buffer) = state.free.pop_front()
            {
                return Ok(buffer);
            }
            let free_list_bytes: usize = state.free.iter().map(Vec::capacity).sum();
            if state.non_pooled + free_list_bytes >= size {
                state.free_up(size);
                state.non_pooled -= size;
                drop(state);
                return Ok(Vec::with_capacity(size));
            }
        }
        let waiter = Arc::new(Waiter {
            wake: Condvar::new(),
        });
        state.waiters.push_back(waiter.clone());
        let started = Instant::now();
        let deadline = started.checked_add(max_block);
        let mut collected = 0usize;
        let mut pooled = None;
        let outcome = loop {
            let at_front = state
                .waiters
                .front()
                .is_some_and(|front| Arc::ptr_eq(front, &waiter));
            if at_front {
                if size == poolable
                    && collected == 0
                    && let Some(buffer) = state.free.pop_front()
                {
                    pooled = Some(buffer);
                    break Ok(());
                }
                state.free_up(size - collected);
                let got = (size - collected).min(state.non_pooled);
                state.non_pooled -= got;
                state.collected += got;
                collected += got;
                if collected == size {
                    break Ok(());
                }
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero()) {
                break Err(AllocateError::BufferExhausted {
                    size,
                    waited: started.elapsed(),
                });
            }
            state = wait(&waiter.wake, state, remaining);
        };
        state.collected -= collected;
        if outcome.is_err() {
            state.non_pooled += collected;
        }
        if let Some(at) = state.waiters.iter().position(|w| Arc::ptr_eq(w, &waiter)) {
            state.waiters.remove(at);
        }
        state.wake_front_if_memory();
        drop(state);
        outcome.map(|()| pooled.unwrap_or_else(|| Vec::with_capacity(size)))
    }

    /// Returns a buffer obtained from [`allocate`](Self::allocate) with `size`: a batch-size
    /// buffer goes back on the free list, anything else back to the budget.
    pub fn deallocate(&self, mut buffer: Vec<u8>, size: usize) {
        let mut state = self.lock();
        if size == self.inner.poolable_size && buffer.capacity() == size {
            buffer.clear();
            state.free.push_back(buffer);
        } else {
            state.non_pooled += size;
        }
        state.wake_front_if_memory();
    }

    /// `buffer.memory`.
    pub fn budget(&self) -> usize {
        self.inner.budget
    }

    /// Memory available without waiting: free buffers plus memory not yet made into buffers.
    pub fn available_memory(&self) -> usize {
        let state = self.lock();
        state.non_pooled + state.free.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Memory not held as free `batch.size` buffers (Kafka's `unallocatedMemory`).
    pub fn unallocated_memory(&self) -> usize {
        self.lock().non_pooled
    }

    /// Callers waiting for memory.
    pub fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Free-list bytes + not-yet-pooled bytes + bytes collected by waiting callers: with the
    /// bytes of every buffer handed out added, always the budget.
    pub fn accounted(&self) -> usize {
        let state = self.lock();
        state.free.iter().map(Vec::capacity).sum::<usize>() + state.non_pooled + state.collected
    }
}

/// Waits on `wake` (with a time limit if one is given). Under loom a timed wait never times
/// out, so loom tests use unlimited waits and the time-out path is tested with real threads.
fn wait<'a>(
    wake: &Condvar,
    state: MutexGuard<'a, State>,
    remaining: Option<Duration>,
) -> MutexGuard<'a, State> {
    match remaining {
        None => wake.wait(state).unwrap_or_else(|p| p.into_inner()),
        Some(limit) => {
            wake.wait_timeout(state, limit)
                .unwrap_or_else(|p| p.into_inner())
                .0
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::thread;

    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn batch_size_buffers_are_reused_and_others_return_to_the_budget() {
        let pool = BufferPool::new(1024, 128);
        let a = pool.allocate(128, FOREVER).unwrap();
        let b = pool.allocate(300, FOREVER).unwrap();
        assert_eq!(pool.available_memory(), 1024 - 428);
        pool.deallocate(a, 128);
        pool.deallocate(b, 300);
        assert_eq!(pool.available_memory(), 1024);
        assert_eq!(pool.accounted(), 1024);
        let again = pool.allocate(128, FOREVER).unwrap();
        assert_eq!(again.capacity(), 128);
        assert_eq!(pool.accounted() + 128, 1024);
    }

    #[test]
    fn a_request_larger_than_the_budget_fails_at_once() {
        let pool = BufferPool::new(100, 10);
        assert_eq!(
            pool.allocate(101, FOREVER),
            Err(AllocateError::LargerThanBudget {
                size: 101,
                budget: 100
            })
        );
    }

    #[test]
    fn a_caller_times_out_after_max_block_and_returns_what_it_collected() {
        let pool = BufferPool::new(100, 10);
        let held = pool.allocate(60, FOREVER).unwrap();
        let started = Instant::now();
        let e = pool.allocate(80, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, AllocateError::BufferExhausted { size: 80, .. }));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(pool.queued(), 0);
        assert_eq!(
            pool.accounted() + 60,
            100,
            "the 40 bytes collected went back"
        );
        pool.deallocate(held, 60);
        assert_eq!(pool.available_memory(), 100);
    }

    #[test]
    fn a_freed_buffer_wakes_the_waiting_caller() {
        let pool = BufferPool::new(100, 10);
        let held = pool.allocate(100, FOREVER).unwrap();
        let waiting = {
            let pool = pool.clone();
            thread::spawn(move || pool.allocate(50, Duration::from_secs(10)))
        };
        while pool.queued() == 0 {
            thread::yield_now();
        }
        pool.deallocate(held, 100);
        let got = waiting.join().unwrap().unwrap();
        assert_eq!(got.capacity(), 50);
        assert_eq!(pool.accounted() + 50, 100);
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let pool = BufferPool::new(100, 10);
        let held = pool.allocate(100, FOREVER).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..4 {
            let (p, order) = (pool.clone(), order.clone());
            threads.push(thread::spawn(move || {
                let b = p.allocate(60, Duration::from_secs(10)).unwrap();
                order.lock().unwrap().push(i);
                p.deallocate(b, 60);
            }));
            while pool.queued() < i + 1 {
                thread::yield_now();
            }
        }
        // Newcomers queue behind the waiters even when memory is free.
        pool.deallocate(held, 100);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
        assert_eq!(pool.accounted(), 100);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    const FOREVER: Duration = Duration::from_secs(3600);

    /// Two callers race for more memory than exists while a third frees: nobody is left
    /// sleeping with memory available (no lost wake-up), and no byte is lost or counted twice.
    #[test]
    fn loom_allocate_and_free_race_without_lost_wakeups_or_leaks() {
        loom::model(|| {
            let pool = BufferPool::new(30, 10);
            let held = pool.allocate(30, FOREVER).unwrap();
            let a = {
                let pool = pool.clone();
                thread::spawn(move || {
                    let b = pool.allocate(20, FOREVER).unwrap();
                    pool.deallocate(b, 20);
                })
            };
            let b = {
                let pool = pool.clone();
                thread::spawn(move || {
                    let b = pool.allocate(10, FOREVER).unwrap();
                    pool.deallocate(b, 10);
                })
            };
            pool.deallocate(held, 30);
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(pool.accounted(), 30);
            assert_eq!(pool.available_memory(), 30);
            assert_eq!(pool.queued(), 0);
        });
    }

    /// Pooled buffers freed by one thread while another allocates: the free list and the
    /// budget stay consistent.
    #[test]
    fn loom_pooled_buffers_move_between_threads_consistently() {
        loom::model(|| {
            let pool = BufferPool::new(20, 10);
            let first = pool.allocate(10, FOREVER).unwrap();
            let other = {
                let pool = pool.clone();
                thread::spawn(move || {
                    let b = pool.allocate(10, FOREVER).unwrap();
                    let c = pool.allocate(10, FOREVER).unwrap();
                    pool.deallocate(b, 10);
                    pool.deallocate(c, 10);
                })
            };
            pool.deallocate(first, 10);
            other.join().unwrap();
            assert_eq!(pool.accounted(), 20);
        });
    }
}
