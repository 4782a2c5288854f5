//! Kafka ACLs: bindings, filters, validation and the authorization rule (pure).
//!
//! A binding is a resource pattern (type, name, LITERAL or PREFIXED) plus an entry
//! (principal `User:<name>` or `User:*`, host or `*`, operation, ALLOW or DENY), kept per
//! vhost by [`crate::AuthStore`]. The codes are Kafka's (`ResourceType`, `PatternType`,
//! `AclOperation`, `AclPermissionType` in org.apache.kafka.common), and so are the rules:
//!
//! - **Validation** of a new binding (Kafka's `AclControlManager.validateNewAcl` and
//!   `AclApis`): no UNKNOWN/ANY resource type, pattern LITERAL or PREFIXED, no
//!   UNKNOWN/ANY operation, ALLOW or DENY, a non-empty name, `kafka-cluster` as the only
//!   CLUSTER name, a principal with a `type:` prefix. Anything else is INVALID_REQUEST.
//! - **Filters** (DescribeAcls / DeleteAcls) as `AclBindingFilter.matches`: ANY matches
//!   every value, a null name/principal/host matches all, pattern MATCH with a name
//!   matches the LITERAL bindings of that name or `*` and the PREFIXED bindings the name
//!   starts with; ANY with a name matches that exact name in any pattern type.
//! - **Authorization** as `StandardAuthorizerData`: the bindings whose pattern covers the
//!   resource are the resource's ACLs; if there is none the answer is [`Decision::NoAcls`]
//!   (the caller's fallback). Otherwise a DENY for the principal (or `User:*`), the host
//!   (or `*`) and the operation (or ALL) denies; else an ALLOW for the operation, ALL, or
//!   an operation implying it (READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS
//!   implies DESCRIBE_CONFIGS) allows; else deny.

use serde::{Deserialize, Serialize};

/// The only valid name of a CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard resource name, principal name and host.
pub const WILDCARD: &str = "*";
/// The principal every user matches.
pub const ANY_USER: &str = "User:*";

macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),+ }
            }

            /// The value of a wire code; codes this broker does not know are UNKNOWN.
            pub fn from_code(code: i8) -> $name {
                match code {
                    $($code => $name::$variant,)+
                    _ => $name::Unknown,
                }
            }
        }
    };
}

kafka_enum!(
    /// Kafka's `ResourceType`.
    ResourceType {
        Unknown = 0,
        Any = 1,
        Topic = 2,
        Group = 3,
        Cluster = 4,
        TransactionalId = 5,
        DelegationToken = 6,
        User = 7,
    }
);

kafka_enum!(
    /// Kafka's `PatternType` (MATCH and ANY only in filters).
    PatternType {
        Unknown = 0,
        Any = 1,
        Match = 2,
        Literal = 3,
        Prefixed = 4,
    }
);

kafka_enum!(
    /// Kafka's `AclOperation`.
    AclOperation {
        Unknown = 0,
        Any = 1,
        All = 2,
        Read = 3,
        Write = 4,
        Create = 5,
        Delete = 6,
        Alter = 7,
        Describe = 8,
        ClusterAction = 9,
        DescribeConfigs = 10,
        AlterConfigs = 11,
        IdempotentWrite = 12,
        CreateTokens = 13,
        DescribeTokens = 14,
    }
);

kafka_enum!(
    /// Kafka's `AclPermissionType`.
    AclPermission {
        Unknown = 0,
        Any = 1,
        Deny = 2,
        Allow = 3,
    }
);

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// What DescribeAcls and DeleteAcls select (`None` = any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No binding covers the resource: the caller decides (FerryMQ: vhost permissions).
    NoAcls,
}

/// The principal string of a user.
pub fn user_principal(user: &str) -> String {
    format!("User:{user}")
}

