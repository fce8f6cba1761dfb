//! `rekafka topics {create | list | describe | delete}`.

use rekafka::admin::{AlterConfigOp, ConfigResource, Internal, NewTopic};

use base64::Engine;
use clap::Subcommand;

use crate::common::{
    CliError, CliResult, Global, key_value, print_table, report_failures, run_async,
};
use crate::outln;

/// `rekafka topics ...`
#[derive(Debug, Subcommand)]
pub enum Topics {
    /// Create a topic
    Create {
        /// The topic
        name: String,
        /// Number of partitions
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Replication factor [default: the broker's default.replication.factor]
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: Option<i16>,
        /// A topic config (retention.ms=86400000, ...); repeatable
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Only ask the broker whether it would create the topic
        #[arg(long)]
        validate_only: bool,
        /// Succeed if the topic exists already
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List the topics
    List {
        /// Include internal topics (__consumer_offsets, ...)
        #[arg(long)]
        internal: bool,
    },
    /// Describe topics: partitions, leaders, replicas, ISR and set configs
    Describe {
        /// The topics
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set or delete topic configs
    Alter {
        /// The topic
        name: String,
        /// Set a config; repeatable
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Delete a config (back to the broker default); repeatable
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics
    Delete {
        /// The topics
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs `topics ...`.
pub fn run(global: &Global, command: Topics) -> CliResult {
    match command {
        Topics::Create {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
            if_not_exists,
        } => {
            let mut topic = NewTopic::new(&name, partitions);
            if let Some(r) = replication_factor {
                topic = topic.with_replication_factor(r);
            }
            for (k, v) in configs {
                topic = topic.with_config(k, v);
            }
            create(
                global,
                name,
                partitions,
                topic,
                validate_only,
                if_not_exists,
            )
        }
        Topics::List { internal } => list(global, internal),
        Topics::Describe { names } => describe(global, names),
        Topics::Alter {
            name,
            configs,
            delete_configs,
        } => {
            let mut ops = Vec::new();
            for (k, v) in configs {
                ops.push(AlterConfigOp::Set { name: k, value: v });
            }
            for k in delete_configs {
                ops.push(AlterConfigOp::Delete { name: k });
            }
            alter(global, name, ops)
        }
        Topics::Delete { names } => delete(global, names),
    }
}

fn create(
    global: &Global,
    name: String,
    partitions: i32,
    topic: NewTopic,
    validate_only: bool,
    if_not_exists: bool,
) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let admin = client.admin();
        let topics = [topic];
        let result = if validate_only {
            admin.validate_create_topics(&topics).await
        } else {
            admin.create_topics(&topics).await
        };
        client.close().await;
        for r in result? {
            let created = match r {
                Err(e)
                    if if_not_exists
                        && e.kafka_code() == Some(rekafka::KafkaCode::TopicAlreadyExists) =>
                {
                    outln!("exists: topic {name}");
                    continue;
                }
                r => r.map_err(|e| CliError::Failed(format!("topic {name}: {e}")))?,
            };
            let verb = if validate_only { "valid" } else { "created" };
            outln!(
                "{verb}: topic {} with {partitions} partitions",
                created.name
            );
        }
        Ok(())
    })
}

fn list(global: &Global, internal: bool) -> CliResult {
    let internal = if internal {
        Internal::Include
    } else {
        Internal::Exclude
    };
    run_async(async {
        let client = global.client().await?;
        let topics = client.admin().list_topics(internal).await;
        client.close().await;
        for t in topics? {
            outln!("{}", t.name);
        }
        Ok(())
    })
}

fn describe(global: &Global, names: Vec<String>) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let admin = client.admin();
        let described = admin.describe_topics(&names).await;
        let resources: Vec<ConfigResource> = names
            .iter()
            .map(|n| ConfigResource::Topic(n.clone()))
            .collect();
        let configs = admin.describe_configs(&resources).await;
        client.close().await;
        let described = described?;
        let configs = configs?;
        let mut failures = Vec::new();
        for ((name, d), c) in names.iter().zip(described).zip(configs) {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    failures.push(format!("topic {name}: {e}"));
                    continue;
                }
            };
            let id = topic_id(&d.topic_id);
            outln!(
                "Topic: {}  Id: {id}  Partitions: {}  Internal: {}",
                d.name,
                d.partitions.len(),
                d.is_internal
            );
            match c {
                Ok(entries) => {
                    let set: Vec<String> = entries
                        .iter()
                        .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("(hidden)")))
                        .collect();
                    outln!(
                        "Configs: {}",
                        if set.is_empty() {
                            "-".into()
                        } else {
                            set.join(", ")
                        }
                    );
                }
                Err(e) => outln!("Configs: unavailable ({e})"),
            }
            let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            let rows: Vec<Vec<String>> = d
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.partition.to_string(),
                        if p.leader < 0 {
                            "none".into()
                        } else {
                            p.leader.to_string()
                        },
                        ids(&p.replicas),
                        ids(&p.isr),
                        p.error.map(|c| c.to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["PARTITION", "LEADER", "REPLICAS", "ISR", "ERROR"], &rows)?;
        }
        report_failures(failures)
    })
}

fn alter(global: &Global, name: String, ops: Vec<AlterConfigOp>) -> CliResult {
    if ops.is_empty() {
        return Err(CliError::usage(
            "topics alter needs --config k=v or --delete-config k",
        ));
    }
    run_async(async {
        let client = global.client().await?;
        let result = client
            .admin()
            .incremental_alter_configs(&[(ConfigResource::Topic(name.clone()), ops)])
            .await;
        client.close().await;
        for r in result? {
            r.map_err(|e| CliError::Failed(format!("topic {name}: {e}")))?;
            outln!("altered: topic {name}");
        }
        Ok(())
    })
}

fn delete(global: &Global, names: Vec<String>) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let results = client.admin().delete_topics(&names).await;
        client.close().await;
        let mut failures = Vec::new();
        for (name, r) in names.iter().zip(results?) {
            match r {
                Ok(()) => outln!("deleted: topic {name}"),
                Err(e) => failures.push(format!("topic {name}: {e}")),
            }
        }
        report_failures(failures)
    })
}

/// A topic id as Kafka prints it: URL-safe base64 without padding (22 characters).
fn topic_id(id: &[u8; 16]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn topic_ids_print_as_kafka_does() {
        // Kafka's Uuid.toString of 00..0f.
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(super::topic_id(&id), "AAECAwQFBgcICQoLDA0ODw");
        assert_eq!(super::topic_id(&[0xff; 16]), "_____________________w");
    }
}
