//! Durable Kafka topic metadata: `<data>/kafka/topics/<name>/topic.meta` (name, topic id,
//! partition count, config overrides) next to the partitions' log directories
//! `<data>/kafka/topics/<name>/<partition>/`. A meta file is replaced atomically
//! (temporary file, fsync, rename, directory fsync). A deleted topic's directory is first
//! renamed into `<data>/kafka/deleted/` (atomic), then removed; leftovers there are
//! removed at startup. Format: `docs/storage-format.md`, "Kafka topics".

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

/// Name of the metadata file in a topic directory.
pub const META_FILE: &str = "topic.meta";

/// What is stored about a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    /// The topic id (a UUID, as 128 bits).
    pub id: u128,
    pub partitions: u32,
    /// Config overrides (name → value).
    pub configs: BTreeMap<String, String>,
    /// The replication factor asked for at creation (one node serves it as 1).
    pub replication_factor: u16,
    /// Manual replica assignments as asked (partition → broker ids), if any were given.
    pub replicas: BTreeMap<u32, Vec<i32>>,
}

impl TopicMeta {
    /// The text form: `key=value` lines, then `crc32c=<crc of the lines before>`.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "name={}\nid={:032x}\npartitions={}\n",
            self.name, self.id, self.partitions
        );
        for (k, v) in &self.configs {
            s.push_str(&format!("config.{k}={v}\n"));
        }
        // Written only when not the defaults, so older files and these read alike.
        if self.replication_factor != 1 {
            s.push_str(&format!("replication_factor={}\n", self.replication_factor));
        }
        for (p, brokers) in &self.replicas {
            let list: Vec<String> = brokers.iter().map(i32::to_string).collect();
            s.push_str(&format!("replicas.{p}={}\n", list.join(",")));
        }
        let crc = crc32c::crc32c(s.as_bytes());
        s.push_str(&format!("crc32c={crc}\n"));
        s
    }

    /// Parses [`TopicMeta::encode`]'s output; `None` if damaged.
    pub fn decode(text: &str) -> Option<TopicMeta> {
        let body_end = text.rfind("crc32c=")?;
        let (body, crc_line) = text.split_at(body_end);
        let crc: u32 = crc_line.trim().strip_prefix("crc32c=")?.parse().ok()?;
        if crc != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut meta = TopicMeta {
            name: String::new(),
            id: 0,
            partitions: 0,
            configs: BTreeMap::new(),
            replication_factor: 1,
            replicas: BTreeMap::new(),
        };
        for line in body.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "name" => meta.name = v.to_owned(),
                "id" => meta.id = u128::from_str_radix(v, 16).ok()?,
                "partitions" => meta.partitions = v.parse().ok()?,
                "replication_factor" => meta.replication_factor = v.parse().ok()?,
                _ if k.starts_with("replicas.") => {
                    let p = k["replicas.".len()..].parse().ok()?;
                    let brokers = v
                        .split(',')
                        .map(|b| b.parse().ok())
                        .collect::<Option<Vec<i32>>>()?;
                    meta.replicas.insert(p, brokers);
                }
                _ => {
                    meta.configs
                        .insert(k.strip_prefix("config.")?.to_owned(), v.to_owned());
                }
            }
        }
        (!meta.name.is_empty()).then_some(meta)
    }
}

/// The directory of topics.
#[derive(Debug, Clone)]
pub struct TopicStore {
    root: PathBuf,
    deleted: PathBuf,
}

use crate::log::backend::sync_dir;

impl TopicStore {
    /// Opens `<kafka_dir>/topics`, removes leftovers of interrupted deletes and returns
    /// the stored topics.
    pub fn open(kafka_dir: &Path) -> io::Result<(TopicStore, Vec<TopicMeta>)> {
        let root = kafka_dir.join("topics");
        let deleted = kafka_dir.join("deleted");
        crate::log::backend::create_dir_all(&root)?;
        crate::log::backend::create_dir_all(&deleted)?;
        for entry in fs::read_dir(&deleted)? {
            let path = entry?.path();
            if let Err(e) = fs::remove_dir_all(&path) {
                warn!(path = %path.display(), error = %e, "could not remove a deleted topic");
            }
        }
        let mut topics = Vec::new();
        for entry in fs::read_dir(&root)? {
            let entry = entry?;
            let meta_path = entry.path().join(META_FILE);
            match fs::read_to_string(&meta_path) {
                Ok(text) => match TopicMeta::decode(&text) {
                    Some(meta) => topics.push(meta),
                    None => {
                        warn!(path = %meta_path.display(), "damaged topic metadata: topic skipped")
                    }
                },
                Err(e) => {
                    warn!(path = %meta_path.display(), error = %e, "topic directory without metadata: skipped")
                }
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((TopicStore { root, deleted }, topics))
    }

    /// The directory of a topic.
    pub fn topic_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The log directory of one partition.
    pub fn partition_dir(&self, name: &str, partition: u32) -> PathBuf {
        self.topic_dir(name).join(partition.to_string())
    }

    /// Writes a topic's metadata durably (creating its directory).
    pub fn save(&self, meta: &TopicMeta) -> io::Result<()> {
        let dir = self.topic_dir(&meta.name);
        crate::log::backend::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{META_FILE}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(meta.encode().as_bytes())?;
        crate::io_stats::sync_all(&f)?;
        fs::rename(&tmp, dir.join(META_FILE))?;
        sync_dir(&dir)
    }

    /// Deletes a topic and its partitions (durable once the rename is).
    pub fn delete(&self, meta: &TopicMeta) -> io::Result<()> {
        let target = self.deleted.join(format!("{:032x}", meta.id));
        fs::rename(self.topic_dir(&meta.name), &target)?;
        sync_dir(&self.root)?;
        sync_dir(&self.deleted)?;
        fs::remove_dir_all(&target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> TopicMeta {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_owned(), "1000".to_owned());
        TopicMeta {
            name: name.to_owned(),
            id: 0xdead_beef_u128 << 64 | 7,
            partitions: 3,
            configs,
            replication_factor: 1,
            replicas: BTreeMap::new(),
        }
    }

    #[test]
    fn replicas_round_trip_and_defaults_are_not_written() {
        let plain = meta("p");
        assert!(!plain.encode().contains("replica"));
        let mut m = meta("r");
        m.replication_factor = 3;
        m.replicas.insert(0, vec![0, 1, 2]);
        m.replicas.insert(1, vec![2, 0, 1]);
        let text = m.encode();
        assert!(text.contains("replication_factor=3\nreplicas.0=0,1,2\nreplicas.1=2,0,1\n"));
        assert_eq!(TopicMeta::decode(&text), Some(m));
    }

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let m = meta("orders.v1");
        let text = m.encode();
        assert_eq!(TopicMeta::decode(&text), Some(m));
        let damaged = text.replace("partitions=3", "partitions=4");
        assert_eq!(TopicMeta::decode(&damaged), None);
        assert_eq!(TopicMeta::decode(&text[..text.len() / 2]), None);
    }

    #[test]
    fn save_reopen_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (store, topics) = TopicStore::open(dir.path()).unwrap();
        assert!(topics.is_empty());
        store.save(&meta("a")).unwrap();
        let mut b = meta("b");
        store.save(&b).unwrap();
        b.partitions = 5;
        store.save(&b).unwrap();
        fs::create_dir_all(store.partition_dir("b", 0)).unwrap();
        let (store, topics) = TopicStore::open(dir.path()).unwrap();
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[1].partitions, 5);
        store.delete(&topics[1]).unwrap();
        let (_, topics) = TopicStore::open(dir.path()).unwrap();
        assert_eq!(
            topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }
}
