//! `ferrymq admin`: the operator's CLI over the management API (any RabbitMQ-compatible
//! one: FerryMQ's or RabbitMQ's for everything but the Kafka commands). Lists print
//! aligned tables (or the API's JSON with `--json`); changes print what was done.
//! Exit codes: 0 done, 1 the API answered an error, 2 bad usage, 3 the API cannot be
//! reached, 4 bad input (a file, a JSON argument).

mod client;
mod kafka;
mod table;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use self::client::{seg, AdminError, Client};
use self::kafka::{kafka, Kafka};
pub use self::kafka::{run_groups, run_topics, GroupsArgs, TopicsArgs};
use self::table::{col, Column};

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: AdminCommand,
}

/// How to reach the management API and how to print (shared by `ferrymq admin`,
/// `ferrymq topics` and `ferrymq groups`).
#[derive(Debug, Args)]
pub struct Conn {
    /// Management API host.
    #[arg(
        long,
        env = "FERRYMQ_ADMIN_HOST",
        default_value = "localhost",
        global = true
    )]
    host: String,
    /// Management API port.
    #[arg(
        long,
        env = "FERRYMQ_ADMIN_PORT",
        default_value_t = 15672,
        global = true
    )]
    port: u16,
    #[arg(
        long,
        short = 'u',
        env = "FERRYMQ_ADMIN_USERNAME",
        default_value = "guest",
        global = true
    )]
    username: String,
    #[arg(
        long,
        short = 'p',
        env = "FERRYMQ_ADMIN_PASSWORD",
        default_value = "guest",
        global = true
    )]
    password: String,
    /// Vhost of the command (lists: only this vhost; default: every vhost for lists,
    /// `/` for changes).
    #[arg(long, short = 'V', env = "FERRYMQ_ADMIN_VHOST", global = true)]
    vhost: Option<String>,
    /// Use HTTPS.
    #[arg(long, global = true)]
    tls: bool,
    /// PEM CA certificate to trust for HTTPS (besides the system's).
    #[arg(long, global = true)]
    cacert: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Broker overview: versions, totals, message rates.
    Overview,
    /// List objects.
    List {
        #[arg(value_enum)]
        what: Listable,
    },
    /// Declare (create or update) an object.
    #[command(subcommand)]
    Declare(Declare),
    /// Delete an object.
    #[command(subcommand)]
    Delete(Delete),
    /// Remove every ready message of a queue.
    Purge {
        /// The queue.
        #[arg(long)]
        name: String,
    },
    /// Close a client connection (AMQP clients get 320 CONNECTION_FORCED).
    Close {
        /// The connection's name (as `list connections` shows it).
        #[arg(long)]
        name: String,
        /// Reason given to the client.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Kafka topics and consumer groups.
    #[command(subcommand)]
    Kafka(Kafka),
    /// Export definitions (users, vhosts, permissions, policies, queues, exchanges,
    /// bindings) to FILE (`-`: standard output); with --vhost only that vhost's.
    Export { file: PathBuf },
    /// Import (merge) definitions from FILE (`-`: standard input).
    Import { file: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Listable {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    Policies,
}

#[derive(Debug, Subcommand)]
enum Declare {
    Queue {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        /// classic or quorum.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Queue arguments as a JSON object (`{"x-max-length": 10}`).
        #[arg(long)]
        arguments: Option<String>,
    },
    Exchange {
        #[arg(long)]
        name: String,
        /// direct, fanout, topic, headers, x-delayed-message, x-message-deduplication.
        #[arg(long = "type")]
        kind: String,
        #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        arguments: Option<String>,
    },
    Binding {
        /// Source exchange.
        #[arg(long)]
        source: String,
        /// Destination queue (or exchange with --destination-type exchange).
        #[arg(long)]
        destination: String,
        #[arg(long, value_enum, default_value = "queue")]
        destination_type: DestKind,
        #[arg(long, default_value = "")]
        routing_key: String,
        #[arg(long)]
        arguments: Option<String>,
    },
    User {
        #[arg(long)]
        name: String,
        /// The new user's password (`--password` is the caller's own).
        #[arg(long)]
        user_password: String,
        /// Comma-separated tags (administrator, monitoring, policymaker, management).
        #[arg(long, default_value = "")]
        tags: String,
    },
    Vhost {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Permissions of a user in the vhost (--vhost, default `/`).
    Permission {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = ".*")]
        configure: String,
        #[arg(long, default_value = ".*")]
        write: String,
        #[arg(long, default_value = ".*")]
        read: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DestKind {
    Queue,
    Exchange,
}

#[derive(Debug, Subcommand)]
enum Delete {
    Queue {
        #[arg(long)]
        name: String,
        #[arg(long)]
        if_empty: bool,
        #[arg(long)]
        if_unused: bool,
    },
    Exchange {
        #[arg(long)]
        name: String,
        #[arg(long)]
        if_unused: bool,
    },
    Binding {
        #[arg(long)]
        source: String,
        #[arg(long)]
        destination: String,
        #[arg(long, value_enum, default_value = "queue")]
        destination_type: DestKind,
        /// The binding's properties key (as `list bindings` shows it; `~` for an empty
        /// routing key without arguments).
        #[arg(long, conflicts_with = "routing_key")]
        properties_key: Option<String>,
        /// The routing key of a binding without arguments.
        #[arg(long)]
        routing_key: Option<String>,
    },
    User {
        #[arg(long)]
        name: String,
    },
    Vhost {
        #[arg(long)]
        name: String,
    },
    Permission {
        #[arg(long)]
        user: String,
    },
}

fn report(who: &str, r: Result<String, AdminError>) -> i32 {
    match r {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("{who}: {e}");
            e.exit_code()
        }
    }
}

fn connect(a: &Conn) -> Result<Client, AdminError> {
    let scheme = if a.tls { "https" } else { "http" };
    let host = if a.host.contains(':') && !a.host.starts_with('[') {
        format!("[{}]", a.host)
    } else {
        a.host.clone()
    };
    Client::new(
        format!("{scheme}://{host}:{}", a.port),
        a.username.clone(),
        a.password.clone(),
        a.cacert.as_deref(),
    )
}

/// Runs the command; the process exit code.
pub fn run(args: AdminArgs) -> i32 {
    report("ferrymq admin", execute(&args))
}

fn execute(args: &AdminArgs) -> Result<String, AdminError> {
    let a = &args.conn;
    let c = connect(a)?;
    let vhost = a.vhost.clone().unwrap_or_else(|| "/".into());
    let v = seg(&vhost);
    match &args.command {
        AdminCommand::Overview => {
            let o = c.get("/api/overview")?;
            if a.json {
                return Ok(pretty(&o));
            }
            let rows: Vec<Value> = [
                (
                    "product",
                    format!(
                        "{} {}",
                        cell(&o, "product_name"),
                        cell(&o, "product_version")
                    ),
                ),
                ("rabbitmq_version", cell(&o, "rabbitmq_version")),
                ("node", cell(&o, "node")),
                ("connections", cell(&o, "object_totals.connections")),
                ("channels", cell(&o, "object_totals.channels")),
                ("exchanges", cell(&o, "object_totals.exchanges")),
                ("queues", cell(&o, "object_totals.queues")),
                ("consumers", cell(&o, "object_totals.consumers")),
                ("messages", cell(&o, "queue_totals.messages")),
                ("messages_ready", cell(&o, "queue_totals.messages_ready")),
                (
                    "messages_unacknowledged",
                    cell(&o, "queue_totals.messages_unacknowledged"),
                ),
                (
                    "publish_rate",
                    cell(&o, "message_stats.publish_details.rate"),
                ),
                (
                    "deliver_get_rate",
                    cell(&o, "message_stats.deliver_get_details.rate"),
                ),
            ]
            .into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
            Ok(table::render(
                &[col("key", "key"), col("value", "value")],
                &rows,
            ))
        }
        AdminCommand::List { what } => list(&c, a, *what),
        AdminCommand::Declare(d) => declare(&c, &v, d),
        AdminCommand::Delete(d) => delete(&c, &v, d),
        AdminCommand::Purge { name } => {
            c.call(
                "DELETE",
                &format!("/api/queues/{v}/{}/contents", seg(name)),
                None,
            )?;
            Ok(format!("purged queue {name:?} in vhost {vhost:?}\n"))
        }
        AdminCommand::Close { name, reason } => {
            let path = format!("/api/connections/{}", seg(name));
            // The management API takes the reason in the X-Reason header.
            match reason {
                Some(r) => c.call_with("DELETE", &path, None, &[("X-Reason", r)])?,
                None => c.call("DELETE", &path, None)?,
            };
            Ok(format!("closed connection {name:?}\n"))
        }
        AdminCommand::Kafka(k) => kafka(&c, a, &v, k),
        AdminCommand::Export { file } => {
            let path = match &a.vhost {
                Some(_) => format!("/api/definitions/{v}"),
                None => "/api/definitions".into(),
            };
            let defs = pretty(&c.get(&path)?);
            if file.as_os_str() == "-" {
                return Ok(defs);
            }
            std::fs::write(file, defs)
                .map_err(|e| AdminError::Other(format!("writing {}: {e}", file.display())))?;
            Ok(format!("exported definitions to {}\n", file.display()))
        }
        AdminCommand::Import { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| AdminError::Other(format!("reading standard input: {e}")))?
            } else {
                std::fs::read_to_string(file)
                    .map_err(|e| AdminError::Other(format!("reading {}: {e}", file.display())))?
            };
            let defs: Value = serde_json::from_str(&text)
                .map_err(|e| AdminError::Other(format!("{}: not JSON: {e}", file.display())))?;
            let path = match &a.vhost {
                Some(_) => format!("/api/definitions/{v}"),
                None => "/api/definitions".into(),
            };
            c.call("POST", &path, Some(&defs))?;
            Ok(format!("imported definitions from {}\n", file.display()))
        }
    }
}

