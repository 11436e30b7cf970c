//! Kafka's connection quotas: `max.connections` (the acceptor waits for a free slot),
//! `max.connections.per.ip` with `max.connections.per.ip.overrides` (a connection over its
//! address's limit is closed as soon as it is accepted) and `max.connection.creation.rate` (the
//! acceptor slows down). Without them any one client can hold every file descriptor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The limits, from the broker's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `max.connections`.
    pub max_connections: usize,
    /// `max.connections.per.ip`.
    pub max_per_ip: usize,
    /// `max.connections.per.ip.overrides`, resolved to addresses.
    pub per_ip_overrides: HashMap<IpAddr, usize>,
    /// `max.connection.creation.rate`, connections a second.
    pub max_creation_rate: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: i32::MAX as usize,
            max_per_ip: i32::MAX as usize,
            per_ip_overrides: HashMap::new(),
            max_creation_rate: i32::MAX as u32,
        }
    }
}

/// An address already holds its limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyConnections {
    /// The address.
    pub ip: IpAddr,
    /// Its limit.
    pub count: usize,
}

impl std::fmt::Display for TooManyConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Kafka's words, so operators' log searches keep working.
        write!(
            f,
            "Rejected connection from {}, address already has the configured maximum of {} \
             connections.",
            self.ip, self.count
        )
    }
}

#[derive(Debug)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connection-creation tokens left, refilled at `max_creation_rate` a second.
    tokens: f64,
    refilled: Instant,
}

/// Live connection counts against the limits.
#[derive(Debug)]
pub struct ConnectionQuotas {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    freed: Notify,
}

/// One admitted connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    ip: IpAddr,
}

impl ConnectionQuotas {
    /// Counts starting at zero.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        let tokens = f64::from(limits.max_creation_rate);
        Arc::new(ConnectionQuotas {
            limits,
            counts: Mutex::new(Counts {
                total: 0,
                per_ip: HashMap::new(),
                tokens,
                refilled: Instant::now(),
            }),
            freed: Notify::new(),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().total
    }

    /// Waits until the broker is under `max.connections` and the creation rate allows one more
    /// connection, as Kafka's acceptor does before it accepts.
    pub async fn wait_to_accept(&self) {
        let mut logged = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.open() < self.limits.max_connections {
                break;
            }
            if !logged {
                tracing::info!(
                    "Waiting for a connection slot: the broker has the configured maximum of {} \
                     connections (max.connections)",
                    self.limits.max_connections
                );
                logged = true;
            }
            freed.await;
        }
        let wait = self.take_creation_token(Instant::now());
        if !wait.is_zero() {
            tracing::debug!(
                "Throttling the acceptor for {} ms: max.connection.creation.rate is {}/s",
                wait.as_millis(),
                self.limits.max_creation_rate
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token for one new connection; returns how long to wait before accepting it.
    fn take_creation_token(&self, now: Instant) -> Duration {
        let rate = f64::from(self.limits.max_creation_rate.max(1));
        let mut counts = self.counts();
        let elapsed = now.saturating_duration_since(counts.refilled).as_secs_f64();
        counts.tokens = (counts.tokens + elapsed * rate).min(rate);
        counts.refilled = now;
        counts.tokens -= 1.0;
        if counts.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-counts.tokens / rate)
        }
    }

    /// Counts a newly accepted connection from `ip`, unless that address is at its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, TooManyConnections> {
        let limit = self
            .limits
            .per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.limits.max_per_ip);
        let mut counts = self.counts();
        let held = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if held >= limit {
            return Err(TooManyConnections { ip, count: limit });
        }
        counts.per_ip.insert(ip, held + 1);
        counts.total += 1;
        Ok(ConnectionSlot {
            quotas: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        {
            let mut counts = self.quotas.counts();
            counts.total -= 1;
            if let Some(n) = counts.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&self.ip);
                }
            }
        }
        self.quotas.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_over_its_limit_is_refused_and_a_closed_connection_frees_its_place() {
        let quotas = ConnectionQuotas::new(ConnectionLimits {
            max_per_ip: 2,
            per_ip_overrides: HashMap::from([(ip("10.0.0.9"), 1)]),
            ..ConnectionLimits::default()
        });
        let a = quotas.admit(ip("127.0.0.1")).unwrap();
        let _b = quotas.admit(ip("127.0.0.1")).unwrap();
        let refused = quotas.admit(ip("127.0.0.1")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Rejected connection from 127.0.0.1, address already has the configured maximum \
             of 2 connections."
        );
        let _c = quotas.admit(ip("10.0.0.9")).unwrap();
        assert_eq!(quotas.admit(ip("10.0.0.9")).unwrap_err().count, 1);
        assert_eq!(quotas.open(), 3);
        drop(a);
        assert_eq!(quotas.open(), 2);
        assert!(quotas.admit(ip("127.0.0.1")).is_ok());
    }

    #[tokio::test]
    async fn the_acceptor_waits_while_the_broker_is_full() {
        let quotas = ConnectionQuotas::new(ConnectionLimits {
            max_connections: 1,
            ..ConnectionLimits::default()
        });
        let slot = quotas.admit(ip("127.0.0.1")).unwrap();
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), quotas.wait_to_accept()).await;
        assert!(waiting.is_err(), "the broker is full");
        let q = quotas.clone();
        let accept = tokio::spawn(async move { q.wait_to_accept().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(slot);
        tokio::time::timeout(Duration::from_secs(5), accept)
            .await
            .expect("a freed slot wakes the acceptor")
            .unwrap();
    }

    #[test]
    fn the_creation_rate_spaces_out_connections_past_the_burst() {
        let quotas = ConnectionQuotas::new(ConnectionLimits {
            max_creation_rate: 10,
            ..ConnectionLimits::default()
        });
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(quotas.take_creation_token(now), Duration::ZERO);
        }
        let wait = quotas.take_creation_token(now);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // A second later the bucket is full again.
        let later = now + Duration::from_secs(2);
        assert_eq!(quotas.take_creation_token(later), Duration::ZERO);
    }
}
