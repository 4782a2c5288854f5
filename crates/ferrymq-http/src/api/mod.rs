//! The routes, one module per area: [`overview`] (overview, whoami, nodes, health checks,
//! aliveness), [`connections`] (connections, channels, consumers), [`exchanges`],
//! [`queues`], [`bindings`], [`access`] (vhosts, users, permissions, topic permissions,
//! limits), [`policies`], [`definitions`] and [`kafka`] (FerryMQ's own). This module has
//! the router and what handlers share: path parameters with RabbitMQ's 400s, vhost lookup
//! and visibility, the per-request `Session`.

pub mod access;
pub mod bindings;
pub mod connections;
pub mod definitions;
pub mod exchanges;
pub mod kafka;
pub mod overview;
pub mod policies;
pub mod queues;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ferrymq_server::session::Session;
use ferrymq_server::vhost::VHost;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::Caller;
use crate::body::{MAX_BODY, MAX_DEFINITIONS_BODY};
use crate::error::{ApiError, ApiResult};
use crate::list::ListQuery;
use crate::AppState;

/// Decoded path parameters; a segment that is not valid UTF-8 (or not decodable) is a 400.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|e| ApiError::bad(format!("bad path: {e}")))
    }
}

/// The query string as a map (repeated keys: the last wins).
pub struct Q(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Q {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Q(q))
            .map_err(|e| ApiError::bad(format!("bad query string: {e}")))
    }
}

