//! `HalfLog`: a vhost's half messages (`ferrymq_core::half`) in their own segmented log
//! (`crate::log`), directory `halves/` in the vhost's data dir. Memory holds only the
//! index (`HalfBook`); bodies are read back when a transaction commits or expires.
//!
//! Every record's payload (after the log's own framing, see `docs/storage-format.md`)
//! starts with a kind byte:
//!
//! - `1` half: `id_len:u8 id check_queue_len:u8 check_queue (len 0 = no check-back)
//!   check_after_ms:u32 max_checks:u16 mandatory:u8 stored_ms:u64` then exactly the
//!   `queue_log` message encoding (`flags:u8 priority:u8 [ttl:u64] exchange_len:u8
//!   exchange routing_key_len:u8 routing_key properties_len:u32 properties body`).
//! - `2` check state: `id_len:u8 id count:u16 next_due_ms:u64` — the checks sent so far
//!   and when the next one (or expiry) is due; the latest record per id wins.
//!
//! All integers big-endian. A decided transaction's records are acked (the log deletes
//! fully acked segments); a superseded check record is acked when its successor is written.

use std::path::{Path, PathBuf};

use ferrymq_core::queue::Offset;
use ferrymq_core::Message;

use crate::log::{Backend, FileBackend, Log, LogConfig, LogError, SyncJob, TrackedLog};
use crate::queue_log::{decode_message, encode_message};
use crate::StoreError;

const KIND_HALF: u8 = 1;
const KIND_CHECK: u8 = 2;

/// The directory of a vhost's half log.
pub fn half_dir(vhost_dir: &Path) -> PathBuf {
    vhost_dir.join("halves")
}

/// What a half record holds besides its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfHead {
    pub id: String,
    /// Empty: no check-back.
    pub check_queue: String,
    pub check_after_ms: u32,
    pub max_checks: u16,
    /// The half was published with `mandatory`.
    pub mandatory: bool,
    pub stored_ms: u64,
}

/// A live record found by recovery, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    Half {
        offset: Offset,
        head: HalfHead,
    },
    Check {
        offset: Offset,
        id: String,
        count: u16,
        next_due: u64,
    },
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(dir: &Path, offset: Offset) -> StoreError {
    io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed half-log record at offset {offset}"),
        ),
    )
}

/// Encodes a half record's payload.
pub fn encode_half(head: &HalfHead, msg: &Message, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    out.clear();
    out.push(KIND_HALF);
    let id = &head.id.as_bytes()[..head.id.len().min(255)];
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    let q = &head.check_queue.as_bytes()[..head.check_queue.len().min(255)];
    out.push(q.len() as u8);
    out.extend_from_slice(q);
    out.extend_from_slice(&head.check_after_ms.to_be_bytes());
    out.extend_from_slice(&head.max_checks.to_be_bytes());
    out.push(head.mandatory as u8);
    out.extend_from_slice(&head.stored_ms.to_be_bytes());
    encode_message(msg, scratch);
    out.extend_from_slice(scratch);
}

/// Encodes a check-state record's payload.
pub fn encode_check(id: &str, count: u16, next_due: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(KIND_CHECK);
    let id = &id.as_bytes()[..id.len().min(255)];
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&next_due.to_be_bytes());
}

