//! Policies and operator policies: list, show, PUT (checked before anything changes,
//! durable in the vhost, applied to running queues at once), DELETE. Listing needs a
//! management user with access to the vhost; changes need `policymaker` (policies) or
//! `administrator` (operator policies).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use ferrymq_server::config::PolicyConfig;
use serde_json::{json, Value};

use super::{created_or_updated, list, no_content, Params, Q};
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

fn policy_json(vhost: &str, p: &PolicyConfig) -> Value {
    json!({
        "vhost": vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": p.definition,
        "priority": p.priority,
    })
}

fn listing(
    s: &AppState,
    caller: &Caller,
    vhost: Option<&str>,
    operator: bool,
) -> ApiResult<Vec<Value>> {
    let mut out = Vec::new();
    for v in s.visible_vhosts(caller, vhost)? {
        out.extend(
            v.policy_list(operator)
                .iter()
                .map(|p| policy_json(&v.name, p)),
        );
    }
    Ok(out)
}

async fn do_list(
    s: AppState,
    caller: Caller,
    vhost: Option<String>,
    q: Q,
    operator: bool,
) -> ApiResult<Json<Value>> {
    if operator {
        caller.require_policymaker()?;
    }
    list(&q.0, listing(&s, &caller, vhost.as_deref(), operator)?)
}

async fn do_show(
    s: AppState,
    caller: Caller,
    vhost: String,
    name: String,
    operator: bool,
) -> ApiResult<Json<Value>> {
    if operator {
        caller.require_policymaker()?;
    }
    let v = s.visible_vhost(&caller, &vhost)?;
    v.policy_list(operator)
        .iter()
        .find(|p| p.name == name)
        .map(|p| Json(policy_json(&v.name, p)))
        .ok_or(ApiError::NotFound)
}

async fn do_put(
    s: AppState,
    caller: Caller,
    vhost: String,
    name: String,
    body: Body,
    operator: bool,
) -> ApiResult<Response> {
    if operator {
        caller.require_admin()?;
    } else {
        caller.require_policymaker()?;
    }
    let v = s.vhost(&vhost)?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad("policy name must be 1..=255 bytes"));
    }
    let pattern = body.required_string("pattern")?;
    if body.get("definition").is_none() {
        return Err(ApiError::bad("[{key_missing,definition}]"));
    }
    let definition = body.object("definition")?;
    let apply_to = body.string("apply-to")?.unwrap_or_else(|| "all".into());
    let apply_to = match apply_to.as_str() {
        "classic_queues" | "quorum_queues" | "streams" => "queues".to_owned(),
        other => other.to_owned(),
    };
    let p = PolicyConfig {
        name,
        pattern,
        apply_to,
        priority: body.int("priority")?.unwrap_or(0),
        definition: definition.into_iter().collect(),
    };
    let created = v.put_policy(operator, p)?;
    Ok(created_or_updated(created))
}

async fn do_delete(
    s: AppState,
    caller: Caller,
    vhost: String,
    name: String,
    operator: bool,
) -> ApiResult<Response> {
    if operator {
        caller.require_admin()?;
    } else {
        caller.require_policymaker()?;
    }
    let v = s.vhost(&vhost)?;
    if !v.delete_policy(operator, &name)? {
        return Err(ApiError::NotFound);
    }
    Ok(no_content())
}

pub async fn list_all(State(s): State<AppState>, caller: Caller, q: Q) -> ApiResult<Json<Value>> {
    do_list(s, caller, None, q, false).await
}

pub async fn list_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(v): Params<String>,
    q: Q,
) -> ApiResult<Json<Value>> {
    do_list(s, caller, Some(v), q, false).await
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Params((v, n)): Params<(String, String)>,
) -> ApiResult<Json<Value>> {
    do_show(s, caller, v, n, false).await
}

pub async fn put(
    State(s): State<AppState>,
    caller: Caller,
    Params((v, n)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    do_put(s, caller, v, n, body, false).await
}

pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Params((v, n)): Params<(String, String)>,
) -> ApiResult<Response> {
    do_delete(s, caller, v, n, false).await
}

pub async fn op_list_all(
    State(s): State<AppState>,
    caller: Caller,
    q: Q,
) -> ApiResult<Json<Value>> {
    do_list(s, caller, None, q, true).await
}

pub async fn op_list_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(v): Params<String>,
    q: Q,
) -> ApiResult<Json<Value>> {
    do_list(s, caller, Some(v), q, true).await
}

pub async fn op_show(
    State(s): State<AppState>,
    caller: Caller,
    Params((v, n)): Params<(String, String)>,
) -> ApiResult<Json<Value>> {
    do_show(s, caller, v, n, true).await
}

pub async fn op_put(
    State(s): State<AppState>,
    caller: Caller,
    Params((v, n)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    do_put(s, caller, v, n, body, true).await
}

pub async fn op_delete(
    State(s): State<AppState>,
    caller: Caller,
    Params((v, n)): Params<(String, String)>,
) -> ApiResult<Response> {
    do_delete(s, caller, v, n, true).await
}
