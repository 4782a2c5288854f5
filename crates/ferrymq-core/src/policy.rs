//! Policies, as RabbitMQ has them: named rules that apply queue arguments to every queue
//! whose name matches a pattern, without the clients declaring them. A queue gets the one
//! matching policy with the highest priority (ties: the first defined); its own `x-`
//! arguments win over the policy's. An operator policy (at most one per queue, chosen the
//! same way) caps the numeric limits: the stricter of it and the effective value wins.

use amq_protocol::types::{AMQPValue, FieldTable};
use regex::Regex;

use crate::error::CoreError;
use crate::topology::{int_value, validate_queue_args};

/// What a policy applies to (`apply-to`). FerryMQ's policy keys are all queue keys, so
/// `exchanges` policies match nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "queues" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            _ => return None,
        })
    }
}

/// Policy keys and the queue arguments they set.
const KEYS: &[(&str, &str)] = &[
    ("message-ttl", "x-message-ttl"),
    ("expires", "x-expires"),
    ("max-length", "x-max-length"),
    ("max-length-bytes", "x-max-length-bytes"),
    ("overflow", "x-overflow"),
    ("dead-letter-exchange", "x-dead-letter-exchange"),
    ("dead-letter-routing-key", "x-dead-letter-routing-key"),
    ("delivery-limit", "x-delivery-limit"),
    ("consumer-timeout", "x-consumer-timeout"),
    ("queue-mode", "x-queue-mode"),
    ("delayed-retry-type", "x-delayed-retry-type"),
    ("delayed-retry-min", "x-delayed-retry-min"),
    ("delayed-retry-max", "x-delayed-retry-max"),
    ("message-deduplication", "x-message-deduplication"),
];

/// The keys an operator policy may set (limits only; the stricter value wins).
const OPERATOR_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "consumer-timeout",
];

/// One policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub pattern: Regex,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// Policy keys (`message-ttl`, …) and values.
    pub definition: Vec<(String, AMQPValue)>,
}

impl Policy {
    /// Builds and checks a policy: the pattern must compile, every key must be known (an
    /// operator policy only takes limits) and every value must be what the queue argument
    /// takes.
    pub fn new(
        name: &str,
        pattern: &str,
        apply_to: ApplyTo,
        priority: i64,
        definition: Vec<(String, AMQPValue)>,
        operator: bool,
    ) -> Result<Policy, CoreError> {
        let bad = |why: String| CoreError::Precondition(format!("policy '{name}': {why}"));
        let pattern = Regex::new(pattern).map_err(|e| bad(format!("pattern: {e}")))?;
        if definition.is_empty() {
            return Err(bad("empty definition".into()));
        }
        let mut args = FieldTable::default();
        for (k, v) in &definition {
            let Some((_, arg)) = KEYS.iter().find(|(key, _)| key == k) else {
                return Err(bad(format!("unknown key '{k}'")));
            };
            if operator && !OPERATOR_KEYS.contains(&k.as_str()) {
                return Err(bad(format!("'{k}' cannot be set by an operator policy")));
            }
            args.insert((*arg).into(), v.clone());
        }
        validate_queue_args("/", name, &args).map_err(|e| bad(e.to_string()))?;
        Ok(Policy {
            name: name.to_owned(),
            pattern,
            apply_to,
            priority,
            definition,
        })
    }

    fn matches_queue(&self, queue: &str) -> bool {
        self.apply_to != ApplyTo::Exchanges && self.pattern.is_match(queue)
    }
}

/// The broker's policies and operator policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub policies: Vec<Policy>,
    pub operator: Vec<Policy>,
}

/// A queue's effective arguments and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub arguments: FieldTable,
    pub policy: Option<String>,
    pub operator_policy: Option<String>,
}

