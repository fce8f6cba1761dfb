//! Share groups (KIP-932) in `rekafka groups`: how `describe`, `offsets` and `reset-offsets`
//! show and move a share group's start offsets, `delete-offsets`, and `config` (group
//! configs such as `share.auto.offset.reset`, for any group type).

use rekafka::admin::{
    Admin, AlterConfigOp, ConfigSource, OffsetSpec, ShareGroupDescription, TopicPartition,
};

use crate::common::{CliError, CliResult, Global, print_table, report_failures, run_async};
use crate::outln;

/// The share group `group`, if it is one (ShareGroupDescribe knows it). Anything else (a
/// consumer group, no such group, a broker without share groups) is `None`.
pub async fn describe(admin: &Admin, group: &str) -> Option<ShareGroupDescription> {
    match admin.describe_share_groups(&[group]).await {
        Ok(mut v) => v.pop().and_then(Result::ok),
        Err(_) => None,
    }
}

/// A share group's start offsets as table rows (TOPIC PARTITION START-OFFSET END-OFFSET) and
/// the partitions that could not be read.
pub struct OffsetRows {
    /// The rows, by topic and partition.
    pub rows: Vec<Vec<String>>,
    /// One line per failed partition.
    pub failures: Vec<String>,
}

/// Reads `group`'s start offsets and each partition's end offset.
pub async fn offset_rows(admin: &Admin, group: &str) -> Result<OffsetRows, rekafka::Error> {
    let starts = admin.list_share_group_offsets(group, None).await?;
    let asked: Vec<(TopicPartition, OffsetSpec)> = starts
        .iter()
        .map(|(tp, _)| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends = admin.list_offsets(&asked).await?;
    let mut failures = Vec::new();
    let show = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
    let rows = starts
        .into_iter()
        .zip(ends)
        .map(|((tp, start), end)| {
            let start = match start {
                Ok(s) => s.map(|s| s.start_offset),
                Err(e) => {
                    failures.push(format!("{tp}: start offset: {e}"));
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
            vec![
                tp.topic().to_owned(),
                tp.partition.to_string(),
                show(start),
                show(end),
            ]
        })
        .collect();
    Ok(OffsetRows { rows, failures })
}

/// Prints a start-offset table (or a line saying there is none).
pub fn print_offsets(group: &str, rows: &OffsetRows) -> CliResult {
    if rows.rows.is_empty() {
        outln!("share group {group} has no start offsets");
        Ok(())
    } else {
        print_table(
            &["TOPIC", "PARTITION", "START-OFFSET", "END-OFFSET"],
            &rows.rows,
        )
    }
}

/// Prints a share group: a summary line, its members with their assignments, and its start
/// offsets.
pub fn print(d: &ShareGroupDescription, offsets: &Result<OffsetRows, String>) -> CliResult {
    outln!(
        "Group: {}  State: {}  Type: share  Assignor: {}  Epoch: {}  Assignment epoch: {}  \
         Coordinator: {}  Members: {}",
        d.group_id,
        d.state,
        if d.assignor.is_empty() {
            "-"
        } else {
            &d.assignor
        },
        d.group_epoch,
        d.assignment_epoch,
        d.coordinator,
        d.members.len()
    );
    let rows: Vec<Vec<String>> = d
        .members
        .iter()
        .map(|m| {
            let assignment = if m.assignment.is_empty() {
                "-".to_owned()
            } else {
                m.assignment
                    .iter()
                    .map(TopicPartition::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                m.member_id.clone(),
                m.member_epoch.to_string(),
                m.client_id.clone(),
                m.client_host.clone(),
                m.subscribed_topics.join(","),
                assignment,
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(
            &[
                "MEMBER",
                "EPOCH",
                "CLIENT",
                "HOST",
                "SUBSCRIPTION",
                "ASSIGNMENT",
            ],
            &rows,
        )?;
    }
    match offsets {
        Ok(o) => print_offsets(&d.group_id, o),
        Err(e) => {
            outln!("Start offsets: unavailable ({e})");
            Ok(())
        }
    }
}

/// `groups delete-offsets GROUP -t TOPIC...`.
pub fn delete_offsets(global: &Global, group: String, topics: Vec<String>) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let results = client
            .admin()
            .delete_share_group_offsets(&group, &topics)
            .await;
        client.close().await;
        let mut failures = Vec::new();
        for (topic, r) in results.map_err(|e| CliError::Failed(format!("group {group}: {e}")))? {
            match r {
                Ok(()) => outln!("deleted: start offsets of group {group} on topic {topic}"),
                Err(e) => failures.push(format!("topic {topic}: {e}")),
            }
        }
        report_failures(failures)
    })
}

/// `groups config GROUP [--config k=v]... [--delete-config k]...`: alters when asked to,
/// then prints the group's configs.
pub fn config(global: &Global, group: String, ops: Vec<AlterConfigOp>) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let admin = client.admin();
        let result = async {
            if !ops.is_empty() {
                admin.alter_group_configs(&group, &ops).await?;
            }
            admin.describe_group_configs(&[&group]).await
        }
        .await;
        client.close().await;
        let described = result.map_err(|e| CliError::Failed(format!("group {group}: {e}")))?;
        if !ops.is_empty() {
            outln!("altered: group {group}");
        }
        let entries = described
            .into_iter()
            .next()
            .ok_or_else(|| CliError::Failed(format!("group {group}: no configs returned")))?
            .map_err(|e| CliError::Failed(format!("group {group}: {e}")))?;
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.value.clone().unwrap_or_else(|| "(hidden)".into()),
                    source_name(e.source),
                ]
            })
            .collect();
        print_table(&["CONFIG", "VALUE", "SOURCE"], &rows)
    })
}

/// How a config's source prints.
fn source_name(s: ConfigSource) -> String {
    match s {
        ConfigSource::DynamicGroup => "group".into(),
        ConfigSource::Default => "default".into(),
        ConfigSource::StaticBroker => "broker".into(),
        ConfigSource::DynamicBroker | ConfigSource::DynamicDefaultBroker => {
            "broker (dynamic)".into()
        }
        other => format!("{other:?}"),
    }
}
