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
//! - **Kafka ACLs** (CreateAcls / DescribeAcls / DeleteAcls, kept per vhost in the auth
//!   store) come first: for a non-administrator, when bindings of the vhost cover the
//!   resource (any principal), Kafka's rule decides alone (a DENY for the user or
//!   `User:*`, the peer's host or `*`, and the operation or ALL denies; else an ALLOW for
//!   the operation, ALL or an operation implying it allows; else the Kafka authorization
//!   error). When no binding covers the resource, the vhost permissions above decide
//!   (Kafka's `allow.everyone.if.no.acl.found`, with the vhost permissions in place of
//!   "everyone"). Administrators are Kafka's super users: ACLs never apply to them, their
//!   vhost permissions do.
//!
//! The connection keeps the user's `Access` and the vhost's ACLs and fetches them again
//! whenever the store's version moves, so a revoked permission or a new ACL applies to
//! the next request of every open connection.

use std::net::IpAddr;
use std::sync::Arc;

use ferrymq_auth::acl::{self, user_principal};
use ferrymq_auth::{
    Access, AclOperation, AclPermission, AclSet, AuthStore, Decision, Perm, ResourceKind,
    ResourceType,
};

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
    acls: AclSet,
    /// `User:<user>` and the peer's address, as ACLs name them.
    principal: Arc<str>,
    host: Arc<str>,
}

