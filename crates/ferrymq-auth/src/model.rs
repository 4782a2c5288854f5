//! Users and vhosts as the rest of FerryMQ sees them.
//!
//! Tags follow RabbitMQ: `administrator`, `monitoring`, `policymaker`, `management` gate
//! the HTTP API only; `impersonator` allows publishing a foreign `user-id`. No AMQP
//! resource right comes from a tag. FerryMQ additionally treats `administrator` as the
//! Kafka super user.
//!
//! Limits use `None` for "unlimited"; RabbitMQ's negative values are normalized to `None`
//! when set or imported (`0` stays `0`: no connections / queues at all).

use crate::password::PasswordHash;
use crate::scram::{ScramCredential, ScramMechanism};

/// The `administrator` tag.
pub const TAG_ADMINISTRATOR: &str = "administrator";
/// The `impersonator` tag (may publish with another user's `user-id` property).
pub const TAG_IMPERSONATOR: &str = "impersonator";

/// Per-user limits (`max-connections`, `max-channels` in RabbitMQ's user limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UserLimits {
    pub max_connections: Option<i64>,
    pub max_channels: Option<i64>,
}

impl UserLimits {
    /// Negative values mean unlimited.
    pub fn normalized(self) -> Self {
        UserLimits {
            max_connections: normalize_limit(self.max_connections),
            max_channels: normalize_limit(self.max_channels),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_channels.is_none()
    }
}

/// Per-vhost limits (runtime parameter `vhost-limits`/`limits` in RabbitMQ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VhostLimits {
    pub max_connections: Option<i64>,
    pub max_queues: Option<i64>,
}

impl VhostLimits {
    /// Negative values mean unlimited.
    pub fn normalized(self) -> Self {
        VhostLimits {
            max_connections: normalize_limit(self.max_connections),
            max_queues: normalize_limit(self.max_queues),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_queues.is_none()
    }
}

/// `Some(n < 0)` → `None`.
pub fn normalize_limit(v: Option<i64>) -> Option<i64> {
    v.filter(|n| *n >= 0)
}

/// A user of the internal auth backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// RabbitMQ-format hash (the algorithm is inside); empty = passwordless.
    pub password_hash: PasswordHash,
    pub tags: Vec<String>,
    pub limits: UserLimits,
    /// Kafka SCRAM credentials (at most one per mechanism). Derived when the password is
    /// set in clear; absent for users imported with only a hash.
    pub scram: Vec<ScramCredential>,
}

impl User {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// RabbitMQ's `administrator` tag (full HTTP API; Kafka super user in FerryMQ).
    pub fn is_administrator(&self) -> bool {
        self.has_tag(TAG_ADMINISTRATOR)
    }

    /// The SCRAM credential for `mechanism`, if any.
    pub fn scram_credential(&self, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.scram.iter().find(|c| c.mechanism == mechanism)
    }
}

/// A virtual host's metadata (its topology lives in the broker engine).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VhostInfo {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// `classic`, `quorum` or `stream` (RabbitMQ metadata); `None` = broker default.
    pub default_queue_type: Option<String>,
    /// RabbitMQ refuses to delete such a vhost.
    pub protected_from_deletion: bool,
    /// Firehose tracing to `amq.rabbitmq.trace`.
    pub tracing: bool,
    pub limits: VhostLimits,
}

impl VhostInfo {
    /// A vhost with only a name.
    pub fn new(name: impl Into<String>) -> Self {
        VhostInfo {
            name: name.into(),
            ..VhostInfo::default()
        }
    }
}

/// Splits RabbitMQ's tag forms: a list, or (HTTP exports before ~3.8.10) one
/// comma-separated string. Whitespace is trimmed, empty entries dropped.
pub fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let u = User {
            name: "u".into(),
            password_hash: PasswordHash::passwordless(),
            tags: vec!["management".into(), "administrator".into()],
            limits: UserLimits::default(),
            scram: vec![],
        };
        assert!(u.is_administrator());
        assert!(u.has_tag("management"));
        assert!(!u.has_tag("admin"));
        assert!(u.scram_credential(ScramMechanism::Sha256).is_none());
        assert_eq!(
            split_tags(" administrator, management ,,"),
            vec!["administrator", "management"]
        );
        assert!(split_tags("").is_empty());
    }

    #[test]
    fn negative_limits_are_unlimited() {
        let l = UserLimits {
            max_connections: Some(-1),
            max_channels: Some(0),
        }
        .normalized();
        assert_eq!(l.max_connections, None);
        assert_eq!(l.max_channels, Some(0));
        let v = VhostLimits {
            max_connections: Some(5),
            max_queues: Some(-5),
        }
        .normalized();
        assert_eq!(
            v,
            VhostLimits {
                max_connections: Some(5),
                max_queues: None
            }
        );
        assert!(VhostLimits::default().is_empty());
    }
}
