//! `surety perf produce`, in the spirit of `kafka-producer-perf-test`: send N records of S
//! bytes with Surety's producer (optionally throttled), show progress, then report records/s,
//! MB/s and the latency from send to acknowledgement (avg, max, p50, p95, p99, p99.9).
//!
//! `surety perf consume`, in the spirit of `kafka-consumer-perf-test`: read N records with
//! Surety's consumer as a new member of a group (a fresh group unless `--group` names one),
//! then report records/s and MB/s over the whole run, the time from subscribing to the
//! partitions' assignment (the group's join and sync, `group.initial.rebalance.delay.ms`
//! included) and to the first record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::producer::{Producer, ProducerConfig, ProducerRecord};

/// Arguments of `surety perf`.
#[derive(Args)]
pub struct PerfArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Measure produce throughput and latency.
    Produce {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Records to send.
        #[arg(long)]
        num_records: u64,
        /// Bytes per record value.
        #[arg(long)]
        record_size: usize,
        /// Records per second at most (-1: as fast as possible).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        throughput: i64,
        /// The broker(s) to bootstrap from, as on every other subcommand; wins over a
        /// `bootstrap.servers` in --producer-props, as in Kafka's perf tool.
        #[arg(long)]
        bootstrap_server: Option<String>,
        /// Producer settings as key=value (repeatable), e.g. bootstrap.servers=host:port acks=1.
        #[arg(long = "producer-props", num_args = 1.., value_name = "KEY=VALUE")]
        producer_props: Vec<String>,
    },
    /// Measure group consume throughput and the time to join.
    Consume {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Records to read.
        #[arg(long = "messages", alias = "num-records")]
        messages: u64,
        /// The group (default: a new one per run, so it starts from the beginning).
        #[arg(long)]
        group: Option<String>,
        /// The broker(s) to bootstrap from.
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap_server: String,
        /// Give up after this long without a record (milliseconds).
        #[arg(long, default_value_t = 10_000)]
        timeout: u64,
        /// Consumer settings as key=value (repeatable).
        #[arg(long = "consumer-props", num_args = 1.., value_name = "KEY=VALUE")]
        consumer_props: Vec<String>,
    },
}

/// What the per-record callbacks gather.
struct Stats {
    latencies_us: Mutex<Vec<u64>>,
    failures: AtomicU64,
    done: AtomicU64,
}

