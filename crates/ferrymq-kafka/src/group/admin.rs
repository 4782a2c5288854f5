//! ListGroups, DescribeGroups and DeleteGroups on the coordinator's groups.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};

use super::{sb, Coordinator, GroupState};

/// Operations reported when DescribeGroups asks for them: READ, DELETE, DESCRIBE (no ACLs
/// exist, so every client may do all three).
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

impl Coordinator {
    /// ListGroups (v4+ states filter, v5+ types filter; all groups are "classic").
    pub fn list_groups(&self, version: i16, r: &ListGroupsRequest) -> ListGroupsResponse {
        let mut ids: Vec<&String> = self.groups.keys().collect();
        ids.sort();
        let mut groups = Vec::new();
        for id in ids {
            let g = &self.groups[id];
            if g.state == GroupState::Dead {
                continue;
            }
            if version >= 4
                && !r.states_filter.is_empty()
                && !r
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(g.state.name()))
            {
                continue;
            }
            if version >= 5
                && !r.types_filter.is_empty()
                && !r
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
            {
                continue;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(sb(id)))
                .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or_default()));
            if version >= 4 {
                listed.group_state = sb(g.state.name());
            }
            if version >= 5 {
                listed.group_type = sb("classic");
            }
            groups.push(listed);
        }
        ListGroupsResponse::default().with_groups(groups)
    }

    /// DescribeGroups. A group that does not exist is reported as Kafka does: state "Dead"
    /// before v6, GROUP_ID_NOT_FOUND from v6 on.
    pub fn describe_groups(
        &self,
        version: i16,
        r: &DescribeGroupsRequest,
    ) -> DescribeGroupsResponse {
        let ops = if version >= 3 && r.include_authorized_operations {
            GROUP_OPERATIONS
        } else {
            i32::MIN
        };
        let groups = r
            .groups
            .iter()
            .map(|gid| {
                let id = gid.0.as_str();
                let base = DescribedGroup::default()
                    .with_group_id(gid.clone())
                    .with_authorized_operations(ops);
                let Some(g) = self.groups.get(id).filter(|g| g.state != GroupState::Dead) else {
                    let mut d = base.with_group_state(sb(GroupState::Dead.name()));
                    if version >= 6 {
                        d.error_code = ResponseError::GroupIdNotFound.code();
                        d.error_message = Some(sb(&format!("Group {id} not found.")));
                    }
                    return d;
                };
                let stable = g.state == GroupState::Stable;
                let protocol = g.protocol.clone().unwrap_or_default();
                let members = g
                    .members_in_join_order()
                    .into_iter()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default()
                            .with_member_id(sb(&m.id))
                            .with_client_id(sb(&m.client.client_id))
                            .with_client_host(sb(&m.client.client_host));
                        if version >= 4 {
                            d.group_instance_id = m.instance_id.as_deref().map(sb);
                        }
                        if stable {
                            d.member_metadata = m.metadata(&protocol);
                            d.member_assignment = m.assignment.clone();
                        }
                        d
                    })
                    .collect();
                base.with_group_state(sb(g.state.name()))
                    .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or_default()))
                    .with_protocol_data(sb(if stable { &protocol } else { "" }))
                    .with_members(members)
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// DeleteGroups. Returns the response and the groups deleted (their offsets are gone
    /// and must be journaled as deleted before the response is sent).
    pub fn delete_groups(
        &mut self,
        version: i16,
        r: &DeleteGroupsRequest,
    ) -> (DeleteGroupsResponse, Vec<String>) {
        let _ = version;
        let mut deleted = Vec::new();
        let results = r
            .groups_names
            .iter()
            .map(|gid| {
                let id = gid.0.as_str();
                let e = match self.groups.get(id).map(|g| g.state) {
                    None | Some(GroupState::Dead) => Some(ResponseError::GroupIdNotFound),
                    Some(GroupState::Empty) => {
                        self.groups.remove(id);
                        deleted.push(id.to_owned());
                        None
                    }
                    Some(_) => Some(ResponseError::NonEmptyGroup),
                };
                DeletableGroupResult::default()
                    .with_group_id(gid.clone())
                    .with_error_code(e.map_or(0, |e| e.code()))
            })
            .collect();
        (
            DeleteGroupsResponse::default().with_results(results),
            deleted,
        )
    }
}
