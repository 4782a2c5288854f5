//! The durable definitions journal: every change to durable exchanges, queues and bindings
//! is appended as one CRC-framed record and fsynced before the client hears `…-ok`. On start
//! the journal is replayed (stopping at the first torn or corrupt record, which is cut off)
//! and rewritten compacted. Format: `docs/storage-format.md`, "Definitions journal".

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use ferrymq_core::topology::{Binding, Dest};

use crate::framing::{self, frame};
use crate::StoreError;

/// One change to the durable topology.
#[derive(Debug, Clone, PartialEq)]
pub enum DefOp {
    DeclareExchange {
        name: String,
        kind: String,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    DeleteExchange {
        name: String,
    },
    DeclareQueue {
        name: String,
        auto_delete: bool,
        arguments: FieldTable,
    },
    DeleteQueue {
        name: String,
    },
    /// A binding between durable ends (`queue.bind` / `exchange.bind`).
    Bind(Binding),
    Unbind(Binding),
}

/// The journal's file name in its vhost's directory.
pub const FILE: &str = "definitions.journal";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_table(out: &mut Vec<u8>, t: &FieldTable) {
    let encoded = cookie_factory::gen(gen_field_table(t), Vec::new())
        .map(|(v, _)| v)
        .unwrap_or_else(|_| vec![0, 0, 0, 0]);
    out.extend_from_slice(&encoded);
}

impl DefOp {
    /// Encodes the op's payload (tag + fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            DefOp::DeclareExchange {
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                o.push(1);
                put_str(&mut o, name);
                put_str(&mut o, kind);
                o.push(*auto_delete as u8 | (*internal as u8) << 1);
                put_table(&mut o, arguments);
            }
            DefOp::DeleteExchange { name } => {
                o.push(2);
                put_str(&mut o, name);
            }
            DefOp::DeclareQueue {
                name,
                auto_delete,
                arguments,
            } => {
                o.push(3);
                put_str(&mut o, name);
                o.push(*auto_delete as u8);
                put_table(&mut o, arguments);
            }
            DefOp::DeleteQueue { name } => {
                o.push(4);
                put_str(&mut o, name);
            }
            DefOp::Bind(b) | DefOp::Unbind(b) => {
                o.push(if matches!(self, DefOp::Bind(_)) { 5 } else { 6 });
                put_str(&mut o, &b.source);
                let (to_exchange, destination) = match &b.dest {
                    Dest::Queue(q) => (false, q),
                    Dest::Exchange(e) => (true, e),
                };
                o.push(to_exchange as u8);
                put_str(&mut o, destination);
                put_str(&mut o, &b.routing_key);
                put_table(&mut o, &b.arguments);
            }
        }
        o
    }

    /// Decodes a payload; `None` if it is malformed.
    pub fn decode(p: &[u8]) -> Option<DefOp> {
        let mut r = Reader { p, pos: 0 };
        let op = match r.u8()? {
            1 => {
                let name = r.str()?;
                let kind = r.str()?;
                let flags = r.u8()?;
                DefOp::DeclareExchange {
                    name,
                    kind,
                    auto_delete: flags & 1 != 0,
                    internal: flags & 2 != 0,
                    arguments: r.table()?,
                }
            }
            2 => DefOp::DeleteExchange { name: r.str()? },
            3 => DefOp::DeclareQueue {
                name: r.str()?,
                auto_delete: r.u8()? != 0,
                arguments: r.table()?,
            },
            4 => DefOp::DeleteQueue { name: r.str()? },
            tag @ (5 | 6) => {
                let source = r.str()?;
                let to_exchange = r.u8()? != 0;
                let destination: Arc<str> = r.str()?.into();
                let b = Binding {
                    source: source.into(),
                    dest: if to_exchange {
                        Dest::Exchange(destination)
                    } else {
                        Dest::Queue(destination)
                    },
                    routing_key: r.str()?.into(),
                    arguments: r.table()?,
                };
                if tag == 5 {
                    DefOp::Bind(b)
                } else {
                    DefOp::Unbind(b)
                }
            }
            _ => return None,
        };
        (r.pos == p.len()).then_some(op)
    }
}

struct Reader<'a> {
    p: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.p.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn table(&mut self) -> Option<FieldTable> {
        let start = self.pos;
        let n = self.u32()? as usize;
        let raw = self.take(n)?;
        let _ = raw;
        let whole = &self.p[start..self.pos];
        // Tables written here were produced by us and are shallow; the parser's recursion
        // is bounded by the record size, which the journal bounds too.
        parse_field_table(whole).ok().map(|(_, t)| t)
    }
}

