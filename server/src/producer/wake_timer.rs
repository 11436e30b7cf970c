//! Wakes the sender task at a precise instant. tokio's timer counts whole milliseconds and
//! fires on the tick after a deadline, so a batch lingering 5 ms would leave after 5 to 7;
//! `linger.ms` is the producer's main latency setting, so a small thread sleeping on a
//! condition variable (which the kernel wakes within tens of microseconds) wakes the sender
//! instead.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// The timer; dropping it stops its thread.
pub struct WakeTimer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    stopped: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WakeTimer {
    /// A timer that calls `wake.notify_one()` at each deadline set.
    pub fn start(wake: Arc<Notify>) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread_inner = inner.clone();
        std::thread::Builder::new()
            .name("surety-producer-timer".into())
            .spawn(move || run(&thread_inner, &wake))?;
        Ok(WakeTimer { inner })
    }

    /// Wakes the task at `deadline`, replacing any earlier request.
    pub fn wake_at(&self, deadline: Instant) {
        self.inner.lock().deadline = Some(deadline);
        self.inner.changed.notify_one();
    }
}

impl Drop for WakeTimer {
    fn drop(&mut self) {
        self.inner.lock().stopped = true;
        self.inner.changed.notify_one();
    }
}

fn run(inner: &Inner, wake: &Notify) {
    let mut state = inner.lock();
    loop {
        if state.stopped {
            return;
        }
        state = match state.deadline {
            None => inner.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    state.deadline = None;
                    drop(state);
                    wake.notify_one();
                    inner.lock()
                } else {
                    inner
                        .changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_the_task_at_the_deadline_not_a_tick_later() {
        let wake = Arc::new(Notify::new());
        let timer = WakeTimer::start(wake.clone()).unwrap();
        let start = Instant::now();
        timer.wake_at(start + Duration::from_millis(3));
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken");
        assert!(start.elapsed() >= Duration::from_millis(3));
        // A later request replaces an earlier one; dropping stops the thread.
        timer.wake_at(Instant::now() + Duration::from_secs(3600));
        timer.wake_at(Instant::now());
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken by the replacing deadline");
    }
}