fn cell(v: &Value, path: &str) -> String {
    table::cell(table::at(v, path))
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The rows of a list answer (a bare array, or a page's `items`).
fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => vec![Value::Object(o)],
        },
        _ => Vec::new(),
    }
}

fn show(a: &Conn, data: Value, columns: &[Column]) -> Result<String, AdminError> {
    if a.json {
        return Ok(pretty(&data));
    }
    Ok(table::render(columns, &items(data)))
}

fn list(c: &Client, a: &Conn, what: Listable) -> Result<String, AdminError> {
    // Scoped lists take the vhost when one is given.
    let scoped = |base: &str| match &a.vhost {
        Some(v) => format!("/api/{base}/{}", seg(v)),
        None => format!("/api/{base}"),
    };
    let (path, columns): (String, &[Column]) = match what {
        Listable::Queues => (
            scoped("queues"),
            &[
                col("vhost", "vhost"),
                col("name", "name"),
                col("type", "type"),
                col("durable", "durable"),
                col("messages", "messages"),
                col("ready", "messages_ready"),
                col("unacked", "messages_unacknowledged"),
                col("consumers", "consumers"),
                col("publish/s", "message_stats.publish_details.rate"),
            ],
        ),
        Listable::Exchanges => (
            scoped("exchanges"),
            &[
                col("vhost", "vhost"),
                col("name", "name"),
                col("type", "type"),
                col("durable", "durable"),
                col("auto_delete", "auto_delete"),
                col("internal", "internal"),
                col("publish_in", "message_stats.publish_in"),
                col("publish_out", "message_stats.publish_out"),
            ],
        ),
        Listable::Bindings => (
            scoped("bindings"),
            &[
                col("vhost", "vhost"),
                col("source", "source"),
                col("destination", "destination"),
                col("destination_type", "destination_type"),
                col("routing_key", "routing_key"),
                col("properties_key", "properties_key"),
            ],
        ),
        Listable::Connections => (
            match &a.vhost {
                Some(v) => format!("/api/vhosts/{}/connections", seg(v)),
                None => "/api/connections".into(),
            },
            &[
                col("name", "name"),
                col("protocol", "protocol"),
                col("user", "user"),
                col("vhost", "vhost"),
                col("channels", "channels"),
                col("recv_oct", "recv_oct"),
                col("send_oct", "send_oct"),
            ],
        ),
        Listable::Channels => (
            match &a.vhost {
                Some(v) => format!("/api/vhosts/{}/channels", seg(v)),
                None => "/api/channels".into(),
            },
            &[
                col("name", "name"),
                col("user", "user"),
                col("vhost", "vhost"),
                col("consumers", "consumer_count"),
                col("prefetch", "prefetch_count"),
                col("unacked", "messages_unacknowledged"),
                col("unconfirmed", "messages_unconfirmed"),
                col("confirm", "confirm"),
            ],
        ),
        Listable::Consumers => (
            scoped("consumers"),
            &[
                col("vhost", "queue.vhost"),
                col("queue", "queue.name"),
                col("consumer_tag", "consumer_tag"),
                col("channel", "channel_details.name"),
                col("ack_required", "ack_required"),
                col("prefetch", "prefetch_count"),
            ],
        ),
        Listable::Users => (
            "/api/users".into(),
            &[col("name", "name"), col("tags", "tags")],
        ),
        Listable::Vhosts => (
            "/api/vhosts".into(),
            &[
                col("name", "name"),
                col("description", "description"),
                col("messages", "messages"),
            ],
        ),
        Listable::Permissions => (
            match &a.vhost {
                Some(v) => format!("/api/vhosts/{}/permissions", seg(v)),
                None => "/api/permissions".into(),
            },
            &[
                col("vhost", "vhost"),
                col("user", "user"),
                col("configure", "configure"),
                col("write", "write"),
                col("read", "read"),
            ],
        ),
        Listable::Policies => (
            scoped("policies"),
            &[
                col("vhost", "vhost"),
                col("name", "name"),
                col("pattern", "pattern"),
                col("apply-to", "apply-to"),
                col("priority", "priority"),
                col("definition", "definition"),
            ],
        ),
    };
    show(a, c.get(&path)?, columns)
}

