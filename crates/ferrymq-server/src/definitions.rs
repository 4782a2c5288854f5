//! RabbitMQ definitions (the JSON `rabbitmqctl export_definitions` and the management API
//! write) applied to the engine: users, vhosts, permissions and limits go to the user
//! store; policies, exchanges, queues and bindings to each vhost, in RabbitMQ's import
//! order (users, vhosts, permissions, exchanges, topic permissions, policies, queues,
//! bindings). Used at boot (`--load-definitions`); the management API reuses it.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use anyhow::Context;
use ferrymq_auth::Definitions;
use ferrymq_core::topology::{Binding, Dest, ExchangeKind, ExchangeSpec, QueueSpec};
use serde_json::{Map, Value};

use crate::broker::Broker;
use crate::config::PolicyConfig;

/// Reads and applies a definitions file.
pub fn load_file(broker: &Arc<Broker>, path: &std::path::Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading definitions {}", path.display()))?;
    let defs = Definitions::parse(&bytes)
        .with_context(|| format!("definitions file {}", path.display()))?;
    import(broker, &defs).with_context(|| format!("importing definitions {}", path.display()))
}

/// A policy of a definitions document in the configuration's form.
pub fn policy_config(p: &ferrymq_auth::definitions::PolicyDefinition) -> PolicyConfig {
    PolicyConfig {
        name: p.name.clone(),
        pattern: p.pattern.clone(),
        apply_to: match p.apply_to.as_str() {
            "classic_queues" | "quorum_queues" | "streams" => "queues".into(),
            other => other.to_owned(),
        },
        priority: p.priority,
        definition: p.definition.clone().into_iter().collect(),
    }
}

/// Checks everything the engine will apply before anything is applied, so a document
/// with a bad exchange type, queue argument, binding or policy changes nothing: vhosts
/// must exist (in the store or the document), names and arguments must be valid.
pub fn validate(broker: &Broker, defs: &Definitions) -> anyhow::Result<()> {
    defs.validate()?;
    let known = |v: &str| broker.auth.vhost(v).is_some() || defs.vhosts.iter().any(|d| d.name == v);
    for p in &defs.policies {
        anyhow::ensure!(
            known(&p.vhost),
            "policy '{}' in unknown vhost '{}'",
            p.name,
            p.vhost
        );
        crate::config::compile_policies(&[policy_config(p)], &[])?;
    }
    for x in &defs.exchanges {
        anyhow::ensure!(
            known(&x.vhost),
            "exchange '{}' in unknown vhost '{}'",
            x.name,
            x.vhost
        );
        let kind = ExchangeKind::parse(&x.exchange_type).with_context(|| {
            format!("exchange '{}': unknown type '{}'", x.name, x.exchange_type)
        })?;
        kind.validate_args(&table(&x.arguments))
            .map_err(|e| anyhow::anyhow!("exchange '{}': {e}", x.name))?;
    }
    for q in &defs.queues {
        anyhow::ensure!(
            known(&q.vhost),
            "queue '{}' in unknown vhost '{}'",
            q.name,
            q.vhost
        );
        let spec = queue_spec(q);
        ferrymq_core::topology::check_queue_name(&q.name)
            .and_then(|_| {
                ferrymq_core::topology::validate_queue_args(&q.vhost, &q.name, &spec.arguments)
            })
            .and_then(|_| ferrymq_core::args::validate_queue_type(&q.vhost, &spec))
            .map_err(|e| anyhow::anyhow!("queue '{}' in vhost '{}': {e}", q.name, q.vhost))?;
    }
    for b in &defs.bindings {
        anyhow::ensure!(known(&b.vhost), "binding in unknown vhost '{}'", b.vhost);
        anyhow::ensure!(
            matches!(b.destination_type.as_str(), "queue" | "exchange"),
            "binding: unknown destination_type '{}'",
            b.destination_type
        );
    }
    Ok(())
}

fn queue_spec(q: &ferrymq_auth::definitions::QueueDefinition) -> QueueSpec {
    let mut arguments = table(&q.arguments);
    if let Some(t) = &q.queue_type {
        if !arguments.inner().contains_key("x-queue-type") && t != "classic" {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from(t.as_str())),
            );
        }
    }
    QueueSpec {
        name: q.name.as_str().into(),
        durable: q.durable,
        exclusive_owner: None,
        auto_delete: q.auto_delete,
        arguments,
    }
}

