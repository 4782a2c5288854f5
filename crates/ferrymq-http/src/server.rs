//! Listeners and connections: HTTP on `http_port`, Prometheus metrics on `prometheus_port`,
//! HTTPS on `https_port` when the broker
//! has a certificate (the broker's `Tls`, reloaded on SIGHUP with the other listeners;
//! the handshake runs in the connection's own task). Each connection is served by hyper
//! (HTTP/1.1, keep-alive, a header read timeout) and every request is normalized before
//! routing: an empty vhost segment (Flower sends `/api/queues//`) means `/`. On shutdown
//! the listeners close, open connections get up to five seconds to finish their
//! requests, and the sampler stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{Request, Uri};
use axum::Router;
use ferrymq_server::tls::{self, Tls};
use ferrymq_server::Running;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::{AppState, ListenerInfo};

/// Binds the HTTP (and HTTPS) listeners, starts serving and sampling, and records the
/// addresses and tasks in `running` (its shutdown waits for them).
pub async fn start(running: &mut Running) -> anyhow::Result<()> {
    let broker = running.broker.clone();
    let config = broker.config.clone();
    let addr = format!("{}:{}", config.bind, config.http_port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding HTTP listener on {addr}: {e}"))?;
    let http_addr = listener.local_addr()?;
    let addr = format!("{}:{}", config.bind, config.prometheus_port);
    let prometheus = TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding Prometheus listener on {addr}: {e}"))?;
    let prometheus_addr = prometheus.local_addr()?;
    let mut https = None;
    if let Some(tls) = &running.tls {
        let addr = format!("{}:{}", config.bind, config.https_port);
        let l = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding HTTPS listener on {addr}: {e}"))?;
        https = Some((l.local_addr()?, l, tls.clone()));
    }
    let mut listeners = vec![ListenerInfo {
        protocol: "amqp",
        addr: running.amqp_addr,
    }];
    if let Some(a) = running.amqps_addr {
        listeners.push(ListenerInfo {
            protocol: "amqp/ssl",
            addr: a,
        });
    }
    listeners.push(ListenerInfo {
        protocol: "kafka",
        addr: running.kafka_addr,
    });
    if let Some(a) = running.kafka_tls_addr {
        listeners.push(ListenerInfo {
            protocol: "kafka/ssl",
            addr: a,
        });
    }
    listeners.push(ListenerInfo {
        protocol: "http",
        addr: http_addr,
    });
    listeners.push(ListenerInfo {
        protocol: "http/prometheus",
        addr: prometheus_addr,
    });
    if let Some((a, _, _)) = &https {
        listeners.push(ListenerInfo {
            protocol: "https",
            addr: *a,
        });
    }
    let state = AppState {
        broker: broker.clone(),
        kafka: running.kafka.clone(),
        stats: Arc::default(),
        started: Instant::now(),
        listeners: Arc::new(listeners),
        node: crate::node_name().into(),
        cluster_id: crate::cluster_id(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("reading or creating the cluster id: {e}"))?
            .into(),
    };
    state.stats.sample(&broker);
    let app = crate::api::router(state.clone());
    let mut tasks = vec![tokio::spawn(serve(
        listener,
        app.clone(),
        None,
        broker.shutdown_signal(),
    ))];
    let mut https_addr = None;
    if let Some((a, l, tls)) = https {
        https_addr = Some(a);
        tasks.push(tokio::spawn(serve(
            l,
            app,
            Some(tls),
            broker.shutdown_signal(),
        )));
    }
    tasks.push(tokio::spawn(state.stats.clone().run(broker.clone())));
    running.attach_http(http_addr, https_addr, tasks);
    let task = tokio::spawn(serve(
        prometheus,
        crate::metrics::app(state),
        None,
        broker.shutdown_signal(),
    ));
    running.attach_prometheus(prometheus_addr, task);
    Ok(())
}

/// Accepts connections until shutdown, then lets open ones finish (bounded).
async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    // Every connection task is owned here (TLS handshakes included) and ended at shutdown.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        match tls {
                            None => serve_connection(TokioIo::new(stream), app, peer, watcher).await,
                            Some(tls) => match tls::accept(&tls, stream).await {
                                Ok(s) => serve_connection(TokioIo::new(s), app, peer, watcher).await,
                                Err(e) => tracing::debug!(%peer, "HTTPS handshake failed: {e}"),
                            },
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    drop(listener);
    // Open connections finish their requests (bounded), then whatever is left (idle
    // keep-alive connections, handshakes) is ended.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(uri) = normalize_uri(req.uri()) {
            *req.uri_mut() = uri;
        }
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// The path with empty segments under `/api/` turned into `%2F` (the vhost `/` written
/// raw, or an empty vhost, as Flower sends it), and a trailing `/` dropped. `None` when
/// nothing changes.
pub fn normalize_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/")?;
    if !rest.contains("//") && !rest.ends_with('/') {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let mut i = 0;
    while i < segments.len() {
        if !segments[i].is_empty() {
            out.push(segments[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < segments.len() && segments[i].is_empty() {
            i += 1;
        }
        let run = i - start;
        let at_end = i == segments.len();
        // A single trailing slash is dropped; any other run of empty segments is one `/`.
        if !(at_end && run == 1) && start > 0 {
            out.push("%2F");
        }
    }
    let joined = format!("/api/{}", out.join("/"));
    (joined != path).then_some(joined)
}

fn normalize_uri(uri: &Uri) -> Option<Uri> {
    let path = normalize_path(uri.path())?;
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Uri::builder().path_and_query(pq).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_vhost_segments_mean_the_default_vhost() {
        let n = |p: &str| normalize_path(p).unwrap_or_else(|| p.to_owned());
        assert_eq!(n("/api/queues//"), "/api/queues/%2F");
        assert_eq!(n("/api/queues/"), "/api/queues");
        assert_eq!(n("/api/queues//q"), "/api/queues/%2F/q");
        assert_eq!(n("/api/queues///q"), "/api/queues/%2F/q");
        assert_eq!(n("/api/queues/%2F/q"), "/api/queues/%2F/q");
        assert_eq!(n("/api/overview"), "/api/overview");
        assert_eq!(
            n("/api/exchanges//amq.direct/publish"),
            "/api/exchanges/%2F/amq.direct/publish"
        );
        assert_eq!(n("/other//x"), "/other//x");
        assert!(normalize_path("/api/queues").is_none());
    }
}