fn json_arg(s: &Option<String>) -> Result<Value, AdminError> {
    match s {
        None => Ok(json!({})),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(AdminError::Other(format!(
                "--arguments must be a JSON object, got {text}"
            ))),
            Err(e) => Err(AdminError::Other(format!(
                "--arguments is not JSON ({e}): {text}"
            ))),
        },
    }
}

fn dest_letter(k: DestKind) -> &'static str {
    match k {
        DestKind::Queue => "q",
        DestKind::Exchange => "e",
    }
}

/// `created` for 201, `updated` for 204 (PUT answers).
fn put(c: &Client, path: &str, body: &Value) -> Result<&'static str, AdminError> {
    // The body of a PUT answer is empty; 201 and 204 are told apart by a GET before.
    let existed = c.get(path).is_ok();
    c.call("PUT", path, Some(body))?;
    Ok(if existed { "updated" } else { "declared" })
}

/// RabbitMQ's `quote_plus` of a routing key (the properties key of a binding without
/// arguments): unreserved characters stay, space becomes `+`, other bytes `%XX`.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn exchange_seg(name: &str) -> String {
    if name.is_empty() {
        "amq.default".into()
    } else {
        seg(name)
    }
}

fn declare(c: &Client, v: &str, d: &Declare) -> Result<String, AdminError> {
    match d {
        Declare::Queue {
            name,
            durable,
            auto_delete,
            kind,
            arguments,
        } => {
            let mut body = json!({
                "durable": durable,
                "auto_delete": auto_delete,
                "arguments": json_arg(arguments)?,
            });
            if let Some(k) = kind {
                body["type"] = json!(k);
            }
            let what = put(c, &format!("/api/queues/{v}/{}", seg(name)), &body)?;
            Ok(format!("{what} queue {name:?}\n"))
        }
        Declare::Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        } => {
            let body = json!({
                "type": kind,
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": json_arg(arguments)?,
            });
            let what = put(c, &format!("/api/exchanges/{v}/{}", seg(name)), &body)?;
            Ok(format!("{what} exchange {name:?}\n"))
        }
        Declare::Binding {
            source,
            destination,
            destination_type,
            routing_key,
            arguments,
        } => {
            let path = format!(
                "/api/bindings/{v}/e/{}/{}/{}",
                exchange_seg(source),
                dest_letter(*destination_type),
                seg(destination)
            );
            let body = json!({"routing_key": routing_key, "arguments": json_arg(arguments)?});
            c.call("POST", &path, Some(&body))?;
            Ok(format!(
                "bound {destination:?} to {source:?} with routing key {routing_key:?}\n"
            ))
        }
        Declare::User {
            name,
            user_password,
            tags,
        } => {
            let body = json!({"password": user_password, "tags": tags});
            let what = put(c, &format!("/api/users/{}", seg(name)), &body)?;
            Ok(format!("{what} user {name:?}\n"))
        }
        Declare::Vhost { name, description } => {
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let what = put(c, &format!("/api/vhosts/{}", seg(name)), &body)?;
            Ok(format!("{what} vhost {name:?}\n"))
        }
        Declare::Permission {
            user,
            configure,
            write,
            read,
        } => {
            let body = json!({"configure": configure, "write": write, "read": read});
            put(c, &format!("/api/permissions/{v}/{}", seg(user)), &body)?;
            Ok(format!("set permissions of user {user:?}\n"))
        }
    }
}

