//! `surety groups list|describe|delete|reset-offsets`, as `kafka-consumer-groups.sh`.
//!
//! Output is for both people and scripts: stdout holds only data (group ids, or a header line
//! and whitespace-separated rows with `-` for anything unknown), while what describes the run
//! goes to stderr: `describe` reports the group's state there ("Consumer group 'G' is Stable
//! with 2 members."), and `reset-offsets` without `--execute` says it was a dry run. With
//! `--execute`, `reset-offsets` prints its table only once the commit has succeeded, so a
//! table on stdout always describes offsets that are (or, in a dry run, would be) committed.
//!
//! Group requests go to the bootstrap connection after FindCoordinator has confirmed the group
//! has a coordinator: like the other tools, which send ListOffsets and Fetch there too, these
//! are written for one broker, which coordinates every group and leads every partition.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use surety_core::errors::Errors;
use surety_core::group::consumer_protocol::Assignment;

use super::{DEFAULT_BOOTSTRAP, connect, error_name, topic_metadata, topic_name};
use crate::client::Connection;

/// Arguments of `surety groups`.
#[derive(Args)]
pub struct GroupsArgs {
    /// Brokers to contact, host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, global = true)]
    bootstrap_server: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// List group ids, one a line.
    List {
        /// Print each group's state after its id (tab separated); with STATES (comma
        /// separated, any case), list only groups in one of them.
        #[arg(long, value_name = "STATES", num_args = 0..=1, default_missing_value = "")]
        state: Option<String>,
    },
    /// Show a group's committed offsets, lag and partition owners.
    Describe {
        /// The group.id its consumers are configured with.
        group: String,
    },
    /// Delete a group and its committed offsets (refused while it has members).
    Delete {
        /// The group.id its consumers are configured with.
        group: String,
    },
    /// Move a group's committed offsets on one topic; only while the group has no members,
    /// since running consumers would commit over them.
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
struct ResetArgs {
    /// The group.id its consumers are configured with.
    group: String,
    /// Every partition of this topic is reset.
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    target: ResetTarget,
    /// Commit the new offsets; without it only print them, so a mistake costs nothing.
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Only print the new offsets (also what happens without --execute; accepted because
    /// kafka-consumer-groups scripts pass it).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// Reset to each partition's log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// Reset to each partition's log end offset, skipping everything not yet consumed.
    #[arg(long)]
    to_latest: bool,
    /// Reset to this offset, moved into each partition's [earliest, latest] range as Kafka
    /// does, so the group never points at records that do not exist.
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    to_offset: Option<i64>,
}

/// ListOffsets' timestamp for the log start offset.
const EARLIEST: i64 = -2;
/// ListOffsets' timestamp for the log end offset (the high watermark).
const LATEST: i64 = -1;

/// How long a group request is sent again while its coordinator is still reading the group back
/// after a start (`COORDINATOR_LOAD_IN_PROGRESS`), and how often: as Kafka's AdminClient
/// retries it within `default.api.timeout.ms`, backing off `retry.backoff.ms`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
const LOAD_BACKOFF: Duration = Duration::from_millis(100);

/// Runs `surety groups`.
pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let mut conn = connect(&args.bootstrap_server, "surety-groups").await?;
    match args.action {
        Action::List { state } => list(&mut conn, state).await,
        Action::Describe { group } => describe(&mut conn, &group).await,
        Action::Delete { group } => delete(&mut conn, &group).await,
        Action::ResetOffsets(reset) => reset_offsets(&mut conn, reset).await,
    }
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group_id(group: &str) -> GroupId {
    GroupId(str(group))
}

/// Sends a group request at `version`, again while `loading` says the answer is
/// `COORDINATOR_LOAD_IN_PROGRESS`; the last answer once it is not, or once that lasts too long.
async fn send_loaded<R>(
    conn: &mut Connection,
    request: R,
    version: i16,
    loading: impl Fn(&R::Response) -> bool,
) -> anyhow::Result<R::Response>
where
    R: Request + Encodable + HeaderVersion + Clone,
    R::Response: Decodable + HeaderVersion,
{
    let deadline = Instant::now() + LOAD_TIMEOUT;
    loop {
        let response = conn.send_at(request.clone(), version).await?;
        if !loading(&response) || Instant::now() >= deadline {
            return Ok(response);
        }
        tokio::time::sleep(LOAD_BACKOFF).await;
    }
}

/// Whether `code` is `COORDINATOR_LOAD_IN_PROGRESS`.
fn is_loading(code: i16) -> bool {
    code == Errors::CoordinatorLoadInProgress.code()
}

/// Fails unless the cluster names a coordinator for `group`: a group request sent without one
/// would fail later with a less telling error.
async fn find_coordinator(conn: &mut Connection, group: &str) -> anyhow::Result<()> {
    let version = conn.version_of::<FindCoordinatorRequest>()?;
    let request = FindCoordinatorRequest::default();
    let (error, message) = if version >= 4 {
        let response = conn
            .send_at(request.with_coordinator_keys(vec![str(group)]), version)
            .await
            .context("FindCoordinator")?;
        let coordinator = response
            .coordinators
            .into_iter()
            .next()
            .context("FindCoordinator answered without a coordinator")?;
        (coordinator.error_code, coordinator.error_message)
    } else {
        let response = conn
            .send_at(request.with_key(str(group)), version)
            .await
            .context("FindCoordinator")?;
        (response.error_code, response.error_message)
    };
    if error != Errors::None.code() {
        bail!(
            "no coordinator for group '{group}': {}{}",
            error_name(error),
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        );
    }
    Ok(())
}

async fn list(conn: &mut Connection, state: Option<String>) -> anyhow::Result<()> {
    let version = conn.version_of::<ListGroupsRequest>()?;
    let response = send_loaded(conn, ListGroupsRequest::default(), version, |r| {
        is_loading(r.error_code)
    })
    .await
    .context("ListGroups")?;
    if response.error_code != Errors::None.code() {
        bail!("cannot list groups: {}", error_name(response.error_code));
    }
    let mut groups: Vec<(String, String)> = response
        .groups
        .into_iter()
        .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
        .collect();
    groups.sort();
    let Some(filter) = state else {
        for (group, _) in groups {
            println!("{group}");
        }
        return Ok(());
    };
    if version < 4 {
        // ListGroups reports states from version 4 on; before, DescribeGroups does.
        let request = DescribeGroupsRequest::default()
            .with_groups(groups.iter().map(|(g, _)| group_id(g)).collect());
        let version = conn.version_of::<DescribeGroupsRequest>()?;
        let described = send_loaded(conn, request, version, |r| {
            r.groups.iter().any(|g| is_loading(g.error_code))
        })
        .await
        .context("DescribeGroups")?;
        for (group, state) in &mut groups {
            if let Some(d) = described
                .groups
                .iter()
                .find(|d| d.group_id.as_str() == group)
            {
                *state = d.group_state.to_string();
            }
        }
    }
    let wanted: BTreeSet<String> = filter
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for (group, state) in groups {
        if wanted.is_empty() || wanted.contains(&state.to_lowercase()) {
            println!("{group}\t{state}");
        }
    }
    Ok(())
}

/// What `describe` learned of one partition; each `None` prints as `-`.
#[derive(Default)]
struct Row {
    committed: Option<i64>,
    log_end: Option<i64>,
    /// Member id, client host and client id of the member it is assigned to.
    owner: Option<(String, String, String)>,
}

async fn describe(conn: &mut Connection, group: &str) -> anyhow::Result<()> {
    find_coordinator(conn, group).await?;
    let described = describe_group(conn, group).await?;
    let state = described.group_state.to_string();
    // Kafka answers Dead without an error for a group it does not know.
    if state == "Dead" {
        bail!("Consumer group '{group}' does not exist.");
    }
    eprintln!(
        "Consumer group '{group}' is {state} with {} member{}.",
        described.members.len(),
        if described.members.len() == 1 {
            ""
        } else {
            "s"
        }
    );

    let mut rows: BTreeMap<(String, i32), Row> = BTreeMap::new();
    for (topic, partition, offset) in committed_offsets(conn, group).await? {
        rows.entry((topic, partition)).or_default().committed = Some(offset);
    }
    // Only the consumer protocol's assignments can be read; other protocols (Connect, say)
    // are opaque bytes to anyone but their own clients.
    let consumer = described.protocol_type.is_empty() || &*described.protocol_type == "consumer";
    let members = if consumer {
        &described.members[..]
    } else {
        &[]
    };
    for member in members {
        let assignment = match Assignment::decode(&member.member_assignment) {
            Ok(a) => a,
            Err(e) => {
                eprintln!(
                    "member {}: {e}; its partitions are not shown",
                    member.member_id
                );
                continue;
            }
        };
        let or_dash = |s: &StrBytes| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        for tp in assignment.partitions {
            rows.entry((tp.topic.to_string(), tp.partition))
                .or_default()
                .owner = Some((
                or_dash(&member.member_id),
                or_dash(&member.client_host),
                or_dash(&member.client_id),
            ));
        }
    }

    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in rows.keys() {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    // A partition whose end cannot be read shows `-` rather than failing the whole report.
    for ((topic, partition), result) in list_offsets(conn, &by_topic, LATEST).await? {
        if let (Ok(offset), Some(row)) = (result, rows.get_mut(&(topic, partition))) {
            row.log_end = Some(offset);
        }
    }

    let dash = || "-".to_string();
    let mut table = vec![
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for ((topic, partition), row) in rows {
        let lag = match (row.committed, row.log_end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => dash(),
        };
        let (member, host, client) = row.owner.unwrap_or_else(|| (dash(), dash(), dash()));
        table.push(vec![
            group.to_string(),
            topic,
            partition.to_string(),
            row.committed.map_or_else(dash, |o| o.to_string()),
            row.log_end.map_or_else(dash, |o| o.to_string()),
            lag,
            member,
            host,
            client,
        ]);
    }
    print_table(&table);
    Ok(())
}

async fn describe_group(conn: &mut Connection, group: &str) -> anyhow::Result<DescribedGroup> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let version = conn.version_of::<DescribeGroupsRequest>()?;
    let response = send_loaded(conn, request, version, |r| {
        r.groups.iter().any(|g| is_loading(g.error_code))
    })
    .await
    .context("DescribeGroups")?;
    let described = response
        .groups
        .into_iter()
        .next()
        .context("DescribeGroups answered without the group")?;
    if described.error_code != Errors::None.code() {
        bail!(
            "cannot describe group '{group}': {}",
            error_name(described.error_code)
        );
    }
    Ok(described)
}

/// The group's committed offsets as (topic, partition, offset), for every partition it has
/// committed (a null topic list asks for all, from OffsetFetch version 2 on).
async fn committed_offsets(
    conn: &mut Connection,
    group: &str,
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let version = conn.version_of::<OffsetFetchRequest>()?;
    let fail = |code: i16| {
        anyhow::anyhow!(
            "cannot fetch offsets of group '{group}': {}",
            error_name(code)
        )
    };
    let mut found = Vec::new();
    if version >= 8 {
        let request = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None),
        ]);
        let response = send_loaded(conn, request, version, |r| {
            r.groups.iter().any(|g| is_loading(g.error_code))
        })
        .await
        .context("OffsetFetch")?;
        for g in response.groups {
            if g.error_code != Errors::None.code() {
                return Err(fail(g.error_code));
            }
            for t in g.topics {
                for p in t.partitions {
                    if p.error_code != Errors::None.code() {
                        return Err(fail(p.error_code));
                    }
                    found.push((t.name.to_string(), p.partition_index, p.committed_offset));
                }
            }
        }
    } else if version >= 2 {
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None);
        let response = send_loaded(conn, request, version, |r| is_loading(r.error_code))
            .await
            .context("OffsetFetch")?;
        if response.error_code != Errors::None.code() {
            return Err(fail(response.error_code));
        }
        for t in response.topics {
            for p in t.partitions {
                if p.error_code != Errors::None.code() {
                    return Err(fail(p.error_code));
                }
                found.push((t.name.to_string(), p.partition_index, p.committed_offset));
            }
        }
    } else {
        bail!("the broker's OffsetFetch cannot list a group's offsets (version {version} < 2)");
    }
    // -1 is OffsetFetch's "nothing committed".
    found.retain(|(_, _, offset)| *offset >= 0);
    Ok(found)
}

