//! `surety produce TOPIC`: one record per line of stdin, as `kafka-console-producer.sh`.
//! With `--key-separator SEP` each line is `key SEP value`; keyed records go to the partition
//! Kafka's default partitioner picks (murmur2), keyless ones stick to a partition until its
//! batch is sent (KIP-480).
//!
//! The lines go through Surety's own producer rather than requests of this tool's making: in
//! a cluster each partition has its own leader, which may move while the tool runs, and the
//! producer is what knows how to find it, retry, and (idempotent, with acks=all, by default)
//! keep a retry from writing a record twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use surety_core::errors::Errors;
use surety_core::producer::DeliveryError;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;

use super::{DEFAULT_BOOTSTRAP, TopicArg, connect, error_name, topic_metadata};
use crate::producer::{Producer, ProducerConfig, ProducerRecord};

/// Arguments of `surety produce`.
#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    topic: TopicArg,
    /// Brokers to contact, host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP)]
    bootstrap_server: String,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(long)]
    key_separator: Option<String>,
    /// acks: all (-1), 1 or 0. Below all, idempotence is turned off unless a
    /// --producer-property sets enable.idempotence=true (which then fails, as in Kafka).
    #[arg(long, allow_hyphen_values = true)]
    acks: Option<String>,
    /// Lines read at most before waiting for their acknowledgements.
    #[arg(long, default_value_t = 1000)]
    batch_lines: u32,
    /// A producer setting under its Kafka name, as KEY=VALUE (repeatable), as
    /// kafka-console-producer's: e.g. delivery.timeout.ms, retries, linger.ms.
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
}

/// What became of the records sent, filled in by their callbacks on the producer's task.
#[derive(Default)]
struct Outcome {
    acknowledged: AtomicU64,
    /// Each distinct failure and how many records it took.
    failures: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Outcome {
    fn failed(&self) -> u64 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// Runs `surety produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    // Asked first, without creating the topic: a mistyped name should fail at once, as before,
    // rather than be auto-created or waited for for max.block.ms.
    let mut conn = connect(&args.bootstrap_server, "surety-producer").await?;
    topic_metadata(&mut conn, args.topic.name()).await?;
    drop(conn);

    let mut pairs: Vec<(&str, &str)> = args
        .producer_properties
        .iter()
        .map(|p| {
            p.split_once('=')
                .with_context(|| format!("--producer-property {p}: expected KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    // The dedicated flags win over --producer-property, as in kafka-console-producer.
    pairs.push(("bootstrap.servers", &args.bootstrap_server));
    if let Some(acks) = &args.acks {
        pairs.push(("acks", acks));
    }
    let config = ProducerConfig::from_pairs(pairs).map_err(anyhow::Error::msg)?;
    // Long enough for every record to reach its delivery.timeout.ms: cutting it short would
    // fail records the producer could still deliver.
    let close_timeout = Duration::from_millis(config.delivery_timeout_ms as u64 + 5_000);
    let producer = Producer::new(config).await?;

    let window = args.batch_lines.max(1);
    let permits = Arc::new(Semaphore::new(window as usize));
    let outcome = Arc::new(Outcome::default());
    let fed = feed(&args, &producer, &permits, &outcome).await;
    producer.close(close_timeout).await;
    // Every callback has run once every permit is back (a record dropped unanswered returns
    // its permit too, and is counted below as not acknowledged).
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(window)).await;
    let sent = fed?;

    let acknowledged = outcome.acknowledged.load(Ordering::Acquire);
    if acknowledged < sent {
        let mut failures = outcome
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let unanswered = sent - acknowledged - failures.values().sum::<u64>();
        if unanswered > 0 {
            failures.insert(
                "no answer before the producer closed".to_string(),
                unanswered,
            );
        }
        let reasons: Vec<String> = failures
            .iter()
            .map(|(reason, n)| format!("{n} × {reason}"))
            .collect();
        bail!(
            "{} of {sent} records were not produced to {}: {}",
            sent - acknowledged,
            args.topic.name(),
            reasons.join("; ")
        );
    }
    eprintln!("Produced {sent} records to {}.", args.topic.name());
    Ok(())
}

/// Sends each line of stdin, holding a permit per record until its answer; stops reading at
/// the first failed record, as there is no point queueing more behind a partition that
/// refuses them. Returns how many records were handed to the producer.
async fn feed(
    args: &ProduceArgs,
    producer: &Producer,
    permits: &Arc<Semaphore>,
    outcome: &Arc<Outcome>,
) -> anyhow::Result<u64> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    while let Some(line) = lines.next_line().await? {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // The window is full: what is queued goes now rather than after linger.ms, or
                // a window smaller than a batch would wait out the linger on every round.
                producer.flush().await;
                permits.clone().acquire_owned().await?
            }
        };
        if outcome.failed() > 0 {
            break;
        }
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                None => bail!("line {} has no key separator '{sep}': {line}", sent + 1),
            },
            None => (None, line.as_bytes()),
        };
        let record = ProducerRecord {
            topic: args.topic.name(),
            partition: None,
            key,
            value: Some(value),
        };
        let outcome = outcome.clone();
        producer
            .send_with_callback(record, move |result| {
                match result {
                    Ok(_) => {
                        outcome.acknowledged.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => {
                        *outcome
                            .failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(describe(&e))
                            .or_default() += 1;
                    }
                }
                drop(permit);
            })
            .await?;
        sent += 1;
    }
    Ok(sent)
}

/// A failure in the words of Kafka's tools: a broker's refusal by its error name.
fn describe(error: &DeliveryError) -> String {
    match error {
        DeliveryError::Broker(code) => match Errors::from_code(*code) {
            Some(e) => format!("{} ({code})", e.name()),
            None => error_name(*code),
        },
        other => other.to_string(),
    }
}
