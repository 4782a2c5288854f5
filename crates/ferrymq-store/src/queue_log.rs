//! `LogStore`: a durable queue's messages in its own segmented log (`crate::log`). Every
//! message enqueued on a durable queue is appended (so queue offsets and log offsets are the
//! same numbers); settles become log acks; `sync` is the fsync publisher confirms wait for.
//! On open, unacked persistent messages come back; unacked transient ones are acked away,
//! as RabbitMQ drops non-persistent messages of durable queues on restart.
//!
//! Payload of one record (after the log's own framing):
//! `flags:u8` (bit 0 persistent, bit 1 has priority, bit 2 has TTL) `priority:u8`
//! [`ttl_ms:u64` if bit 2]
//! `exchange_len:u8 exchange` `routing_key_len:u8 routing_key`
//! `properties_len:u32 properties` `body` (the rest).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ferrymq_core::queue::{entry_cost, Offset, HEAD_BYTES};
use ferrymq_core::Message;

use crate::log::{Backend, FileBackend, Log, LogConfig, LogError, SyncJob};
use crate::{QueueStore, Recovered, StoreError, SyncWork};

/// A log fsync running off the queue task's loop, with its outcome once run.
struct LogSync<B: Backend> {
    job: SyncJob<B>,
    result: Option<Result<(), LogError>>,
}

