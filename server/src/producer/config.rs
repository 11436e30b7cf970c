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
        let mut idempotence_set = false;
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
                    idempotence_set = true;
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
        if c.enable_idempotence
            && let Some(conflict) = c.idempotence_conflict()
        {
            // Kafka (3.2+, KAFKA-13673): idempotence is on by default, and a setting that
            // conflicts with it turns it off when the user left it unset; set explicitly, the
            // conflict is a configuration error.
            if idempotence_set {
                return Err(format!(
                    "enable.idempotence=true requires acks=all and \
                     max.in.flight.requests.per.connection <= 5, but {conflict}"
                ));
            }
            tracing::info!(
                "Idempotence will be disabled because {conflict}: enable.idempotence was not set"
            );
            c.enable_idempotence = false;
        }
        Ok(c)
    }

    /// The setting that rules idempotence out, in Kafka's words, if any.
    pub(crate) fn idempotence_conflict(&self) -> Option<String> {
        if self.acks != -1 {
            Some(format!("acks is set to {}", self.acks))
        } else if self.max_in_flight > 5 {
            Some(format!(
                "max.in.flight.requests.per.connection is set to {}",
                self.max_in_flight
            ))
        } else {
            None
        }
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
    fn a_conflicting_setting_turns_default_idempotence_off_and_explicit_idempotence_fails() {
        // Left at its default, idempotence gives way to acks=1 or acks=0 ...
        for acks in ["1", "0"] {
            let c = ProducerConfig::from_pairs([("acks", acks)]).unwrap();
            assert!(!c.enable_idempotence, "acks={acks}");
        }
        // ... and to more than five requests in flight.
        let c =
            ProducerConfig::from_pairs([("max.in.flight.requests.per.connection", "6")]).unwrap();
        assert!(!c.enable_idempotence);
        // Set explicitly, the same conflicts are errors that name the setting.
        let e = ProducerConfig::from_pairs([("enable.idempotence", "true"), ("acks", "1")])
            .unwrap_err();
        assert!(e.contains("acks is set to 1"), "{e}");
        let e = ProducerConfig::from_pairs([
            ("max.in.flight.requests.per.connection", "6"),
            ("enable.idempotence", "true"),
        ])
        .unwrap_err();
        assert!(e.contains("max.in.flight"), "{e}");
        // No conflict: on by default, and off when asked.
        assert!(ProducerConfig::from_pairs([]).unwrap().enable_idempotence);
        let off = ProducerConfig::from_pairs([("acks", "1"), ("enable.idempotence", "false")]);
        assert!(!off.unwrap().enable_idempotence);
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
