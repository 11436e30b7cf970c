//! The producer's configuration under Kafka's names.

use std::time::Duration;

use surety_core::record::Compression;

/// Producer settings; each field names the Kafka key it reads. Defaults are Kafka's.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `acks`: 0, 1 or -1 (`all`). Default all.
    pub acks: i16,
    /// `batch.size`. Default 16384.
    pub batch_size: usize,
    /// `linger.ms`. Default 5 (Kafka 4.0's).
    pub linger_ms: i64,
    /// `buffer.memory`. Default 32 MiB.
    pub buffer_memory: usize,
    /// `max.block.ms`. Default 60 s.
    pub max_block: Duration,
    /// `max.in.flight.requests.per.connection`. Default 5.
    pub max_in_flight: usize,
    /// `retries`. Default effectively unlimited (bounded by `delivery.timeout.ms`).
    pub retries: u32,
    /// `delivery.timeout.ms`. Default 120 s.
    pub delivery_timeout_ms: i64,
    /// `retry.backoff.ms`. Default 100.
    pub retry_backoff_ms: i64,
    /// `enable.idempotence`. Default true.
    pub enable_idempotence: bool,
    /// `client.id`.
    pub client_id: String,
    /// `max.request.size`. Default 1 MiB.
    pub max_request_size: usize,
    /// `request.timeout.ms`: how long a produce request may wait for its answer before the
    /// connection is closed and its batches retried (the broker is also given this as the
    /// request's own timeout). Default 30 s.
    pub request_timeout_ms: i64,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd. Default none.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            acks: -1,
            batch_size: 16 * 1024,
            linger_ms: 5,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_in_flight: 5,
            retries: i32::MAX as u32,
            delivery_timeout_ms: 120_000,
            retry_backoff_ms: 100,
            enable_idempotence: true,
            client_id: "surety-producer".to_string(),
            max_request_size: 1024 * 1024,
            request_timeout_ms: 30_000,
            compression: Compression::None,
        }
    }
}

impl ProducerConfig {
    /// Applies `key=value` settings by their Kafka names; an unknown key or bad value is an
    /// error naming it.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut c = ProducerConfig::default();
        for (key, value) in pairs {
            let bad = || format!("invalid value '{value}' for '{key}'");
            let int = || value.trim().parse::<i64>().map_err(|_| bad());
            match key {
                "bootstrap.servers" => c.bootstrap_servers = value.to_string(),
                "acks" => {
                    c.acks = match value.trim() {
                        "all" | "-1" => -1,
                        "1" => 1,
                        "0" => 0,
                        _ => return Err(bad()),
                    }
                }
                "batch.size" => c.batch_size = int()?.max(1) as usize,
                "linger.ms" => c.linger_ms = int()?.max(0),
                "buffer.memory" => c.buffer_memory = int()?.max(1) as usize,
                "max.block.ms" => c.max_block = Duration::from_millis(int()?.max(0) as u64),
                "max.in.flight.requests.per.connection" => {
                    c.max_in_flight = int()?.clamp(1, 1000) as usize
                }
                "retries" => c.retries = int()?.clamp(0, i64::from(u32::MAX)) as u32,
                "delivery.timeout.ms" => c.delivery_timeout_ms = int()?.max(1),
                "retry.backoff.ms" => c.retry_backoff_ms = int()?.max(0),
                "enable.idempotence" => {
                    c.enable_idempotence = match value.trim() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad()),
                    }
                }
                "client.id" => c.client_id = value.to_string(),
                "max.request.size" => c.max_request_size = int()?.max(1) as usize,
                "request.timeout.ms" => c.request_timeout_ms = int()?.clamp(1, i32::MAX.into()),
                "compression.type" => {
                    c.compression = Compression::from_name(value.trim()).ok_or_else(|| {
                        format!("{}: expected none, gzip, snappy, lz4 or zstd", bad())
                    })?
                }
                _ => return Err(format!("unknown producer config key '{key}'")),
            }
        }
        if c.enable_idempotence && (c.acks != -1 || c.max_in_flight > 5) {
            return Err("enable.idempotence=true requires acks=all and \
                 max.in.flight.requests.per.connection <= 5"
                .to_string());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_are_read_and_unknown_keys_refused_by_name() {
        let c = ProducerConfig::from_pairs([
            ("bootstrap.servers", "h:1"),
            ("acks", "all"),
            ("linger.ms", "20"),
            ("max.in.flight.requests.per.connection", "5"),
        ])
        .unwrap();
        assert_eq!((c.acks, c.linger_ms, c.max_in_flight), (-1, 20, 5));
        let e = ProducerConfig::from_pairs([("linger", "5")]).unwrap_err();
        assert!(e.contains("'linger'"), "{e}");
    }

    #[test]
    fn idempotence_needs_acks_all_and_at_most_five_in_flight() {
        assert!(ProducerConfig::from_pairs([("acks", "1")]).is_err());
        assert!(
            ProducerConfig::from_pairs([("acks", "1"), ("enable.idempotence", "false")]).is_ok()
        );
        assert!(
            ProducerConfig::from_pairs([("max.in.flight.requests.per.connection", "6")]).is_err()
        );
    }

    #[test]
    fn docs_producer_lists_every_key_with_a_default_the_producer_accepts() {
        let doc = include_str!("../../../docs/producer.md");
        let rows: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split(" | ");
                let key = cells.next()?.strip_suffix('`')?;
                let default = cells.next()?.trim_matches('`');
                Some((key, default))
            })
            .collect();
        assert!(rows.len() >= 15, "{rows:?}");
        for (key, default) in &rows {
            ProducerConfig::from_pairs([(*key, *default)])
                .unwrap_or_else(|e| panic!("docs/producer.md row {key}={default}: {e}"));
        }
        let defaults = ProducerConfig::from_pairs(rows.iter().copied()).unwrap();
        let kafka = ProducerConfig::default();
        assert_eq!(
            (
                defaults.batch_size,
                defaults.linger_ms,
                defaults.buffer_memory
            ),
            (kafka.batch_size, kafka.linger_ms, kafka.buffer_memory)
        );
        assert_eq!(
            (
                defaults.delivery_timeout_ms,
                defaults.request_timeout_ms,
                defaults.retries
            ),
            (
                kafka.delivery_timeout_ms,
                kafka.request_timeout_ms,
                kafka.retries
            )
        );
    }
}