/// 201 Created (the object is new) or 204 No Content (it existed), no body.
pub fn created_or_updated(created: bool) -> Response {
    if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A list answered with paging, filtering, sorting and columns as the query asks.
pub fn list(q: &HashMap<String, String>, items: Vec<Value>) -> ApiResult<Json<Value>> {
    Ok(Json(ListQuery::parse(q)?.apply(items)?))
}

impl AppState {
    /// A running vhost, or 404.
    pub fn vhost(&self, name: &str) -> ApiResult<Arc<VHost>> {
        self.broker.vhost(name).ok_or(ApiError::NotFound)
    }

    /// Whether `caller` may see objects of vhost `name` (monitors and administrators see
    /// every vhost, other users those they have permissions in).
    pub fn can_see(&self, caller: &Caller, name: &str) -> bool {
        caller.is_monitor() || self.broker.auth.access(caller.name(), name).is_some()
    }

    /// The vhosts `caller` may see, by name; with `only`, that one (404 if it does not
    /// exist, 401 if the caller has no access).
    pub fn visible_vhosts(
        &self,
        caller: &Caller,
        only: Option<&str>,
    ) -> ApiResult<Vec<Arc<VHost>>> {
        if let Some(name) = only {
            let v = self.vhost(name)?;
            if !self.can_see(caller, name) {
                return Err(not_authorised_vhost());
            }
            return Ok(vec![v]);
        }
        let mut all: Vec<Arc<VHost>> = self
            .broker
            .vhosts()
            .into_iter()
            .filter(|v| self.can_see(caller, &v.name))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Vhost `name` if `caller` may see it (404 if it does not exist, 401 without access).
    pub fn visible_vhost(&self, caller: &Caller, name: &str) -> ApiResult<Arc<VHost>> {
        let v = self.vhost(name)?;
        if !self.can_see(caller, name) {
            return Err(not_authorised_vhost());
        }
        Ok(v)
    }

    /// A `Session` for the caller in vhost `name`: every change through the API is
    /// authorised and performed by it. 404 if the vhost does not exist, 401 if the caller
    /// has no permissions there.
    pub fn session(&self, caller: &Caller, name: &str) -> ApiResult<Session> {
        let vhost = self.vhost(name)?;
        if self.broker.auth.access(caller.name(), name).is_none() {
            return Err(not_authorised_vhost());
        }
        Ok(Session::new(
            self.broker.auth.clone(),
            vhost,
            caller.user.clone(),
        ))
    }
}

fn not_authorised_vhost() -> ApiError {
    ApiError::NotAuthorised("Not_Authorized".into())
}

/// Every route.
pub fn router(state: AppState) -> Router {
    let definitions = Router::new()
        .route(
            "/api/definitions",
            get(definitions::export_all).post(definitions::import_all),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .layer(DefaultBodyLimit::max(MAX_DEFINITIONS_BODY));
    let api = Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/cluster-name", get(overview::cluster_name))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/health/checks/alarms", get(overview::alarms))
        .route("/api/health/checks/local-alarms", get(overview::alarms))
        .route(
            "/api/health/checks/virtual-hosts",
            get(overview::virtual_hosts),
        )
        .route(
            "/api/health/checks/is-in-service",
            get(overview::in_service),
        )
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(overview::in_service),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(overview::in_service),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(overview::port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(overview::protocol_listener),
        )
        .route("/api/aliveness-test/{vhost}", get(overview::aliveness))
        .route("/api/connections", get(connections::list_all))
        .route(
            "/api/connections/{name}",
            get(connections::show).delete(connections::close),
        )
        .route(
            "/api/connections/{name}/channels",
            get(connections::connection_channels),
        )
        .route(
            "/api/vhosts/{vhost}/connections",
            get(connections::list_vhost),
        )
        .route("/api/channels", get(connections::channels_all))
        .route("/api/channels/{name}", get(connections::channel))
        .route(
            "/api/vhosts/{vhost}/channels",
            get(connections::channels_vhost),
        )
        .route("/api/consumers", get(connections::consumers_all))
        .route("/api/consumers/{vhost}", get(connections::consumers_vhost))
        .route("/api/exchanges", get(exchanges::list_all))
        .route("/api/exchanges/{vhost}", get(exchanges::list_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::show)
                .put(exchanges::declare)
                .delete(exchanges::delete),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(exchanges::publish),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings::exchange_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings::exchange_destination),
        )
        .route("/api/queues", get(queues::list_all))
        .route("/api/queues/detailed", get(queues::list_all))
        .route("/api/queues/{vhost}", get(queues::list_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::show)
                .put(queues::declare)
                .delete(queues::delete),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(queues::purge),
        )
        .route("/api/queues/{vhost}/{name}/get", post(queues::get_messages))
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::queue_bindings),
        )
        .route("/api/bindings", get(bindings::list_all))
        .route("/api/bindings/{vhost}", get(bindings::list_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}",
            get(bindings::between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}",
            get(bindings::show).delete(bindings::delete),
        )
        .route("/api/vhosts", get(access::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(access::vhost)
                .put(access::put_vhost)
                .delete(access::delete_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(access::vhost_permissions),
        )
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(access::vhost_topic_permissions),
        )
        .route("/api/users", get(access::users))
        .route(
            "/api/users/without-permissions",
            get(access::users_without_permissions),
        )
        .route("/api/users/bulk-delete", post(access::bulk_delete_users))
        .route(
            "/api/users/{user}",
            get(access::user)
                .put(access::put_user)
                .delete(access::delete_user),
        )
        .route(
            "/api/users/{user}/permissions",
            get(access::user_permissions),
        )
        .route(
            "/api/users/{user}/topic-permissions",
            get(access::user_topic_permissions),
        )
        .route("/api/permissions", get(access::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(access::permission)
                .put(access::put_permission)
                .delete(access::delete_permission),
        )
        .route("/api/topic-permissions", get(access::topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(access::topic_permission)
                .put(access::put_topic_permission)
                .delete(access::delete_topic_permission),
        )
        .route("/api/vhost-limits", get(access::vhost_limits_all))
        .route("/api/vhost-limits/{vhost}", get(access::vhost_limits))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(access::put_vhost_limit).delete(access::delete_vhost_limit),
        )
        .route("/api/user-limits", get(access::user_limits_all))
        .route("/api/user-limits/{user}", get(access::user_limits))
        .route(
            "/api/user-limits/{user}/{name}",
            put(access::put_user_limit).delete(access::delete_user_limit),
        )
        .route("/api/policies", get(policies::list_all))
        .route("/api/policies/{vhost}", get(policies::list_vhost))
        .route(
            "/api/policies/{vhost}/{name}",
            get(policies::show)
                .put(policies::put)
                .delete(policies::delete),
        )
        .route("/api/operator-policies", get(policies::op_list_all))
        .route(
            "/api/operator-policies/{vhost}",
            get(policies::op_list_vhost),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(policies::op_show)
                .put(policies::op_put)
                .delete(policies::op_delete),
        )
        .route("/api/parameters", get(overview::empty_list))
        .route("/api/parameters/{component}", get(overview::empty_list))
        .route("/api/global-parameters", get(overview::empty_list))
        .route("/api/kafka/topics", get(kafka::topics_all))
        .route("/api/kafka/topics/{vhost}", get(kafka::topics_vhost))
        .route(
            "/api/kafka/topics/{vhost}/{topic}",
            get(kafka::topic)
                .put(kafka::create_topic)
                .delete(kafka::delete_topic),
        )
        .route("/api/kafka/groups", get(kafka::groups_all))
        .route("/api/kafka/groups/{vhost}", get(kafka::groups_vhost))
        .route("/api/kafka/groups/{vhost}/{group}", get(kafka::group))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    api.merge(definitions)
        .merge(crate::ui::router())
        .layer(axum::middleware::from_fn(crate::ui::no_challenge_for_ui))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}
