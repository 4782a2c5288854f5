//! What an authenticated Kafka connection may do in its vhost, checked on every request
//! with RabbitMQ's permissions (configure / write / read regexes per user per vhost).
//!
//! - A Kafka **topic** is checked as a **queue** resource of the same name: a topic is a
//!   stream, and RabbitMQ's stream plugin checks streams as queues (create = configure,
//!   publish = write, consume = read), so one `^orders\.` regex covers an `orders.x`
//!   stream reached over AMQP and the `orders.x` topic reached over Kafka.
//! - A **consumer group** is checked as **read** on a queue resource named by the group
//!   id (consuming through a group is reading). No prefix: a regex such as `^team-a\.`
//!   then covers the team's topics and groups alike.
//! - **Cluster** actions (idempotent producer ids without any writable topic, broker
//!   configs, listing every group) need the `administrator` tag. Tags give no rights on
//!   topics or groups (RabbitMQ's rule).
//!
//! The connection keeps the user's `Access` and fetches it again whenever the store's
//! version moves, so a revoked permission applies to the next request of every open
//! connection.

use std::sync::Arc;

use ferrymq_auth::{Access, AuthStore, Perm, ResourceKind};

use super::KafkaBroker;

/// A connection's view of its user's permissions in its vhost.
pub struct Authz {
    store: Arc<AuthStore>,
    user: String,
    vhost: String,
    /// The store version `access` and `administrator` were read at.
    seen: u64,
    access: Option<Arc<Access>>,
    administrator: bool,
}

impl Authz {
    pub fn new(store: Arc<AuthStore>, user: &str, vhost: &str) -> Authz {
        let mut a = Authz {
            store,
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            seen: 0,
            access: None,
            administrator: false,
        };
        a.refresh();
        a
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    fn refresh(&mut self) {
        // The version is read first: a change after it bumps it again, so the next
        // request reads the access anew.
        self.seen = self.store.version();
        self.access = self.store.access(&self.user, &self.vhost);
        self.administrator = self
            .store
            .user(&self.user)
            .is_some_and(|u| u.is_administrator());
    }

    /// The permissions as of now (re-read if the store changed since the last request).
    pub fn view(&mut self) -> View {
        if self.store.version() != self.seen {
            self.refresh();
        }
        View {
            access: self.access.clone(),
            administrator: self.administrator,
        }
    }

    /// `perm` on topic `name`.
    pub fn topic(&mut self, perm: Perm, name: &str) -> bool {
        self.view().topic(perm, name)
    }

    /// See [`View::topic_visible`].
    pub fn topic_visible(&mut self, name: &str) -> bool {
        self.view().topic_visible(name)
    }

    /// See [`View::group`].
    pub fn group(&mut self, id: &str) -> bool {
        self.view().group(id)
    }

    /// See [`View::cluster`].
    pub fn cluster(&mut self) -> bool {
        self.view().cluster()
    }
}

/// A snapshot of a user's permissions, cheap to clone into a response future.
#[derive(Clone)]
pub struct View {
    access: Option<Arc<Access>>,
    administrator: bool,
}

impl View {
    /// `perm` on topic `name`.
    pub fn topic(&self, perm: Perm, name: &str) -> bool {
        self.access
            .as_ref()
            .is_some_and(|a| a.allows(perm, ResourceKind::Queue, name))
    }

    /// Any of configure, write and read on topic `name` (Kafka's DESCRIBE, which every
    /// other topic operation implies).
    pub fn topic_visible(&self, name: &str) -> bool {
        [Perm::Configure, Perm::Write, Perm::Read]
            .into_iter()
            .any(|p| self.topic(p, name))
    }

    /// Membership, commits and offsets of group `id`: read on it.
    pub fn group(&self, id: &str) -> bool {
        self.access
            .as_ref()
            .is_some_and(|a| a.allows(Perm::Read, ResourceKind::Queue, id))
    }

    /// Cluster-level actions: the `administrator` tag.
    pub fn cluster(&self) -> bool {
        self.administrator
    }

    /// Whether the user may write to some topic (KIP-679's test for idempotent
    /// producers): an existing topic of the vhost it may write, or a write pattern that
    /// grants anything at all (a producer may start before its topic exists).
    pub fn may_write_somewhere(&self, broker: &KafkaBroker) -> bool {
        let Some(access) = &self.access else {
            return false;
        };
        let pattern = access.permission().write.as_str();
        (!pattern.is_empty() && pattern != "^$")
            || broker
                .all_topics()
                .iter()
                .any(|t| self.topic(Perm::Write, &t.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_auth::{PasswordSpec, Permission, Seed};

    fn store() -> Arc<AuthStore> {
        let s = AuthStore::in_memory(Seed::default()).unwrap();
        s.put_user("w", Some(PasswordSpec::Plain("pw".into())), vec![])
            .unwrap();
        s.set_permissions(
            "w",
            "/",
            Permission {
                configure: "^$".into(),
                write: r"^wo\.".into(),
                read: "^rg$".into(),
            },
        )
        .unwrap();
        Arc::new(s)
    }

    #[test]
    fn topics_are_queues_and_groups_need_read() {
        let s = store();
        let mut a = Authz::new(s.clone(), "w", "/");
        assert!(a.topic(Perm::Write, "wo.x"));
        assert!(!a.topic(Perm::Read, "wo.x"));
        assert!(!a.topic(Perm::Configure, "wo.x"));
        assert!(a.topic_visible("wo.x"));
        assert!(!a.topic_visible("other"));
        assert!(a.group("rg"));
        assert!(!a.group("wo.g"));
        assert!(!a.cluster());
        // guest is an administrator: cluster actions, but only its own permissions on
        // topics.
        let mut g = Authz::new(s.clone(), "guest", "/");
        assert!(g.cluster());
        assert!(g.topic(Perm::Configure, "anything"));
        s.clear_permissions("guest", "/").unwrap();
        assert!(g.cluster());
        assert!(!g.topic_visible("anything"));
    }

    #[test]
    fn a_revoke_applies_to_the_next_check() {
        let s = store();
        let mut a = Authz::new(s.clone(), "w", "/");
        let before = a.view();
        assert!(a.topic(Perm::Write, "wo.x"));
        s.set_permissions("w", "/", Permission::all()).unwrap();
        assert!(a.topic(Perm::Read, "anything"));
        s.clear_permissions("w", "/").unwrap();
        assert!(!a.topic(Perm::Write, "wo.x"));
        assert!(!a.group("rg"));
        // A view taken before keeps what it saw (one request's worth).
        assert!(before.topic(Perm::Write, "wo.x"));
        s.delete_user("w").unwrap();
        assert!(!a.topic_visible("wo.x"));
    }
}
