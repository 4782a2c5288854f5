//! Vhosts, users, permissions, topic permissions, vhost and user limits. Writes are
//! administrator-only (RabbitMQ's rules) and go into the `AuthStore` (durable before the
//! answer) and, for vhosts, through `Broker::create_vhost` / `delete_vhost`.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use ferrymq_auth::{
    HashingAlgorithm, PasswordHash, PasswordSpec, Permission, TopicPermission, VhostInfo,
};
use serde_json::{json, Value};

use super::{created_or_updated, list, no_content, Params, Q};
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

// ---- vhosts ---------------------------------------------------------------------------

fn vhost_json(s: &AppState, info: &VhostInfo) -> Value {
    let (mut ready, mut unacked, mut half) = (0u64, 0u64, 0u64);
    if let Some(v) = s.broker.vhost(&info.name) {
        half = v.half_pending();
        v.read(|t| {
            for q in t.queues() {
                let st = q.handle.stats();
                ready += st.ready.load(Relaxed);
                unacked += st.unacked.load(Relaxed);
            }
        });
    }
    json!({
        "name": info.name,
        "description": info.description,
        "tags": info.tags,
        "default_queue_type": info.default_queue_type.as_deref().unwrap_or("classic"),
        "metadata": {
            "description": info.description,
            "tags": info.tags,
            "default_queue_type": info.default_queue_type.as_deref().unwrap_or("classic"),
        },
        "protected_from_deletion": info.protected_from_deletion,
        "tracing": info.tracing,
        "cluster_state": { &*s.node: "running" },
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "messages_half": half,
    })
}

pub async fn vhosts(State(s): State<AppState>, caller: Caller, Q(q): Q) -> ApiResult<Json<Value>> {
    let items = s
        .broker
        .auth
        .vhosts()
        .iter()
        .filter(|v| s.can_see(&caller, &v.name))
        .map(|v| vhost_json(&s, v))
        .collect();
    list(&q, items)
}

pub async fn vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
) -> ApiResult<Json<Value>> {
    let info = s.broker.auth.vhost(&name).ok_or(ApiError::NotFound)?;
    if !s.can_see(&caller, &name) {
        return Err(ApiError::NotAuthorised("Not_Authorized".into()));
    }
    Ok(Json(vhost_json(&s, &info)))
}

/// `PUT /api/vhosts/{name}` `{description, tags, default_queue_type, tracing,
/// protected_from_deletion}` (all optional): created with its `amq.*` exchanges at once.
pub async fn put_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad("vhost name must be 1..=255 bytes"));
    }
    let existing = s.broker.auth.vhost(&name);
    let meta = body.object("metadata")?;
    let meta = Body(meta);
    let tags = match body.get("tags").or_else(|| meta.get("tags")) {
        None => existing
            .as_ref()
            .map(|e| e.tags.clone())
            .unwrap_or_default(),
        Some(v) => tags_of(v)?,
    };
    let description = match body.string("description")? {
        Some(d) => d,
        None => meta
            .string("description")?
            .or_else(|| existing.as_ref().map(|e| e.description.clone()))
            .unwrap_or_default(),
    };
    let default_queue_type = match body.string("default_queue_type")? {
        Some(t) => Some(t),
        None => meta
            .string("default_queue_type")?
            .or_else(|| existing.as_ref().and_then(|e| e.default_queue_type.clone())),
    };
    if let Some(t) = &default_queue_type {
        if !matches!(t.as_str(), "classic" | "quorum" | "stream") {
            return Err(ApiError::bad(format!(
                "unsupported default queue type '{t}'"
            )));
        }
    }
    let info = VhostInfo {
        name: name.clone(),
        description,
        tags,
        default_queue_type,
        protected_from_deletion: body.bool_or(
            "protected_from_deletion",
            existing.as_ref().is_some_and(|e| e.protected_from_deletion),
        )?,
        tracing: body.bool_or("tracing", existing.as_ref().is_some_and(|e| e.tracing))?,
        limits: Default::default(),
    };
    s.broker
        .create_vhost(info)
        .map_err(|e| match e.downcast::<ferrymq_auth::AuthError>() {
            Ok(a) => ApiError::from(a),
            Err(e) => ApiError::Internal(format!("{e:#}")),
        })?;
    Ok(created_or_updated(existing.is_none()))
}

