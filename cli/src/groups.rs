//! `rekafka groups {list | describe | offsets | reset-offsets | delete | delete-offsets |
//! config}`, for consumer groups of either protocol and share groups (KIP-932; their own
//! pieces are in `share_groups.rs`).

use rekafka::admin::{AlterConfigOp, GroupType, OffsetSpec, TopicPartition};

use clap::{ArgGroup, Args, Subcommand};
use rekafka::admin::Admin;

use crate::common::{
    CliError, CliResult, Global, key_value, print_table, report_failures, run_async,
};
use crate::outln;

/// `rekafka groups ...`
#[derive(Debug, Subcommand)]
pub enum Groups {
    /// List the groups with their type (classic, consumer, share, streams)
    List {
        /// Only groups of this type (classic, consumer, share, streams); repeatable
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
    },
    /// Describe groups: classic, KIP-848's consumer protocol (member epochs) or share groups
    /// (KIP-932, with their start offsets): state, coordinator, members and their assignments
    Describe {
        /// The groups
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// The committed offset, end offset and lag per partition of a group (for a share group:
    /// its start offset and the end offset)
    Offsets {
        /// The group
        group: String,
    },
    /// Move a group's committed offsets, or a share group's start offsets (a dry run unless
    /// --execute; the group must have no active members)
    ResetOffsets(ResetArgs),
    /// Delete groups of any type (only groups without members)
    Delete {
        /// The groups
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a share group's start offsets on whole topics (the group must have no members)
    DeleteOffsets {
        /// The share group
        group: String,
        /// A topic; repeatable
        #[arg(short, long = "topic", value_name = "TOPIC", required = true)]
        topics: Vec<String>,
    },
    /// Show a group's configs, or set and delete them (share groups:
    /// share.auto.offset.reset, share.delivery.count.limit, share.record.lock.duration.ms, ...)
    Config {
        /// The group (it need not exist yet)
        group: String,
        /// Set a config; repeatable
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Delete a config (back to the broker default); repeatable
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
}

/// Runs `groups ...`.
pub fn run(global: &Global, command: Groups) -> CliResult {
    match command {
        Groups::List { types } => list(global, types),
        Groups::Describe { groups } => describe(global, groups),
        Groups::Offsets { group } => offsets(global, group),
        Groups::Delete { groups } => delete(global, groups),
        Groups::ResetOffsets(a) => reset_offsets(global, a),
        Groups::DeleteOffsets { group, topics } => {
            crate::share_groups::delete_offsets(global, group, topics)
        }
        Groups::Config {
            group,
            configs,
            delete_configs,
        } => {
            let mut ops: Vec<AlterConfigOp> = configs
                .into_iter()
                .map(|(k, v)| AlterConfigOp::set(k, v))
                .collect();
            ops.extend(delete_configs.into_iter().map(AlterConfigOp::delete));
            crate::share_groups::config(global, group, ops)
        }
    }
}

fn list(global: &Global, types: Vec<String>) -> CliResult {
    let types: Vec<GroupType> = types
        .iter()
        .map(|t| match GroupType::parse(t) {
            GroupType::Other(t) => Err(CliError::usage(format!(
                "unknown group type '{t}' (classic, consumer, share, streams)"
            ))),
            t => Ok(t),
        })
        .collect::<Result<_, _>>()?;
    run_async(async {
        let client = global.client().await?;
        let groups = client.admin().list_groups_of_type(&types).await;
        client.close().await;
        let rows: Vec<Vec<String>> = groups?
            .into_iter()
            .map(|g| {
                vec![
                    g.group_id,
                    g.state.map(|s| s.to_string()).unwrap_or_default(),
                    g.group_type
                        .map_or_else(|| "classic".to_owned(), |t| t.to_string()),
                    if g.protocol_type.is_empty() {
                        "-".to_owned()
                    } else {
                        g.protocol_type
                    },
                ]
            })
            .collect();
        print_table(&["GROUP", "STATE", "TYPE", "PROTOCOL"], &rows)?;
        Ok(())
    })
}

fn describe(global: &Global, groups: Vec<String>) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let described = client.admin().describe_groups(&groups).await;
        // Groups of KIP-848's consumer protocol are described by ConsumerGroupDescribe (a
        // broker without it answers UNSUPPORTED_VERSION: only classic groups then).
        let consumer_groups = client
            .admin()
            .describe_consumer_groups(&groups)
            .await
            .unwrap_or_default();
        // Share groups (KIP-932) by ShareGroupDescribe, with their start offsets.
        let share_groups = client
            .admin()
            .describe_share_groups(&groups)
            .await
            .unwrap_or_default();
        let mut share_offsets = Vec::with_capacity(share_groups.len());
        for (name, d) in groups.iter().zip(&share_groups) {
            share_offsets.push(match d {
                Ok(_) => Some(
                    crate::share_groups::offset_rows(&client.admin(), name)
                        .await
                        .map_err(|e| e.to_string()),
                ),
                Err(_) => None,
            });
        }
        client.close().await;
        let mut failures = Vec::new();
        for (i, (name, d)) in groups.iter().zip(described?).enumerate() {
            if let Some(Ok(c)) = consumer_groups.get(i) {
                print_consumer_group(c)?;
                continue;
            }
            if let (Some(Ok(s)), Some(Some(offsets))) = (share_groups.get(i), share_offsets.get(i))
            {
                crate::share_groups::print(s, offsets)?;
                if let Ok(o) = offsets {
                    failures.extend(o.failures.iter().map(|f| format!("group {name}: {f}")));
                }
                continue;
            }
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

/// A consumer-protocol group: epochs, assignor, and per member its epoch, subscription and
/// assignment (the target assignment too while it differs).
fn print_consumer_group(d: &rekafka::admin::ConsumerGroupDescription) -> CliResult {
    let list = |tps: &[TopicPartition]| {
        if tps.is_empty() {
            "-".to_owned()
        } else {
            tps.iter()
                .map(TopicPartition::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    outln!(
        "Group: {}  State: {}  Type: consumer  Protocol: consumer (KIP-848)  Assignor: {}  \
         Epoch: {}  Assignment epoch: {}  Coordinator: {}  Members: {}",
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
            let mut assignment = list(&m.assignment);
            if m.target_assignment != m.assignment {
                assignment.push_str(&format!(" (target {})", list(&m.target_assignment)));
            }
            let subscription = match &m.subscribed_topic_regex {
                Some(r) => format!("/{r}/"),
                None => m.subscribed_topics.join(","),
            };
            vec![
                m.member_id.clone(),
                m.group_instance_id.clone().unwrap_or_else(|| "-".into()),
                m.member_epoch.to_string(),
                m.client_id.clone(),
                m.client_host.clone(),
                m.rack_id.clone().unwrap_or_else(|| "-".into()),
                subscription,
                assignment,
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(
            &[
                "MEMBER",
                "INSTANCE",
                "EPOCH",
                "CLIENT",
                "HOST",
                "RACK",
                "SUBSCRIPTION",
                "ASSIGNMENT",
            ],
            &rows,
        )?;
    }
    Ok(())
}

fn offsets(global: &Global, group: String) -> CliResult {
    run_async(async {
        let client = global.client().await?;
        let admin = client.admin();
        if crate::share_groups::describe(&admin, &group)
            .await
            .is_some()
        {
            let rows = crate::share_groups::offset_rows(&admin, &group).await;
            client.close().await;
            let rows = rows?;
            crate::share_groups::print_offsets(&group, &rows)?;
            return report_failures(rows.failures);
        }
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
                    tp.topic().to_owned(),
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

/// `rekafka groups reset-offsets`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("to")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])
))]
#[command(after_help = "\
Prints TOPIC PARTITION CURRENT NEW for every partition; only with --execute are the new offsets
committed. New offsets are kept within each partition's earliest and latest offsets. The group
must have no active members (stop its consumers first). For a share group the offsets moved are
its start offsets (records before one are skipped, records from it on delivered again).")]
pub struct ResetArgs {
    /// The group
    group: String,
    /// A topic (all its partitions) or TOPIC:P,P,... ; repeatable
    #[arg(short, long = "topic", value_name = "TOPIC[:PARTITIONS]", required = true, value_parser = parse_topic_partitions)]
    topics: Vec<(String, Option<Vec<i32>>)>,
    /// To the earliest offset
    #[arg(long)]
    to_earliest: bool,
    /// To the latest offset (the end)
    #[arg(long)]
    to_latest: bool,
    /// To this offset
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To the first offset at or after this time: YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM] (UTC
    /// when no zone is given) or milliseconds since the epoch
    #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
    to_datetime: Option<i64>,
    /// Move each committed offset by N (negative: back)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the new offsets (without it nothing changes)
    #[arg(long)]
    execute: bool,
}

/// `TOPIC` or `TOPIC:0,2`.
fn parse_topic_partitions(s: &str) -> Result<(String, Option<Vec<i32>>), String> {
    match s.rsplit_once(':') {
        None => Ok((s.to_owned(), None)),
        Some((t, ps)) => {
            let ps = ps
                .split(',')
                .map(|p| p.trim().parse::<i32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("expects TOPIC or TOPIC:P,P,..., got '{s}'"))?;
            Ok((t.to_owned(), Some(ps)))
        }
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.mmm][Z|±HH:MM]` (UTC without a zone)
/// or of a plain number of milliseconds.
fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || format!("expects YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM] or epoch ms, got '{s}'");
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let (date, time) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [y, mo, day] = d[..] else {
        return Err(bad());
    };
    // The zone: Z, +HH:MM, -HH:MM or none.
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
        let (h, m) = (
            h.parse::<i64>().map_err(|_| bad())?,
            m.parse::<i64>().map_err(|_| bad())?,
        );
        (c, sign * (h * 60 + m))
    } else {
        (time, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let (h, mi, sec) = match t[..] {
        [h, mi] => (h, mi, 0),
        [h, mi, sec] => (h, mi, sec),
        _ => return Err(bad()),
    };
    let ms: i64 = format!("{:0<3}", frac.get(..3).unwrap_or(frac))
        .parse()
        .map_err(|_| bad())?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    // Days from 1970-01-01 of the proleptic Gregorian date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// What a partition's new offset is.
#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Time(i64),
    Shift(i64),
}

fn reset_offsets(global: &Global, a: ResetArgs) -> CliResult {
    let target = match (
        a.to_earliest,
        a.to_latest,
        a.to_offset,
        a.to_datetime,
        a.shift_by,
    ) {
        (true, ..) => Target::Earliest,
        (_, true, ..) => Target::Latest,
        (_, _, Some(o), ..) => Target::Offset(o),
        (_, _, _, Some(t), _) => Target::Time(t),
        (_, _, _, _, Some(n)) => Target::Shift(n),
        _ => {
            return Err(CliError::usage(
                "reset-offsets needs one --to-* or --shift-by",
            ));
        }
    };
    run_async(async {
        let client = global.client().await?;
        let result = reset_async(&client, &a, target).await;
        client.close().await;
        result
    })
}

async fn reset_async(client: &rekafka::Client, a: &ResetArgs, target: Target) -> CliResult {
    let admin = client.admin();
    let mut tps = Vec::new();
    for (topic, only) in &a.topics {
        let parts = client
            .cluster()
            .partitions(topic)
            .await
            .map_err(|e| CliError::Failed(format!("topic {topic}: {}", CliError::from(e))))?;
        for p in parts.iter() {
            if only.as_ref().is_none_or(|o| o.contains(&p.partition)) {
                tps.push(TopicPartition::new(topic.as_str(), p.partition));
            }
        }
        if let Some(o) = only
            && let Some(missing) = o.iter().find(|p| !parts.iter().any(|x| x.partition == **p))
        {
            return Err(CliError::Failed(format!(
                "topic {topic} has no partition {missing}"
            )));
        }
    }
    // A share group's start offsets move the same way as a consumer group's committed ones.
    let share = crate::share_groups::describe(&admin, &a.group)
        .await
        .is_some();
    let committed: Vec<Result<Option<i64>, rekafka::Error>> = if share {
        admin
            .list_share_group_offsets(&a.group, Some(&tps))
            .await?
            .into_iter()
            .map(|(_, r)| r.map(|o| o.map(|o| o.start_offset)))
            .collect()
    } else {
        admin
            .list_group_offsets(&a.group, Some(&tps))
            .await?
            .into_iter()
            .map(|(_, r)| r.map(|o| o.map(|o| o.offset)))
            .collect()
    };
    let what = if share {
        "start offset"
    } else {
        "committed offset"
    };
    let earliest = listed(&admin, &tps, OffsetSpec::Earliest).await?;
    let latest = listed(&admin, &tps, OffsetSpec::Latest).await?;
    let at_time = match target {
        Target::Time(ts) => Some(listed(&admin, &tps, OffsetSpec::Timestamp(ts)).await?),
        _ => None,
    };
    let mut rows = Vec::new();
    let mut new_offsets = Vec::new();
    let mut failures = Vec::new();
    for (i, tp) in tps.iter().enumerate() {
        let current = match &committed[i] {
            Ok(c) => *c,
            Err(e) => {
                failures.push(format!("{tp}: {what}: {e}"));
                continue;
            }
        };
        let (Some(lo), Some(hi)) = (earliest[i], latest[i]) else {
            failures.push(format!("{tp}: no earliest/latest offset"));
            continue;
        };
        let new = match target {
            Target::Earliest => lo,
            Target::Latest => hi,
            Target::Offset(o) => o,
            Target::Time(_) => at_time.as_ref().and_then(|t| t[i]).unwrap_or(hi),
            Target::Shift(n) => match current {
                Some(c) => c.saturating_add(n),
                None => {
                    failures.push(format!("{tp}: no {what} to shift"));
                    continue;
                }
            },
        }
        .clamp(lo, hi);
        let show = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
        rows.push(vec![
            tp.topic().to_owned(),
            tp.partition.to_string(),
            show(current),
            new.to_string(),
        ]);
        new_offsets.push((tp.clone(), new));
    }
    print_table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows)?;
    if !a.execute {
        eprintln!("dry run: nothing changed; pass --execute to commit the NEW offsets");
        return report_failures(failures);
    }
    let altered = if share {
        admin
            .alter_share_group_offsets(&a.group, &new_offsets)
            .await
    } else {
        admin
            .alter_consumer_group_offsets(&a.group, &new_offsets)
            .await
    };
    let altered = altered.map_err(|e| {
        let hint = if e.kafka_code() == Some(rekafka::KafkaCode::NonEmptyGroup) {
            " (stop the group's consumers first)"
        } else {
            ""
        };
        CliError::Failed(format!("group {}: {e}{hint}", a.group))
    })?;
    for (tp, r) in altered {
        if let Err(e) = r {
            failures.push(format!("{tp}: {e}"));
        }
    }
    if failures.is_empty() {
        outln!(
            "reset: {}group {} ({} partitions)",
            if share { "share " } else { "" },
            a.group,
            new_offsets.len()
        );
    }
    report_failures(failures)
}

/// The offsets `spec` gives for `tps`, in order (`None` where there is none).
async fn listed(
    admin: &Admin,
    tps: &[TopicPartition],
    spec: OffsetSpec,
) -> CliResult<Vec<Option<i64>>> {
    let asked: Vec<(TopicPartition, OffsetSpec)> =
        tps.iter().map(|tp| (tp.clone(), spec)).collect();
    admin
        .list_offsets(&asked)
        .await?
        .into_iter()
        .zip(tps)
        .map(|(r, tp)| {
            r.map(|l| l.offset)
                .map_err(|e| CliError::Failed(format!("{tp}: listing offsets: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime("1700000000123"), Ok(1_700_000_000_123));
        // 2024-02-29 (a leap day) 12:34:56.789 UTC.
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789Z"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T14:34:56.789+02:00"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T07:34:56.789-05:00"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(parse_datetime("2000-03-01T00:00"), Ok(951_868_800_000));
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00",
            "2024-01-01",
            "2024-01-01T25:00",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_partitions() {
        assert_eq!(parse_topic_partitions("t"), Ok(("t".into(), None)));
        assert_eq!(
            parse_topic_partitions("t:0,2"),
            Ok(("t".into(), Some(vec![0, 2])))
        );
        assert!(parse_topic_partitions("t:x").is_err());
    }
}
