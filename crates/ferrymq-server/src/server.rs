//! Starting and stopping the broker: bind the listeners (port 0 picks a free port), accept
//! connections into a `JoinSet`, and on shutdown close every connection with 320, wait for
//! the connection tasks, then stop the queue tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::amqp;
use crate::broker::Broker;
use crate::config::Config;
use crate::kafka::{self, KafkaConfig, KafkaFront};
use crate::tls::Tls;
use crate::transport::{self, Transport};

/// A started broker.
pub struct Running {
    pub broker: Arc<Broker>,
    pub amqp_addr: SocketAddr,
    /// The AMQPS listener's address (with a TLS certificate configured).
    pub amqps_addr: Option<SocketAddr>,
    /// The TLS settings every TLS listener uses (reloaded on SIGHUP).
    pub tls: Option<Arc<Tls>>,
    amqps_accept: Option<tokio::task::JoinHandle<()>>,
    pub kafka_addr: SocketAddr,
    /// The Kafka SSL / SASL_SSL listener, when TLS is configured.
    pub kafka_tls_addr: Option<SocketAddr>,
    pub kafka: Arc<KafkaFront>,
    accept: tokio::task::JoinHandle<()>,
    kafka_accept: Vec<tokio::task::JoinHandle<()>>,
    /// The management API's listener (set by the HTTP front, `ferrymq-http`, once started).
    pub http_addr: Option<SocketAddr>,
    /// Its HTTPS listener, when TLS is configured.
    pub https_addr: Option<SocketAddr>,
    /// The HTTP front's tasks (listeners, sampler): they end on the shutdown signal and
    /// are awaited by [`Running::shutdown`].
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Samples memory use (ends on the shutdown signal).
    memory_task: tokio::task::JoinHandle<()>,
}