pub async fn delete_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if s.broker.auth.vhost(&name).is_none() {
        return Err(ApiError::NotFound);
    }
    s.broker
        .delete_vhost(&name)
        .map_err(|e| match e.downcast::<ferrymq_auth::AuthError>() {
            Ok(a) => ApiError::from(a),
            Err(e) => ApiError::Internal(format!("{e:#}")),
        })?;
    Ok(no_content())
}

/// Tags as a list or one comma-separated string.
fn tags_of(v: &Value) -> ApiResult<Vec<String>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(ApiError::bad("tags must be strings")),
            })
            .filter(|t| t.as_ref().map_or(true, |t| !t.is_empty()))
            .collect(),
        Value::String(s) => Ok(ferrymq_auth::model::split_tags(s)),
        Value::Null => Ok(Vec::new()),
        _ => Err(ApiError::bad(
            "tags must be a list or a comma-separated string",
        )),
    }
}

// ---- users ----------------------------------------------------------------------------

fn user_json(u: &ferrymq_auth::User) -> Value {
    let mut limits = serde_json::Map::new();
    if let Some(n) = u.limits.max_connections {
        limits.insert("max-connections".into(), json!(n));
    }
    if let Some(n) = u.limits.max_channels {
        limits.insert("max-channels".into(), json!(n));
    }
    json!({
        "name": u.name,
        "password_hash": u.password_hash.to_base64(),
        "hashing_algorithm": u.password_hash.algorithm.rabbit_name(),
        "tags": u.tags,
        "limits": limits,
    })
}

pub async fn users(State(s): State<AppState>, caller: Caller, Q(q): Q) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    list(
        &q,
        s.broker.auth.users().iter().map(|u| user_json(u)).collect(),
    )
}

pub async fn users_without_permissions(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let perms = s.broker.auth.permissions();
    list(
        &q,
        s.broker
            .auth
            .users()
            .iter()
            .filter(|u| !perms.iter().any(|p| p.user == u.name))
            .map(|u| user_json(u))
            .collect(),
    )
}

pub async fn user(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let u = s.broker.auth.user(&name).ok_or(ApiError::NotFound)?;
    Ok(Json(user_json(&u)))
}

/// `PUT /api/users/{name}` `{password | password_hash [+ hashing_algorithm], tags}`;
/// without either password field an existing user keeps its password and a new user is
/// passwordless (RabbitMQ's rules). Tags: a list or a comma-separated string.
pub async fn put_user(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let tags = match body.get("tags") {
        Some(v) => tags_of(v)?,
        None => return Err(ApiError::bad("[{key_missing,tags}]")),
    };
    let password = match (body.string("password")?, body.string("password_hash")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "a user may have a password or a password_hash, not both",
            ))
        }
        (Some(p), None) => Some(PasswordSpec::Plain(p)),
        (None, Some(h)) if h.is_empty() => Some(PasswordSpec::Hash(PasswordHash::passwordless())),
        (None, Some(h)) => {
            let algorithm = match body.string("hashing_algorithm")? {
                Some(a) => HashingAlgorithm::from_rabbit_name(&a)
                    .ok_or_else(|| ApiError::bad(format!("unknown hashing algorithm '{a}'")))?,
                None => HashingAlgorithm::Sha256,
            };
            Some(PasswordSpec::Hash(PasswordHash::from_base64(
                algorithm, &h,
            )?))
        }
        (None, None) => None,
    };
    let existed = s.broker.auth.user(&name).is_some();
    s.broker.auth.put_user(&name, password, tags)?;
    Ok(created_or_updated(!existed))
}

pub async fn delete_user(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    s.broker.auth.delete_user(&name)?;
    Ok(no_content())
}

