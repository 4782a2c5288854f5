//! Resource permissions: RabbitMQ's configure/write/read regexes and topic permissions.
//!
//! Mirrors `rabbit_auth_backend_internal` and `rabbit_channel`:
//!
//! - A user has at most one permission row per vhost: three regular expressions, matched
//!   as an **unanchored search** against the resource name (`re:run(Name, Re)`), so
//!   `^app\.` must be anchored by its author and `app` matches `my.app.q`.
//! - An empty pattern is RabbitMQ's `^$`: it matches only the empty name, i.e. no queue or
//!   exchange (the default exchange is checked under its name `amq.default`).
//! - A pattern the regex engine rejects fails when it is set; if one ever reaches a check
//!   (e.g. loaded from an old snapshot) it denies.
//! - Topic permissions (user, vhost, exchange → write/read regexes on the routing key)
//!   apply to topic exchanges only. No row for the exchange ⇒ allowed. `{username}` and
//!   `{vhost}` in a pattern are replaced by the regex-escaped values before compiling.
//!
//! FerryMQ uses Rust's `regex` syntax (no look-around or back-references, unlike PCRE);
//! the patterns people write for RabbitMQ (`.*`, `^app\.`, `^(a|b)$`, `^amq\.gen-`)
//! mean the same in both.
//!
//! [`Access`] bundles everything one connection needs for one (user, vhost) so that a
//! check is a hash lookup plus a precompiled regex search, allocation-free on success.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// The name the default exchange `""` is checked and reported under.
pub const DEFAULT_EXCHANGE_NAME: &str = "amq.default";

/// Bound on a compiled pattern's size, so a hostile definitions file cannot make the
/// broker build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One of RabbitMQ's three resource permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    Configure,
    Write,
    Read,
}

impl Perm {
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Configure => "configure",
            Perm::Write => "write",
            Perm::Read => "read",
        }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a permission is checked on, as named in refusal texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Queue,
    Exchange,
    /// A routing key on a topic exchange (see [`Access::check_topic`]).
    Topic,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Queue => "queue",
            ResourceKind::Exchange => "exchange",
            ResourceKind::Topic => "topic",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission row's source patterns (as stored and exported).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl Permission {
    /// `.* .* .*`: everything (what the default user gets on `/`).
    pub fn all() -> Self {
        Permission {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        }
    }

    /// The pattern for `perm`.
    pub fn pattern(&self, perm: Perm) -> &str {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
    }
}

/// A topic-permission row's source patterns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopicPermission {
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
enum Matcher {
    /// `""` (RabbitMQ's `^$`).
    EmptyOnly,
    /// `.*` and equivalents: skips the regex on the hot path.
    Everything,
    Regex(Regex),
    /// A pattern that failed to compile: denies.
    Invalid,
}

impl Matcher {
    fn compile(pattern: &str) -> Result<Matcher, AuthError> {
        match pattern {
            "" => Ok(Matcher::EmptyOnly),
            ".*" | "^.*" | ".*$" => Ok(Matcher::Everything),
            _ => RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Matcher::Regex)
                .map_err(|e| AuthError::InvalidRegex {
                    pattern: pattern.to_owned(),
                    reason: e.to_string(),
                }),
        }
    }

    fn compile_lenient(pattern: &str) -> Matcher {
        Matcher::compile(pattern).unwrap_or(Matcher::Invalid)
    }

    #[inline]
    fn is_match(&self, name: &str) -> bool {
        match self {
            Matcher::EmptyOnly => name.is_empty(),
            Matcher::Everything => true,
            Matcher::Regex(re) => re.is_match(name),
            Matcher::Invalid => false,
        }
    }
}

/// Checks that `pattern` compiles (what `set_permissions` does before storing).
pub fn validate_pattern(pattern: &str) -> Result<(), AuthError> {
    Matcher::compile(pattern).map(|_| ())
}

