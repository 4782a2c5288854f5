//! JoinGroup and SyncGroup answers as Kafka builds them.

use super::*;

/// A JoinGroup error answer as Kafka builds it (`JoinGroupResult(memberId, error)`).
pub fn join_error(version: i16, member_id: &str, e: ResponseError) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(e.code())
        .with_generation_id(-1)
        // Nullable only from v7; older versions need an empty string.
        .with_protocol_name(if version >= 7 { None } else { Some(sb("")) })
        .with_leader(sb(""))
        .with_member_id(sb(member_id))
}

pub(super) fn join_success(
    group: &Group,
    member_id: &str,
    version: i16,
    is_leader: bool,
    skip_assignment: bool,
) -> JoinGroupResponse {
    let protocol = group.protocol.clone().unwrap_or_default();
    let members = if is_leader {
        group
            .members_in_join_order()
            .into_iter()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(sb(&m.id))
                    .with_group_instance_id(if version >= 5 {
                        m.instance_id.as_deref().map(sb)
                    } else {
                        None
                    })
                    .with_metadata(m.metadata(&protocol))
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinGroupResponse::default()
        .with_generation_id(group.generation)
        .with_protocol_type(if version >= 7 {
            group.protocol_type.as_deref().map(sb)
        } else {
            None
        })
        .with_protocol_name(Some(sb(&protocol)))
        .with_leader(sb(group.leader.as_deref().unwrap_or_default()))
        .with_skip_assignment(skip_assignment && version >= 9)
        .with_member_id(sb(member_id))
        .with_members(members)
}

pub fn sync_error(version: i16, e: ResponseError) -> SyncGroupResponse {
    let _ = version;
    SyncGroupResponse::default().with_error_code(e.code())
}

pub(super) fn sync_success(group: &Group, version: i16, assignment: Bytes) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default().with_assignment(assignment);
    if version >= 5 {
        resp.protocol_type = group.protocol_type.as_deref().map(sb);
        resp.protocol_name = group.protocol.as_deref().map(sb);
    }
    resp
}
