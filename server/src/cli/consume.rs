//! `surety consume TOPIC`: print records, as `kafka-console-consumer.sh`. With `--group G`, a
//! member of consumer group G (Surety's consumer): it gets a share of the partitions, starts
//! at the group's committed offsets, and commits what it printed. Without a group: every
//! partition, from the end or with `--from-beginning` from the start, nothing committed.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest};
use surety_core::errors::Errors;
use surety_core::record::batches;

use super::{DEFAULT_BOOTSTRAP, TopicArg, connect, error_name, topic_metadata, topic_name};

/// Arguments of `surety consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    topic: TopicArg,
    /// Brokers to contact, host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP)]
    bootstrap_server: String,
    /// Start at the earliest offset rather than the end.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrives for this long (milliseconds).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print each record's key before its value.
    #[arg(long)]
    print_key: bool,
    /// What separates key and value when printing keys.
    #[arg(long, default_value = "\t")]
    key_separator: String,
    /// Consume as a member of this consumer group.
    #[arg(long)]
    group: Option<String>,
    /// A consumer setting as key=value (repeatable), e.g. auto.commit.interval.ms=1000.
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_property: Vec<String>,
}

/// Runs `surety consume`.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return run_in_group(args, group).await;
    }
    let mut bootstrap = connect(&args.bootstrap_server, "surety-consumer").await?;
    let start = if args.from_beginning { -2 } else { -1 };
    let mut leaders = Leaders::find(&mut bootstrap, args.topic.name()).await?;
    let mut positions = vec![0i64; leaders.partitions as usize];
    for (conn, partitions) in leaders.connections.iter_mut() {
        let listed = conn
            .send(
                ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![
                        ListOffsetsTopic::default()
                            .with_name(topic_name(args.topic.name()))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|&p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p)
                                            .with_timestamp(start)
                                    })
                                    .collect(),
                            ),
                    ]),
            )
            .await?;
        for t in &listed.topics {
            for p in &t.partitions {
                if p.error_code != Errors::None.code() {
                    bail!(
                        "ListOffsets {}-{}: {}",
                        args.topic.name(),
                        p.partition_index,
                        error_name(p.error_code)
                    );
                }
                positions[p.partition_index as usize] = p.offset;
            }
        }
    }
    let max = args.max_messages.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut idle_since = std::time::Instant::now();
    let stdout = std::io::stdout();
    // With several leaders each is asked in turn, so none may hold the others up for long.
    let max_wait = if leaders.connections.len() > 1 {
        100
    } else {
        500
    };
    while printed < max {
        let before = printed;
        let mut moved = false;
        for (conn, partitions) in leaders.connections.iter_mut() {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait)
                .with_min_bytes(1)
                .with_max_bytes(50 * 1024 * 1024)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(topic_name(args.topic.name()))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&p| {
                                    FetchPartition::default()
                                        .with_partition(p)
                                        .with_fetch_offset(positions[p as usize])
                                        .with_partition_max_bytes(1024 * 1024)
                                })
                                .collect(),
                        ),
                ]);
            let response = match conn.send(request).await {
                Ok(response) => response,
                Err(_) => {
                    // The leader went away: find the new ones.
                    moved = true;
                    break;
                }
            };
            if response.error_code != Errors::None.code() {
                bail!("Fetch: {}", error_name(response.error_code));
            }
            let mut out = stdout.lock();
            for t in response.responses {
                for p in t.partitions {
                    if p.error_code == Errors::NotLeaderOrFollower.code()
                        || p.error_code == Errors::FencedLeaderEpoch.code()
                        || p.error_code == Errors::LeaderNotAvailable.code()
                    {
                        moved = true;
                        continue;
                    }
                    if p.error_code != Errors::None.code() {
                        bail!(
                            "Fetch {}-{}: {}",
                            args.topic.name(),
                            p.partition_index,
                            error_name(p.error_code)
                        );
                    }
                    let position = &mut positions[p.partition_index as usize];
                    for batch in batches(p.records.unwrap_or_default()) {
                        let batch = batch?;
                        for record in batch.records()? {
                            let record = record?;
                            if record.offset < *position || printed >= max {
                                continue;
                            }
                            print_record(
                                &mut out,
                                &args,
                                record.key.as_deref(),
                                record.value.as_deref(),
                            )?;
                            printed += 1;
                        }
                        *position = (*position).max(batch.header().next_offset());
                    }
                }
            }
            out.flush()?;
        }
        if moved {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            bootstrap = connect(&args.bootstrap_server, "surety-consumer").await?;
            leaders = Leaders::find(&mut bootstrap, args.topic.name()).await?;
        }
        if printed > before {
            idle_since = std::time::Instant::now();
        } else if args
            .timeout_ms
            .is_some_and(|t| idle_since.elapsed().as_millis() as u64 >= t)
        {
            break;
        }
    }
    eprintln!("Processed a total of {printed} messages");
    Ok(())
}

