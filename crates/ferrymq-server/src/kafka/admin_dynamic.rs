//! DescribeConfigs / IncrementalAlterConfigs / AlterConfigs of BROKER resources (dynamic
//! broker configs: "0" this broker, "" the cluster default) and GROUP resources (group
//! configs, KIP-848). Validation in `ferrymq_kafka::api::dynamic_configs`; storage in
//! [`super::dynamic_configs`].

use std::collections::BTreeMap;

use ferrymq_auth::AclOperation;
use ferrymq_kafka::api::dynamic_configs as dc;
use ferrymq_kafka::kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use ferrymq_kafka::kafka_protocol::ResponseError;

use super::authz::View;
use super::dynamic_configs::{node_name, DynamicConfigs};
use super::handlers::{s, CLUSTER_DENIED, DENIED_MESSAGE};
use super::KafkaBroker;

pub(super) const RESOURCE_GROUP: i8 = 32;

/// A per-resource error: code and message.
pub(super) type Failure = (i16, Option<String>);

fn fail(e: ResponseError, m: impl Into<String>) -> Failure {
    (e.code(), Some(m.into()))
}

/// One incremental op: name, operation (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT), value.
pub(super) type Op = (String, i8, Option<String>);

/// A config name and value check (`dc::validate_broker`, `dc::validate_group`).
type Check = dyn Fn(&str, &str) -> Result<(), (ResponseError, String)>;
/// A config name's default (`dc::broker_default`, `dc::group_default`).
type DefaultOf = dyn Fn(&str) -> Option<&'static str>;

/// Which map of [`DynamicConfigs`] a resource names, after authorization.
enum Target {
    Broker(String),
    Group(String),
}

fn target(view: &View, resource_type: i8, name: &str, alter: bool) -> Result<Target, Failure> {
    let op = if alter {
        AclOperation::AlterConfigs
    } else {
        AclOperation::DescribeConfigs
    };
    match resource_type {
        super::admin::RESOURCE_BROKER if !view.cluster_op(op) => {
            Err((CLUSTER_DENIED.code(), Some(DENIED_MESSAGE.to_owned())))
        }
        super::admin::RESOURCE_BROKER if name.is_empty() || name == node_name() => {
            Ok(Target::Broker(name.to_owned()))
        }
        super::admin::RESOURCE_BROKER => Err(fail(
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                node_name()
            ),
        )),
        RESOURCE_GROUP if !view.group_op(op, name) => Err((
            ResponseError::GroupAuthorizationFailed.code(),
            Some(DENIED_MESSAGE.to_owned()),
        )),
        RESOURCE_GROUP if name.is_empty() => Err(fail(
            ResponseError::InvalidRequest,
            "Group name must not be empty",
        )),
        _ => Ok(Target::Group(name.to_owned())),
    }
}

/// Applies incremental ops to `map` (validated by `check`, list ops over `default`).
pub(super) fn apply_ops(
    map: &mut BTreeMap<String, String>,
    ops: &[Op],
    check: &Check,
    default: &DefaultOf,
) -> Result<(), Failure> {
    for (name, op, value) in ops {
        let list = |m: &BTreeMap<String, String>| -> Vec<String> {
            m.get(name)
                .cloned()
                .or_else(|| default(name).map(str::to_owned))
                .unwrap_or_default()
                .split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        };
        let new = match (op, value) {
            (0, Some(v)) => Some(v.clone()),
            (1, _) => None,
            (2, Some(v)) => {
                let mut items = list(map);
                for x in v.split(',').map(str::trim) {
                    if !items.iter().any(|i| i == x) {
                        items.push(x.to_owned());
                    }
                }
                Some(items.join(","))
            }
            (3, Some(v)) => {
                let drop: Vec<&str> = v.split(',').map(str::trim).collect();
                let items: Vec<String> = list(map)
                    .into_iter()
                    .filter(|i| !drop.contains(&i.as_str()))
                    .collect();
                Some(items.join(","))
            }
            _ => {
                return Err(fail(
                    ResponseError::InvalidRequest,
                    format!("Invalid operation for {name}"),
                ))
            }
        };
        match new {
            Some(v) => {
                check(name, &v).map_err(|(e, m)| fail(e, m))?;
                map.insert(name.clone(), v);
            }
            None => {
                // DELETE of a name that may not be set is refused as Kafka does.
                if default(name).is_none() {
                    check(name, "").map_err(|(e, m)| fail(e, m))?;
                }
                map.remove(name);
            }
        }
    }
    Ok(())
}

/// Alters a BROKER or GROUP resource: `replace` (legacy AlterConfigs) starts from an empty
/// set, else the ops apply over the stored one. Durable before it returns.
pub(super) fn alter(
    broker: &KafkaBroker,
    view: &View,
    resource_type: i8,
    name: &str,
    ops: &[Op],
    replace: bool,
    validate_only: bool,
) -> Result<(), Failure> {
    let t = target(view, resource_type, name, true)?;
    let _writer = broker.dynamic_writer.lock();
    let mut all: DynamicConfigs = broker.dynamic.read().clone();
    let (map, check, default): (_, &Check, &DefaultOf) = match &t {
        Target::Broker(n) => (
            all.broker.entry(n.clone()).or_default(),
            &dc::validate_broker,
            &dc::broker_default,
        ),
        Target::Group(n) => (
            all.group.entry(n.clone()).or_default(),
            &dc::validate_group,
            &dc::group_default,
        ),
    };
    if replace {
        map.clear();
    }
    apply_ops(map, ops, check, default)?;
    all.broker.retain(|_, m| !m.is_empty());
    all.group.retain(|_, m| !m.is_empty());
    if validate_only {
        return Ok(());
    }
    broker
        .set_dynamic(all)
        .map_err(|e| (e.code(), Some("Could not store the configs".to_owned())))
}

/// DescribeConfigs of a BROKER or GROUP resource.
pub(super) fn describe(
    broker: &KafkaBroker,
    view: &View,
    resource_type: i8,
    name: &str,
    wanted: Option<Vec<String>>,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    let t = target(view, resource_type, name, false)?;
    let all = broker.dynamic.read();
    let want = |k: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == k));
    let entry = |k: &str, v: &str, source: i8| {
        DescribeConfigsResourceResult::default()
            .with_name(s(k))
            .with_value(Some(s(v)))
            .with_config_source(source)
            .with_is_sensitive(false)
            .with_read_only(false)
    };
    Ok(match t {
        Target::Broker(n) if n.is_empty() => all
            .broker_of("")
            .iter()
            .filter(|(k, _)| want(k))
            .map(|(k, v)| entry(k, v, dc::SOURCE_DYNAMIC_DEFAULT_BROKER))
            .collect(),
        Target::Broker(n) => {
            let (own, cluster) = (all.broker_of(&n), all.broker_of(""));
            dc::DYNAMIC
                .iter()
                .filter(|(k, _)| want(k))
                .filter_map(|(k, _)| {
                    let (v, source) = dc::describe_broker(k, &own, &cluster)?;
                    Some(entry(k, &v, source))
                })
                .collect()
        }
        Target::Group(g) => {
            let own = all.group.get(&g).cloned().unwrap_or_default();
            dc::GROUP
                .iter()
                .filter(|(k, ..)| want(k))
                .map(|(k, d, ..)| match own.get(*k) {
                    Some(v) => entry(k, v, dc::SOURCE_GROUP),
                    None => entry(k, d, dc::SOURCE_DEFAULT),
                })
                .collect()
        }
    })
}