/// Binds the listeners and starts accepting. Returns once the ports are bound.
pub async fn run(config: Config) -> anyhow::Result<Running> {
    let fsync = config.fsync_policy()?;
    if config.kafka_default_partitions < 1 {
        anyhow::bail!("kafka_default_partitions must be at least 1");
    }
    let addr = format!("{}:{}", config.bind, config.amqp_port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding AMQP listener on {addr}: {e}"))?;
    let amqp_addr = listener.local_addr()?;
    let kafka_config = KafkaConfig::from_config(&config, fsync)?;
    let (bind, kafka_port, kafka_tls_port) = (
        config.bind.clone(),
        config.kafka_port,
        config.kafka_tls_port,
    );
    let auth_path = config.data_dir.join(crate::paths::AUTH_FILE);
    let first_boot = !auth_path.exists();
    let auth = Broker::open_auth(&config)?;
    let definitions = config.load_definitions.clone();
    let broker = Broker::new(config, auth);
    broker.empty_trash();
    for v in broker.auth.vhosts() {
        broker.start_vhost(&v.name)?;
    }
    if let Some(path) = definitions {
        if let Err(e) = crate::definitions::load_file(&broker, &path) {
            if first_boot {
                // Nothing was imported (imports of users are all or nothing): let the
                // next boot seed the store afresh rather than start with no users.
                let _ = std::fs::remove_file(&auth_path);
            }
            return Err(e);
        }
    }
    broker.check_disk();
    let m = &broker.memory;
    tracing::info!(
        limit = m.limit(),
        watermark = %m.watermark(),
        available = m.available().0,
        source = ?m.available().1,
        "memory high watermark"
    );
    let memory_task = tokio::spawn(broker.memory.clone().run(broker.shutdown_signal()));
    let tls = match (&broker.config.tls_cert_file, &broker.config.tls_key_file) {
        (Some(cert), Some(key)) => Some(Tls::load(
            cert,
            key,
            broker.config.tls_ca_file.as_deref(),
            broker.config.tls_verify_peer,
        )?),
        _ => None,
    };
    let kafka = KafkaFront::open(kafka_config, broker.auth.clone(), broker.shutdown_signal())?;
    broker.set_kafka(kafka.clone());
    kafka.set_alarms(broker.memory.subscribe(), broker.disk_alarm_signal());
    kafka.set_registry(broker.registry.clone());
    let (kafka_addr, kafka_plain) = kafka::listen(kafka.clone(), &bind, kafka_port).await?;
    let mut kafka_accept = vec![kafka_plain];
    let mut kafka_tls_addr = None;
    let accept = tokio::spawn(accept_loop(broker.clone(), listener, None));
    let (mut amqps_addr, mut amqps_accept) = (None, None);
    if let Some(tls) = &tls {
        let addr = format!("{}:{}", broker.config.bind, broker.config.amqps_port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding AMQPS listener on {addr}: {e}"))?;
        amqps_addr = Some(listener.local_addr()?);
        amqps_accept = Some(tokio::spawn(accept_loop(
            broker.clone(),
            listener,
            Some(tls.clone()),
        )));
        let (addr, task) =
            kafka::listen_tls(kafka.clone(), tls.clone(), &bind, kafka_tls_port).await?;
        kafka_accept.push(task);
        kafka_tls_addr = Some(addr);
    }
    Ok(Running {
        broker,
        amqp_addr,
        amqps_addr,
        tls,
        amqps_accept,
        kafka_addr,
        kafka_tls_addr,
        kafka,
        accept,
        kafka_accept,
        http_addr: None,
        https_addr: None,
        http_tasks: Vec::new(),
        memory_task,
    })
}

/// Accepts AMQP connections (over TLS when `tls` is given: the handshake runs in the
/// connection's own task, so a slow or garbage client holds up nobody).
async fn accept_loop(broker: Arc<Broker>, listener: TcpListener, tls: Option<Arc<Tls>>) {
    let mut shutdown = broker.shutdown_signal();
    let mut connections = JoinSet::new();
    let mut disk_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = disk_check.tick(), if tls.is_none() => broker.check_disk(),
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let broker = broker.clone();
                    match &tls {
                        None => {
                            let _ = stream.set_nodelay(true);
                            connections.spawn(amqp::serve(broker, Transport::Plain(stream), peer));
                        }
                        Some(tls) => {
                            let tls = tls.clone();
                            connections.spawn(async move {
                                let _ = stream.set_nodelay(true);
                                match transport::accept_tls(&tls, stream).await {
                                    Ok(t) => amqp::serve(broker, t, peer).await,
                                    Err(e) => tracing::info!(%peer, "AMQPS handshake failed: {e}"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    // Connections saw the same signal and are closing with 320; give them time to finish.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

impl Running {
    /// Re-reads the TLS certificate and key (SIGHUP): new connections get the new
    /// certificate, open ones keep their sessions.
    pub fn reload_tls(&self) -> anyhow::Result<()> {
        if let Some(tls) = &self.tls {
            tls.reload()?;
            tracing::info!("TLS certificate reloaded");
        }
        Ok(())
    }

    /// Records the HTTP front's listeners and tasks (the front lives in `ferrymq-http`,
    /// above this crate; it watches the broker's shutdown signal).
    pub fn attach_http(
        &mut self,
        http: SocketAddr,
        https: Option<SocketAddr>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) {
        self.http_addr = Some(http);
        self.https_addr = https;
        self.http_tasks.extend(tasks);
    }

    /// Closes every connection (AMQP ones with 320 CONNECTION_FORCED) and the HTTP
    /// front, then stops the queue and partition tasks.
    pub async fn shutdown(self) {
        self.broker.begin_shutdown();
        for t in self.http_tasks {
            let _ = t.await;
        }
        let _ = self.accept.await;
        if let Some(a) = self.amqps_accept {
            let _ = a.await;
        }
        for t in self.kafka_accept {
            let _ = t.await;
        }
        self.broker.stop_queues().await;
        self.kafka.stop().await;
        let _ = self.memory_task.await;
    }
}
