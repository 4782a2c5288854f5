//! Prometheus metrics, as rabbitmq_prometheus serves them: `/metrics` (aggregated),
//! `/metrics/per-object` and `/metrics/detailed?family=…&vhost=…`, plus Kafka families in
//! kafka_exporter's names. Served without authentication on `prometheus_port` (15692,
//! RabbitMQ's) and on the management port.
//!
//! A scrape never touches the message path: it clones queue handles under each vhost's
//! topology read lock (no value is read there), then loads the owners' atomics and
//! renders on a blocking thread, so a 10 000-queue scrape neither holds a lock nor
//! occupies a runtime worker while it formats.
//!
//! Layout: [`exposition`] (the text format, pure), [`rabbit`] (RabbitMQ's families),
//! [`kafka`] (kafka_exporter's).

pub mod exposition;
pub mod kafka;
pub mod rabbit;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use self::exposition::{Exposition, CONTENT_TYPE};
use self::rabbit::{Mode, Snapshot};
use crate::AppState;

/// The metric routes (merged into the management router and served alone on the
/// Prometheus port).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
}

/// The Prometheus port's whole application.
pub fn app(state: AppState) -> Router {
    routes()
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found\n") })
        .with_state(state)
}

async fn aggregated(State(s): State<AppState>) -> Response {
    scrape(s, Scrape::Aggregated).await
}

async fn per_object(State(s): State<AppState>) -> Response {
    scrape(s, Scrape::PerObject).await
}

/// `?family=NAME` (repeatable: RabbitMQ's group names, see [`rabbit::GROUPS`]) and
/// `?vhost=NAME` (repeatable; all vhosts without it).
async fn detailed(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let (families, vhosts) = parse_detailed_query(q.as_deref().unwrap_or(""));
    let vhosts = (!vhosts.is_empty()).then_some(vhosts);
    scrape(s, Scrape::Detailed(families, vhosts)).await
}

enum Scrape {
    Aggregated,
    PerObject,
    Detailed(Vec<String>, Option<Vec<String>>),
}

async fn scrape(s: AppState, what: Scrape) -> Response {
    let kafka = match &what {
        Scrape::Detailed(..) => None,
        _ => Some(kafka::KafkaSnapshot::take(&s, &None).await),
    };
    let rendered = tokio::task::spawn_blocking(move || {
        let vhosts = match &what {
            Scrape::Detailed(_, v) => v.clone(),
            _ => None,
        };
        let snapshot = Snapshot::take(&s, &vhosts);
        let mut e = Exposition::with_capacity(
            16 * 1024
                + match what {
                    Scrape::Aggregated => 0,
                    _ => snapshot.queues.len() * 2048,
                },
        );
        match &what {
            Scrape::Aggregated => rabbit::render(&mut e, &snapshot, Mode::Aggregated),
            Scrape::PerObject => rabbit::render(&mut e, &snapshot, Mode::PerObject),
            Scrape::Detailed(groups, _) => rabbit::render_detailed(&mut e, &snapshot, groups),
        }
        if let Some(k) = &kafka {
            kafka::render(&mut e, k);
        }
        e.finish()
    })
    .await;
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!("metrics rendering failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The `family` and `vhost` values of a `/metrics/detailed` query string, in order.
pub fn parse_detailed_query(q: &str) -> (Vec<String>, Vec<String>) {
    let (mut families, mut vhosts) = (Vec::new(), Vec::new());
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace('+', " ");
        let v = percent_encoding::percent_decode_str(&v)
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "family" => families.push(v),
            "vhost" => vhosts.push(v),
            _ => {}
        }
    }
    (families, vhosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detailed_query_keeps_repeated_keys() {
        let (f, v) = parse_detailed_query(
            "family=queue_coarse_metrics&vhost=%2F&family=channel_metrics&vhost=a+b&x=1",
        );
        assert_eq!(f, ["queue_coarse_metrics", "channel_metrics"]);
        assert_eq!(v, ["/", "a b"]);
        assert_eq!(parse_detailed_query(""), (vec![], vec![]));
    }
}