impl AclBinding {
    /// Checks a binding to create; the error text is the INVALID_REQUEST message.
    pub fn validate(&self) -> Result<(), String> {
        match self.resource_type {
            ResourceType::Unknown | ResourceType::Any => {
                return Err(format!(
                    "Invalid resourceType {}",
                    self.resource_type.name()
                ))
            }
            _ => {}
        }
        match self.pattern_type {
            PatternType::Literal | PatternType::Prefixed => {}
            p => return Err(format!("Invalid patternType {}", p.name())),
        }
        match self.operation {
            AclOperation::Unknown | AclOperation::Any => {
                return Err(format!("Invalid operation {}", self.operation.name()))
            }
            _ => {}
        }
        match self.permission {
            AclPermission::Allow | AclPermission::Deny => {}
            p => return Err(format!("Invalid permissionType {}", p.name())),
        }
        if self.resource_name.is_empty() {
            return Err("Invalid empty resource name".to_owned());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, _)) if !kind.is_empty() => {}
            _ => {
                return Err(format!(
                    "Could not parse principal from `{}` (no colon is present separating \
                     the principal type from the principal name)",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return Err("Invalid empty host".to_owned());
        }
        Ok(())
    }

    /// Whether this binding's pattern covers resource `name` of type `rtype`.
    pub fn covers(&self, rtype: ResourceType, name: &str) -> bool {
        self.resource_type == rtype
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
                _ => false,
            }
    }
}

impl AclFilter {
    /// Checks a filter (DescribeAcls / DeleteAcls); the error text is the INVALID_REQUEST
    /// message.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type == ResourceType::Unknown || self.pattern_type == PatternType::Unknown
        {
            return Err("Unknown patternFilter.".to_owned());
        }
        if self.operation == AclOperation::Unknown || self.permission == AclPermission::Unknown {
            return Err("Unknown entryFilter.".to_owned());
        }
        Ok(())
    }

    /// `AclBindingFilter.matches`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.pattern_matches(b) && self.entry_matches(b)
    }

    fn pattern_matches(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != b.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == b.pattern_type {
            return *name == b.resource_name;
        }
        match b.pattern_type {
            PatternType::Literal => *name == b.resource_name || b.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(b.resource_name.as_str()),
            _ => false,
        }
    }

    fn entry_matches(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == AclPermission::Any || self.permission == b.permission)
    }
}

impl ResourceType {
    /// Kafka's name (`TOPIC`, `TRANSACTIONAL_ID`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Unknown => "UNKNOWN",
            ResourceType::Any => "ANY",
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
            ResourceType::DelegationToken => "DELEGATION_TOKEN",
            ResourceType::User => "USER",
        }
    }
}

impl PatternType {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            PatternType::Unknown => "UNKNOWN",
            PatternType::Any => "ANY",
            PatternType::Match => "MATCH",
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }
}

impl AclOperation {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            AclOperation::Unknown => "UNKNOWN",
            AclOperation::Any => "ANY",
            AclOperation::All => "ALL",
            AclOperation::Read => "READ",
            AclOperation::Write => "WRITE",
            AclOperation::Create => "CREATE",
            AclOperation::Delete => "DELETE",
            AclOperation::Alter => "ALTER",
            AclOperation::Describe => "DESCRIBE",
            AclOperation::ClusterAction => "CLUSTER_ACTION",
            AclOperation::DescribeConfigs => "DESCRIBE_CONFIGS",
            AclOperation::AlterConfigs => "ALTER_CONFIGS",
            AclOperation::IdempotentWrite => "IDEMPOTENT_WRITE",
            AclOperation::CreateTokens => "CREATE_TOKENS",
            AclOperation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    /// Whether an ALLOW binding of `self` allows `wanted`.
    fn allows(self, wanted: AclOperation) -> bool {
        use AclOperation::*;
        self == All
            || self == wanted
            || match wanted {
                Describe => matches!(self, Read | Write | Delete | Alter),
                DescribeConfigs => self == AlterConfigs,
                _ => false,
            }
    }
}

impl AclPermission {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            AclPermission::Unknown => "UNKNOWN",
            AclPermission::Any => "ANY",
            AclPermission::Deny => "DENY",
            AclPermission::Allow => "ALLOW",
        }
    }
}