/// Runs `surety perf`.
pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    if let Action::Consume {
        topic,
        messages,
        group,
        bootstrap_server,
        timeout,
        consumer_props,
    } = args.action
    {
        return consume(
            topic,
            messages,
            group,
            bootstrap_server,
            Duration::from_millis(timeout),
            consumer_props,
        )
        .await;
    }
    let Action::Produce {
        topic,
        num_records,
        record_size,
        throughput,
        bootstrap_server,
        producer_props,
    } = args.action
    else {
        unreachable!("consume returned above");
    };
    let mut pairs: Vec<(&str, &str)> = producer_props
        .iter()
        .map(|p| {
            p.split_once('=')
                .with_context(|| format!("{p}: expected key=value"))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(bootstrap) = &bootstrap_server {
        pairs.push(("bootstrap.servers", bootstrap));
    }
    let config = ProducerConfig::from_pairs(pairs).map_err(anyhow::Error::msg)?;
    let producer = Producer::new(config).await?;
    let value = vec![b'x'; record_size];
    let stats = Arc::new(Stats {
        latencies_us: Mutex::new(Vec::with_capacity(num_records as usize)),
        failures: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    let bar = ProgressBar::new(num_records);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    // The bar is redrawn from a counter ten times a second, off the per-record path.
    let ticker = {
        let (bar, stats) = (bar.clone(), stats.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(stats.done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    for i in 0..num_records {
        if throughput > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / throughput as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let sent_at = Instant::now();
        let stats = stats.clone();
        producer
            .send_with_callback(
                ProducerRecord {
                    topic: &topic,
                    value: Some(&value),
                    ..ProducerRecord::default()
                },
                move |result| {
                    match result {
                        Ok(_) => {
                            let latency = sent_at.elapsed().as_micros() as u64;
                            stats.latencies_us.lock().unwrap().push(latency);
                        }
                        Err(_) => {
                            stats.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    stats.done.fetch_add(1, Ordering::Relaxed);
                },
            )
            .await?;
    }
    producer.flush().await;
    let elapsed = started.elapsed().as_secs_f64();
    producer.close(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ticker.abort();
    bar.finish_and_clear();
    let failed = stats.failures.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock().unwrap());
    if lat.is_empty() {
        bail!("no record was acknowledged ({failed} failed)");
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    let avg = lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0;
    println!(
        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency.",
        lat.len(),
        lat.len() as f64 / elapsed,
        lat.len() as f64 * record_size as f64 / elapsed / 1e6,
        avg,
        *lat.last().unwrap() as f64 / 1000.0
    );
    println!(
        "{:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(0.999)
    );
    if failed > 0 {
        bail!("{failed} records failed");
    }
    Ok(())
}

/// Records when the group assigned the partitions.
struct AssignedAt(Arc<Mutex<Option<Instant>>>);

impl crate::consumer::RebalanceListener for AssignedAt {
    fn on_partitions_assigned(&mut self, partitions: &[surety_core::group::TopicPartition]) {
        if !partitions.is_empty() {
            self.0.lock().unwrap().get_or_insert_with(Instant::now);
        }
    }
}

async fn consume(
    topic: String,
    messages: u64,
    group: Option<String>,
    bootstrap_server: String,
    timeout: Duration,
    consumer_props: Vec<String>,
) -> anyhow::Result<()> {
    use crate::consumer::{Consumer, ConsumerConfig};

    let group = group.unwrap_or_else(|| format!("perf-consumer-{}", std::process::id()));
    let mut pairs: Vec<(String, String)> = vec![
        ("bootstrap.servers".into(), bootstrap_server),
        ("group.id".into(), group),
        ("auto.offset.reset".into(), "earliest".into()),
        ("enable.auto.commit".into(), "false".into()),
        ("client.id".into(), "surety-perf-consumer".into()),
    ];
    for p in &consumer_props {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("{p}: expected key=value"))?;
        pairs.push((k.into(), v.into()));
    }
    let config = ConsumerConfig::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(anyhow::Error::msg)?;
    let mut consumer = Consumer::new(config);
    let assigned = Arc::new(Mutex::new(None));
    let bar = ProgressBar::new(messages);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    consumer.subscribe(&[&topic], Some(Box::new(AssignedAt(assigned.clone()))))?;
    let mut read = 0u64;
    let mut bytes = 0u64;
    let mut first_record = None;
    let mut last_record = Instant::now();
    while read < messages {
        let records = consumer.poll(Duration::from_millis(100)).await?;
        if records.is_empty() {
            if last_record.elapsed() > timeout {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        first_record.get_or_insert(last_record);
        for r in &records {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64)
                + r.key.as_ref().map_or(0, |k| k.len() as u64);
        }
        read += records.len() as u64;
        bar.set_position(read.min(messages));
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    consumer.close().await?;
    let ms = |at: Option<Instant>| {
        at.map_or("-".to_string(), |t| {
            format!("{:.1}", t.duration_since(started).as_secs_f64() * 1000.0)
        })
    };
    println!(
        "{read} records read, {:.1} records/sec ({:.2} MB/sec), {:.1} s; assigned after {} ms, \
         first record after {} ms.",
        read as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        elapsed,
        ms(*assigned.lock().unwrap()),
        ms(first_record)
    );
    if read < messages {
        bail!("only {read} of {messages} records arrived within --timeout");
    }
    Ok(())
}
