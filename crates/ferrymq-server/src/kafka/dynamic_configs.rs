//! Dynamic broker configs (per broker "0" and cluster default "") and group configs of one
//! vhost, stored in `<vhost dir>/kafka/dynamic-configs.json` (written to a temporary file,
//! fsynced, renamed, directory fsynced: an answer is sent only once the change is durable).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ferrymq_kafka::api::dynamic_configs::topic_defaults;
use ferrymq_kafka::group::consumer::GroupOverrides;
use ferrymq_store::log::backend::write_durably;
use ferrymq_store::log::FileBackend;
use serde::{Deserialize, Serialize};

/// Config overrides by resource name.
pub type ByName = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct DynamicConfigs {
    /// Broker resources: "" is the cluster default, "0" this broker.
    #[serde(default)]
    pub broker: ByName,
    /// Group resources, by group id.
    #[serde(default)]
    pub group: ByName,
}

impl DynamicConfigs {
    fn path(kafka_dir: &Path) -> PathBuf {
        kafka_dir.join("dynamic-configs.json")
    }

    /// Reads the stored configs (none stored: empty).
    pub fn load(kafka_dir: &Path) -> std::io::Result<DynamicConfigs> {
        match std::fs::read(Self::path(kafka_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DynamicConfigs::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the configs durably (the store's `write_durably`: temporary file, fsync,
    /// rename, directory fsync).
    pub fn save(&self, kafka_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_durably(&FileBackend, &Self::path(kafka_dir), &json)
    }

    /// The configs of broker resource `name`.
    pub fn broker_of(&self, name: &str) -> BTreeMap<String, String> {
        self.broker.get(name).cloned().unwrap_or_default()
    }

    /// The topic defaults they set (topic name → value, source) for this broker.
    pub fn topic_defaults(&self) -> BTreeMap<String, (String, i8)> {
        topic_defaults(&self.broker_of(&node_name()), &self.broker_of(""))
    }

    /// The group configs KIP-848 groups apply, by group id.
    pub fn group_overrides(&self) -> HashMap<String, GroupOverrides> {
        self.group
            .iter()
            .map(|(g, m)| {
                let o = GroupOverrides {
                    session_timeout_ms: m
                        .get("consumer.session.timeout.ms")
                        .and_then(|v| v.trim().parse().ok()),
                    heartbeat_interval_ms: m
                        .get("consumer.heartbeat.interval.ms")
                        .and_then(|v| v.trim().parse().ok()),
                };
                (g.clone(), o)
            })
            .collect()
    }

    /// A topic's overrides over the topic defaults, for `TopicConfig::resolve`.
    pub fn effective(&self, overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = self
            .topic_defaults()
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect();
        all.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

/// This broker's resource name ("0").
pub fn node_name() -> String {
    ferrymq_kafka::api::metadata::NODE_ID.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_effective() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            DynamicConfigs::load(dir.path()).unwrap(),
            DynamicConfigs::default()
        );
        let mut c = DynamicConfigs::default();
        c.broker
            .entry(String::new())
            .or_default()
            .insert("message.max.bytes".into(), "2000".into());
        c.group
            .entry("g".into())
            .or_default()
            .insert("consumer.session.timeout.ms".into(), "50000".into());
        c.save(dir.path()).unwrap();
        let back = DynamicConfigs::load(dir.path()).unwrap();
        assert_eq!(back, c);
        let none = BTreeMap::new();
        assert_eq!(
            back.effective(&none).get("max.message.bytes").unwrap(),
            "2000"
        );
        let own: BTreeMap<String, String> =
            [("max.message.bytes".to_string(), "10".to_string())].into();
        assert_eq!(back.effective(&own).get("max.message.bytes").unwrap(), "10");
    }
}
