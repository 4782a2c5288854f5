//! Starting and stopping the broker: bind the listeners (port 0 picks a free port), accept
//! connections into a `JoinSet`, and on shutdown close every connection with 320, wait for
//! the connection tasks, then stop the queue tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::Config;
use crate::connection;
use crate::kafka::{self, KafkaConfig, KafkaFront};

/// A started broker.
pub struct Running {
    pub broker: Arc<Broker>,
    pub amqp_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    /// The Kafka SSL / SASL_SSL listener, when TLS is configured.
    pub kafka_tls_addr: Option<SocketAddr>,
    pub kafka: Arc<KafkaFront>,
    accept: tokio::task::JoinHandle<()>,
    kafka_accept: Vec<tokio::task::JoinHandle<()>>,
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
    // The user store; the engine takes it over once it authenticates AMQP too.
    let auth = Arc::new(ferrymq_auth::AuthStore::open(
        &config.data_dir.join(crate::paths::AUTH_FILE),
        ferrymq_auth::Seed {
            default_user: config.default_user.clone().zip(config.default_pass.clone()),
            definitions_present: config.load_definitions.is_some(),
        },
    )?);
    let (bind, kafka_port, kafka_tls_port) =
        (config.bind.clone(), config.kafka_port, config.kafka_tls_port);
    let tls_files = (
        config.tls_cert_file.clone(),
        config.tls_key_file.clone(),
        config.tls_ca_file.clone(),
        config.tls_verify_peer,
    );
    let broker = Broker::new(config);
    broker.empty_trash();
    broker.start_vhost("/")?;
    broker.check_disk();
    let kafka = KafkaFront::open(kafka_config, auth, broker.shutdown_signal())?;
    let (kafka_addr, kafka_plain) = kafka::listen(kafka.clone(), &bind, kafka_port).await?;
    let mut kafka_accept = vec![kafka_plain];
    let mut kafka_tls_addr = None;
    if let (Some(cert), Some(key)) = (&tls_files.0, &tls_files.1) {
        let tls = crate::tls::Tls::load(cert, key, tls_files.2.as_deref(), tls_files.3)?;
        let (addr, task) = kafka::listen_tls(kafka.clone(), tls, &bind, kafka_tls_port).await?;
        kafka_accept.push(task);
        kafka_tls_addr = Some(addr);
    }
    let accept = tokio::spawn(accept_loop(broker.clone(), listener));
    Ok(Running {
        broker,
        amqp_addr,
        kafka_addr,
        kafka_tls_addr,
        kafka,
        accept,
        kafka_accept,
    })
}

async fn accept_loop(broker: Arc<Broker>, listener: TcpListener) {
    let mut shutdown = broker.shutdown_signal();
    let mut connections = JoinSet::new();
    let mut disk_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = disk_check.tick() => broker.check_disk(),
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    connections.spawn(connection::serve(broker.clone(), stream, peer));
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
    /// Closes every connection (AMQP ones with 320 CONNECTION_FORCED), then stops the
    /// queue and partition tasks.
    pub async fn shutdown(self) {
        self.broker.begin_shutdown();
        let _ = self.accept.await;
        for t in self.kafka_accept {
            let _ = t.await;
        }
        self.broker.stop_queues().await;
        self.kafka.stop().await;
    }
}
