//! The `--queue-declare COUNT` mode: declares COUNT queues over one channel as fast as the
//! broker answers, either one at a time (each waits for declare-ok) or pipelined with up to
//! a window of requests in flight, reports queues per second, then deletes them the same way.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::conn::{BrokerClosed, Connection};
use super::method::{self, id, DeclareFlags, Method};
use super::uri::AmqpUri;
use crate::stats::fmt_count;
use crate::tls::TlsClient;

/// Result of one declare-mode run.
#[derive(Debug, Clone, Copy)]
pub struct DeclareReport {
    pub queues: u64,
    pub declare_secs: f64,
    pub delete_secs: f64,
}

impl DeclareReport {
    /// Queues declared per second.
    pub fn declare_rate(&self) -> f64 {
        self.queues as f64 / self.declare_secs.max(1e-9)
    }

    /// Queues deleted per second.
    pub fn delete_rate(&self) -> f64 {
        self.queues as f64 / self.delete_secs.max(1e-9)
    }
}

/// Declares and deletes `count` queues named `{prefix}-{i}` with up to `window` requests in
/// flight (1 = sequential); progress goes to stderr every second.
pub async fn run(
    uri: &AmqpUri,
    tls: Option<&TlsClient>,
    count: u64,
    window: u64,
    durable: bool,
    prefix: &str,
) -> anyhow::Result<DeclareReport> {
    let mut conn = Connection::open(uri, tls).await?;
    eprintln!("connected to {} at {}", conn.server, uri.address());
    conn.open_channel(1).await?;
    let flags = DeclareFlags {
        durable,
        ..DeclareFlags::default()
    };
    let name = |i: u64| format!("{prefix}-{i}");
    let started = Instant::now();
    pipelined(
        &mut conn,
        count,
        window,
        "declared",
        id::QUEUE_DECLARE_OK,
        |out, i| method::queue_declare(out, 1, &name(i), flags, &[]).map_err(Into::into),
    )
    .await?;
    let declare_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "declared {count} queues in {declare_secs:.2} s: {} queues/s",
        fmt_count(count as f64 / declare_secs.max(1e-9))
    );
    let started = Instant::now();
    pipelined(
        &mut conn,
        count,
        window,
        "deleted",
        id::QUEUE_DELETE_OK,
        |out, i| method::queue_delete(out, 1, &name(i)).map_err(Into::into),
    )
    .await?;
    let delete_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "deleted {count} queues in {delete_secs:.2} s: {} queues/s",
        fmt_count(count as f64 / delete_secs.max(1e-9))
    );
    conn.close().await?;
    Ok(DeclareReport {
        queues: count,
        declare_secs,
        delete_secs,
    })
}

/// Sends `count` requests built by `encode` keeping at most `window` unanswered, and
/// counts replies `want`.
async fn pipelined(
    conn: &mut Connection,
    count: u64,
    window: u64,
    verb: &str,
    want: (u16, u16),
    mut encode: impl FnMut(&mut Vec<u8>, u64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let window = window.max(1);
    let (mut sent, mut done) = (0u64, 0u64);
    let mut last_print = Instant::now();
    let mut last_done = 0;
    while done < count {
        while sent < count && sent - done < window {
            encode(conn.out(), sent)?;
            sent += 1;
        }
        conn.flush().await?;
        let (_, m) = conn.next_method().await?;
        if let Some(closed) = BrokerClosed::from_method(&m) {
            if let Method::Close { class_id: 10, .. } = m {
                method::connection_close_ok(conn.out());
                let _ = conn.flush().await;
            }
            return Err(closed.into());
        }
        if m.id() == want {
            done += 1;
        } else if !matches!(m, Method::Blocked(_)) {
            bail!(
                "unexpected {} while waiting for replies",
                super::conn::method_name(m.id())
            );
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let secs = last_print.elapsed().as_secs_f64();
            eprintln!(
                "{verb} {done}/{count} ({} queues/s)",
                fmt_count((done - last_done) as f64 / secs)
            );
            last_print = Instant::now();
            last_done = done;
        }
    }
    Ok(())
}
