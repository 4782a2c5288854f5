//! Kafka's ACL admin APIs: CreateAcls (30), DescribeAcls (29), DeleteAcls (31), v1–3
//! (Kafka 4's range), on the connection's vhost's bindings in the auth store. Only
//! administrators (the `administrator` tag, Kafka's super users) may use them; others get
//! CLUSTER_AUTHORIZATION_FAILED (Kafka asks ALTER / DESCRIBE on the cluster). Bindings
//! and filters are validated as Kafka does (`ferrymq_auth::acl`): INVALID_REQUEST with
//! Kafka's message, per binding or per filter. Writes are durable before the answer and
//! apply to every connection's next request (the store version moves).

use ferrymq_auth::{
    AclBinding, AclFilter, AclOperation, AclPermission, AuthStore, PatternType, ResourceType,
};
use ferrymq_kafka::kafka_protocol::messages::create_acls_response::AclCreationResult;
use ferrymq_kafka::kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use ferrymq_kafka::kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource,
};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::ResponseError;
use tracing::warn;

use super::authz::Authz;
use super::handlers::s;

const DENIED: &str = "Cluster authorization failed.";
const INVALID: i16 = 42; // INVALID_REQUEST
const SERVER_ERROR: i16 = -1; // UNKNOWN_SERVER_ERROR

fn denied() -> (i16, Option<&'static str>) {
    (
        ResponseError::ClusterAuthorizationFailed.code(),
        Some(DENIED),
    )
}

/// CreateAcls: one result per creation, in order.
pub(super) fn create_acls(authz: &mut Authz, req: CreateAclsRequest) -> CreateAclsResponse {
    let resp = CreateAclsResponse::default();
    let result = |code: i16, msg: Option<String>| {
        AclCreationResult::default()
            .with_error_code(code)
            .with_error_message(msg.map(|m| s(&m)))
    };
    if !authz.view().cluster() {
        let (code, msg) = denied();
        return resp.with_results(
            req.creations
                .iter()
                .map(|_| result(code, msg.map(str::to_owned)))
                .collect(),
        );
    }
    let checked: Vec<Result<AclBinding, String>> = req
        .creations
        .into_iter()
        .map(|c| {
            let b = AclBinding {
                resource_type: ResourceType::from_code(c.resource_type),
                resource_name: c.resource_name.to_string(),
                pattern_type: PatternType::from_code(c.resource_pattern_type),
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: AclOperation::from_code(c.operation),
                permission: AclPermission::from_code(c.permission_type),
            };
            b.validate().map(|()| b)
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|r| r.clone().ok()).collect();
    let store = authz.store().clone();
    let vhost = authz.vhost().to_owned();
    let written = crate::blocking::run(|| store.create_acls(&vhost, &valid));
    if let Err(e) = &written {
        warn!(error = %e, vhost, "could not store Kafka ACLs");
    }
    resp.with_results(
        checked
            .into_iter()
            .map(|r| match (r, &written) {
                (Err(msg), _) => result(INVALID, Some(msg)),
                (Ok(_), Ok(())) => result(0, None),
                (Ok(_), Err(e)) => result(SERVER_ERROR, Some(e.to_string())),
            })
            .collect(),
    )
}

fn filter_of(
    resource_type: i8,
    name: Option<String>,
    pattern: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type: ResourceType::from_code(resource_type),
        resource_name: name,
        pattern_type: PatternType::from_code(pattern),
        principal,
        host,
        operation: AclOperation::from_code(operation),
        permission: AclPermission::from_code(permission),
    }
}

/// DescribeAcls: the matching bindings grouped by resource pattern.
pub(super) fn describe_acls(authz: &mut Authz, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let resp = DescribeAclsResponse::default();
    if !authz.view().cluster() {
        let (code, msg) = denied();
        return resp.with_error_code(code).with_error_message(msg.map(s));
    }
    let filter = filter_of(
        req.resource_type_filter,
        req.resource_name_filter.map(|n| n.to_string()),
        req.pattern_type_filter,
        req.principal_filter.map(|n| n.to_string()),
        req.host_filter.map(|n| n.to_string()),
        req.operation,
        req.permission_type,
    );
    if let Err(msg) = filter.validate() {
        return resp
            .with_error_code(INVALID)
            .with_error_message(Some(s(&msg)));
    }
    let found = describe(authz.store(), authz.vhost(), &filter);
    resp.with_resources(found)
}

fn describe(store: &AuthStore, vhost: &str, filter: &AclFilter) -> Vec<DescribeAclsResource> {
    let mut out: Vec<DescribeAclsResource> = Vec::new();
    // Bindings come sorted by resource type, name and pattern: group neighbours.
    for b in store.describe_acls(vhost, filter) {
        let same = out.last().is_some_and(|r| {
            r.resource_type == b.resource_type.code()
                && r.resource_name.as_str() == b.resource_name
                && r.pattern_type == b.pattern_type.code()
        });
        if !same {
            out.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(s(&b.resource_name))
                    .with_pattern_type(b.pattern_type.code()),
            );
        }
        if let Some(r) = out.last_mut() {
            r.acls.push(
                AclDescription::default()
                    .with_principal(s(&b.principal))
                    .with_host(s(&b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
        }
    }
    out
}

/// DeleteAcls: one result per filter with the bindings it removed.
pub(super) fn delete_acls(authz: &mut Authz, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let resp = DeleteAclsResponse::default();
    let result = |code: i16, msg: Option<String>| {
        DeleteAclsFilterResult::default()
            .with_error_code(code)
            .with_error_message(msg.map(|m| s(&m)))
    };
    if !authz.view().cluster() {
        let (code, msg) = denied();
        return resp.with_filter_results(
            req.filters
                .iter()
                .map(|_| result(code, msg.map(str::to_owned)))
                .collect(),
        );
    }
    let checked: Vec<Result<AclFilter, String>> = req
        .filters
        .into_iter()
        .map(|f| {
            let filter = filter_of(
                f.resource_type_filter,
                f.resource_name_filter.map(|n| n.to_string()),
                f.pattern_type_filter,
                f.principal_filter.map(|n| n.to_string()),
                f.host_filter.map(|n| n.to_string()),
                f.operation,
                f.permission_type,
            );
            filter.validate().map(|()| filter)
        })
        .collect();
    let valid: Vec<AclFilter> = checked.iter().filter_map(|r| r.clone().ok()).collect();
    let store = authz.store().clone();
    let vhost = authz.vhost().to_owned();
    let deleted = crate::blocking::run(|| store.delete_acls(&vhost, &valid));
    if let Err(e) = &deleted {
        warn!(error = %e, vhost, "could not delete Kafka ACLs");
    }
    let mut removed = match &deleted {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    resp.with_filter_results(
        checked
            .into_iter()
            .map(|r| match (r, &deleted) {
                (Err(msg), _) => result(INVALID, Some(msg)),
                (Ok(_), Err(e)) => result(SERVER_ERROR, Some(e.to_string())),
                (Ok(_), Ok(_)) => result(0, None).with_matching_acls(
                    removed
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type.code())
                                .with_resource_name(s(&b.resource_name))
                                .with_pattern_type(b.pattern_type.code())
                                .with_principal(s(&b.principal))
                                .with_host(s(&b.host))
                                .with_operation(b.operation.code())
                                .with_permission_type(b.permission.code())
                        })
                        .collect(),
                ),
            })
            .collect(),
    )
}
