//! Bindings: every list form (all, per vhost, per queue, per exchange as source or
//! destination, between two objects), `POST` (201 with a relative `Location` ending in
//! the `properties_key`), and `GET`/`DELETE` by `properties_key`. Listings include the
//! default exchange's implicit binding to every queue, as RabbitMQ's do. Binds and unbinds
//! go through the caller's `Session` (write on the destination, read on the source).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrymq_core::topology::{Binding, Dest};
use ferrymq_server::vhost::VHost;
use serde_json::{json, Value};

use super::exchanges::engine_name;
use super::{list, no_content, Params, Q};
use crate::amqp_json::{json_to_table, properties_key, quote_binding, table_to_json};
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

fn binding_json(vhost: &str, b: &Binding) -> Value {
    let (destination, destination_type) = match &b.dest {
        Dest::Queue(q) => (q.to_string(), "queue"),
        Dest::Exchange(x) => (x.to_string(), "exchange"),
    };
    json!({
        "source": &*b.source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": destination_type,
        "routing_key": &*b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// Every binding of a vhost: the implicit default-exchange ones, then the declared ones.
fn bindings_of(v: &VHost) -> Vec<Binding> {
    v.read(|t| {
        let mut queues: Vec<_> = t.queues().map(|q| q.spec.name.clone()).collect();
        queues.sort();
        let mut out: Vec<Binding> = queues
            .into_iter()
            .map(|q| Binding {
                source: "".into(),
                routing_key: q.clone(),
                dest: Dest::Queue(q),
                arguments: Default::default(),
            })
            .collect();
        out.extend(t.bindings().cloned());
        out
    })
}

pub async fn list_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in s.visible_vhosts(&caller, None)? {
        items.extend(bindings_of(&v).iter().map(|b| binding_json(&v.name, b)));
    }
    list(&q, items)
}

pub async fn list_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.visible_vhost(&caller, &vhost)?;
    let items = bindings_of(&v)
        .iter()
        .map(|b| binding_json(&v.name, b))
        .collect();
    list(&q, items)
}

fn filtered(
    s: &AppState,
    caller: &Caller,
    vhost: &str,
    q: &std::collections::HashMap<String, String>,
    keep: impl Fn(&Binding) -> bool,
) -> ApiResult<Json<Value>> {
    let v = s.visible_vhost(caller, vhost)?;
    let items = bindings_of(&v)
        .iter()
        .filter(|b| keep(b))
        .map(|b| binding_json(&v.name, b))
        .collect();
    list(q, items)
}

pub async fn queue_bindings(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, queue)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.vhost(&vhost)?;
    if !v.read(|t| t.queue(&queue).is_some()) {
        return Err(ApiError::NotFound);
    }
    filtered(&s, &caller, &vhost, &q, |b| {
        b.dest == Dest::Queue(queue.as_str().into())
    })
}

pub async fn exchange_source(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let name = engine_name(&name).to_owned();
    let v = s.vhost(&vhost)?;
    if !v.read(|t| t.exchange(&name).is_some()) {
        return Err(ApiError::NotFound);
    }
    filtered(&s, &caller, &vhost, &q, |b| *b.source == *name)
}

pub async fn exchange_destination(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.vhost(&vhost)?;
    if !v.read(|t| t.exchange(&name).is_some()) {
        return Err(ApiError::NotFound);
    }
    filtered(&s, &caller, &vhost, &q, |b| {
        b.dest == Dest::Exchange(name.as_str().into())
    })
}

fn dest(kind: &str, name: &str) -> ApiResult<Dest> {
    match kind {
        "q" => Ok(Dest::Queue(name.into())),
        "e" => Ok(Dest::Exchange(name.into())),
        _ => Err(ApiError::NotFound),
    }
}

/// Both ends must exist (404 otherwise, as RabbitMQ).
fn check_ends(v: &VHost, source: &str, d: &Dest) -> ApiResult<()> {
    let ok = v.read(|t| {
        t.exchange(source).is_some()
            && match d {
                Dest::Queue(q) => t.queue(q).is_some(),
                Dest::Exchange(x) => t.exchange(x).is_some(),
            }
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

pub async fn between(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, source, kind, name)): Params<(String, String, String, String)>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let d = dest(&kind, &name)?;
    let source = engine_name(&source).to_owned();
    check_ends(&*s.vhost(&vhost)?, &source, &d)?;
    filtered(&s, &caller, &vhost, &q, |b| {
        *b.source == *source && b.dest == d
    })
}

/// `POST /api/bindings/{vhost}/e/{source}/{q|e}/{dest}` `{routing_key, arguments}` →
/// 201 with `Location: <properties_key>` relative to the request path.
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Params((vhost, source, kind, name)): Params<(String, String, String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let d = dest(&kind, &name)?;
    let mut session = s.session(&caller, &vhost)?;
    let source = engine_name(&source).to_owned();
    if source.is_empty() {
        return Err(ApiError::NotAuthorised(
            "operation not permitted on the default exchange".into(),
        ));
    }
    check_ends(&session.vhost, &source, &d)?;
    let routing_key = body.string("routing_key")?.unwrap_or_default();
    if routing_key.len() > 255 {
        return Err(ApiError::bad("routing_key longer than 255 bytes"));
    }
    let arguments = json_to_table(&body.object("arguments")?);
    let key = properties_key(&routing_key, &arguments);
    session.bind(
        Binding {
            source: source.as_str().into(),
            dest: d,
            routing_key: routing_key.as_str().into(),
            arguments,
        },
        0,
    )?;
    let path = uri.path().trim_end_matches('/');
    let location = format!("{path}/{key}");
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// The binding whose `properties_key` is the path's last segment (compared as decoded
/// and as written, so both `a%2Fb` sent as is and sent escaped again match).
fn find(v: &VHost, source: &str, d: &Dest, decoded: &str, raw: &str) -> Option<Binding> {
    bindings_of(v).into_iter().find(|b| {
        *b.source == *source && b.dest == *d && {
            let k = properties_key(&b.routing_key, &b.arguments);
            // Clients normalize `%7E` to `~` in paths: a decoded routing key that quotes
            // to the key matches too.
            k == decoded
                || k == raw
                || (b.arguments.inner().is_empty() && k == quote_binding(decoded))
        }
    })
}

fn raw_last_segment(uri: &Uri) -> String {
    uri.path().rsplit('/').next().unwrap_or("").to_owned()
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Params((vhost, source, kind, name, props)): Params<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let d = dest(&kind, &name)?;
    let v = s.visible_vhost(&caller, &vhost)?;
    let source = engine_name(&source);
    let b = find(&v, source, &d, &props, &raw_last_segment(&uri)).ok_or(ApiError::NotFound)?;
    Ok(Json(binding_json(&v.name, &b)))
}

pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Params((vhost, source, kind, name, props)): Params<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    let d = dest(&kind, &name)?;
    let mut session = s.session(&caller, &vhost)?;
    let source = engine_name(&source);
    if source.is_empty() {
        return Err(ApiError::NotAuthorised(
            "operation not permitted on the default exchange".into(),
        ));
    }
    let b = find(&session.vhost, source, &d, &props, &raw_last_segment(&uri))
        .ok_or(ApiError::NotFound)?;
    session.unbind(&b, 0)?;
    Ok(no_content())
}
