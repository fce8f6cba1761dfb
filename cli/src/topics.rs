//! `rekafka topics {create | list | describe | delete}`.

use rekafka::admin::{AlterConfigOp, ConfigResource, Internal, NewTopic};

use crate::common::{
    Args, CliError, CliResult, Global, parse_key_value, print_table, report_failures, run_async,
};

/// The help lines of this command.
pub const HELP: &str = concat!(
    "  topics create NAME --partitions N [--replication-factor R] [--config k=v]...\n",
    "                [--validate-only] [--if-not-exists]\n",
    "  topics list [--internal]\n",
    "  topics describe NAME...\n",
    "  topics alter NAME [--config k=v]... [--delete-config k]...\n",
    "  topics delete NAME..."
);

/// Runs `topics ARGS`.
pub fn run(global: &Global, args: &[String]) -> CliResult {
    let Some((sub, rest)) = args.split_first() else {
        return Err(CliError::usage(
            "topics needs a subcommand: create, list, describe, delete",
        ));
    };
    match sub.as_str() {
        "create" => create(global, rest),
        "list" => list(global, rest),
        "describe" => describe(global, rest),
        "delete" => delete(global, rest),
        "alter" => alter(global, rest),
        other => Err(CliError::usage(format!(
            "unknown topics subcommand '{other}' (create, list, describe, alter, delete)"
        ))),
    }
}

fn create(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(
        args,
        &["--partitions", "--replication-factor", "--config"],
        &["--validate-only", "--if-not-exists"],
    )?;
    let name = a.exactly(1, "topic NAME")?[0].clone();
    let partitions: i32 = a
        .parsed("--partitions", "a positive number")?
        .ok_or_else(|| CliError::usage("topics create needs --partitions N"))?;
    if partitions < 1 {
        return Err(CliError::usage("--partitions must be at least 1"));
    }
    let mut topic = NewTopic::new(&name, partitions);
    if let Some(r) = a.parsed::<i16>("--replication-factor", "a positive number")? {
        if r < 1 {
            return Err(CliError::usage("--replication-factor must be at least 1"));
        }
        topic = topic.with_replication_factor(r);
    }
    for kv in a.values("--config") {
        let (k, v) = parse_key_value("--config", kv)?;
        topic = topic.with_config(k, v);
    }
    let validate_only = a.has("--validate-only");
    let if_not_exists = a.has("--if-not-exists");
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
                    println!("exists: topic {name}");
                    continue;
                }
                r => r.map_err(|e| CliError::Failed(format!("topic {name}: {e}")))?,
            };
            let verb = if validate_only { "valid" } else { "created" };
            println!(
                "{verb}: topic {} with {partitions} partitions",
                created.name
            );
        }
        Ok(())
    })
}

fn list(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &[], &["--internal"])?;
    a.exactly(0, "")?;
    let internal = if a.has("--internal") {
        Internal::Include
    } else {
        Internal::Exclude
    };
    run_async(async {
        let client = global.client().await?;
        let topics = client.admin().list_topics(internal).await;
        client.close().await;
        for t in topics? {
            println!("{}", t.name);
        }
        Ok(())
    })
}

fn describe(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &[], &[])?;
    if a.positional.is_empty() {
        return Err(CliError::usage("missing topic NAME"));
    }
    let names = a.positional.clone();
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
            println!(
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
                    println!(
                        "Configs: {}",
                        if set.is_empty() {
                            "-".into()
                        } else {
                            set.join(", ")
                        }
                    );
                }
                Err(e) => println!("Configs: unavailable ({e})"),
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
            print_table(&["PARTITION", "LEADER", "REPLICAS", "ISR", "ERROR"], &rows);
        }
        report_failures(failures)
    })
}

fn alter(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &["--config", "--delete-config"], &[])?;
    let name = a.exactly(1, "topic NAME")?[0].clone();
    let mut ops = Vec::new();
    for kv in a.values("--config") {
        let (k, v) = parse_key_value("--config", kv)?;
        ops.push(AlterConfigOp::Set { name: k, value: v });
    }
    for k in a.values("--delete-config") {
        ops.push(AlterConfigOp::Delete { name: k.to_owned() });
    }
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
            println!("altered: topic {name}");
        }
        Ok(())
    })
}

fn delete(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &[], &[])?;
    if a.positional.is_empty() {
        return Err(CliError::usage("missing topic NAME"));
    }
    let names = a.positional.clone();
    run_async(async {
        let client = global.client().await?;
        let results = client.admin().delete_topics(&names).await;
        client.close().await;
        let mut failures = Vec::new();
        for (name, r) in names.iter().zip(results?) {
            match r {
                Ok(()) => println!("deleted: topic {name}"),
                Err(e) => failures.push(format!("topic {name}: {e}")),
            }
        }
        report_failures(failures)
    })
}

/// A topic id as Kafka prints it: URL-safe base64 without padding (22 characters).
fn topic_id(id: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
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
