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

/// Applies definitions to the running broker.
pub fn import(broker: &Arc<Broker>, defs: &Definitions) -> anyhow::Result<()> {
    broker.auth.import_access(defs)?;
    for v in broker.auth.vhosts() {
        broker.start_vhost(&v.name)?;
    }
    // Policies, per vhost (vhost `/` keeps the configuration's in front).
    let mut names: Vec<&str> = defs.policies.iter().map(|p| p.vhost.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let vhost = broker
            .vhost(name)
            .with_context(|| format!("policy in unknown vhost '{name}'"))?;
        let mut configs: Vec<PolicyConfig> = if name == "/" {
            broker.config.policies.clone()
        } else {
            Vec::new()
        };
        for p in defs.policies.iter().filter(|p| p.vhost == name) {
            configs.push(PolicyConfig {
                name: p.name.clone(),
                pattern: p.pattern.clone(),
                apply_to: match p.apply_to.as_str() {
                    "classic_queues" | "quorum_queues" | "streams" => "queues".into(),
                    other => other.to_owned(),
                },
                priority: p.priority,
                definition: p.definition.clone().into_iter().collect(),
            });
        }
        let operator = if name == "/" {
            broker.config.operator_policies.clone()
        } else {
            Vec::new()
        };
        let compiled = crate::config::compile_policies(&configs, &operator)?;
        vhost.set_policies(compiled);
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
        let mut arguments = table(&q.arguments);
        if let Some(t) = &q.queue_type {
            if !arguments.inner().contains_key("x-queue-type") && t != "classic" {
                arguments.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString(LongString::from(t.as_str())),
                );
            }
        }
        let spec = QueueSpec {
            name: q.name.as_str().into(),
            durable: q.durable,
            exclusive_owner: None,
            auto_delete: q.auto_delete,
            arguments,
        };
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
