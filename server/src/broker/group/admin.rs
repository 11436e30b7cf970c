//! FindCoordinator, DescribeGroups, ListGroups and DeleteGroups.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::group::{GroupMsg, GroupState};

use super::driver::Groups;
use crate::broker::{Broker, message_if};

/// `key_type` of a consumer group (1 is a transactional id, which this broker does not
/// coordinate).
const GROUP_KEY: i8 = 0;

fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The broker coordinating `key` (its id, host and port), else the error to give: on a single
/// node this broker if it leads the group's partition; in a cluster that partition's leader.
fn coordinator_for(
    broker: &Broker,
    key: &str,
    key_type: i8,
) -> Result<(BrokerId, StrBytes, i32), (Errors, String)> {
    if key_type != GROUP_KEY {
        return Err((
            Errors::CoordinatorNotAvailable,
            "transactions are not supported".to_string(),
        ));
    }
    let found = match &broker.cluster {
        Some(link) => broker
            .cluster_coordinator(link, key)
            .map(|(node, host, port)| (BrokerId(node), str(host), i32::from(port))),
        None => broker.coordinator_partition(key).map(|_| {
            let config = broker.config();
            (
                BrokerId(config.node_id),
                str(config.advertised.0.clone()),
                i32::from(config.advertised.1),
            )
        }),
    };
    found.map_err(|e| (e, format!("no coordinator for group {key}: {}", e.name())))
}

pub(crate) fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        // Batched keys (KIP-699).
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = coordinator_for(broker, &key, request.key_type);
                let c = Coordinator::default().with_key(key);
                match found {
                    Ok((node, host, port)) => c.with_node_id(node).with_host(host).with_port(port),
                    Err((error, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(error.code())
                        .with_error_message(Some(str(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match coordinator_for(broker, &request.key, request.key_type) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port)
            .with_error_message(message_if(version, 1, "NONE".to_string())),
        Err((error, message)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(message_if(version, 1, message)),
    }
}

pub(crate) fn describe_groups(
    broker: &Broker,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|name| describe(broker, name, version))
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

fn describe(broker: &Broker, name: GroupId, version: i16) -> DescribedGroup {
    let described = DescribedGroup::default().with_group_id(name.clone());
    let entry = match broker.group_for_read(&name) {
        Ok(entry) => entry,
        Err(error) => return described.with_error_code(error.code()),
    };
    // A group this broker does not hold is Kafka's Dead group with no error.
    let Some(entry) = entry else {
        return described.with_group_state(str(GroupState::Dead.name()));
    };
    Groups::inspect(&entry, |g| {
        let c = &g.coordinator;
        let (_, protocol) = c.protocol();
        let stable = c.state() == GroupState::Stable;
        let members = c
            .members()
            .iter()
            .map(|(id, meta)| {
                let info = g.member(*id);
                let mut member = DescribedGroupMember::default()
                    .with_member_id(str(info.map(|i| i.member_id.clone()).unwrap_or_default()))
                    .with_client_id(str(info
                        .map(|i| i.caller.client_id.clone())
                        .unwrap_or_default()))
                    .with_client_host(str(info
                        .map(|i| i.caller.client_host.clone())
                        .unwrap_or_default()));
                if version >= 4 {
                    member = member.with_group_instance_id(
                        info.and_then(|i| i.caller.group_instance_id.clone())
                            .map(str),
                    );
                }
                // Kafka shows subscriptions and assignments of a stable group only.
                if stable && let Some(p) = protocol {
                    member = member
                        .with_member_metadata(meta.metadata_for(p))
                        .with_member_assignment(meta.assignment.clone());
                }
                member
            })
            .collect();
        described
            .with_group_state(str(c.state().name()))
            .with_protocol_type(str(g.protocol_type()))
            .with_protocol_data(str(protocol.map(|p| p.to_string()).unwrap_or_default()))
            .with_members(members)
    })
}

pub(crate) fn list_groups(
    broker: &Broker,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    // Kafka's answer while any partition is loading: the groups read so far, and an error
    // that tells the client to ask again.
    let error = if broker.load_groups() {
        Errors::None
    } else {
        Errors::CoordinatorLoadInProgress
    };
    let filter: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = broker
        .groups
        .all()
        .into_iter()
        .filter_map(|entry| {
            Groups::inspect(&entry, |g| {
                let state = g.coordinator.state();
                if state == GroupState::Dead || g.coordinator.is_empty() {
                    return None;
                }
                if !filter.is_empty() && !filter.contains(&state.name().to_lowercase()) {
                    return None;
                }
                let listed = ListedGroup::default()
                    .with_group_id(GroupId(str(g.name.clone())))
                    .with_protocol_type(str(g.protocol_type()));
                Some(if version >= 4 {
                    listed.with_group_state(str(state.name()))
                } else {
                    listed
                })
            })
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(error.code())
        .with_groups(groups)
}

pub(crate) async fn delete_groups(
    broker: &Broker,
    request: DeleteGroupsRequest,
    client_id: Option<&str>,
    peer: std::net::SocketAddr,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for name in request.groups_names {
        let error = match broker.group_for_read(&name) {
            Err(error) => error,
            Ok(None) => Errors::GroupIdNotFound,
            Ok(Some(entry)) => {
                let caller = super::caller(client_id, peer, None);
                let answer = broker
                    .groups
                    .call(&entry, caller, Vec::new(), |_| GroupMsg::DeleteGroup {
                        correlation_id: 0,
                    })
                    .await;
                match answer.map(|a| a.msg) {
                    Some(GroupMsg::DeleteGroupResponse { error, .. }) => {
                        if error == Errors::None {
                            broker.groups.remove_if_dead(&name);
                            tracing::info!("deleted group {}", &*name);
                        }
                        error
                    }
                    _ => super::UNANSWERED,
                }
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(name)
                .with_error_code(error.code()),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