/// Largest record accepted when reading (a definitions record is small).
const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Splits a journal into its valid ops; returns them and the length of the valid prefix.
pub fn parse_journal(bytes: &[u8]) -> (Vec<DefOp>, usize) {
    framing::parse(bytes, MAX_RECORD, DefOp::decode)
}

/// The open journal, appended to on every durable topology change.
pub struct DefinitionsJournal {
    path: PathBuf,
    file: File,
}

impl DefinitionsJournal {
    /// Opens (creating if needed) the journal in `dir` and returns the ops it holds. A torn
    /// or corrupt tail is cut off (and logged).
    pub fn open(dir: &Path) -> Result<(DefinitionsJournal, Vec<DefOp>), StoreError> {
        crate::log::backend::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
        let (ops, valid) = parse_journal(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                "definitions journal: dropping {} bytes of torn or corrupt tail after {} records",
                bytes.len() - valid,
                ops.len()
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        file.set_len(valid as u64).map_err(|e| io(&path, e))?;
        crate::io_stats::sync_all(&file).map_err(|e| io(&path, e))?;
        // A journal created just now: its entry must be durable before any change it
        // records is acknowledged.
        crate::log::backend::sync_dir(dir).map_err(|e| io(dir, e))?;
        Ok((DefinitionsJournal { path, file }, ops))
    }

    /// Appends ops and makes them durable.
    pub fn append(&mut self, ops: &[DefOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for op in ops {
            frame(&op.encode(), &mut buf);
        }
        self.file.write_all(&buf).map_err(|e| io(&self.path, e))?;
        crate::io_stats::sync_data(&self.file).map_err(|e| io(&self.path, e))
    }

    /// Replaces the journal with exactly `ops` (a compacted snapshot): written to a
    /// temporary file, fsynced, renamed over the journal, directory fsynced.
    pub fn rewrite(&mut self, ops: &[DefOp]) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut buf = Vec::new();
        for op in ops {
            frame(&op.encode(), &mut buf);
        }
        {
            let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(&buf).map_err(|e| io(&tmp, e))?;
            crate::io_stats::sync_all(&f).map_err(|e| io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            crate::log::backend::sync_dir(dir).map_err(|e| io(dir, e))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    fn ops() -> Vec<DefOp> {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(5));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("dlx".into()),
        );
        vec![
            DefOp::DeclareExchange {
                name: "e".into(),
                kind: "topic".into(),
                auto_delete: false,
                internal: true,
                arguments: FieldTable::default(),
            },
            DefOp::DeclareQueue {
                name: "q".into(),
                auto_delete: false,
                arguments: args.clone(),
            },
            DefOp::Bind(Binding {
                source: "e".into(),
                dest: Dest::Queue("q".into()),
                routing_key: "a.#".into(),
                arguments: args,
            }),
            DefOp::Unbind(Binding {
                source: "e".into(),
                dest: Dest::Exchange("e2".into()),
                routing_key: "".into(),
                arguments: FieldTable::default(),
            }),
            DefOp::DeleteQueue { name: "q".into() },
            DefOp::DeleteExchange { name: "e".into() },
        ]
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let ops = ops();
        let mut bytes = Vec::new();
        for op in &ops {
            frame(&op.encode(), &mut bytes);
        }
        let (back, valid) = parse_journal(&bytes);
        assert_eq!(back, ops);
        assert_eq!(valid, bytes.len());
        // Every truncation keeps exactly the whole records before the cut.
        for cut in 0..bytes.len() {
            let (some, valid) = parse_journal(&bytes[..cut]);
            assert!(valid <= cut);
            assert_eq!(&ops[..some.len()], &some[..]);
        }
        // A flipped bit stops the replay at that record.
        let mut bad = bytes.clone();
        bad[crate::framing::HEADER + 3] ^= 0x10;
        assert!(parse_journal(&bad).0.is_empty());
    }

    #[test]
    fn file_journal_survives_reopen_and_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, none) = DefinitionsJournal::open(dir.path()).unwrap();
        assert!(none.is_empty());
        let ops = ops();
        j.append(&ops[..3]).unwrap();
        j.append(&ops[3..]).unwrap();
        drop(j);
        // Append garbage to simulate a torn write.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(f);
        let (mut j, back) = DefinitionsJournal::open(dir.path()).unwrap();
        assert_eq!(back, ops);
        j.rewrite(&ops[..2]).unwrap();
        j.append(&ops[5..]).unwrap();
        drop(j);
        let (_, back) = DefinitionsJournal::open(dir.path()).unwrap();
        assert_eq!(back, vec![ops[0].clone(), ops[1].clone(), ops[5].clone()]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..2000usize {
            let bytes: Vec<u8> = (0..n % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse_journal(&bytes);
            let _ = DefOp::decode(&bytes);
        }
    }
}
