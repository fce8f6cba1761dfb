//! `rekafka groups {list | describe | offsets}`.

use rekafka::admin::{OffsetSpec, TopicPartition};

use crate::common::{Args, CliError, CliResult, Global, print_table, report_failures, run_async};

/// The help lines of this command.
pub const HELP: &str = concat!(
    "  groups list\n",
    "  groups describe GROUP...\n",
    "  groups offsets GROUP             committed offset, end offset and lag per partition\n",
    "  groups delete GROUP...           (groups without members)"
);

/// Runs `groups ARGS`.
pub fn run(global: &Global, args: &[String]) -> CliResult {
    let Some((sub, rest)) = args.split_first() else {
        return Err(CliError::usage(
            "groups needs a subcommand: list, describe, offsets",
        ));
    };
    match sub.as_str() {
        "list" => list(global, rest),
        "describe" => describe(global, rest),
        "offsets" => offsets(global, rest),
        "delete" => delete(global, rest),
        other => Err(CliError::usage(format!(
            "unknown groups subcommand '{other}' (list, describe, offsets, delete)"
        ))),
    }
}

fn list(global: &Global, args: &[String]) -> CliResult {
    Args::parse(args, &[], &[])?.exactly(0, "")?;
    run_async(async {
        let client = global.client().await?;
        let groups = client.admin().list_groups().await;
        client.close().await;
        let rows: Vec<Vec<String>> = groups?
            .into_iter()
            .map(|g| {
                vec![
                    g.group_id,
                    g.state.map(|s| s.to_string()).unwrap_or_default(),
                    g.protocol_type,
                ]
            })
            .collect();
        print_table(&["GROUP", "STATE", "TYPE"], &rows);
        Ok(())
    })
}

fn describe(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &[], &[])?;
    if a.positional.is_empty() {
        return Err(CliError::usage("missing GROUP"));
    }
    let groups = a.positional.clone();
    run_async(async {
        let client = global.client().await?;
        let described = client.admin().describe_groups(&groups).await;
        client.close().await;
        let mut failures = Vec::new();
        for (name, d) in groups.iter().zip(described?) {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    failures.push(format!("group {name}: {e}"));
                    continue;
                }
            };
            println!(
                "Group: {}  State: {}  Type: {}  Protocol: {}  Coordinator: {}  Members: {}",
                d.group_id,
                d.state,
                if d.protocol_type.is_empty() {
                    "-"
                } else {
                    &d.protocol_type
                },
                if d.protocol.is_empty() {
                    "-"
                } else {
                    &d.protocol
                },
                d.coordinator,
                d.members.len()
            );
            let rows: Vec<Vec<String>> = d
                .members
                .iter()
                .map(|m| {
                    let assignment = if d.protocol_type == "consumer" {
                        match m.consumer_assignment() {
                            Ok(tps) if tps.is_empty() => "-".to_owned(),
                            Ok(tps) => tps
                                .iter()
                                .map(TopicPartition::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            Err(e) => format!("(undecodable: {e})"),
                        }
                    } else {
                        format!("{} bytes", m.assignment.len())
                    };
                    vec![
                        m.member_id.clone(),
                        m.group_instance_id.clone().unwrap_or_else(|| "-".into()),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        assignment,
                    ]
                })
                .collect();
            if !rows.is_empty() {
                print_table(
                    &["MEMBER", "INSTANCE", "CLIENT", "HOST", "ASSIGNMENT"],
                    &rows,
                );
            }
        }
        report_failures(failures)
    })
}

fn offsets(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &[], &[])?;
    let group = a.exactly(1, "GROUP")?[0].clone();
    run_async(async {
        let client = global.client().await?;
        let admin = client.admin();
        let result = async {
            let committed = admin.list_group_offsets(&group, None).await?;
            let asked: Vec<(TopicPartition, OffsetSpec)> = committed
                .iter()
                .map(|(tp, _)| (tp.clone(), OffsetSpec::Latest))
                .collect();
            let ends = admin.list_offsets(&asked).await?;
            Ok::<_, rekafka::Error>((committed, ends))
        }
        .await;
        client.close().await;
        let (committed, ends) = result?;
        let mut failures = Vec::new();
        let rows: Vec<Vec<String>> = committed
            .into_iter()
            .zip(ends)
            .map(|((tp, c), end)| {
                let committed = match c {
                    Ok(Some(c)) => Some(c.offset),
                    Ok(None) => None,
                    Err(e) => {
                        failures.push(format!("{tp}: committed offset: {e}"));
                        None
                    }
                };
                let end = match end {
                    Ok(o) => o.offset,
                    Err(e) => {
                        failures.push(format!("{tp}: end offset: {e}"));
                        None
                    }
                };
                let show = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
                let lag = match (committed, end) {
                    (Some(c), Some(e)) => (e - c).max(0).to_string(),
                    _ => "-".to_owned(),
                };
                vec![
                    tp.topic,
                    tp.partition.to_string(),
                    show(committed),
                    show(end),
                    lag,
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("group {group} has no committed offsets");
        } else {
            print_table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &rows);
        }
        report_failures(failures)
    })
}

fn delete(global: &Global, args: &[String]) -> CliResult {
    let a = Args::parse(args, &[], &[])?;
    if a.positional.is_empty() {
        return Err(CliError::usage("missing GROUP"));
    }
    let groups = a.positional.clone();
    run_async(async {
        let client = global.client().await?;
        let results = client.admin().delete_groups(&groups).await;
        client.close().await;
        let mut failures = Vec::new();
        for (name, r) in groups.iter().zip(results?) {
            match r {
                Ok(()) => println!("deleted: group {name}"),
                Err(e) => failures.push(format!("group {name}: {e}")),
            }
        }
        report_failures(failures)
    })
}