/// `POST /api/users/bulk-delete` `{"users": [...]}`.
pub async fn bulk_delete_users(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let Some(Value::Array(names)) = body.get("users") else {
        return Err(ApiError::bad("[{key_missing,users}]"));
    };
    for n in names.iter().filter_map(Value::as_str) {
        match s.broker.auth.delete_user(n) {
            Ok(()) | Err(ferrymq_auth::AuthError::NoSuchUser(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(no_content())
}

// ---- permissions ----------------------------------------------------------------------

fn perm_json(user: &str, vhost: &str, p: &Permission) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn topic_json(user: &str, vhost: &str, p: &TopicPermission) -> Value {
    json!({"user": user, "vhost": vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

fn perms(s: &AppState, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    s.broker
        .auth
        .permissions()
        .iter()
        .filter(|p| keep(&p.user, &p.vhost))
        .map(|p| perm_json(&p.user, &p.vhost, &p.permission))
        .collect()
}

fn topic_perms(s: &AppState, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    s.broker
        .auth
        .topic_permissions()
        .iter()
        .filter(|p| keep(&p.user, &p.vhost))
        .map(|p| topic_json(&p.user, &p.vhost, &p.permission))
        .collect()
}

pub async fn permissions(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    list(&q, perms(&s, |_, _| true))
}

pub async fn vhost_permissions(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    s.broker.auth.vhost(&vhost).ok_or(ApiError::NotFound)?;
    list(&q, perms(&s, |_, v| v == vhost))
}

pub async fn user_permissions(
    State(s): State<AppState>,
    caller: Caller,
    Params(user): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    s.broker.auth.user(&user).ok_or(ApiError::NotFound)?;
    list(&q, perms(&s, |u, _| u == user))
}

pub async fn permission(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, user)): Params<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    perms(&s, |u, v| u == user && v == vhost)
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

pub async fn put_permission(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, user)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if s.broker.auth.vhost(&vhost).is_none() || s.broker.auth.user(&user).is_none() {
        return Err(ApiError::NotFound);
    }
    let p = Permission {
        configure: body.required_string("configure")?,
        write: body.required_string("write")?,
        read: body.required_string("read")?,
    };
    let existed = s.broker.auth.access(&user, &vhost).is_some();
    s.broker.auth.set_permissions(&user, &vhost, p)?;
    Ok(created_or_updated(!existed))
}

pub async fn delete_permission(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, user)): Params<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if s.broker.auth.access(&user, &vhost).is_none() {
        return Err(ApiError::NotFound);
    }
    s.broker.auth.clear_permissions(&user, &vhost)?;
    Ok(no_content())
}

pub async fn topic_permissions(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    list(&q, topic_perms(&s, |_, _| true))
}

pub async fn vhost_topic_permissions(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    s.broker.auth.vhost(&vhost).ok_or(ApiError::NotFound)?;
    list(&q, topic_perms(&s, |_, v| v == vhost))
}

pub async fn user_topic_permissions(
    State(s): State<AppState>,
    caller: Caller,
    Params(user): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    s.broker.auth.user(&user).ok_or(ApiError::NotFound)?;
    list(&q, topic_perms(&s, |u, _| u == user))
}

pub async fn topic_permission(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, user)): Params<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let rows = topic_perms(&s, |u, v| u == user && v == vhost);
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(Value::Array(rows)))
}

pub async fn put_topic_permission(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, user)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if s.broker.auth.vhost(&vhost).is_none() || s.broker.auth.user(&user).is_none() {
        return Err(ApiError::NotFound);
    }
    let p = TopicPermission {
        exchange: body.required_string("exchange")?,
        write: body.required_string("write")?,
        read: body.required_string("read")?,
    };
    let existed = s
        .broker
        .auth
        .topic_permissions()
        .iter()
        .any(|t| t.user == user && t.vhost == vhost && t.permission.exchange == p.exchange);
    s.broker.auth.set_topic_permissions(&user, &vhost, p)?;
    Ok(created_or_updated(!existed))
}