/// Applies definitions to the running broker (after [`validate`]: a bad document changes
/// nothing). Policies are stored durably in their vhost and apply to running queues.
pub fn import(broker: &Arc<Broker>, defs: &Definitions) -> anyhow::Result<()> {
    validate(broker, defs)?;
    broker.auth.import_access(defs)?;
    for v in broker.auth.vhosts() {
        broker.start_vhost(&v.name)?;
    }
    for p in &defs.policies {
        let vhost = broker
            .vhost(&p.vhost)
            .with_context(|| format!("policy in unknown vhost '{}'", p.vhost))?;
        vhost
            .put_policy(false, policy_config(p))
            .map_err(|e| anyhow::anyhow!("policy '{}' in vhost '{}': {e}", p.name, p.vhost))?;
    }
    for x in &defs.exchanges {
        if x.name.is_empty() || x.name.starts_with("amq.") {
            continue;
        }
        let vhost = broker
            .vhost(&x.vhost)
            .with_context(|| format!("exchange '{}' in unknown vhost '{}'", x.name, x.vhost))?;
        let kind = ExchangeKind::parse(&x.exchange_type).with_context(|| {
            format!("exchange '{}': unknown type '{}'", x.name, x.exchange_type)
        })?;
        vhost
            .declare_exchange(
                ExchangeSpec {
                    name: x.name.as_str().into(),
                    kind,
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: table(&x.arguments),
                },
                false,
            )
            .map_err(|e| anyhow::anyhow!("exchange '{}' in vhost '{}': {e}", x.name, x.vhost))?;
    }
    for q in &defs.queues {
        let vhost = broker
            .vhost(&q.vhost)
            .with_context(|| format!("queue '{}' in unknown vhost '{}'", q.name, q.vhost))?;
        let spec = queue_spec(q);
        ferrymq_core::topology::validate_queue_args(&q.vhost, &q.name, &spec.arguments)
            .and_then(|_| ferrymq_core::args::validate_queue_type(&q.vhost, &spec))
            .and_then(|_| vhost.declare_queue(spec, false, 0).map(|_| ()))
            .map_err(|e| anyhow::anyhow!("queue '{}' in vhost '{}': {e}", q.name, q.vhost))?;
    }
    for b in &defs.bindings {
        let vhost = broker
            .vhost(&b.vhost)
            .with_context(|| format!("binding in unknown vhost '{}'", b.vhost))?;
        let dest = match b.destination_type.as_str() {
            "queue" => Dest::Queue(b.destination.as_str().into()),
            "exchange" => Dest::Exchange(b.destination.as_str().into()),
            other => anyhow::bail!("binding: unknown destination_type '{other}'"),
        };
        vhost
            .bind(
                Binding {
                    source: b.source.as_str().into(),
                    dest,
                    routing_key: b.routing_key.as_str().into(),
                    arguments: table(&b.arguments),
                },
                0,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "binding {} -> {} in vhost '{}': {e}",
                    b.source,
                    b.destination,
                    b.vhost
                )
            })?;
    }
    tracing::info!(
        users = defs.users.len(),
        vhosts = defs.vhosts.len(),
        permissions = defs.permissions.len(),
        exchanges = defs.exchanges.len(),
        queues = defs.queues.len(),
        bindings = defs.bindings.len(),
        "imported definitions"
    );
    Ok(())
}