struct Cursor<'a> {
    p: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.p.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn short_str(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decodes a half record's head; returns it and where the message encoding starts.
fn decode_head(p: &[u8]) -> Option<(HalfHead, usize)> {
    let mut c = Cursor { p, pos: 0 };
    if c.u8()? != KIND_HALF {
        return None;
    }
    let head = HalfHead {
        id: c.short_str()?,
        check_queue: c.short_str()?,
        check_after_ms: c.u32()?,
        max_checks: c.u16()?,
        mandatory: c.u8()? != 0,
        stored_ms: c.u64()?,
    };
    Some((head, c.pos))
}

fn decode_check(p: &[u8]) -> Option<(String, u16, u64)> {
    let mut c = Cursor { p, pos: 0 };
    if c.u8()? != KIND_CHECK {
        return None;
    }
    Some((c.short_str()?, c.u16()?, c.u64()?))
}

/// One vhost's half messages.
pub struct HalfLog<B: Backend = FileBackend> {
    dir: PathBuf,
    log: TrackedLog<B>,
    scratch: Vec<u8>,
    payload: Vec<u8>,
}

impl HalfLog<FileBackend> {
    pub fn open(dir: &Path) -> Result<(Self, Vec<Recovered>), StoreError> {
        Self::open_with(FileBackend, dir, LogConfig::default())
    }
}

impl<B: Backend> HalfLog<B> {
    /// Opens (or creates) the log in `dir`; returns every unacked record in log order.
    /// Unreadable records are acked (dropped) with a warning.
    pub fn open_with(
        backend: B,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(Self, Vec<Recovered>), StoreError> {
        let mut log = Log::open(backend, dir, config)?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for record in log.reader(log.start_offset()) {
            let record = record?;
            if log.is_acked(record.offset) {
                continue;
            }
            let p = &record.payload;
            match p.first() {
                Some(&KIND_HALF) => match decode_head(p) {
                    Some((head, _)) => out.push(Recovered::Half {
                        offset: record.offset,
                        head,
                    }),
                    None => bad.push(record.offset),
                },
                Some(&KIND_CHECK) => match decode_check(p) {
                    Some((id, count, next_due)) => out.push(Recovered::Check {
                        offset: record.offset,
                        id,
                        count,
                        next_due,
                    }),
                    None => bad.push(record.offset),
                },
                _ => bad.push(record.offset),
            }
        }
        for &o in &bad {
            tracing::warn!(dir = %dir.display(), offset = o, "dropping a malformed half-log record");
            log.ack(o)?;
        }
        if !bad.is_empty() {
            log.sync()?;
        }
        Ok((
            HalfLog {
                dir: dir.to_path_buf(),
                log: TrackedLog::new(log),
                scratch: Vec::new(),
                payload: Vec::new(),
            },
            out,
        ))
    }

    /// Stores a half; durable after a sync.
    pub fn append_half(
        &mut self,
        head: &HalfHead,
        msg: &Message,
        now: i64,
    ) -> Result<Offset, StoreError> {
        encode_half(head, msg, &mut self.scratch, &mut self.payload);
        Ok(self.log.append(&self.payload, now)?)
    }

    /// Stores a transaction's check state; durable after a sync.
    pub fn append_check(
        &mut self,
        id: &str,
        count: u16,
        next_due: u64,
        now: i64,
    ) -> Result<Offset, StoreError> {
        encode_check(id, count, next_due, &mut self.payload);
        Ok(self.log.append(&self.payload, now)?)
    }

    /// Reads a half back.
    pub fn read_half(&mut self, offset: Offset) -> Result<(HalfHead, Message), StoreError> {
        let p = self.log.read(offset)?.payload;
        let (head, at) = decode_head(&p).ok_or_else(|| corrupt(&self.dir, offset))?;
        let msg = decode_message(p[at..].to_vec()).ok_or_else(|| corrupt(&self.dir, offset))?;
        Ok((head, msg))
    }

    /// A record left (decided, superseded); durable after a sync.
    pub fn ack(&mut self, offset: Offset) -> Result<(), StoreError> {
        Ok(self.log.ack(offset)?)
    }

    pub fn flush(&mut self) -> Result<(), StoreError> {
        Ok(self.log.flush()?)
    }

    pub fn sync(&mut self) -> Result<(), StoreError> {
        Ok(self.log.sync()?)
    }

    /// Starts an fsync of everything written so far (records and acks) off the caller's
    /// thread; see [`TrackedLog::begin_sync`].
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob<B>>, StoreError> {
        Ok(self.log.begin_sync()?)
    }

    pub fn finish_sync(
        &mut self,
        job: SyncJob<B>,
        result: Result<(), LogError>,
    ) -> Result<Offset, StoreError> {
        Ok(self.log.finish_sync(job, result)?)
    }

    pub fn needs_sync(&self) -> bool {
        self.log.needs_sync()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fault::{CrashMode, FaultBackend};
    use bytes::Bytes;

    fn msg(body: &'static [u8]) -> Message {
        Message {
            exchange: Bytes::from_static(b"orders"),
            routing_key: Bytes::from_static(b"new"),
            raw_properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::from_static(body),
            persistent: true,
            priority: None,
            headers: None,
            ttl_ms: None,
        }
    }

    fn head(id: &str) -> HalfHead {
        HalfHead {
            id: id.into(),
            check_queue: "checks".into(),
            check_after_ms: 6000,
            max_checks: 15,
            mandatory: true,
            stored_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn byte_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_check("ab", 3, 0x0102, &mut out);
        assert_eq!(out, [2, 2, b'a', b'b', 0, 3, 0, 0, 0, 0, 0, 0, 1, 2]);
        let mut scratch = Vec::new();
        let h = HalfHead {
            id: "t".into(),
            check_queue: String::new(),
            check_after_ms: 5,
            max_checks: 1,
            mandatory: false,
            stored_ms: 7,
        };
        encode_half(&h, &msg(b"x"), &mut scratch, &mut out);
        assert_eq!(
            &out[..21],
            &[1, 1, b't', 0, 0, 0, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1, 0]
        );
        let (back, at) = decode_head(&out).unwrap();
        assert_eq!(back, h);
        assert_eq!(decode_message(out[at..].to_vec()).unwrap(), msg(b"x"));
    }

    #[test]
    fn halves_and_check_states_survive_a_crash_after_sync() {
        let disk = FaultBackend::new(3);
        let dir = Path::new("/v/halves");
        let cfg = LogConfig {
            max_segment_bytes: 256,
            ..LogConfig::default()
        };
        let (mut log, rec) = HalfLog::open_with(disk.clone(), dir, cfg.clone()).unwrap();
        assert!(rec.is_empty());
        let mut offs = Vec::new();
        for i in 0..30 {
            offs.push(
                log.append_half(&head(&format!("t{i}")), &msg(b"payload"), 1)
                    .unwrap(),
            );
        }
        let c = log.append_check("t29", 2, 99, 1).unwrap();
        for &o in &offs[..25] {
            log.ack(o).unwrap();
        }
        log.sync().unwrap();
        let (h, m) = log.read_half(offs[27]).unwrap();
        assert_eq!(h, head("t27"));
        assert_eq!(&m.body[..], b"payload");
        log.append_half(&head("lost"), &msg(b"x"), 1).unwrap();
        drop(log);
        disk.crash(CrashMode::all());
        let (mut log, rec) = HalfLog::open_with(disk.clone(), dir, cfg).unwrap();
        let mut want: Vec<Recovered> = (25..30)
            .map(|i| Recovered::Half {
                offset: offs[i],
                head: head(&format!("t{i}")),
            })
            .collect();
        want.push(Recovered::Check {
            offset: c,
            id: "t29".into(),
            count: 2,
            next_due: 99,
        });
        assert_eq!(rec, want);
        assert_eq!(&log.read_half(offs[29]).unwrap().1.body[..], b"payload");
    }
}