pub async fn delete_topic_permission(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, user)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if topic_perms(&s, |u, v| u == user && v == vhost).is_empty() {
        return Err(ApiError::NotFound);
    }
    s.broker
        .auth
        .clear_topic_permissions(&user, &vhost, q.get("exchange").map(String::as_str))?;
    Ok(no_content())
}

// ---- limits ---------------------------------------------------------------------------

fn vhost_limits_json(info: &VhostInfo) -> Value {
    json!({
        "vhost": info.name,
        "value": ferrymq_auth::definitions::vhost_limits_to_value(&info.limits),
    })
}

pub async fn vhost_limits_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let items = s
        .broker
        .auth
        .vhosts()
        .iter()
        .filter(|v| !v.limits.is_empty() && s.can_see(&caller, &v.name))
        .map(vhost_limits_json)
        .collect();
    list(&q, items)
}

pub async fn vhost_limits(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
) -> ApiResult<Json<Value>> {
    let info = s.broker.auth.vhost(&vhost).ok_or(ApiError::NotFound)?;
    if !s.can_see(&caller, &vhost) {
        return Err(ApiError::NotAuthorised("Not_Authorized".into()));
    }
    if info.limits.is_empty() {
        return Ok(Json(json!([])));
    }
    Ok(Json(json!([vhost_limits_json(&info)])))
}

fn limit_value(body: &Body) -> ApiResult<i64> {
    body.int("value")?
        .ok_or_else(|| ApiError::bad("[{key_missing,value}]"))
}

pub async fn put_vhost_limit(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let info = s.broker.auth.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let value = limit_value(&body)?;
    let mut limits = info.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = Some(value),
        "max-queues" => limits.max_queues = Some(value),
        other => return Err(ApiError::bad(format!("unknown vhost limit '{other}'"))),
    }
    s.broker.auth.set_vhost_limits(&vhost, limits)?;
    Ok(no_content())
}

pub async fn delete_vhost_limit(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let info = s.broker.auth.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let mut limits = info.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = None,
        "max-queues" => limits.max_queues = None,
        _ => return Err(ApiError::NotFound),
    }
    s.broker.auth.set_vhost_limits(&vhost, limits)?;
    Ok(no_content())
}

fn user_limits_json(u: &ferrymq_auth::User) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(n) = u.limits.max_connections {
        m.insert("max-connections".into(), json!(n));
    }
    if let Some(n) = u.limits.max_channels {
        m.insert("max-channels".into(), json!(n));
    }
    json!({"user": u.name, "value": m})
}

pub async fn user_limits_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = s
        .broker
        .auth
        .users()
        .iter()
        .filter(|u| !u.limits.is_empty())
        .map(|u| user_limits_json(u))
        .collect();
    list(&q, items)
}

pub async fn user_limits(
    State(s): State<AppState>,
    caller: Caller,
    Params(user): Params<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let u = s.broker.auth.user(&user).ok_or(ApiError::NotFound)?;
    if u.limits.is_empty() {
        return Ok(Json(json!([])));
    }
    Ok(Json(json!([user_limits_json(&u)])))
}

pub async fn put_user_limit(
    State(s): State<AppState>,
    caller: Caller,
    Params((user, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let u = s.broker.auth.user(&user).ok_or(ApiError::NotFound)?;
    let value = limit_value(&body)?;
    let mut limits = u.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = Some(value),
        "max-channels" => limits.max_channels = Some(value),
        other => return Err(ApiError::bad(format!("unknown user limit '{other}'"))),
    }
    s.broker.auth.set_user_limits(&user, limits)?;
    Ok(no_content())
}

pub async fn delete_user_limit(
    State(s): State<AppState>,
    caller: Caller,
    Params((user, name)): Params<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let u = s.broker.auth.user(&user).ok_or(ApiError::NotFound)?;
    let mut limits = u.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = None,
        "max-channels" => limits.max_channels = None,
        _ => return Err(ApiError::NotFound),
    }
    s.broker.auth.set_user_limits(&user, limits)?;
    Ok(no_content())
}