/// ListOffsets at `timestamp` for the given partitions: each partition's offset, or its error.
async fn list_offsets(
    conn: &mut Connection,
    partitions: &BTreeMap<String, Vec<i32>>,
    timestamp: i64,
) -> anyhow::Result<Vec<((String, i32), Result<i64, i16>)>> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let topics = partitions
        .iter()
        .map(|(topic, ps)| {
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    ps.iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )
        })
        .collect();
    let response = conn
        .send(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(topics),
        )
        .await
        .context("ListOffsets")?;
    Ok(response
        .topics
        .into_iter()
        .flat_map(|t| {
            let topic = t.name.to_string();
            t.partitions.into_iter().map(move |p| {
                let result = if p.error_code == Errors::None.code() {
                    Ok(p.offset)
                } else {
                    Err(p.error_code)
                };
                ((topic.clone(), p.partition_index), result)
            })
        })
        .collect())
}

async fn delete(conn: &mut Connection, group: &str) -> anyhow::Result<()> {
    find_coordinator(conn, group).await?;
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let version = conn.version_of::<DeleteGroupsRequest>()?;
    let response = send_loaded(conn, request, version, |r| {
        r.results.iter().any(|g| is_loading(g.error_code))
    })
    .await
    .context("DeleteGroups")?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.group_id.as_str() == group)
        .context("DeleteGroups answered without the group")?;
    if result.error_code != Errors::None.code() {
        bail!(
            "Deletion of consumer group '{group}' failed: {}",
            error_name(result.error_code)
        );
    }
    println!("Deletion of requested consumer groups ('{group}') was successful.");
    Ok(())
}