impl Authz {
    pub fn new(store: Arc<AuthStore>, user: &str, vhost: &str, peer: IpAddr) -> Authz {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut a = Authz {
            store,
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            seen: 0,
            access: None,
            administrator: false,
            acls: AclSet::default(),
            principal: user_principal(user).into(),
            host: peer.to_string().into(),
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
        self.acls = self.store.acls(&self.vhost);
    }

    /// The auth store (the ACL admin APIs write it).
    pub fn store(&self) -> &Arc<AuthStore> {
        &self.store
    }

    /// The permissions as of now (re-read if the store changed since the last request).
    pub fn view(&mut self) -> View {
        if self.store.version() != self.seen {
            self.refresh();
        }
        View {
            access: self.access.clone(),
            administrator: self.administrator,
            acls: self.acls.clone(),
            principal: self.principal.clone(),
            host: self.host.clone(),
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
    acls: AclSet,
    principal: Arc<str>,
    host: Arc<str>,
}

impl View {
    /// The ACL decision for `op` on a resource, or `fallback` (the vhost permissions)
    /// when no binding covers it or the user is an administrator (super user).
    fn decide(
        &self,
        op: AclOperation,
        rtype: ResourceType,
        name: &str,
        fallback: impl FnOnce() -> bool,
    ) -> bool {
        if self.administrator || self.acls.is_empty() {
            return fallback();
        }
        match acl::authorize(
            self.acls.iter(),
            &self.principal,
            &self.host,
            op,
            rtype,
            name,
        ) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::NoAcls => fallback(),
        }
    }

    fn vhost_allows(&self, perm: Perm, name: &str) -> bool {
        self.access
            .as_ref()
            .is_some_and(|a| a.allows(perm, ResourceKind::Queue, name))
    }

    /// `perm` on topic `name`: Kafka's READ (read), WRITE (write) or ALTER (configure).
    pub fn topic(&self, perm: Perm, name: &str) -> bool {
        let op = match perm {
            Perm::Read => AclOperation::Read,
            Perm::Write => AclOperation::Write,
            Perm::Configure => AclOperation::Alter,
        };
        self.decide(op, ResourceType::Topic, name, || {
            self.vhost_allows(perm, name)
        })
    }

    /// Kafka operation `op` on topic `name`; without ACLs: configure for CREATE, DELETE,
    /// ALTER and ALTER_CONFIGS, read for READ, write for WRITE, any of them for DESCRIBE
    /// and DESCRIBE_CONFIGS.
    pub fn topic_op(&self, op: AclOperation, name: &str) -> bool {
        self.decide(op, ResourceType::Topic, name, || match op {
            AclOperation::Read => self.vhost_allows(Perm::Read, name),
            AclOperation::Write => self.vhost_allows(Perm::Write, name),
            AclOperation::Describe | AclOperation::DescribeConfigs => self.vhost_visible(name),
            _ => self.vhost_allows(Perm::Configure, name),
        })
    }

    fn vhost_visible(&self, name: &str) -> bool {
        [Perm::Configure, Perm::Write, Perm::Read]
            .into_iter()
            .any(|p| self.vhost_allows(p, name))
    }

    /// Kafka's DESCRIBE on topic `name`; without ACLs any of configure, write and read
    /// (DESCRIBE is implied by every other topic operation).
    pub fn topic_visible(&self, name: &str) -> bool {
        self.topic_op(AclOperation::Describe, name)
    }

    /// Membership, commits and offsets of group `id`: Kafka's READ GROUP; without ACLs
    /// read on it.
    pub fn group(&self, id: &str) -> bool {
        self.decide(AclOperation::Read, ResourceType::Group, id, || {
            self.vhost_allows(Perm::Read, id)
        })
    }

    /// `op` on group `id`: DESCRIBE (DescribeGroups, ConsumerGroupDescribe, ListGroups),
    /// DELETE (DeleteGroups, OffsetDelete), DESCRIBE_CONFIGS / ALTER_CONFIGS (its
    /// configs); without ACLs read on it for all but ALTER_CONFIGS, which needs configure.
    pub fn group_op(&self, op: AclOperation, id: &str) -> bool {
        self.decide(op, ResourceType::Group, id, || match op {
            AclOperation::DescribeConfigs
            | AclOperation::Describe
            | AclOperation::Delete
            | AclOperation::Read => self.vhost_allows(Perm::Read, id),
            _ => self.vhost_allows(Perm::Configure, id),
        })
    }

    /// WRITE on transactional id `id`; without ACLs `fallback` (today's rule).
    pub fn transactional_id(&self, id: &str, fallback: bool) -> bool {
        self.transactional_id_op(AclOperation::Write, id, || fallback)
    }

    /// `op` (WRITE, DESCRIBE) on transactional id `id`; when no ACL covers the id (or the
    /// user is an administrator), `fallback` decides.
    pub fn transactional_id_op(
        &self,
        op: AclOperation,
        id: &str,
        fallback: impl FnOnce() -> bool,
    ) -> bool {
        self.decide(op, ResourceType::TransactionalId, id, fallback)
    }

    /// Kafka's WRITE on TRANSACTIONAL_ID `id`, which every transactional request needs
    /// (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, a
    /// transactional Produce). Without an ACL on the id: an administrator, or a user who
    /// may write some topic (the rule InitProducerId has had since transactions came).
    pub fn txn_id_writable(&self, broker: &KafkaBroker, id: &str) -> bool {
        self.transactional_id_op(AclOperation::Write, id, || {
            self.cluster() || self.may_write_somewhere(broker)
        })
    }

    /// Kafka's DESCRIBE on TRANSACTIONAL_ID `id` (DescribeTransactions, ListTransactions;
    /// WRITE implies it). Without an ACL on the id: administrators only.
    pub fn txn_id_visible(&self, id: &str) -> bool {
        self.transactional_id_op(AclOperation::Describe, id, || self.cluster())
    }

    /// `op` on the cluster by an ACL (CLUSTER `kafka-cluster`), or an administrator.
    pub fn cluster_op(&self, op: AclOperation) -> bool {
        self.decide(op, ResourceType::Cluster, acl::CLUSTER_NAME, || false) || self.administrator
    }

    /// KIP-430 `topic_authorized_operations`: a bit (`1 << code`) per topic operation
    /// Kafka defines (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
    /// ALTER_CONFIGS) this user may do on topic `name`.
    pub fn topic_authorized_operations(&self, name: &str) -> i32 {
        use AclOperation::*;
        [
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            DescribeConfigs,
            AlterConfigs,
        ]
        .into_iter()
        .filter(|&op| self.topic_op(op, name))
        .fold(0, |bits, op| bits | 1 << op.code())
    }

    /// KIP-430 `cluster_authorized_operations` (CREATE, ALTER, DESCRIBE, CLUSTER_ACTION,
    /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE): all of them for an
    /// administrator, else what CLUSTER ACL bindings allow.
    pub fn cluster_authorized_operations(&self) -> i32 {
        use AclOperation::*;
        [
            Create,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ]
        .into_iter()
        .filter(|&op| self.cluster_op(op))
        .fold(0, |bits, op| bits | 1 << op.code())
    }

    /// Cluster-level actions: the `administrator` tag.
    pub fn cluster(&self) -> bool {
        self.administrator
    }

    /// Whether the user may write to some topic (KIP-679's test for idempotent
    /// producers): an existing topic of the vhost it may write, or a write pattern that
    /// grants anything at all (a producer may start before its topic exists).
    /// With ACLs: an ALLOW of WRITE (or ALL) on some topic for the user counts too.
    pub fn may_write_somewhere(&self, broker: &KafkaBroker) -> bool {
        let acl_write = !self.administrator
            && self.acls.iter().any(|b| {
                b.resource_type == ResourceType::Topic
                    && b.permission == AclPermission::Allow
                    && matches!(b.operation, AclOperation::Write | AclOperation::All)
                    && (*b.principal == *self.principal || b.principal == acl::ANY_USER)
                    && (*b.host == *self.host || b.host == acl::WILDCARD)
            });
        let pattern_write = self.access.as_ref().is_some_and(|access| {
            let pattern = access.permission().write.as_str();
            !pattern.is_empty() && pattern != "^$"
        });
        acl_write
            || pattern_write
            || broker
                .all_topics()
                .iter()
                .any(|t| self.topic(Perm::Write, &t.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_auth::{AclBinding, PasswordSpec, PatternType, Permission, Seed};

    pub(super) const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    pub(super) fn store() -> Arc<AuthStore> {
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
        let mut a = Authz::new(s.clone(), "w", "/", LOCAL);
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
        let mut g = Authz::new(s.clone(), "guest", "/", LOCAL);
        assert!(g.cluster());
        assert!(g.topic(Perm::Configure, "anything"));
        s.clear_permissions("guest", "/").unwrap();
        assert!(g.cluster());
        assert!(!g.topic_visible("anything"));
    }

    #[test]
    fn a_revoke_applies_to_the_next_check() {
        let s = store();
        let mut a = Authz::new(s.clone(), "w", "/", LOCAL);
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

    pub(super) fn binding(
        rtype: ResourceType,
        name: &str,
        principal: &str,
        op: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rtype,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    #[test]
    fn acls_decide_where_they_cover_the_resource_and_vhost_permissions_elsewhere() {
        let s = store();
        let mut a = Authz::new(s.clone(), "w", "/", LOCAL);
        assert!(a.topic(Perm::Write, "wo.x"));
        s.create_acls(
            "/",
            &[
                binding(
                    ResourceType::Topic,
                    "wo.x",
                    "User:w",
                    AclOperation::Write,
                    AclPermission::Deny,
                ),
                binding(
                    ResourceType::Topic,
                    "wo.x",
                    "User:*",
                    AclOperation::All,
                    AclPermission::Allow,
                ),
                binding(
                    ResourceType::Topic,
                    "acl.t",
                    "User:w",
                    AclOperation::Read,
                    AclPermission::Allow,
                ),
                binding(
                    ResourceType::Group,
                    "g",
                    "User:other",
                    AclOperation::Read,
                    AclPermission::Allow,
                ),
            ],
        )
        .unwrap();
        // DENY wins over ALLOW ALL; ALLOW ALL grants what the vhost permissions do not.
        assert!(!a.topic(Perm::Write, "wo.x"));
        assert!(a.topic(Perm::Read, "wo.x"));
        // ACL grants read (and DESCRIBE) outside the vhost permissions; not write.
        assert!(a.topic(Perm::Read, "acl.t"));
        assert!(a.topic_visible("acl.t"));
        assert!(!a.topic(Perm::Write, "acl.t"));
        // No ACL covers wo.y: vhost permissions.
        assert!(a.topic(Perm::Write, "wo.y"));
        assert!(!a.topic(Perm::Read, "wo.y"));
        // Group g has ACLs for someone else only: denied; rg has none: vhost read.
        assert!(!a.group("g"));
        assert!(a.group("rg"));
        // Another host is another principal-host pair.
        let mut far = Authz::new(s.clone(), "w", "/", "10.1.2.3".parse().unwrap());
        assert!(far.topic(Perm::Read, "acl.t"));
        // Administrators (super users): ACLs do not apply, vhost permissions do.
        let mut g = Authz::new(s.clone(), "guest", "/", LOCAL);
        s.create_acls(
            "/",
            &[binding(
                ResourceType::Topic,
                "wo.x",
                "User:guest",
                AclOperation::All,
                AclPermission::Deny,
            )],
        )
        .unwrap();
        assert!(g.topic(Perm::Write, "wo.x"));
        assert!(g.view().cluster_op(AclOperation::Alter));
        assert!(!a.view().cluster_op(AclOperation::IdempotentWrite));
        s.create_acls(
            "/",
            &[binding(
                ResourceType::Cluster,
                acl::CLUSTER_NAME,
                "User:w",
                AclOperation::IdempotentWrite,
                AclPermission::Allow,
            )],
        )
        .unwrap();
        assert!(a.view().cluster_op(AclOperation::IdempotentWrite));
        // KIP-430 bits: w may only read acl.t (READ, and DESCRIBE it implies).
        let bit = |op: AclOperation| 1 << op.code();
        assert_eq!(
            a.view().topic_authorized_operations("acl.t"),
            bit(AclOperation::Read) | bit(AclOperation::Describe)
        );
        // No ACL on wo.y: write (WRITE), DESCRIBE and DESCRIBE_CONFIGS (any permission)
        // from the vhost permissions.
        assert_eq!(
            a.view().topic_authorized_operations("wo.y"),
            bit(AclOperation::Write)
                | bit(AclOperation::Describe)
                | bit(AclOperation::DescribeConfigs)
        );
        assert_eq!(
            a.view().cluster_authorized_operations(),
            bit(AclOperation::IdempotentWrite)
        );
        assert_eq!(g.view().cluster_authorized_operations().count_ones(), 7);
        // Transactional ids: no ACL ⇒ the given fallback.
        assert!(a.view().transactional_id("tx", true));
        assert!(!a.view().transactional_id("tx", false));
        s.create_acls(
            "/",
            &[binding(
                ResourceType::TransactionalId,
                "tx",
                "User:w",
                AclOperation::Write,
                AclPermission::Allow,
            )],
        )
        .unwrap();
        assert!(a.view().transactional_id("tx", false));
        assert!(far.view().transactional_id("tx2", true));
        // DESCRIBE on an id: WRITE implies it; no ACL on the id: administrators only.
        assert!(a.view().txn_id_visible("tx"));
        assert!(!a.view().txn_id_visible("tx2"));
        assert!(g.view().txn_id_visible("tx2"));
        // A DENY WRITE leaves no ALLOW for DESCRIBE on the id it covers.
        s.create_acls(
            "/",
            &[binding(
                ResourceType::TransactionalId,
                "tx3",
                "User:w",
                AclOperation::Write,
                AclPermission::Deny,
            )],
        )
        .unwrap();
        assert!(!a.view().txn_id_visible("tx3"));
        assert!(!a
            .view()
            .transactional_id_op(AclOperation::Describe, "tx3", || true));
        assert!(a
            .view()
            .transactional_id_op(AclOperation::Describe, "tx4", || true));
    }
}

#[cfg(test)]
mod group_op_tests {
    use super::tests::{binding, store, LOCAL};
    use super::*;
    use ferrymq_auth::AclPermission;

    #[test]
    fn group_operations_follow_kafka_implications_and_fall_back_to_read() {
        let s = store();
        let mut a = Authz::new(s.clone(), "w", "/", LOCAL);
        // No binding: read on the group id decides DESCRIBE and DELETE alike.
        let v = a.view();
        assert!(v.group_op(AclOperation::Describe, "rg") && v.group_op(AclOperation::Delete, "rg"));
        assert!(!v.group_op(AclOperation::Describe, "wo.g"));
        assert!(!v.group_op(AclOperation::Delete, "wo.g"));
        let allow = |name: &str, op| {
            binding(
                ResourceType::Group,
                name,
                "User:w",
                op,
                AclPermission::Allow,
            )
        };
        s.create_acls(
            "/",
            &[
                allow("d", AclOperation::Describe),
                allow("x", AclOperation::Delete),
                allow("r", AclOperation::Read),
            ],
        )
        .unwrap();
        let v = a.view();
        // DESCRIBE alone: no DELETE, no READ.
        assert!(v.group_op(AclOperation::Describe, "d"));
        assert!(!v.group_op(AclOperation::Delete, "d") && !v.group("d"));
        // DELETE and READ imply DESCRIBE (Kafka's rule), not each other.
        assert!(v.group_op(AclOperation::Describe, "x") && v.group_op(AclOperation::Delete, "x"));
        assert!(!v.group("x"));
        assert!(v.group_op(AclOperation::Describe, "r") && v.group("r"));
        assert!(!v.group_op(AclOperation::Delete, "r"));
        // DESCRIBE on the cluster is an ACL (or the administrator tag).
        assert!(!v.cluster_op(AclOperation::Describe));
    }
}