/// A permission row with its three patterns compiled.
#[derive(Debug, Clone)]
pub struct CompiledPermission {
    source: Permission,
    configure: Matcher,
    write: Matcher,
    read: Matcher,
}

impl CompiledPermission {
    /// Compiles all three patterns; fails on the first invalid one.
    pub fn compile(p: &Permission) -> Result<Self, AuthError> {
        Ok(CompiledPermission {
            source: p.clone(),
            configure: Matcher::compile(&p.configure)?,
            write: Matcher::compile(&p.write)?,
            read: Matcher::compile(&p.read)?,
        })
    }

    /// Compiles what compiles; an invalid pattern denies every check of its kind.
    pub fn compile_lenient(p: &Permission) -> Self {
        CompiledPermission {
            source: p.clone(),
            configure: Matcher::compile_lenient(&p.configure),
            write: Matcher::compile_lenient(&p.write),
            read: Matcher::compile_lenient(&p.read),
        }
    }

    /// The source patterns.
    pub fn source(&self) -> &Permission {
        &self.source
    }

    /// Whether `perm` is granted on a resource called `name`.
    #[inline]
    pub fn allows(&self, perm: Perm, name: &str) -> bool {
        match perm {
            Perm::Configure => self.configure.is_match(name),
            Perm::Write => self.write.is_match(name),
            Perm::Read => self.read.is_match(name),
        }
    }
}

/// A topic-permission row compiled for one (user, vhost): `{username}` and `{vhost}`
/// already substituted.
#[derive(Debug, Clone)]
pub struct CompiledTopicPermission {
    source: TopicPermission,
    write: Matcher,
    read: Matcher,
}

/// Replaces `{username}` and `{vhost}` with the regex-escaped values (RabbitMQ's
/// `expand_topic_permission`). Other `{…}` variables (MQTT's `{client_id}`) stay as
/// they are.
pub fn expand_topic_pattern(pattern: &str, user: &str, vhost: &str) -> String {
    if !pattern.contains('{') {
        return pattern.to_owned();
    }
    pattern
        .replace("{username}", &regex::escape(user))
        .replace("{vhost}", &regex::escape(vhost))
}

impl CompiledTopicPermission {
    pub fn compile(tp: &TopicPermission, user: &str, vhost: &str) -> Result<Self, AuthError> {
        Ok(CompiledTopicPermission {
            source: tp.clone(),
            write: Matcher::compile(&expand_topic_pattern(&tp.write, user, vhost))?,
            read: Matcher::compile(&expand_topic_pattern(&tp.read, user, vhost))?,
        })
    }

    pub fn compile_lenient(tp: &TopicPermission, user: &str, vhost: &str) -> Self {
        CompiledTopicPermission {
            source: tp.clone(),
            write: Matcher::compile_lenient(&expand_topic_pattern(&tp.write, user, vhost)),
            read: Matcher::compile_lenient(&expand_topic_pattern(&tp.read, user, vhost)),
        }
    }

    pub fn source(&self) -> &TopicPermission {
        &self.source
    }

    /// Topic permissions exist only for write and read; configure is never restricted
    /// by them.
    #[inline]
    pub fn allows(&self, perm: Perm, routing_key: &str) -> bool {
        match perm {
            Perm::Configure => true,
            Perm::Write => self.write.is_match(routing_key),
            Perm::Read => self.read.is_match(routing_key),
        }
    }
}

/// A refused resource access. `Display` is RabbitMQ's text **without** the
/// `ACCESS_REFUSED - ` prefix (the AMQP layer adds it and sends 403):
///
/// - `configure access to queue 'q' in vhost 'v' refused for user 'u'`
/// - `write access to exchange 'amq.default' in vhost '/' refused for user 'u'`
/// - `write access to topic 'rk' in exchange 'x' in vhost 'v' refused for user 'u'`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRefused {
    pub perm: Perm,
    pub kind: ResourceKind,
    /// Queue or exchange name, or the routing key for [`ResourceKind::Topic`].
    pub name: String,
    /// The exchange, for [`ResourceKind::Topic`] only.
    pub exchange: Option<String>,
    pub vhost: String,
    pub user: String,
}

