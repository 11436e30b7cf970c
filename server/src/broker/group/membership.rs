//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::group::{GroupMsg, Leaving, Protocol};

use super::caller;
use crate::broker::Broker;

fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(crate) async fn join_group(
    broker: &Broker,
    request: JoinGroupRequest,
    version: i16,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let refused = |error: Errors| {
        JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1)
            .with_protocol_name((version < 7).then(|| str("")))
            .with_member_id(request.member_id.clone())
    };
    let entry = match broker.group_for_write(&request.group_id) {
        Ok(entry) => entry,
        Err(error) => return refused(error),
    };
    let session_timeout_ms = u64::try_from(request.session_timeout_ms).unwrap_or(0);
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout_ms = if version >= 1 {
        u64::try_from(request.rebalance_timeout_ms).unwrap_or(0)
    } else {
        session_timeout_ms
    };
    let protocols = request
        .protocols
        .iter()
        .map(|p| Protocol {
            name: Arc::from(p.name.as_str()),
            metadata: p.metadata.clone(),
        })
        .collect();
    let protocol_type: Arc<str> = Arc::from(request.protocol_type.as_str());
    let caller = caller(client_id, peer, request.group_instance_id.as_deref());
    let member_name = request.member_id.to_string();
    let instance = instance_id(&request.group_instance_id);
    let answer = broker
        .groups
        .call(&entry, caller, Vec::new(), |g| GroupMsg::JoinGroup {
            correlation_id: 0,
            member_id: g.member_id(&member_name),
            group_instance_id: instance,
            require_known_member_id: version >= 4,
            protocol_type: protocol_type.clone(),
            protocols,
            session_timeout_ms,
            rebalance_timeout_ms,
        })
        .await;
    let Some(answer) = answer else {
        return refused(super::UNANSWERED);
    };
    let GroupMsg::JoinGroupResponse {
        error,
        generation_id,
        protocol_name,
        leader,
        member_id,
        members,
        ..
    } = &answer.msg
    else {
        return refused(super::UNANSWERED);
    };
    let members = members
        .iter()
        .map(|(id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str(answer.name(Some(*id), "")))
                .with_metadata(metadata.clone())
        })
        .collect();
    let protocol_name = match protocol_name {
        Some(p) => Some(str(p.to_string())),
        None if version < 7 => Some(str("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(*generation_id)
        .with_protocol_type((version >= 7 && *error == Errors::None).then(|| str(&*protocol_type)))
        .with_protocol_name(protocol_name)
        .with_leader(str(answer.name(*leader, "")))
        .with_member_id(str(answer.name(*member_id, &member_name)))
        .with_members(members)
}

pub(crate) async fn sync_group(
    broker: &Broker,
    request: SyncGroupRequest,
    version: i16,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> SyncGroupResponse {
    let refused = |error: Errors| SyncGroupResponse::default().with_error_code(error.code());
    let entry = match broker.group_for_write(&request.group_id) {
        Ok(entry) => entry,
        Err(error) => return refused(error),
    };
    // v5 names the protocol the member expects (the coordinator checks it), and is told it.
    let (group_type, group_protocol) = super::driver::Groups::inspect(&entry, |g| {
        let (t, p) = g.coordinator.protocol();
        (t.cloned(), p.cloned())
    });
    let named = |s: &Option<StrBytes>| s.as_deref().map(Arc::from);
    let expected_protocol =
        (version >= 5).then(|| (named(&request.protocol_type), named(&request.protocol_name)));
    let caller = caller(client_id, peer, request.group_instance_id.as_deref());
    let answer = broker
        .groups
        .call(&entry, caller, Vec::new(), |g| GroupMsg::SyncGroup {
            correlation_id: 0,
            member_id: g
                .member_id(&request.member_id)
                .unwrap_or(super::driver::UNKNOWN_MEMBER),
            group_instance_id: instance_id(&request.group_instance_id),
            generation_id: request.generation_id,
            expected_protocol,
            assignments: request
                .assignments
                .iter()
                .filter_map(|a| {
                    let id = g.member_id(&a.member_id)?;
                    Some((id, a.assignment.clone()))
                })
                .collect(),
        })
        .await;
    match answer.map(|a| a.msg) {
        Some(GroupMsg::SyncGroupResponse {
            error, assignment, ..
        }) => {
            let named = version >= 5 && error == Errors::None;
            SyncGroupResponse::default()
                .with_error_code(error.code())
                .with_protocol_type(named.then(|| group_type.map(|t| str(&*t))).flatten())
                .with_protocol_name(named.then(|| group_protocol.map(|p| str(&*p))).flatten())
                .with_assignment(assignment)
        }
        _ => refused(super::UNANSWERED),
    }
}

pub(crate) async fn heartbeat(
    broker: &Broker,
    request: HeartbeatRequest,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> HeartbeatResponse {
    let respond = |error: Errors| HeartbeatResponse::default().with_error_code(error.code());
    let entry = match broker.group_for_read(&request.group_id) {
        Ok(Some(entry)) => entry,
        Ok(None) => return respond(Errors::UnknownMemberId),
        Err(error) => return respond(error),
    };
    let caller = caller(client_id, peer, request.group_instance_id.as_deref());
    let answer = broker
        .groups
        .call(&entry, caller, Vec::new(), |g| GroupMsg::Heartbeat {
            correlation_id: 0,
            member_id: g
                .member_id(&request.member_id)
                .unwrap_or(super::driver::UNKNOWN_MEMBER),
            group_instance_id: instance_id(&request.group_instance_id),
            generation_id: request.generation_id,
        })
        .await;
    match answer.map(|a| a.msg) {
        Some(GroupMsg::HeartbeatResponse { error, .. }) => respond(error),
        _ => respond(super::UNANSWERED),
    }
}

pub(crate) async fn leave_group(
    broker: &Broker,
    request: LeaveGroupRequest,
    version: i16,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> LeaveGroupResponse {
    let respond = |error: Errors| LeaveGroupResponse::default().with_error_code(error.code());
    // v0-2 name one member; v3+ a batch (KIP-345), static members by instance id.
    let leaving: Vec<(String, Option<Arc<str>>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), instance_id(&m.group_instance_id)))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let entry = match broker.group_for_read(&request.group_id) {
        Ok(Some(entry)) => entry,
        Ok(None) => return respond(Errors::UnknownMemberId),
        Err(error) => return respond(error),
    };
    let caller = caller(client_id, peer, None);
    let answer = broker
        .groups
        .call(&entry, caller, Vec::new(), |g| GroupMsg::LeaveGroup {
            correlation_id: 0,
            members: leaving
                .iter()
                .map(|(m, instance)| Leaving {
                    member_id: g.member_id(m),
                    group_instance_id: instance.clone(),
                })
                .collect(),
        })
        .await;
    let Some(GroupMsg::LeaveGroupResponse { members, .. }) = answer.map(|a| a.msg) else {
        return respond(super::UNANSWERED);
    };
    if version < 3 {
        let error = members.first().copied().unwrap_or(Errors::UnknownMemberId);
        return respond(error);
    }
    // Answers come in the order asked, so each is named by the request's own string.
    let members = leaving
        .iter()
        .zip(&members)
        .zip(&request.members)
        .map(|(((name, _), error), asked)| {
            MemberResponse::default()
                .with_member_id(str(name.clone()))
                .with_group_instance_id(asked.group_instance_id.clone())
                .with_error_code(error.code())
        })
        .collect();
    respond(Errors::None).with_members(members)
}

/// A request's `group.instance.id`: a static member, unless absent or empty.
fn instance_id(id: &Option<StrBytes>) -> Option<Arc<str>> {
    id.as_deref().filter(|i| !i.is_empty()).map(Arc::from)
}
