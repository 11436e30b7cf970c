//! `surety produce TOPIC`: one record per line of stdin, as `kafka-console-producer.sh`.
//! With `--key-separator SEP` each line is `key SEP value`; keyed records go to the partition
//! Kafka's default partitioner picks (murmur2), keyless ones fill one partition per request,
//! moving on to the next for the following request (sticky partitioning, KIP-480).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use surety_core::errors::Errors;
use surety_core::partitioner::partition_for_key;
use surety_core::record::BatchBuilder;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{DEFAULT_BOOTSTRAP, connect, error_name, topic_metadata, topic_name};
use crate::broker::now_ms;

/// Arguments of `surety produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Brokers to contact, host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP)]
    bootstrap_server: String,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(long)]
    key_separator: Option<String>,
    /// acks: -1 (all), 1 or 0.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
    /// Lines per produce request at most.
    #[arg(long, default_value_t = 1000)]
    batch_lines: usize,
}

/// Runs `surety produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut conn = connect(&args.bootstrap_server, "surety-producer").await?;
    let (partitions, _) = topic_metadata(&mut conn, &args.topic).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sticky = 0;
    let mut sent = 0u64;
    loop {
        let Some(first) = lines.next_line().await? else {
            break;
        };
        let mut chunk = vec![first];
        // Take whatever else is already waiting, up to a request's worth.
        while chunk.len() < args.batch_lines {
            match tokio::time::timeout(Duration::from_millis(2), lines.next_line()).await {
                Ok(Ok(Some(line))) => chunk.push(line),
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(e)) => return Err(e.into()),
            }
        }
        let now = now_ms();
        let mut builders: BTreeMap<i32, BatchBuilder> = BTreeMap::new();
        for line in &chunk {
            let (key, value) = match &args.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                    None => bail!("line has no key separator '{sep}': {line}"),
                },
                None => (None, line.as_bytes()),
            };
            let partition = key.map_or(sticky, |k| partition_for_key(k, partitions));
            builders
                .entry(partition)
                .or_insert_with(|| BatchBuilder::new(0))
                .append(now, key, Some(value), &[]);
        }
        sticky = (sticky + 1) % partitions;
        let request = ProduceRequest::default()
            .with_acks(args.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name(&args.topic))
                    .with_partition_data(
                        builders
                            .into_iter()
                            .map(|(index, b)| {
                                PartitionProduceData::default()
                                    .with_index(index)
                                    .with_records(Some(b.build()))
                            })
                            .collect(),
                    ),
            ]);
        if args.acks == 0 {
            conn.send_without_response(request).await?;
        } else {
            let response = conn.send(request).await?;
            for t in &response.responses {
                for p in &t.partition_responses {
                    if p.error_code != Errors::None.code() {
                        bail!(
                            "produce to {}-{} failed: {}",
                            args.topic,
                            p.index,
                            error_name(p.error_code)
                        );
                    }
                }
            }
        }
        sent += chunk.len() as u64;
    }
    eprintln!("Produced {sent} records to {}.", args.topic);
    Ok(())
}
