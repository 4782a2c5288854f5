//! The transaction log's value: one [`TxnMeta`] as bytes (big-endian; layout in
//! `docs/kafka-transactions.md`). [`decode`] never panics; it refuses anything malformed.

use std::collections::BTreeSet;

use super::{MarkerJob, PendingOffset, TxnMeta, TxnState};

/// The value format's version byte. Version 2 appends the transaction sequence and the
/// completing jobs to version 1's fields; version 1 values still decode (sequence 0, no
/// completing jobs).
pub const VERSION: u8 = 2;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// Encodes one transaction's metadata.
pub fn encode(meta: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.extend_from_slice(&meta.producer_id.to_be_bytes());
    out.extend_from_slice(&meta.epoch.to_be_bytes());
    out.extend_from_slice(&meta.timeout_ms.to_be_bytes());
    out.push(meta.state as u8);
    out.extend_from_slice(&meta.start_ms.to_be_bytes());
    out.extend_from_slice(&meta.last_update_ms.to_be_bytes());
    out.extend_from_slice(&(meta.partitions.len() as u32).to_be_bytes());
    for (t, p) in &meta.partitions {
        put_str(&mut out, t);
        out.extend_from_slice(&p.to_be_bytes());
    }
    out.extend_from_slice(&(meta.groups.len() as u32).to_be_bytes());
    for g in &meta.groups {
        put_str(&mut out, g);
    }
    out.extend_from_slice(&(meta.offsets.len() as u32).to_be_bytes());
    for o in &meta.offsets {
        put_str(&mut out, &o.group);
        put_str(&mut out, &o.topic);
        out.extend_from_slice(&o.partition.to_be_bytes());
        out.extend_from_slice(&o.offset.to_be_bytes());
        out.extend_from_slice(&o.leader_epoch.to_be_bytes());
        match &o.metadata {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(m) => {
                out.extend_from_slice(&(m.len() as i32).to_be_bytes());
                out.extend_from_slice(m.as_bytes());
            }
        }
    }
    out.extend_from_slice(&meta.seq.to_be_bytes());
    out.extend_from_slice(&(meta.completing.len() as u32).to_be_bytes());
    for c in &meta.completing {
        out.extend_from_slice(&c.producer_id.to_be_bytes());
        out.extend_from_slice(&c.epoch.to_be_bytes());
        out.push(u8::from(c.commit));
        out.extend_from_slice(&c.seq.to_be_bytes());
        out.extend_from_slice(&c.start_ms.to_be_bytes());
        out.extend_from_slice(&(c.partitions.len() as u32).to_be_bytes());
        for (t, p) in &c.partitions {
            put_str(&mut out, t);
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A count, bounded by what the remaining bytes could hold (`min` bytes each).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n <= self.0.len() / min).then_some(n)
    }
}

/// Decodes one value of transactional id `id`; `None` if it is malformed or of an
/// unknown version.
pub fn decode_id(id: &str, bytes: &[u8]) -> Option<TxnMeta> {
    let mut m = decode(bytes)?;
    for c in &mut m.completing {
        c.transactional_id = id.to_owned();
    }
    Some(m)
}

/// Decodes one value (completing jobs get an empty transactional id: see
/// [`decode_id`]); `None` if it is malformed or of an unknown version.
pub fn decode(bytes: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != 1 && version != VERSION {
        return None;
    }
    let producer_id = r.i64()?;
    let epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.u8()?)?;
    let start_ms = r.i64()?;
    let last_update_ms = r.i64()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..r.count(6)? {
        let t = r.string()?;
        partitions.insert((t, r.i32()?));
    }
    let mut groups = BTreeSet::new();
    for _ in 0..r.count(2)? {
        groups.insert(r.string()?);
    }
    let n = r.count(24)?;
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        let group = r.string()?;
        let topic = r.string()?;
        let partition = r.i32()?;
        let offset = r.i64()?;
        let leader_epoch = r.i32()?;
        let len = r.i32()?;
        let metadata = if len < 0 {
            None
        } else {
            Some(String::from_utf8(r.take(len as usize)?.to_vec()).ok()?)
        };
        offsets.push(PendingOffset {
            group,
            topic,
            partition,
            offset,
            leader_epoch,
            metadata,
        });
    }
    let mut seq = 0;
    let mut completing = Vec::new();
    if version >= 2 {
        seq = r.i32()?;
        for _ in 0..r.count(27)? {
            let producer_id = r.i64()?;
            let epoch = r.i16()?;
            let commit = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let seq = r.i32()?;
            let start_ms = r.i64()?;
            let mut partitions = Vec::new();
            for _ in 0..r.count(6)? {
                let t = r.string()?;
                partitions.push((t, r.i32()?));
            }
            completing.push(MarkerJob {
                transactional_id: String::new(),
                producer_id,
                epoch,
                commit,
                start_ms,
                partitions,
                offsets: Vec::new(),
                seq,
            });
        }
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(TxnMeta {
        producer_id,
        epoch,
        timeout_ms,
        state,
        partitions,
        groups,
        offsets,
        start_ms,
        last_update_ms,
        seq,
        completing,
        requeue: Vec::new(),
    })
}