impl fmt::Display for AccessRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.exchange) {
            (ResourceKind::Topic, Some(x)) => write!(
                f,
                "{} access to topic '{}' in exchange '{}' in vhost '{}' refused for user '{}'",
                self.perm, self.name, x, self.vhost, self.user
            ),
            _ => write!(
                f,
                "{} access to {} '{}' in vhost '{}' refused for user '{}'",
                self.perm, self.kind, self.name, self.vhost, self.user
            ),
        }
    }
}

impl std::error::Error for AccessRefused {}

/// What one user may do in one vhost: the permission row and the topic-permission rows,
/// precompiled. Fetched from [`AuthStore::access`](crate::store::AuthStore::access) when a
/// connection opens a vhost, and re-fetched when
/// [`AuthStore::version`](crate::store::AuthStore::version) moves.
#[derive(Debug, Clone)]
pub struct Access {
    user: String,
    vhost: String,
    permission: Arc<CompiledPermission>,
    topics: HashMap<String, Arc<CompiledTopicPermission>>,
}

#[inline]
fn exchange_name(name: &str) -> &str {
    if name.is_empty() {
        DEFAULT_EXCHANGE_NAME
    } else {
        name
    }
}

impl Access {
    pub fn new(
        user: impl Into<String>,
        vhost: impl Into<String>,
        permission: Arc<CompiledPermission>,
        topics: impl IntoIterator<Item = Arc<CompiledTopicPermission>>,
    ) -> Self {
        Access {
            user: user.into(),
            vhost: vhost.into(),
            permission,
            topics: topics
                .into_iter()
                .map(|t| (exchange_name(&t.source.exchange).to_owned(), t))
                .collect(),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    pub fn permission(&self) -> &Permission {
        self.permission.source()
    }

    /// Whether `perm` is granted on the queue/exchange `name` (no error built).
    #[inline]
    pub fn allows(&self, perm: Perm, kind: ResourceKind, name: &str) -> bool {
        let name = if kind == ResourceKind::Exchange {
            exchange_name(name)
        } else {
            name
        };
        self.permission.allows(perm, name)
    }

    /// Checks `perm` on a queue or exchange (`""` is checked as `amq.default`). For
    /// [`ResourceKind::Topic`] the name is checked against the same resource patterns
    /// (Kafka topics are stream queues); routing-key checks are
    /// [`check_topic`](Self::check_topic).
    #[inline]
    pub fn check(&self, perm: Perm, kind: ResourceKind, name: &str) -> Result<(), AccessRefused> {
        if self.allows(perm, kind, name) {
            Ok(())
        } else {
            Err(self.refused(perm, kind, name, None))
        }
    }

    /// Passes if any one of configure, write or read is granted (RabbitMQ main's rule for
    /// passive declares; also a fit for Kafka Metadata visibility). The refusal names
    /// `configure`.
    pub fn check_any(&self, kind: ResourceKind, name: &str) -> Result<(), AccessRefused> {
        if [Perm::Configure, Perm::Write, Perm::Read]
            .into_iter()
            .any(|p| self.allows(p, kind, name))
        {
            Ok(())
        } else {
            Err(self.refused(Perm::Configure, kind, name, None))
        }
    }

    /// Checks a topic permission on `routing_key` for `exchange` (call it for topic
    /// exchanges only, as RabbitMQ does). No topic-permission row for the exchange ⇒
    /// allowed.
    #[inline]
    pub fn check_topic(
        &self,
        perm: Perm,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), AccessRefused> {
        let exchange = exchange_name(exchange);
        match self.topics.get(exchange) {
            Some(tp) if !tp.allows(perm, routing_key) => {
                Err(self.refused(perm, ResourceKind::Topic, routing_key, Some(exchange)))
            }
            _ => Ok(()),
        }
    }

    /// Whether any topic-permission row exists (lets callers skip per-key checks).
    pub fn has_topic_permissions(&self) -> bool {
        !self.topics.is_empty()
    }

    #[cold]
    fn refused(
        &self,
        perm: Perm,
        kind: ResourceKind,
        name: &str,
        exchange: Option<&str>,
    ) -> AccessRefused {
        let name = if kind == ResourceKind::Exchange {
            exchange_name(name)
        } else {
            name
        };
        AccessRefused {
            perm,
            kind,
            name: name.to_owned(),
            exchange: exchange.map(str::to_owned),
            vhost: self.vhost.clone(),
            user: self.user.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(c: &str, w: &str, r: &str) -> Permission {
        Permission {
            configure: c.into(),
            write: w.into(),
            read: r.into(),
        }
    }

    fn access(p: Permission, topics: &[(&str, &str, &str)]) -> Access {
        let tps = topics.iter().map(|(x, w, r)| {
            Arc::new(
                CompiledTopicPermission::compile(
                    &TopicPermission {
                        exchange: (*x).into(),
                        write: (*w).into(),
                        read: (*r).into(),
                    },
                    "bob",
                    "v1",
                )
                .unwrap(),
            )
        });
        Access::new(
            "bob",
            "v1",
            Arc::new(CompiledPermission::compile(&p).unwrap()),
            tps,
        )
    }

    #[test]
    fn refusal_texts() {
        let a = access(perm("^app\\.", "", ".*"), &[("x", "^allowed$", "")]);
        assert_eq!(
            a.check(Perm::Configure, ResourceKind::Queue, "other.q")
                .unwrap_err()
                .to_string(),
            "configure access to queue 'other.q' in vhost 'v1' refused for user 'bob'"
        );
        assert_eq!(
            a.check(Perm::Write, ResourceKind::Exchange, "")
                .unwrap_err()
                .to_string(),
            "write access to exchange 'amq.default' in vhost 'v1' refused for user 'bob'"
        );
        assert_eq!(
            a.check_topic(Perm::Write, "x", "rk")
                .unwrap_err()
                .to_string(),
            "write access to topic 'rk' in exchange 'x' in vhost 'v1' refused for user 'bob'"
        );
    }

    #[test]
    fn unanchored_search() {
        let a = access(perm("app", "^app\\.", "q$"), &[]);
        assert!(a
            .check(Perm::Configure, ResourceKind::Queue, "my.app.q")
            .is_ok());
        assert!(a
            .check(Perm::Write, ResourceKind::Exchange, "app.x")
            .is_ok());
        assert!(a
            .check(Perm::Write, ResourceKind::Exchange, "my.app.x")
            .is_err());
        assert!(a.check(Perm::Read, ResourceKind::Queue, "some.q").is_ok());
        assert!(a.check(Perm::Read, ResourceKind::Queue, "q.x").is_err());
    }

    #[test]
    fn empty_pattern_matches_no_named_resource() {
        let a = access(perm("", "", ""), &[]);
        for p in [Perm::Configure, Perm::Write, Perm::Read] {
            assert!(a.check(p, ResourceKind::Queue, "q").is_err());
            assert!(a.check(p, ResourceKind::Exchange, "x").is_err());
            assert!(
                a.check(p, ResourceKind::Exchange, "").is_err(),
                "default exchange is amq.default"
            );
        }
        assert!(a.check_any(ResourceKind::Queue, "q").is_err());
    }

    #[test]
    fn default_exchange_checked_as_amq_default() {
        let a = access(perm("", "^amq\\.default$", ""), &[]);
        assert!(a.check(Perm::Write, ResourceKind::Exchange, "").is_ok());
        assert!(a
            .check(Perm::Write, ResourceKind::Exchange, "amq.default")
            .is_ok());
        // Queues are not renamed.
        assert!(a.check(Perm::Write, ResourceKind::Queue, "").is_err());
    }

    #[test]
    fn everything() {
        let a = access(Permission::all(), &[]);
        for p in [Perm::Configure, Perm::Write, Perm::Read] {
            for k in [
                ResourceKind::Queue,
                ResourceKind::Exchange,
                ResourceKind::Topic,
            ] {
                assert!(a.check(p, k, "").is_ok());
                assert!(a.check(p, k, "any\nthing").is_ok());
            }
        }
    }

    #[test]
    fn invalid_regex_fails_at_set_time_and_denies_at_check_time() {
        let bad = perm("(", ".*", ".*");
        assert!(matches!(
            CompiledPermission::compile(&bad),
            Err(AuthError::InvalidRegex { .. })
        ));
        assert!(validate_pattern("[a-").is_err());
        assert!(validate_pattern("^a.*$").is_ok());
        let lenient = CompiledPermission::compile_lenient(&bad);
        assert!(!lenient.allows(Perm::Configure, "("));
        assert!(!lenient.allows(Perm::Configure, ""));
        assert!(lenient.allows(Perm::Write, "x"));
        // Huge automata are refused rather than built.
        assert!(validate_pattern("(a{1000}){1000}").is_err());
    }

    #[test]
    fn topic_permissions() {
        let a = access(
            Permission::all(),
            &[
                ("amq.topic", "^{username}\\.", "^{vhost}\\.|^public\\."),
                ("", "^x$", "^x$"),
            ],
        );
        assert!(a.has_topic_permissions());
        assert!(a.check_topic(Perm::Write, "amq.topic", "bob.a").is_ok());
        assert!(a.check_topic(Perm::Write, "amq.topic", "alice.a").is_err());
        assert!(a.check_topic(Perm::Read, "amq.topic", "v1.a").is_ok());
        assert!(a.check_topic(Perm::Read, "amq.topic", "public.a").is_ok());
        assert!(a.check_topic(Perm::Read, "amq.topic", "bob.a").is_err());
        assert!(a
            .check_topic(Perm::Configure, "amq.topic", "whatever")
            .is_ok());
        // No row for the exchange: allowed.
        assert!(a.check_topic(Perm::Write, "other", "anything").is_ok());
        // "" and amq.default are one exchange.
        assert!(a.check_topic(Perm::Write, "", "x").is_ok());
        assert!(a.check_topic(Perm::Write, "amq.default", "y").is_err());
        assert_eq!(
            a.check_topic(Perm::Write, "", "y").unwrap_err().to_string(),
            "write access to topic 'y' in exchange 'amq.default' in vhost 'v1' refused for user 'bob'"
        );
    }

    #[test]
    fn topic_variables_are_regex_escaped() {
        let tp = TopicPermission {
            exchange: "t".into(),
            write: "^{username}$".into(),
            read: "^{vhost}/.*".into(),
        };
        let c = CompiledTopicPermission::compile(&tp, "a.b+", "v(1)").unwrap();
        assert!(c.allows(Perm::Write, "a.b+"));
        assert!(!c.allows(Perm::Write, "axbb"));
        assert!(c.allows(Perm::Read, "v(1)/x"));
        assert!(!c.allows(Perm::Read, "v1/x"));
        assert_eq!(expand_topic_pattern("{client_id}", "u", "v"), "{client_id}");
    }

    #[test]
    fn check_any_passes_with_one_perm() {
        let a = access(perm("", "", "^q$"), &[]);
        assert!(a.check_any(ResourceKind::Queue, "q").is_ok());
        assert_eq!(
            a.check_any(ResourceKind::Queue, "r")
                .unwrap_err()
                .to_string(),
            "configure access to queue 'r' in vhost 'v1' refused for user 'bob'"
        );
    }
}