fn pick<'a>(list: &'a [Policy], queue: &str) -> Option<&'a Policy> {
    let mut best: Option<&Policy> = None;
    for p in list.iter().filter(|p| p.matches_queue(queue)) {
        if best.is_none_or(|b| p.priority > b.priority) {
            best = Some(p);
        }
    }
    best
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.operator.is_empty()
    }

    /// The arguments queue `name` runs with, given the ones it was declared with.
    pub fn effective(&self, name: &str, declared: &FieldTable) -> Effective {
        let mut args = declared.clone();
        let policy = pick(&self.policies, name);
        if let Some(p) = policy {
            for (k, v) in &p.definition {
                if let Some((_, arg)) = KEYS.iter().find(|(key, _)| key == k) {
                    if !args.inner().contains_key(*arg) {
                        args.insert((*arg).into(), v.clone());
                    }
                }
            }
        }
        let operator = pick(&self.operator, name);
        if let Some(p) = operator {
            for (k, v) in &p.definition {
                let Some((_, arg)) = KEYS.iter().find(|(key, _)| key == k) else {
                    continue;
                };
                let stricter = match (args.inner().get(*arg).and_then(int_value), int_value(v)) {
                    (Some(cur), Some(cap)) => cap < cur,
                    (None, Some(_)) => true,
                    _ => false,
                };
                if stricter {
                    args.insert((*arg).into(), v.clone());
                }
            }
        }
        Effective {
            arguments: args,
            policy: policy.map(|p| p.name.clone()),
            operator_policy: operator.map(|p| p.name.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn int(n: i64) -> AMQPValue {
        AMQPValue::LongLongInt(n)
    }

    fn p(name: &str, pattern: &str, prio: i64, def: &[(&str, AMQPValue)], op: bool) -> Policy {
        let def = def
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Policy::new(name, pattern, ApplyTo::All, prio, def, op).unwrap()
    }

    #[test]
    fn highest_priority_policy_applies_and_declared_arguments_win() {
        let ps = Policies {
            policies: vec![
                p("low", "^orders", 0, &[("message-ttl", int(1000))], false),
                p(
                    "high",
                    "^orders\\.",
                    5,
                    &[
                        ("message-ttl", int(5000)),
                        ("max-length", int(10)),
                        (
                            "dead-letter-exchange",
                            AMQPValue::LongString(LongString::from("dlx")),
                        ),
                    ],
                    false,
                ),
            ],
            operator: vec![],
        };
        let e = ps.effective("orders.eu", &FieldTable::default());
        assert_eq!(e.policy.as_deref(), Some("high"));
        assert_eq!(e.arguments.inner().get("x-message-ttl"), Some(&int(5000)));
        assert!(e.arguments.inner().contains_key("x-dead-letter-exchange"));
        let mut declared = FieldTable::default();
        declared.insert("x-max-length".into(), int(3));
        let e = ps.effective("orders.eu", &declared);
        assert_eq!(e.arguments.inner().get("x-max-length"), Some(&int(3)));
        let e = ps.effective("ordersX", &FieldTable::default());
        assert_eq!(e.policy.as_deref(), Some("low"));
        let e = ps.effective("other", &FieldTable::default());
        assert_eq!(e.policy, None);
        assert!(e.arguments.inner().is_empty());
    }

    #[test]
    fn operator_policy_caps_limits() {
        let ps = Policies {
            policies: vec![],
            operator: vec![p("cap", ".*", 0, &[("max-length", int(100))], true)],
        };
        let mut declared = FieldTable::default();
        declared.insert("x-max-length".into(), int(1000));
        let e = ps.effective("q", &declared);
        assert_eq!(e.arguments.inner().get("x-max-length"), Some(&int(100)));
        declared.insert("x-max-length".into(), int(10));
        let e = ps.effective("q", &declared);
        assert_eq!(e.arguments.inner().get("x-max-length"), Some(&int(10)));
        assert_eq!(
            ps.effective("q", &FieldTable::default())
                .operator_policy
                .as_deref(),
            Some("cap")
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let def = |k: &str, v: AMQPValue| vec![(k.to_string(), v)];
        assert!(Policy::new("x", "(", ApplyTo::All, 0, def("max-length", int(1)), false).is_err());
        assert!(Policy::new("x", ".*", ApplyTo::All, 0, def("nope", int(1)), false).is_err());
        assert!(Policy::new(
            "x",
            ".*",
            ApplyTo::All,
            0,
            def("max-length", int(-1)),
            false
        )
        .is_err());
        assert!(Policy::new(
            "x",
            ".*",
            ApplyTo::All,
            0,
            def(
                "dead-letter-exchange",
                AMQPValue::LongString(LongString::from("d"))
            ),
            true
        )
        .is_err());
    }
}
