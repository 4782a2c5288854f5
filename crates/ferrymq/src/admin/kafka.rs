//! Kafka topics and consumer groups over the management API: `ferrymq admin kafka …`
//! and the shorter `ferrymq topics list|describe|create|delete` and `ferrymq groups
//! list|describe` (same flags, tables and exit codes as `ferrymq admin`).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{seg, AdminError, Client};
use super::table::{self, col};
use super::{cell, connect, items, pretty, put, report, show, Conn};

#[derive(Debug, Subcommand)]
pub(super) enum Kafka {
    /// Topics with partitions, messages and sizes.
    Topics,
    /// One topic's partitions with their offsets.
    Topic { name: String },
    /// Consumer groups with state, members and total lag.
    Groups,
    /// One group's committed offsets and lag per partition.
    Group { name: String },
    /// Create a topic (or grow it / change its configs if it exists).
    CreateTopic {
        name: String,
        /// Partition count (default: the broker's).
        #[arg(long)]
        partitions: Option<i32>,
        /// A topic config, NAME=VALUE (repeatable), e.g. `--config cleanup.policy=compact`.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic and its data.
    DeleteTopic { name: String },
}

/// `ferrymq topics …`: Kafka topics, over the management API.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Topics with partitions, messages and sizes.
    List,
    /// One topic's partitions with their offsets.
    Describe { name: String },
    /// Create a topic.
    Create {
        name: String,
        /// Partition count (default: the broker's).
        #[arg(long)]
        partitions: Option<i32>,
        /// A topic config, NAME=VALUE (repeatable).
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

/// `ferrymq groups …`: Kafka consumer groups, over the management API.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// Groups with state, members and total lag.
    List,
    /// One group's committed offsets and lag per partition.
    Describe { name: String },
}

impl TopicsArgs {
    fn kafka(&self) -> Kafka {
        match &self.command {
            TopicsCommand::List => Kafka::Topics,
            TopicsCommand::Describe { name } => Kafka::Topic { name: name.clone() },
            TopicsCommand::Create {
                name,
                partitions,
                configs,
            } => Kafka::CreateTopic {
                name: name.clone(),
                partitions: *partitions,
                configs: configs.clone(),
            },
            TopicsCommand::Delete { name } => Kafka::DeleteTopic { name: name.clone() },
        }
    }
}

impl GroupsArgs {
    fn kafka(&self) -> Kafka {
        match &self.command {
            GroupsCommand::List => Kafka::Groups,
            GroupsCommand::Describe { name } => Kafka::Group { name: name.clone() },
        }
    }
}

/// Runs `ferrymq topics …`; the process exit code.
pub fn run_topics(args: TopicsArgs) -> i32 {
    let k = args.kafka();
    report("ferrymq topics", run_kafka(&args.conn, &k))
}

/// Runs `ferrymq groups …`; the process exit code.
pub fn run_groups(args: GroupsArgs) -> i32 {
    let k = args.kafka();
    report("ferrymq groups", run_kafka(&args.conn, &k))
}

fn run_kafka(a: &Conn, k: &Kafka) -> Result<String, AdminError> {
    let c = connect(a)?;
    let vhost = a.vhost.clone().unwrap_or_else(|| "/".into());
    kafka(&c, a, &seg(&vhost), k)
}

pub(super) fn kafka(c: &Client, a: &Conn, v: &str, k: &Kafka) -> Result<String, AdminError> {
    let scoped = |base: &str| match &a.vhost {
        Some(_) => format!("/api/kafka/{base}/{v}"),
        None => format!("/api/kafka/{base}"),
    };
    match k {
        Kafka::Topics => show(
            a,
            c.get(&scoped("topics"))?,
            &[
                col("vhost", "vhost"),
                col("name", "name"),
                col("partitions", "partitions"),
                col("messages", "messages"),
                col("size_bytes", "size_bytes"),
            ],
        ),
        Kafka::Topic { name } => {
            let t = c.get(&format!("/api/kafka/topics/{v}/{}", seg(name)))?;
            if a.json {
                return Ok(pretty(&t));
            }
            let parts = t.get("partition_details").cloned().unwrap_or(json!([]));
            Ok(table::render(
                &[
                    col("partition", "partition"),
                    col("log_start_offset", "log_start_offset"),
                    col("log_end_offset", "log_end_offset"),
                    col("messages", "messages"),
                    col("size_bytes", "size_bytes"),
                ],
                &items(parts),
            ))
        }
        Kafka::Groups => {
            let groups = c.get(&scoped("groups"))?;
            if a.json {
                return Ok(pretty(&groups));
            }
            let rows: Vec<Value> = items(groups)
                .into_iter()
                .map(|mut g| {
                    let n = g
                        .get("members")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    g["member_count"] = json!(n);
                    g
                })
                .collect();
            Ok(table::render(
                &[
                    col("vhost", "vhost"),
                    col("name", "name"),
                    col("state", "state"),
                    col("members", "member_count"),
                    col("lag", "lag"),
                ],
                &rows,
            ))
        }
        Kafka::CreateTopic {
            name,
            partitions,
            configs,
        } => {
            let mut body = json!({});
            if let Some(p) = partitions {
                body["partitions"] = json!(p);
            }
            if !configs.is_empty() {
                let mut map = serde_json::Map::new();
                for kv in configs {
                    let Some((k, val)) = kv.split_once('=') else {
                        return Err(AdminError::Other(format!(
                            "--config {kv:?}: expected NAME=VALUE"
                        )));
                    };
                    map.insert(k.to_owned(), json!(val));
                }
                body["configs"] = Value::Object(map);
            }
            let done = put(c, &format!("/api/kafka/topics/{v}/{}", seg(name)), &body)?;
            Ok(format!("{done} topic {name:?}\n"))
        }
        Kafka::DeleteTopic { name } => {
            c.call(
                "DELETE",
                &format!("/api/kafka/topics/{v}/{}", seg(name)),
                None,
            )?;
            Ok(format!("deleted topic {name:?}\n"))
        }
        Kafka::Group { name } => {
            let g = c.get(&format!("/api/kafka/groups/{v}/{}", seg(name)))?;
            if a.json {
                return Ok(pretty(&g));
            }
            let offsets = g.get("offsets").cloned().unwrap_or(json!([]));
            let mut out = format!(
                "group {name:?}: state {}, {} member(s), lag {}\n",
                cell(&g, "state"),
                g.get("members")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
                cell(&g, "lag")
            );
            out.push_str(&table::render(
                &[
                    col("topic", "topic"),
                    col("partition", "partition"),
                    col("committed", "committed_offset"),
                    col("log_end", "log_end_offset"),
                    col("lag", "lag"),
                ],
                &items(offsets),
            ));
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Topics(TopicsArgs),
        Groups(GroupsArgs),
    }

    fn parse(args: &[&str]) -> Kafka {
        let cli = Cli::try_parse_from(std::iter::once("ferrymq").chain(args.iter().copied()))
            .expect("parses");
        match cli.cmd {
            Top::Topics(t) => t.kafka(),
            Top::Groups(g) => g.kafka(),
        }
    }

    #[test]
    fn topics_and_groups_map_onto_admin_kafka() {
        assert!(matches!(parse(&["topics", "list"]), Kafka::Topics));
        assert!(
            matches!(parse(&["topics", "describe", "t"]), Kafka::Topic { name } if name == "t")
        );
        match parse(&[
            "topics",
            "create",
            "t",
            "--partitions",
            "3",
            "--config",
            "a=1",
            "--config",
            "b=2",
        ]) {
            Kafka::CreateTopic {
                name,
                partitions,
                configs,
            } => {
                assert_eq!((name.as_str(), partitions), ("t", Some(3)));
                assert_eq!(configs, ["a=1", "b=2"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["topics", "delete", "t"]),
            Kafka::DeleteTopic { .. }
        ));
        assert!(matches!(
            parse(&["groups", "list", "--json"]),
            Kafka::Groups
        ));
        assert!(
            matches!(parse(&["groups", "describe", "g"]), Kafka::Group { name } if name == "g")
        );
        assert!(Cli::try_parse_from(["ferrymq", "topics", "frobnicate"]).is_err());
    }
}