impl<B: Backend> SyncWork for LogSync<B> {
    fn run(&mut self) {
        self.result = Some(self.job.run());
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// Encodes a message as a log payload.
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    out.clear();
    out.push(
        msg.persistent as u8
            | (msg.priority.is_some() as u8) << 1
            | (msg.ttl_ms.is_some() as u8) << 2,
    );
    out.push(msg.priority.unwrap_or(0));
    if let Some(ttl) = msg.ttl_ms {
        out.extend_from_slice(&ttl.to_be_bytes());
    }
    let ex = &msg.exchange[..msg.exchange.len().min(255)];
    out.push(ex.len() as u8);
    out.extend_from_slice(ex);
    let rk = &msg.routing_key[..msg.routing_key.len().min(255)];
    out.push(rk.len() as u8);
    out.extend_from_slice(rk);
    out.extend_from_slice(&(msg.raw_properties.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg.raw_properties);
    out.extend_from_slice(&msg.body);
}

/// Decodes a log payload; `None` if malformed.
pub fn decode_message(p: Vec<u8>) -> Option<Message> {
    decode_message_bytes(Bytes::from(p))
}

/// `decode_message` over shared bytes (the message's fields are slices of them).
pub fn decode_message_bytes(all: Bytes) -> Option<Message> {
    let flags = *all.first()?;
    let priority = *all.get(1)?;
    let mut pos = 2;
    let ttl_ms = if flags & 4 != 0 {
        let t = u64::from_be_bytes(all.get(2..10)?.try_into().ok()?);
        pos = 10;
        Some(t)
    } else {
        None
    };
    let mut short = |all: &Bytes| -> Option<Bytes> {
        let n = *all.get(pos)? as usize;
        let s = all.get(pos + 1..pos + 1 + n)?;
        let _ = s;
        let r = all.slice(pos + 1..pos + 1 + n);
        pos += 1 + n;
        Some(r)
    };
    let exchange = short(&all)?;
    let routing_key = short(&all)?;
    let n = u32::from_be_bytes(all.get(pos..pos + 4)?.try_into().ok()?) as usize;
    pos += 4;
    all.get(pos..pos.checked_add(n)?)?;
    let raw_properties = all.slice(pos..pos + n);
    let body = all.slice(pos + n..);
    Some(Message {
        exchange,
        routing_key,
        raw_properties,
        body,
        persistent: flags & 1 != 0,
        priority: (flags & 2 != 0).then_some(priority),
        headers: None,
        ttl_ms,
    })
}

/// A durable queue's directory under the data dir: a 64-bit hash of the name (names may
/// hold any bytes and be longer than a file name), with the name itself in `name`.
pub fn queue_dir(data_dir: &Path, name: &str) -> PathBuf {
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c_append(0x9e37_79b9, name.as_bytes());
    data_dir.join("queues").join(format!("{a:08x}{b:08x}"))
}

/// The log-backed store of one durable queue (on real files by default; tests use the
/// fault-injecting backend).
pub struct LogStore<B: Backend = FileBackend> {
    dir: PathBuf,
    log: Log<B>,
    scratch: Vec<u8>,
    /// Appends or acks since the last sync.
    dirty: bool,
    /// `recover` reports the enqueue time of every message (the queue has a TTL).
    track_times: bool,
    /// When the last sync that fsynced the ack files began (see [`ACK_SYNC_INTERVAL`]).
    acks_synced_at: std::time::Instant,
    /// [`ACK_SYNC_INTERVAL`] unless a test changed it.
    ack_sync_interval: std::time::Duration,
    /// The owner's clock (`set_clock`), stamped on appends; 0 = read the clock each time.
    clock_ms: i64,
}

/// How long acks (removes) may stay written to the OS but not fsynced: `begin_sync` fsyncs
/// the records every time (confirms wait on those) and the ack files only when their
/// oldest unsynced entry is this old. A fanout message to N durable queues thus costs N
/// fdatasyncs per round instead of 2N. `sync` (shutdown, `interval`, tests) fsyncs both.
pub const ACK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl<B: Backend> LogStore<B> {
    /// Asks `recover` for the enqueue time of every message, not only of those with their
    /// own TTL (a queue with `x-message-ttl` needs them to restore expiry deadlines).
    pub fn track_times(&mut self, on: bool) {
        self.track_times = on;
    }

    /// How long acks may stay unsynced ([`ACK_SYNC_INTERVAL`] by default; zero: every
    /// `begin_sync` fsyncs them).
    pub fn set_ack_sync_interval(&mut self, interval: std::time::Duration) {
        self.ack_sync_interval = interval;
    }
}

impl LogStore<FileBackend> {
    /// Opens (or creates) the store of queue `name` under `data_dir`.
    pub fn open(data_dir: &Path, name: &str) -> Result<LogStore, StoreError> {
        LogStore::open_with(FileBackend, data_dir, name, LogConfig::default())
    }
}

impl<B: Backend> LogStore<B> {
    /// Opens (or creates) the store of queue `name` under `data_dir` on `backend`.
    pub fn open_with(
        backend: B,
        data_dir: &Path,
        name: &str,
        config: LogConfig,
    ) -> Result<LogStore<B>, StoreError> {
        let dir = queue_dir(data_dir, name);
        // `Log::open` makes the directory chain (`queues/` included) and the first segment
        // durable; the `name` file (for people and tools reading the data dir) is written
        // durably beside them.
        let log = Log::open(backend.clone(), &dir, config)?;
        let name_file = dir.join("name");
        let names = backend.list(&dir).map_err(|e| io(&dir, e))?;
        if !names.iter().any(|n| n == "name") {
            crate::log::backend::write_durably(&backend, &name_file, name.as_bytes())
                .map_err(|e| io(&name_file, e))?;
        }
        Ok(LogStore {
            dir,
            log,
            scratch: Vec::new(),
            dirty: false,
            track_times: false,
            acks_synced_at: std::time::Instant::now(),
            ack_sync_interval: ACK_SYNC_INTERVAL,
            clock_ms: 0,
        })
    }
}

impl<B: Backend> LogStore<B> {
    /// Acks were written but not fsynced for [`ACK_SYNC_INTERVAL`] or longer.
    fn ack_sync_due(&self) -> bool {
        self.log.has_unsynced_acks() && self.acks_synced_at.elapsed() >= self.ack_sync_interval
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<B: Backend + Send + 'static> QueueStore for LogStore<B> {
    fn append(&mut self, offset: Offset, msg: &Arc<Message>) -> Result<(), StoreError> {
        encode_message(msg, &mut self.scratch);
        let stamp = if self.clock_ms > 0 {
            self.clock_ms
        } else {
            now_ms()
        };
        let at = self.log.append(&self.scratch, stamp)?;
        self.dirty = true;
        if at != offset {
            return Err(StoreError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(format!(
                    "log offset {at} does not match queue offset {offset}"
                )),
            });
        }
        Ok(())
    }

    fn set_clock(&mut self, now_ms: u64) {
        self.clock_ms = i64::try_from(now_ms).unwrap_or(0);
    }

    fn remove(&mut self, offsets: &[Offset]) -> Result<(), StoreError> {
        for &o in offsets {
            self.log.ack(o)?;
        }
        self.dirty |= !offsets.is_empty();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(self.log.flush()?)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty || self.log.has_unsynced() {
            self.acks_synced_at = std::time::Instant::now();
            self.log.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn needs_sync(&self) -> bool {
        self.dirty || self.ack_sync_due()
    }

    fn begin_sync(&mut self) -> Result<Option<Box<dyn SyncWork>>, StoreError> {
        if !self.needs_sync() {
            return Ok(None);
        }
        let job = if self.ack_sync_due() {
            self.acks_synced_at = std::time::Instant::now();
            self.log.begin_sync()?
        } else {
            // Acks go to the OS (a process crash keeps them); their fsync waits for
            // `ACK_SYNC_INTERVAL`.
            self.log.begin_sync_records_writing_acks()?
        };
        self.dirty = false;
        Ok(job.map(|job| Box::new(LogSync { job, result: None }) as Box<dyn SyncWork>))
    }

    fn sync_deadline(&self) -> Option<std::time::Instant> {
        self.log
            .has_unsynced_acks()
            .then(|| self.acks_synced_at + self.ack_sync_interval)
    }

    fn finish_sync(&mut self, work: Box<dyn SyncWork>) -> Result<(), StoreError> {
        let Ok(sync) = work.into_any().downcast::<LogSync<B>>() else {
            return Err(StoreError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::other("a sync job of another store"),
            });
        };
        let LogSync { job, result } = *sync;
        let result = result.unwrap_or(Err(LogError::Closed));
        let outcome = self.log.finish_sync(job, result);
        // Acks of the records this sync covered were written just now: the next sync
        // makes them durable.
        self.dirty |= self.log.has_unsynced();
        outcome.map(drop).map_err(StoreError::from)
    }

    fn recover(&mut self) -> Result<Recovered, StoreError> {
        // One sequential pass over the log: the first `HEAD_BYTES`' worth of unacked
        // persistent messages are kept in memory, the rest only as offsets (with their
        // priority, so a priority queue knows each one's level without reading it again).
        let mut messages = Vec::new();
        let mut head_cost = 0usize;
        let mut paged = Vec::new();
        let mut paged_priority = Vec::new();
        let mut paged_bytes = 0usize;
        let mut transient = Vec::new();
        let mut times = Vec::new();
        let start = self.log.start_offset();
        for record in self.log.reader(start) {
            let record = record?;
            if self.log.is_acked(record.offset) {
                continue;
            }
            let offset = record.offset;
            match decode_message(record.payload) {
                Some(m) if m.persistent => {
                    if self.track_times || m.ttl_ms.is_some() {
                        let size = m.size().min(u32::MAX as usize) as u32;
                        times.push((offset, record.timestamp, m.ttl_ms, size));
                    }
                    if paged.is_empty() && head_cost + entry_cost(&m) <= HEAD_BYTES {
                        head_cost += entry_cost(&m);
                        messages.push((offset, Arc::new(m)));
                    } else {
                        paged_bytes += m.size();
                        paged.push(offset);
                        paged_priority.push(m.priority.unwrap_or(0));
                    }
                }
                _ => transient.push(offset),
            }
        }
        for &o in &transient {
            self.log.ack(o)?;
        }
        if !transient.is_empty() {
            self.log.sync()?;
        }
        Ok(Recovered {
            next_offset: self.log.next_offset(),
            messages,
            paged,
            paged_priority,
            paged_bytes,
            dropped_transient: transient.len(),
            times,
        })
    }

    fn can_page(&self) -> bool {
        true
    }

    fn read(&mut self, offsets: &[Offset]) -> Result<Vec<(Offset, Arc<Message>)>, StoreError> {
        let Some(&first) = offsets.first() else {
            return Ok(Vec::new());
        };
        // Records still in the write buffer are not in the file yet.
        self.log.flush()?;
        let mut out = Vec::with_capacity(offsets.len());
        let mut want = offsets.iter().copied().peekable();
        for record in self.log.reader(first) {
            let record = record?;
            while want.peek().is_some_and(|&w| w < record.offset) {
                want.next();
            }
            match want.peek() {
                None => break,
                Some(&w) if w == record.offset => {
                    want.next();
                    if let Some(m) = decode_message(record.payload) {
                        out.push((record.offset, Arc::new(m)));
                    }
                }
                Some(_) => {}
            }
        }
        Ok(out)
    }

    fn destroy(&mut self) -> Result<(), StoreError> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| StoreError::Io {
            path: self.dir.display().to_string(),
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &'static [u8], persistent: bool) -> Arc<Message> {
        Arc::new(Message {
            exchange: Bytes::from_static(b"ex"),
            routing_key: Bytes::from_static(b"rk"),
            raw_properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::from_static(body),
            persistent,
            priority: Some(3),
            headers: None,
            ttl_ms: None,
        })
    }

    #[test]
    fn message_round_trip_and_garbage() {
        let m = msg(b"hello", true);
        let mut buf = Vec::new();
        encode_message(&m, &mut buf);
        assert_eq!(decode_message(buf.clone()).as_ref(), Some(&*m));
        for cut in 0..buf.len() - 5 {
            assert!(decode_message(buf[..cut].to_vec()).is_none(), "cut {cut}");
        }
    }

    #[test]
    fn read_back_by_offset_including_buffered_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path(), "q").unwrap();
        s.recover().unwrap();
        let bodies: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 3]).collect();
        for (i, b) in bodies.iter().enumerate() {
            let m = Arc::new(Message {
                body: Bytes::from(b.clone()),
                ..(*msg(b"", true)).clone()
            });
            s.append(i as u64, &m).unwrap();
        }
        let got = s.read(&[2, 3, 7, 19, 25]).unwrap();
        let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|(o, m)| (o, m.body.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (2, vec![2; 3]),
                (3, vec![3; 3]),
                (7, vec![7; 3]),
                (19, vec![19; 3])
            ]
        );
    }

    #[test]
    fn restart_keeps_unacked_persistent_messages() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path(), "q").unwrap();
            assert_eq!(s.recover().unwrap().next_offset, 0);
            for (i, (body, persistent)) in
                [(&b"a"[..], true), (b"b", false), (b"c", true), (b"d", true)]
                    .into_iter()
                    .enumerate()
            {
                s.append(i as u64, &msg(body, persistent)).unwrap();
            }
            s.remove(&[2]).unwrap();
            s.sync().unwrap();
        }
        let mut s = LogStore::open(dir.path(), "q").unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.next_offset, 4);
        assert_eq!(r.dropped_transient, 1);
        let got: Vec<(u64, &[u8])> = r.messages.iter().map(|(o, m)| (*o, &m.body[..])).collect();
        assert_eq!(got, vec![(0, &b"a"[..]), (3, b"d")]);
        s.destroy().unwrap();
        assert!(!queue_dir(dir.path(), "q").exists());
    }
}