async fn reset_offsets(conn: &mut Connection, args: ResetArgs) -> anyhow::Result<()> {
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    find_coordinator(conn, group).await?;
    let (count, _) = topic_metadata(conn, topic).await?;
    let partitions: BTreeMap<String, Vec<i32>> =
        BTreeMap::from([(topic.to_string(), (0..count).collect())]);
    let bounds = |listed: Vec<((String, i32), Result<i64, i16>)>| {
        listed
            .into_iter()
            .map(|((_, p), result)| match result {
                Ok(offset) => Ok((p, offset)),
                Err(code) => Err(anyhow::anyhow!(
                    "ListOffsets {topic}-{p}: {}",
                    error_name(code)
                )),
            })
            .collect::<anyhow::Result<BTreeMap<i32, i64>>>()
    };
    let earliest = bounds(list_offsets(conn, &partitions, EARLIEST).await?)?;
    let latest = bounds(list_offsets(conn, &partitions, LATEST).await?)?;
    let mut new_offsets = Vec::new();
    for p in 0..count {
        let (Some(&low), Some(&high)) = (earliest.get(&p), latest.get(&p)) else {
            bail!("ListOffsets answered nothing for {topic}-{p}");
        };
        let target = &args.target;
        let offset = if target.to_earliest {
            low
        } else if target.to_latest {
            high
        } else {
            let wanted = target.to_offset.context("no reset target")?;
            wanted.clamp(low, high.max(low))
        };
        new_offsets.push((p, offset));
    }

    if !args.execute {
        print_table(&table(group, topic, &new_offsets));
        eprintln!("Dry run: no offsets were committed (add --execute to commit them).");
        return Ok(());
    }
    // A "simple" commit (no generation, no member), which a coordinator accepts only for a
    // group without members: offsets a running consumer would soon commit over are refused.
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    new_offsets
                        .iter()
                        .map(|&(p, offset)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                        })
                        .collect(),
                ),
        ]);
    let version = conn.version_of::<OffsetCommitRequest>()?;
    let response = send_loaded(conn, request, version, |r| {
        r.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| is_loading(p.error_code))
    })
    .await
    .context("OffsetCommit")?;
    for t in response.topics {
        for p in t.partitions {
            if p.error_code == Errors::None.code() {
                continue;
            }
            let hint = if p.error_code == Errors::UnknownMemberId.code() {
                " (the group has active members: stop its consumers first)"
            } else {
                ""
            };
            bail!(
                "cannot reset offsets of group '{group}' on {}-{}: {}{hint}",
                &*t.name,
                p.partition_index,
                error_name(p.error_code)
            );
        }
    }
    print_table(&table(group, topic, &new_offsets));
    Ok(())
}

/// `reset-offsets`' report, printed only once it is true: after the commit, or for a dry run.
fn table(group: &str, topic: &str, new_offsets: &[(i32, i64)]) -> Vec<Vec<String>> {
    let mut table = vec![
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
            .map(String::from)
            .to_vec(),
    ];
    for (p, offset) in new_offsets {
        table.push(vec![
            group.to_string(),
            topic.to_string(),
            p.to_string(),
            offset.to_string(),
        ]);
    }
    table
}

/// Prints rows with columns padded to a common width, so the output reads as a table and
/// still splits on whitespace.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{line}");
    }
}
