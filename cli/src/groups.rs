//! `rekafka groups {list | describe | offsets}`.

use rekafka::admin::{OffsetSpec, TopicPartition};

use clap::Subcommand;

use crate::common::{CliResult, Global, print_table, report_failures, run_async};
use crate::outln;

/// `rekafka groups ...`
#[derive(Debug, Subcommand)]
pub enum Groups {
    /// List the groups
    List,
    /// Describe groups: state, protocol, coordinator, members and their assignments
    Describe {
        /// The groups
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// The committed offset, end offset and lag per partition of a group
    Offsets {
        /// The group
        group: String,
    },
    /// Delete groups (only groups without members)
    Delete {
        /// The groups
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// Runs `groups ...`.
pub fn run(global: &Global, command: Groups) -> CliResult {
    match command {
        Groups::List => list(global),
        Groups::Describe { groups } => describe(global, groups),
        Groups::Offsets { group } => offsets(global, group),
        Groups::Delete { groups } => delete(global, groups),
    }
}

fn list(global: &Global) -> CliResult {
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
        print_table(&["GROUP", "STATE", "TYPE"], &rows)?;
        Ok(())
    })
}

fn describe(global: &Global, groups: Vec<String>) -> CliResult {
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
            outln!(
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
                )?;
            }
        }
        report_failures(failures)
    })
}

fn offsets(global: &Global, group: String) -> CliResult {
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
            outln!("group {group} has no committed offsets");
        } else {
            print_table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &rows)?;
        }
        report_failures(failures)
    })
}

fn delete(global: &Global, groups: Vec<String>) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let results = client.admin().delete_groups(&groups).await;
        client.close().await;
        let mut failures = Vec::new();
        for (name, r) in groups.iter().zip(results?) {
            match r {
                Ok(()) => outln!("deleted: group {name}"),
                Err(e) => failures.push(format!("group {name}: {e}")),
            }
        }
        report_failures(failures)
    })
}
