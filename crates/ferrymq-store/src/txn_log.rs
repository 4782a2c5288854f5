//! The Kafka transaction log: a journal of (transactional id, value) records, the latest
//! value per id winning, in `<vhost dir>/kafka/transactions/txn.log`. The value is opaque
//! here (the coordinator's `TxnMeta`, encoded by `ferrymq_kafka::txn::codec`). Records use
//! the shared [`framing`](crate::framing) (`len:u32 crc32c:u32 payload`); a payload is
//! `key_len:u16 BE, key (UTF-8), value`. A torn tail is cut off at open; the file is
//! rewritten with only the live values (tmp + fsync + rename + directory fsync) when it
//! holds more than twice as many records as ids. Format in `docs/kafka-transactions.md`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{framing, StoreError};

/// Largest record accepted when reading back.
const MAX_RECORD: usize = 16 << 20;
const FILE: &str = "txn.log";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The open transaction log.
#[derive(Debug)]
pub struct TxnLog {
    dir: PathBuf,
    file: File,
    buf: Vec<u8>,
    records: usize,
    live: usize,
}

fn payload(key: &str, value: &[u8], out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(2 + key.len() + value.len());
    let k = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    p.extend_from_slice(&(k.len() as u16).to_be_bytes());
    p.extend_from_slice(k);
    p.extend_from_slice(value);
    framing::frame(&p, out);
}

fn decode(p: &[u8]) -> Option<(String, Vec<u8>)> {
    let n = u16::from_be_bytes(p.get(..2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(p.get(2..2 + n)?).ok()?.to_owned();
    Some((key, p[2 + n..].to_vec()))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    crate::log::backend::sync_dir(dir).map_err(|e| io(dir, e))
}

impl TxnLog {
    /// Opens (or creates) the log in `dir`; returns it and the latest value per id.
    pub fn open(dir: &Path) -> Result<(TxnLog, BTreeMap<String, Vec<u8>>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(FILE);
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
        }
        let (records, valid) = framing::parse(&bytes, MAX_RECORD, decode);
        let count = records.len();
        let latest: BTreeMap<String, Vec<u8>> = records.into_iter().collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        if valid < bytes.len() {
            // A torn tail from a crash: cut it so new records follow the valid ones.
            file.set_len(valid as u64).map_err(|e| io(&path, e))?;
            crate::io_stats::sync_all(&file).map_err(|e| io(&path, e))?;
        }
        let mut log = TxnLog {
            dir: dir.to_path_buf(),
            file,
            buf: Vec::new(),
            records: count,
            live: latest.len(),
        };
        if log.records > 2 * log.live + 64 {
            log.rewrite(&latest)?;
        }
        sync_dir(dir)?;
        Ok((log, latest))
    }

    /// Buffers one record (written and fsynced by [`TxnLog::sync`]).
    pub fn append(&mut self, key: &str, value: &[u8]) {
        payload(key, value, &mut self.buf);
        self.records += 1;
    }

    /// Writes the buffered records and fsyncs: they survive a crash once this returns.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(FILE);
        self.file.write_all(&self.buf).map_err(|e| io(&path, e))?;
        self.buf.clear();
        crate::io_stats::sync_data(&self.file).map_err(|e| io(&path, e))
    }

    /// Rewrites the file with only `latest` (when it has grown to mostly dead records).
    pub fn maybe_compact(&mut self, latest: &BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
        self.live = latest.len();
        if self.records > 2 * self.live + 1024 {
            self.sync()?;
            self.rewrite(latest)?;
        }
        Ok(())
    }

    fn rewrite(&mut self, latest: &BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join("txn.log.tmp");
        let mut out = Vec::new();
        for (k, v) in latest {
            payload(k, v, &mut out);
        }
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&out).map_err(|e| io(&tmp, e))?;
        crate::io_stats::sync_all(&f).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        self.records = latest.len();
        self.live = latest.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_value_wins_torn_tail_is_cut_and_compaction_keeps_values() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, m) = TxnLog::open(dir.path()).unwrap();
        assert!(m.is_empty());
        log.append("a", b"1");
        log.append("b", b"2");
        log.append("a", b"3");
        log.sync().unwrap();
        drop(log);
        // A torn record at the tail.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(f);
        let (mut log, m) = TxnLog::open(dir.path()).unwrap();
        assert_eq!(m.get("a").map(Vec::as_slice), Some(&b"3"[..]));
        assert_eq!(m.get("b").map(Vec::as_slice), Some(&b"2"[..]));
        log.append("b", b"4");
        log.sync().unwrap();
        for i in 0..3000 {
            log.append("c", format!("{i}").as_bytes());
        }
        log.sync().unwrap();
        let mut latest = BTreeMap::new();
        latest.insert("a".to_owned(), b"3".to_vec());
        latest.insert("b".to_owned(), b"4".to_vec());
        latest.insert("c".to_owned(), b"2999".to_vec());
        log.maybe_compact(&latest).unwrap();
        log.append("a", b"5");
        log.sync().unwrap();
        drop(log);
        let (_, m) = TxnLog::open(dir.path()).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["a"], b"5");
        assert_eq!(m["c"], b"2999");
        assert!(std::fs::metadata(&path).unwrap().len() < 200);
    }
}
