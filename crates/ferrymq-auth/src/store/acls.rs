//! Kafka ACL bindings per vhost in the auth store (Kafka's CreateAcls / DescribeAcls /
//! DeleteAcls). Persisted in the same snapshot as users and permissions, so they survive
//! restarts and kill -9 like a permission does; a change bumps the store version, so
//! open connections apply it to their next request.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{AuthStore, Db};
use crate::acl::{AclBinding, AclFilter};
use crate::definitions::KafkaAclDefinition;
use crate::error::AuthError;

/// A vhost's bindings (shared, immutable; replaced whole on change).
pub type AclSet = Arc<BTreeSet<AclBinding>>;

impl Db {
    /// Adds the `kafka_acls` of a definitions document (validated as CreateAcls does).
    pub(super) fn import_acls(&mut self, acls: &[KafkaAclDefinition]) -> Result<(), AuthError> {
        for a in acls {
            a.binding.validate().map_err(|e| {
                AuthError::InvalidDefinitions(format!("kafka ACL in vhost '{}': {e}", a.vhost))
            })?;
            self.require_vhost_for_acl(&a.vhost).map_err(|_| {
                AuthError::InvalidDefinitions(format!("kafka ACL for unknown vhost '{}'", a.vhost))
            })?;
            let mut set = self
                .acls
                .get(&a.vhost)
                .map(|s| (**s).clone())
                .unwrap_or_default();
            set.insert(a.binding.clone());
            self.acls.insert(a.vhost.clone(), Arc::new(set));
        }
        Ok(())
    }

    /// Every vhost's Kafka ACLs as definitions.
    pub(super) fn export_acls(&self) -> Vec<KafkaAclDefinition> {
        self.acls
            .iter()
            .flat_map(|(v, set)| {
                set.iter().map(|b| KafkaAclDefinition {
                    vhost: v.clone(),
                    binding: b.clone(),
                })
            })
            .collect()
    }

    fn require_vhost_for_acl(&self, vhost: &str) -> Result<(), AuthError> {
        if self.vhosts.contains_key(vhost) {
            Ok(())
        } else {
            Err(AuthError::NoSuchVhost(vhost.to_owned()))
        }
    }
}

impl AuthStore {
    /// The Kafka ACL bindings of `vhost` (empty if none).
    pub fn acls(&self, vhost: &str) -> AclSet {
        self.db.read().acls.get(vhost).cloned().unwrap_or_default()
    }

    /// Adds bindings (already validated with [`AclBinding::validate`]) to `vhost` in one
    /// durable write. A binding that exists already is kept once (Kafka: no error).
    pub fn create_acls(&self, vhost: &str, bindings: &[AclBinding]) -> Result<(), AuthError> {
        if bindings.is_empty() {
            return Ok(());
        }
        self.update(|db| {
            db.require_vhost_for_acl(vhost)?;
            let mut set = db
                .acls
                .get(vhost)
                .map(|s| (**s).clone())
                .unwrap_or_default();
            let before = set.len();
            set.extend(bindings.iter().cloned());
            if set.len() == before {
                return Ok(false);
            }
            db.acls.insert(vhost.to_owned(), Arc::new(set));
            Ok(true)
        })
    }

