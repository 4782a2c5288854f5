//! `GET/POST /api/definitions[/{vhost}]`: export and import of RabbitMQ's definitions
//! JSON, administrator only. Export = the user store's part plus each vhost's durable
//! topology and policies (`ferrymq_server::definitions::export`); import = the same
//! code `--load-definitions` runs, after checking the whole document (a bad one changes
//! nothing). A per-vhost document has no users, vhosts or permissions and no `vhost`
//! keys; on import every object goes into the path's vhost.

use crate::body::RawBody;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrymq_auth::Definitions;
use serde_json::Value;

use super::{no_content, Params, Q};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

fn export(s: &AppState, vhost: Option<&str>) -> Value {
    let defs = ferrymq_server::definitions::export(&s.broker, vhost);
    let mut v = serde_json::to_value(&defs).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("product_name".into(), "FerryMQ".into());
        m.insert("product_version".into(), env!("CARGO_PKG_VERSION").into());
        if vhost.is_some() {
            for key in [
                "users",
                "vhosts",
                "permissions",
                "topic_permissions",
                "global_parameters",
            ] {
                m.remove(key);
            }
            for key in [
                "queues",
                "exchanges",
                "bindings",
                "policies",
                "parameters",
                "kafka_acls",
            ] {
                if let Some(Value::Array(items)) = m.get_mut(key) {
                    for item in items {
                        if let Value::Object(o) = item {
                            o.remove("vhost");
                        }
                    }
                }
            }
        }
    }
    v
}

/// `?download=name.json` asks for an attachment (the UI's export button).
fn answer(v: Value, q: &std::collections::HashMap<String, String>) -> Response {
    let mut r = Json(v).into_response();
    if let Some(name) = q.get("download").filter(|n| !n.is_empty()) {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect();
        if let Ok(h) =
            axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
        {
            r.headers_mut()
                .insert(axum::http::header::CONTENT_DISPOSITION, h);
        }
    }
    r
}

pub async fn export_all(State(s): State<AppState>, caller: Caller, Q(q): Q) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(answer(export(&s, None), &q))
}

pub async fn export_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Response> {
    caller.require_admin()?;
    s.vhost(&vhost)?;
    Ok(answer(export(&s, Some(&vhost)), &q))
}

fn parse(bytes: &[u8]) -> ApiResult<Definitions> {
    // The whole body must be a JSON object first (a clear 400 for malformed JSON).
    crate::body::Body::parse(bytes)?;
    Definitions::parse(bytes).map_err(|e| ApiError::bad(e.to_string()))
}

fn import(s: &AppState, defs: &Definitions) -> ApiResult<Response> {
    ferrymq_server::definitions::import(&s.broker, defs).map_err(|e| match e
        .downcast_ref::<ferrymq_auth::AuthError>()
    {
        Some(ferrymq_auth::AuthError::Io { .. } | ferrymq_auth::AuthError::Corrupt { .. }) => {
            ApiError::Internal(format!("{e:#}"))
        }
        _ => ApiError::bad(format!("{e:#}")),
    })?;
    Ok(no_content())
}

pub async fn import_all(
    State(s): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let defs = parse(&body)?;
    import(&s, &defs)
}

pub async fn import_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    s.vhost(&vhost)?;
    // A per-vhost document has no `vhost` keys: every object goes into the path's vhost.
    let mut doc = crate::body::Body::parse(&body)?.0;
    for key in [
        "queues",
        "exchanges",
        "bindings",
        "policies",
        "parameters",
        "kafka_acls",
    ] {
        if let Some(Value::Array(items)) = doc.get_mut(key) {
            for item in items.iter_mut() {
                if let Value::Object(o) = item {
                    o.insert("vhost".into(), Value::String(vhost.clone()));
                }
            }
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    let mut defs = parse(&bytes)?;
    defs.users.clear();
    defs.vhosts.clear();
    defs.permissions.clear();
    defs.topic_permissions.clear();
    defs.global_parameters.clear();
    for q in &mut defs.queues {
        q.vhost = vhost.clone();
    }
    for x in &mut defs.exchanges {
        x.vhost = vhost.clone();
    }
    for b in &mut defs.bindings {
        b.vhost = vhost.clone();
    }
    for p in &mut defs.policies {
        p.vhost = vhost.clone();
    }
    for p in &mut defs.parameters {
        p.vhost = vhost.clone();
    }
    import(&s, &defs)
}