/// A connection to each of the topic's partition leaders, with the partitions it leads: in a
/// cluster each partition is read from its leader, as Kafka's console consumer does.
struct Leaders {
    partitions: i32,
    connections: Vec<(crate::client::Connection, Vec<i32>)>,
}

impl Leaders {
    async fn find(
        bootstrap: &mut crate::client::Connection,
        topic: &str,
    ) -> anyhow::Result<Leaders> {
        let (partitions, metadata) = topic_metadata(bootstrap, topic).await?;
        let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
        for t in &metadata.topics {
            for p in &t.partitions {
                by_leader
                    .entry(p.leader_id.0)
                    .or_default()
                    .push(p.partition_index);
            }
        }
        let mut connections = Vec::new();
        for (leader, mut led) in by_leader {
            let Some(broker) = metadata.brokers.iter().find(|b| b.node_id.0 == leader) else {
                bail!("{topic}: partitions {led:?} have no leader now; try again");
            };
            led.sort_unstable();
            let address = format!("{}:{}", &*broker.host, broker.port);
            let conn = crate::client::Connection::connect(&address, "surety-consumer").await?;
            connections.push((conn, led));
        }
        Ok(Leaders {
            partitions,
            connections,
        })
    }
}

/// `--group`: Kafka's console consumer in a group (`--from-beginning` only matters for a group
/// without committed offsets, as `auto.offset.reset=earliest`).
/// One record as kafka-console-consumer prints it: the value (and with `print.key` the key and
/// the separator first), a missing one as `null`.
fn print_record(
    out: &mut impl Write,
    args: &ConsumeArgs,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> std::io::Result<()> {
    if args.print_key {
        out.write_all(key.unwrap_or(b"null"))?;
        out.write_all(args.key_separator.as_bytes())?;
    }
    out.write_all(value.unwrap_or(b"null"))?;
    out.write_all(b"\n")
}

async fn run_in_group(args: ConsumeArgs, group: String) -> anyhow::Result<()> {
    use crate::consumer::{Consumer, ConsumerConfig};

    let reset = if args.from_beginning {
        "earliest"
    } else {
        "latest"
    };
    let mut pairs = vec![
        (
            "bootstrap.servers".to_string(),
            args.bootstrap_server.clone(),
        ),
        ("group.id".to_string(), group),
        ("auto.offset.reset".to_string(), reset.to_string()),
        (
            "client.id".to_string(),
            "surety-console-consumer".to_string(),
        ),
    ];
    for p in &args.consumer_property {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--consumer-property {p}: expected key=value"))?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let config = ConsumerConfig::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut consumer = Consumer::new(config);
    consumer.subscribe(&[args.topic.name()], None)?;
    let max = args.max_messages.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut idle_since = std::time::Instant::now();
    let stdout = std::io::stdout();
    while printed < max {
        let records = consumer.poll(std::time::Duration::from_millis(200)).await?;
        let mut out = stdout.lock();
        for record in &records {
            if printed >= max {
                // Not printed: not consumed. Rewind so the commit on close leaves it.
                let tp = surety_core::group::TopicPartition {
                    topic: record.topic.clone(),
                    partition: record.partition,
                };
                if consumer.position(&tp).is_some_and(|p| p > record.offset) {
                    consumer.seek(&tp, record.offset);
                }
                continue;
            }
            print_record(
                &mut out,
                &args,
                record.key.as_deref(),
                record.value.as_deref(),
            )?;
            printed += 1;
        }
        out.flush()?;
        if !records.is_empty() {
            idle_since = std::time::Instant::now();
        } else if args
            .timeout_ms
            .is_some_and(|t| idle_since.elapsed().as_millis() as u64 >= t)
        {
            break;
        }
    }
    consumer.close().await?;
    eprintln!("Processed a total of {printed} messages");
    Ok(())
}