    /// The bindings of `vhost` that `filter` matches.
    pub fn describe_acls(&self, vhost: &str, filter: &AclFilter) -> Vec<AclBinding> {
        self.acls(vhost)
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Removes the bindings of `vhost` that match any of `filters`, in one durable write.
    /// Returns, per filter, the bindings it removed (a binding several filters match is
    /// reported under the first).
    pub fn delete_acls(
        &self,
        vhost: &str,
        filters: &[AclFilter],
    ) -> Result<Vec<Vec<AclBinding>>, AuthError> {
        let mut removed: Vec<Vec<AclBinding>> = vec![Vec::new(); filters.len()];
        self.update(|db| {
            let Some(current) = db.acls.get(vhost) else {
                return Ok(false);
            };
            let mut kept = BTreeSet::new();
            for b in current.iter() {
                match filters.iter().position(|f| f.matches(b)) {
                    Some(i) => removed[i].push(b.clone()),
                    None => {
                        kept.insert(b.clone());
                    }
                }
            }
            if kept.len() == current.len() {
                return Ok(false);
            }
            if kept.is_empty() {
                db.acls.remove(vhost);
            } else {
                db.acls.insert(vhost.to_owned(), Arc::new(kept));
            }
            Ok(true)
        })?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{AclOperation, AclPermission, PatternType, ResourceType};
    use crate::store::Seed;

    fn binding(name: &str, principal: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    fn all() -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    #[test]
    fn create_describe_delete_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let s = AuthStore::open(&path, Seed::default()).unwrap();
        let v0 = s.version();
        s.create_acls("/", &[binding("a", "User:x"), binding("b", "User:y")])
            .unwrap();
        assert_eq!(s.version(), v0 + 1);
        // Creating an existing binding again changes nothing.
        s.create_acls("/", &[binding("a", "User:x")]).unwrap();
        assert_eq!(s.version(), v0 + 1);
        assert!(matches!(
            s.create_acls("nope", &[binding("a", "User:x")]),
            Err(AuthError::NoSuchVhost(_))
        ));
        assert_eq!(s.describe_acls("/", &all()).len(), 2);
        let mut by_name = all();
        by_name.resource_name = Some("b".into());
        assert_eq!(s.describe_acls("/", &by_name), vec![binding("b", "User:y")]);
        drop(s);

        let s = AuthStore::open(&path, Seed::default()).unwrap();
        assert_eq!(s.acls("/").len(), 2);
        let removed = s.delete_acls("/", &[by_name.clone(), all()]).unwrap();
        assert_eq!(removed[0], vec![binding("b", "User:y")]);
        assert_eq!(removed[1], vec![binding("a", "User:x")]);
        assert!(s.acls("/").is_empty());
        drop(s);
        let s = AuthStore::open(&path, Seed::default()).unwrap();
        assert!(s.acls("/").is_empty());
        s.create_acls("/", &[binding("a", "User:x")]).unwrap();
        s.put_vhost(crate::VhostInfo::new("/")).unwrap();
        assert_eq!(s.acls("/").len(), 1);
    }

    #[test]
    fn definitions_export_and_import_acls() {
        let s = AuthStore::in_memory(Seed::default()).unwrap();
        s.create_acls("/", &[binding("a", "User:x")]).unwrap();
        let defs = s.export_access();
        let json = serde_json::to_string(&defs).unwrap();
        assert!(json.contains(r#""kafka_acls":[{"vhost":"/","resource_type":"TOPIC""#));
        let t = AuthStore::in_memory(Seed::default()).unwrap();
        t.import_access(&serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(
            t.acls("/").iter().cloned().collect::<Vec<_>>(),
            vec![binding("a", "User:x")]
        );
        // A RabbitMQ export has no kafka_acls; an invalid binding fails the import.
        let mut bad = defs.clone();
        bad.kafka_acls[0].binding.principal = "nocolon".into();
        assert!(t.import_access(&bad).is_err());
        let mut none = defs;
        none.kafka_acls.clear();
        assert!(!serde_json::to_string(&none).unwrap().contains("kafka_acls"));
    }

    #[test]
    fn deleting_a_vhost_deletes_its_acls() {
        let s = AuthStore::in_memory(Seed::default()).unwrap();
        s.put_vhost(crate::VhostInfo::new("v")).unwrap();
        s.create_acls("v", &[binding("a", "User:x")]).unwrap();
        s.delete_vhost("v").unwrap();
        s.put_vhost(crate::VhostInfo::new("v")).unwrap();
        assert!(s.acls("v").is_empty());
    }
}

#[cfg(test)]
mod compat_tests {
    use super::*;
    use crate::acl::{AclOperation, AclPermission, PatternType, ResourceType};
    use crate::store::Seed;

    #[test]
    fn a_snapshot_from_before_acls_loads_with_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let s = AuthStore::open(&path, Seed::default()).unwrap();
        s.create_acls(
            "/",
            &[AclBinding {
                resource_type: ResourceType::Group,
                resource_name: "g".into(),
                pattern_type: PatternType::Prefixed,
                principal: "User:*".into(),
                host: "*".into(),
                operation: AclOperation::Read,
                permission: AclPermission::Deny,
            }],
        )
        .unwrap();
        drop(s);
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let acls = doc["kafka_acls"].clone();
        assert_eq!(acls[0]["vhost"], "/");
        assert_eq!(acls[0]["resource_type"], "GROUP");
        assert_eq!(acls[0]["pattern_type"], "PREFIXED");
        assert_eq!(acls[0]["permission"], "DENY");
        doc.as_object_mut().unwrap().remove("kafka_acls");
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let s = AuthStore::open(&path, Seed::default()).unwrap();
        assert!(s.acls("/").is_empty());
        assert!(s.user("guest").is_some());
    }
}