/// The broker's definitions (or one vhost's, with `vhost`): the user store's part
/// (users, vhosts, permissions, topic permissions, limits) for the whole broker, and each
/// vhost's durable topology (exchanges but the predeclared ones, durable queues that are
/// not exclusive, bindings between durable ends) and stored policies.
pub fn export(broker: &Broker, vhost: Option<&str>) -> Definitions {
    use ferrymq_auth::definitions::{
        BindingDefinition, ExchangeDefinition, PolicyDefinition, QueueDefinition,
    };
    let mut defs = broker.auth.export_access();
    if let Some(v) = vhost {
        defs.users.clear();
        defs.vhosts.clear();
        defs.permissions.clear();
        defs.topic_permissions.clear();
        defs.parameters.retain(|p| p.vhost == v);
        defs.kafka_acls.retain(|a| a.vhost == v);
    }
    let mut vhosts = broker.vhosts();
    vhosts.retain(|v| vhost.is_none_or(|only| only == v.name));
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    for v in vhosts {
        for p in v.policy_list(false) {
            defs.policies.push(PolicyDefinition {
                vhost: v.name.clone(),
                name: p.name,
                pattern: p.pattern,
                apply_to: p.apply_to,
                priority: p.priority,
                definition: p.definition.into_iter().collect(),
            });
        }
        v.read(|t| {
            let mut exchanges: Vec<_> = t
                .exchanges()
                .filter(|e| e.durable && !e.name.is_empty() && !e.name.starts_with("amq."))
                .collect();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            for e in exchanges {
                defs.exchanges.push(ExchangeDefinition {
                    name: e.name.to_string(),
                    vhost: v.name.clone(),
                    exchange_type: e.kind.as_str().to_owned(),
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: json_object(&e.arguments),
                });
            }
            let mut queues: Vec<_> = t
                .queues()
                .filter(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
                .collect();
            queues.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            for q in queues {
                let queue_type = match q.spec.arguments.inner().get("x-queue-type") {
                    Some(AMQPValue::LongString(s)) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    Some(AMQPValue::ShortString(s)) => s.to_string(),
                    _ => "classic".to_owned(),
                };
                defs.queues.push(QueueDefinition {
                    name: q.spec.name.to_string(),
                    vhost: v.name.clone(),
                    queue_type: Some(queue_type),
                    durable: true,
                    auto_delete: q.spec.auto_delete,
                    arguments: json_object(&q.spec.arguments),
                });
            }
            for b in t.bindings() {
                let (destination, destination_type, durable) = match &b.dest {
                    Dest::Queue(q) => (
                        q.to_string(),
                        "queue",
                        t.queue(q)
                            .is_some_and(|q| q.spec.durable && q.spec.exclusive_owner.is_none()),
                    ),
                    Dest::Exchange(x) => (
                        x.to_string(),
                        "exchange",
                        t.exchange(x).is_some_and(|x| x.durable),
                    ),
                };
                let source_durable = t.exchange(&b.source).is_some_and(|x| x.durable);
                if !(durable && source_durable) || b.source.is_empty() {
                    continue;
                }
                defs.bindings.push(BindingDefinition {
                    source: b.source.to_string(),
                    vhost: v.name.clone(),
                    destination,
                    destination_type: destination_type.to_owned(),
                    routing_key: b.routing_key.to_string(),
                    arguments: json_object(&b.arguments),
                });
            }
        });
    }
    defs
}

/// A field table as a JSON object (the inverse of [`table`]).
pub fn json_object(t: &FieldTable) -> Map<String, Value> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.to_string(), json_value(v)))
        .collect()
}

/// An AMQP value as JSON (binary strings lossily as UTF-8, byte arrays as base64-free
/// numbers lists are not produced: they become strings).
pub fn json_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        AMQPValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            serde_json::Number::from_f64(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
                .map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(json_value).collect()),
        AMQPValue::FieldTable(t) => Value::Object(json_object(t)),
        AMQPValue::Void => Value::Null,
    }
}

/// A JSON object as an AMQP field table (numbers become 64-bit integers or doubles,
/// arrays field arrays, objects nested tables), as RabbitMQ converts definitions.
pub fn table(map: &Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in map {
        t.insert(k.as_str().into(), value(v));
    }
    t
}

fn value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => {
            let mut arr = FieldArray::default();
            for x in a {
                arr.push(value(x));
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(o) => AMQPValue::FieldTable(table(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arguments_become_field_tables() {
        let v: Value = serde_json::json!({
            "x-message-ttl": 60000, "x-dead-letter-exchange": "dlx",
            "x-single-active-consumer": true, "ratio": 0.5, "list": ["a", 1]
        });
        let t = table(v.as_object().unwrap());
        let m = t.inner();
        assert_eq!(m.get("x-message-ttl"), Some(&AMQPValue::LongLongInt(60000)));
        assert_eq!(
            m.get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("dlx".into()))
        );
        assert_eq!(
            m.get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
        assert_eq!(m.get("ratio"), Some(&AMQPValue::Double(0.5)));
        assert!(matches!(m.get("list"), Some(AMQPValue::FieldArray(a)) if a.as_slice().len() == 2));
    }
}