/// Whether `principal` (`User:<name>`) from `host` may do `op` on resource `name` of type
/// `rtype`, given a vhost's `bindings`. See the module docs for the rule.
pub fn authorize<'a>(
    bindings: impl IntoIterator<Item = &'a AclBinding>,
    principal: &str,
    host: &str,
    op: AclOperation,
    rtype: ResourceType,
    name: &str,
) -> Decision {
    let mut found = false;
    let mut allowed = false;
    for b in bindings {
        if !b.covers(rtype, name) {
            continue;
        }
        found = true;
        if !(b.principal == principal || b.principal == ANY_USER)
            || !(b.host == host || b.host == WILDCARD)
        {
            continue;
        }
        match b.permission {
            AclPermission::Deny if b.operation == op || b.operation == AclOperation::All => {
                return Decision::Deny
            }
            AclPermission::Allow if b.operation.allows(op) => allowed = true,
            _ => {}
        }
    }
    match (found, allowed) {
        (false, _) => Decision::NoAcls,
        (true, true) => Decision::Allow,
        (true, false) => Decision::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        rtype: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rtype,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    use AclOperation as Op;
    use AclPermission::{Allow, Deny};
    use PatternType::{Literal, Prefixed};
    use ResourceType::{Group, Topic};

    #[test]
    fn codes_round_trip_and_unknown_codes_are_unknown() {
        for c in 0..=14 {
            assert_eq!(AclOperation::from_code(c).code(), c);
        }
        assert_eq!(ResourceType::from_code(5), ResourceType::TransactionalId);
        assert_eq!(ResourceType::from_code(42), ResourceType::Unknown);
        assert_eq!(PatternType::from_code(4), Prefixed);
        assert_eq!(AclPermission::from_code(-1), AclPermission::Unknown);
    }

    #[test]
    fn validation_is_kafkas() {
        let ok = b(Topic, "t", Literal, "User:a", Op::Read, Allow);
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: &dyn Fn(&mut AclBinding)| {
            let mut x = ok.clone();
            f(&mut x);
            x.validate().unwrap_err()
        };
        assert_eq!(
            bad(&|x| x.resource_type = ResourceType::Any),
            "Invalid resourceType ANY"
        );
        assert!(bad(&|x| x.resource_type = ResourceType::Unknown).contains("UNKNOWN"));
        assert_eq!(
            bad(&|x| x.pattern_type = PatternType::Match),
            "Invalid patternType MATCH"
        );
        assert!(bad(&|x| x.pattern_type = PatternType::Any).contains("ANY"));
        assert_eq!(bad(&|x| x.operation = Op::Any), "Invalid operation ANY");
        assert!(bad(&|x| x.permission = AclPermission::Any).contains("permissionType"));
        assert!(bad(&|x| x.resource_name.clear()).contains("empty"));
        assert!(bad(&|x| x.principal = "alice".into()).contains("no colon"));
        assert!(bad(&|x| {
            x.resource_type = ResourceType::Cluster;
            x.resource_name = "c".into()
        })
        .contains(CLUSTER_NAME));
        let mut c = ok.clone();
        c.resource_type = ResourceType::Cluster;
        c.resource_name = CLUSTER_NAME.into();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn no_binding_on_the_resource_means_no_acls() {
        let acls = [b(Topic, "other", Literal, "User:a", Op::Read, Allow)];
        let d = authorize(&acls, "User:a", "1.2.3.4", Op::Read, Topic, "t");
        assert_eq!(d, Decision::NoAcls);
        // A binding on the resource for someone else: the resource has ACLs, so deny.
        let acls = [b(Topic, "t", Literal, "User:b", Op::Read, Allow)];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Read, Topic, "t"),
            Decision::Deny
        );
        assert_eq!(
            authorize(&acls, "User:b", "h", Op::Read, Topic, "t"),
            Decision::Allow
        );
        // Same name, other resource type: not the resource's ACLs.
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Read, Group, "t"),
            Decision::NoAcls
        );
    }

    #[test]
    fn deny_wins_and_all_matches_every_operation() {
        let acls = [
            b(Topic, "t", Literal, "User:*", Op::All, Allow),
            b(Topic, "t", Prefixed, "User:a", Op::Write, Deny),
        ];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Read, Topic, "t"),
            Decision::Allow
        );
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Write, Topic, "t"),
            Decision::Deny
        );
        assert_eq!(
            authorize(&acls, "User:b", "h", Op::Write, Topic, "t"),
            Decision::Allow
        );
        let acls = [
            b(Topic, "t", Literal, "User:a", Op::Read, Allow),
            b(Topic, "*", Literal, "User:a", Op::All, Deny),
        ];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Read, Topic, "t"),
            Decision::Deny
        );
    }

    #[test]
    fn implied_describe_and_describe_configs() {
        for op in [Op::Read, Op::Write, Op::Delete, Op::Alter] {
            let acls = [b(Topic, "t", Literal, "User:a", op, Allow)];
            assert_eq!(
                authorize(&acls, "User:a", "h", Op::Describe, Topic, "t"),
                Decision::Allow,
                "{op:?}"
            );
        }
        let acls = [b(Topic, "t", Literal, "User:a", Op::Create, Allow)];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Describe, Topic, "t"),
            Decision::Deny
        );
        let acls = [b(Topic, "t", Literal, "User:a", Op::AlterConfigs, Allow)];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::DescribeConfigs, Topic, "t"),
            Decision::Allow
        );
        // A DENY of READ does not deny DESCRIBE (Kafka: DENY matches its operation only).
        let acls = [
            b(Topic, "t", Literal, "User:a", Op::Read, Deny),
            b(Topic, "t", Literal, "User:a", Op::Describe, Allow),
        ];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Describe, Topic, "t"),
            Decision::Allow
        );
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Read, Topic, "t"),
            Decision::Deny
        );
    }

    #[test]
    fn prefixed_wildcard_and_host() {
        let mut x = b(Topic, "orders.", Prefixed, "User:a", Op::Read, Allow);
        x.host = "10.0.0.1".into();
        let acls = [x];
        assert_eq!(
            authorize(&acls, "User:a", "10.0.0.1", Op::Read, Topic, "orders.eu"),
            Decision::Allow
        );
        assert_eq!(
            authorize(&acls, "User:a", "10.0.0.2", Op::Read, Topic, "orders.eu"),
            Decision::Deny
        );
        assert_eq!(
            authorize(&acls, "User:a", "10.0.0.1", Op::Read, Topic, "order"),
            Decision::NoAcls
        );
        let acls = [b(Topic, "*", Literal, "User:a", Op::Read, Allow)];
        assert_eq!(
            authorize(&acls, "User:a", "h", Op::Read, Topic, "any"),
            Decision::Allow
        );
    }

    fn filter(name: Option<&str>, pattern: PatternType) -> AclFilter {
        AclFilter {
            resource_type: Topic,
            resource_name: name.map(str::to_owned),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: Op::Any,
            permission: AclPermission::Any,
        }
    }

    #[test]
    fn filters_match_as_kafka() {
        let lit = b(Topic, "t_1", Literal, "User:a", Op::Read, Allow);
        let pre = b(Topic, "t_", Prefixed, "User:a", Op::Read, Allow);
        let star = b(Topic, "*", Literal, "User:a", Op::Read, Allow);
        let grp = b(Group, "t_1", Literal, "User:a", Op::Read, Allow);
        let m = filter(Some("t_1"), PatternType::Match);
        assert!(m.matches(&lit) && m.matches(&pre) && m.matches(&star) && !m.matches(&grp));
        let any = filter(Some("t_1"), PatternType::Any);
        assert!(any.matches(&lit) && !any.matches(&pre) && !any.matches(&star));
        let l = filter(Some("t_"), Literal);
        assert!(!l.matches(&lit) && !l.matches(&pre));
        let p = filter(Some("t_"), Prefixed);
        assert!(p.matches(&pre) && !p.matches(&lit));
        let all = filter(None, PatternType::Any);
        assert!(all.matches(&lit) && all.matches(&pre) && all.matches(&star));
        let mut f = filter(None, PatternType::Any);
        f.resource_type = ResourceType::Any;
        assert!(f.matches(&grp));
        f.principal = Some("User:b".into());
        assert!(!f.matches(&grp));
        f.principal = None;
        f.operation = Op::Write;
        assert!(!f.matches(&grp));
        f.operation = Op::Read;
        f.permission = Deny;
        assert!(!f.matches(&grp));
        assert!(filter(None, PatternType::Unknown).validate().is_err());
        assert!(filter(None, PatternType::Match).validate().is_ok());
    }
}