fn delete(c: &Client, v: &str, d: &Delete) -> Result<String, AdminError> {
    match d {
        Delete::Queue {
            name,
            if_empty,
            if_unused,
        } => {
            let mut path = format!("/api/queues/{v}/{}", seg(name));
            let mut q = Vec::new();
            if *if_empty {
                q.push("if-empty=true");
            }
            if *if_unused {
                q.push("if-unused=true");
            }
            if !q.is_empty() {
                path = format!("{path}?{}", q.join("&"));
            }
            c.call("DELETE", &path, None)?;
            Ok(format!("deleted queue {name:?}\n"))
        }
        Delete::Exchange { name, if_unused } => {
            let mut path = format!("/api/exchanges/{v}/{}", seg(name));
            if *if_unused {
                path.push_str("?if-unused=true");
            }
            c.call("DELETE", &path, None)?;
            Ok(format!("deleted exchange {name:?}\n"))
        }
        Delete::Binding {
            source,
            destination,
            destination_type,
            properties_key,
            routing_key,
        } => {
            let props = match (properties_key, routing_key) {
                (Some(p), _) => p.clone(),
                (None, Some(rk)) if !rk.is_empty() => quote_plus(rk),
                _ => "~".into(),
            };
            let path = format!(
                "/api/bindings/{v}/e/{}/{}/{}/{}",
                exchange_seg(source),
                dest_letter(*destination_type),
                seg(destination),
                seg(&props)
            );
            c.call("DELETE", &path, None)?;
            Ok(format!(
                "deleted binding {source:?} -> {destination:?} ({props})\n"
            ))
        }
        Delete::User { name } => {
            c.call("DELETE", &format!("/api/users/{}", seg(name)), None)?;
            Ok(format!("deleted user {name:?}\n"))
        }
        Delete::Vhost { name } => {
            c.call("DELETE", &format!("/api/vhosts/{}", seg(name)), None)?;
            Ok(format!("deleted vhost {name:?}\n"))
        }
        Delete::Permission { user } => {
            c.call(
                "DELETE",
                &format!("/api/permissions/{v}/{}", seg(user)),
                None,
            )?;
            Ok(format!("deleted permissions of user {user:?}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys_of_plain_bindings() {
        assert_eq!(quote_plus("order.*"), "order.%2A");
        assert_eq!(quote_plus("a b~c"), "a+b%7Ec");
        assert_eq!(exchange_seg(""), "amq.default");
        assert_eq!(exchange_seg("a/b"), "a%2Fb");
    }

    #[test]
    fn list_answers_paged_or_not() {
        assert_eq!(items(json!([1, 2])), vec![json!(1), json!(2)]);
        assert_eq!(items(json!({"items": [3], "page": 1})), vec![json!(3)]);
        assert_eq!(items(json!({"name": "x"})), vec![json!({"name": "x"})]);
    }
}
