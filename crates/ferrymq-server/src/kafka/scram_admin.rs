//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51), v0, on the user
//! store, as Kafka's `ScramControlManager` answers them: DESCRIBE / ALTER on the cluster
//! (an administrator, or a CLUSTER ACL) else CLUSTER_AUTHORIZATION_FAILED; a user without
//! credentials is RESOURCE_NOT_FOUND; a user named twice DUPLICATE_RESOURCE; unknown
//! mechanisms UNSUPPORTED_SASL_MECHANISM; bad iterations, empty names, salts or salted
//! passwords UNACCEPTABLE_CREDENTIAL. An upsertion for an unknown name creates a
//! passwordless user (`AuthStore::upsert_scram_credential`). Results come one per user,
//! in request order; the writes are durable before the answer.

use std::collections::{BTreeMap, BTreeSet};

use ferrymq_auth::scram::{MAX_ITERATIONS, MIN_ITERATIONS};
use ferrymq_auth::{AclOperation, ScramCredential, ScramMechanism};
use ferrymq_kafka::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use ferrymq_kafka::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::ResponseError;

use super::authz::Authz;
use super::handlers::s;

const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

pub(super) fn describe(
    authz: &mut Authz,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let resp = DescribeUserScramCredentialsResponse::default();
    if !authz.view().cluster_op(AclOperation::Describe) {
        return resp
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Cluster authorization failed.")));
    }
    let store = authz.store().clone();
    let names: Vec<String> = match req.users {
        Some(users) if !users.is_empty() => users.into_iter().map(|u| u.name.to_string()).collect(),
        _ => store
            .users()
            .iter()
            .filter(|u| !u.scram.is_empty())
            .map(|u| u.name.clone())
            .collect(),
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &names {
        *seen.entry(n.as_str()).or_default() += 1;
    }
    let mut reported = BTreeSet::new();
    let results = names
        .iter()
        .filter(|n| reported.insert(n.as_str()))
        .map(|n| {
            let r = DescribeUserScramCredentialsResult::default().with_user(s(n));
            if seen[n.as_str()] > 1 {
                return r.with_error_code(DUPLICATE_RESOURCE).with_error_message(Some(s(
                    &format!(
                        "Cannot describe SCRAM credentials for the same user twice in a single request: {n}"
                    ),
                )));
            }
            match store.user(n).filter(|u| !u.scram.is_empty()) {
                None => r.with_error_code(RESOURCE_NOT_FOUND).with_error_message(Some(s(
                    &format!("Attempt to describe a user credential that does not exist: {n}"),
                ))),
                Some(u) => r.with_credential_infos(
                    u.scram
                        .iter()
                        .map(|c| {
                            CredentialInfo::default()
                                .with_mechanism(c.mechanism.kafka_id())
                                .with_iterations(c.iterations as i32)
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    resp.with_results(results)
}

enum Change {
    Delete(ScramMechanism),
    Upsert(ScramCredential),
}

/// An error code and message for one user's result.
type Refusal = (i16, String);
/// A user's checked changes (by mechanism), or why the user's alteration is refused.
type UserChanges = Result<Vec<(ScramMechanism, Change)>, Refusal>;

pub(super) fn alter(
    authz: &mut Authz,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Users in request order, each with its changes or its error.
    let mut order: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, UserChanges> = BTreeMap::new();
    let mut add = |user: String, change: Result<(ScramMechanism, Change), Refusal>| {
        if !changes.contains_key(&user) {
            order.push(user.clone());
        }
        let entry = changes.entry(user.clone()).or_insert(Ok(Vec::new()));
        let Ok(list) = entry else { return };
        match change {
            Err(e) => *entry = Err(e),
            Ok((m, _)) if list.iter().any(|(x, _)| *x == m) => {
                *entry = Err((
                    DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request".to_owned(),
                ))
            }
            Ok(c) => list.push(c),
        }
    };
    let mechanism = |id: i8| {
        ScramMechanism::from_kafka_id(id).ok_or((
            ResponseError::UnsupportedSaslMechanism.code(),
            "Unknown SCRAM mechanism".to_owned(),
        ))
    };
    for d in req.deletions {
        let user = d.name.to_string();
        let c = if user.is_empty() {
            Err((
                UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty".to_owned(),
            ))
        } else {
            mechanism(d.mechanism).map(|m| (m, Change::Delete(m)))
        };
        add(user, c);
    }
    for u in req.upsertions {
        let user = u.name.to_string();
        let c = (|| {
            if user.is_empty() {
                return Err((
                    UNACCEPTABLE_CREDENTIAL,
                    "Username must not be empty".to_owned(),
                ));
            }
            let m = mechanism(u.mechanism)?;
            let it = u.iterations;
            if it < MIN_ITERATIONS as i32 {
                return Err((UNACCEPTABLE_CREDENTIAL, "Too few iterations".to_owned()));
            }
            if it > MAX_ITERATIONS as i32 {
                return Err((UNACCEPTABLE_CREDENTIAL, "Too many iterations".to_owned()));
            }
            let cred =
                ScramCredential::from_salted_password(m, &u.salt, &u.salted_password, it as u32)
                    .map_err(|e| (UNACCEPTABLE_CREDENTIAL, e.to_string()))?;
            Ok((m, Change::Upsert(cred)))
        })();
        add(user, c);
    }
    let allowed = authz.view().cluster_op(AclOperation::Alter);
    let store = authz.store().clone();
    let results = order
        .into_iter()
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default().with_user(s(&user));
            if !allowed {
                return r
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(s("Cluster authorization failed.")));
            }
            let list = match changes.remove(&user) {
                Some(Ok(list)) => list,
                Some(Err((code, msg))) => {
                    return r.with_error_code(code).with_error_message(Some(s(&msg)))
                }
                None => return r,
            };
            // Kafka checks every deletion before applying anything for the user.
            let existing = store.user(&user);
            for (m, c) in &list {
                let has = existing
                    .as_ref()
                    .is_some_and(|u| u.scram_credential(*m).is_some());
                if matches!(c, Change::Delete(_)) && !has {
                    return r
                        .with_error_code(RESOURCE_NOT_FOUND)
                        .with_error_message(Some(s(
                            "Attempt to delete a user credential that does not exist",
                        )));
                }
            }
            for (_, c) in list {
                let done = crate::blocking::run(|| match c {
                    Change::Delete(m) => store.delete_scram_credential(&user, m),
                    Change::Upsert(cred) => store.upsert_scram_credential(&user, cred),
                });
                if let Err(e) = done {
                    return r
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_error_message(Some(s(&e.to_string())));
                }
            }
            r
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use ferrymq_auth::{AuthStore, PasswordSpec, Seed};

    use super::*;

    fn users(names: &[&str]) -> DescribeUserScramCredentialsRequest {
        DescribeUserScramCredentialsRequest::default().with_users(Some(
            names
                .iter()
                .map(|n| {
                    describe_user_scram_credentials_request::UserName::default().with_name(s(n))
                })
                .collect(),
        ))
    }

    #[test]
    fn describe_needs_the_cluster_and_reports_missing_and_duplicate_users() {
        let store = Arc::new(AuthStore::in_memory(Seed::default()).unwrap());
        store
            .put_user("u", Some(PasswordSpec::Plain("pw".into())), vec![])
            .unwrap();
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut u = Authz::new(store.clone(), "u", "/", local);
        let r = describe(&mut u, users(&["u"]));
        assert_eq!(r.error_code, 31);
        assert!(r.results.is_empty());
        let mut admin = Authz::new(store.clone(), "guest", "/", local);
        let r = describe(&mut admin, users(&["u", "nobody", "u"]));
        assert_eq!(r.error_code, 0);
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[0].error_code, DUPLICATE_RESOURCE);
        assert_eq!(r.results[1].error_code, RESOURCE_NOT_FOUND);
        let r = describe(&mut admin, users(&["u"]));
        let mechs: Vec<i8> = r.results[0]
            .credential_infos
            .iter()
            .map(|c| c.mechanism)
            .collect();
        assert_eq!(mechs, vec![1, 2]);
        // Denied alterations change nothing.
        let del = alter_user_scram_credentials_request::ScramCredentialDeletion::default()
            .with_name(s("u"))
            .with_mechanism(1);
        let r = alter(
            &mut u,
            AlterUserScramCredentialsRequest::default().with_deletions(vec![del.clone()]),
        );
        assert_eq!(r.results[0].error_code, 31);
        assert_eq!(store.user("u").unwrap().scram.len(), 2);
        let r = alter(
            &mut admin,
            AlterUserScramCredentialsRequest::default().with_deletions(vec![del]),
        );
        assert_eq!(r.results[0].error_code, 0);
        assert_eq!(store.user("u").unwrap().scram.len(), 1);
    }
}
