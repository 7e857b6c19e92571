//! `wfe state`: what each stage service would restore from its changelog, read the way the
//! service reads it on assignment, from the whole state topic and from what compaction leaves
//! of it (the newest record of each key). An operator's check that the state survives
//! compaction, and its size and restore time per partition.

use std::path::PathBuf;
use std::time::Instant;

use wfe_contract::{Error, Result};
use wfe_kafka::broker::{self, kafka_error};
use wfe_kafka::rdkafka::Offset;
use wfe_kafka::rdkafka::consumer::BaseConsumer;
use wfe_kafka::rdkafka::message::OwnedMessage;
use wfe_kafka::service::{changelog_key, compacted, restore_from, whole_fleet_key};

use crate::config::{JobConfig, STAGES};

#[derive(clap::Args)]
pub struct StateArgs {
    /// A stage to read (repeat for more); default: those after ingest that the job runs.
    #[arg(long = "stage")]
    stages: Vec<String>,
    /// Job config with a `[kafka]` section; default: the built-in job.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Brokers, overriding `kafka.bootstrap_servers`.
    #[arg(long)]
    bootstrap: Option<String>,
}

/// One input partition's snapshot (or a whole-fleet stage's one: `all`), as restored.
struct Row {
    stage: String,
    partition: String,
    /// Next input offset, state bytes and entries; `None`: no snapshot yet.
    snapshot: Option<(i64, usize, usize)>,
    records: (usize, usize),
    same: bool,
    restore_ms: f64,
}

pub fn state(args: StateArgs) -> Result<()> {
    let mut cfg = JobConfig::load(args.config.as_deref())?;
    if let Some(b) = args.bootstrap {
        cfg.kafka.bootstrap_servers = b;
    }
    let names: Vec<String> = if args.stages.is_empty() {
        STAGES
            .iter()
            .filter(|s| cfg.runs(s))
            .map(|s| s.to_string())
            .collect()
    } else {
        args.stages
    };
    let mut rows = Vec::new();
    for name in &names {
        rows.extend(stage_rows(&cfg, name)?);
    }
    println!(
        "| stage | partition | next offset | state bytes | records: log / compacted | compacted restores the same | restore ms | state entries |\n|---|---:|---:|---:|---:|---|---:|---:|"
    );
    for r in &rows {
        let (next, bytes, entries) = r
            .snapshot
            .map_or(("none".into(), "-".into(), "-".into()), |(n, b, e)| {
                (n.to_string(), b.to_string(), e.to_string())
            });
        println!(
            "| {} | {} | {next} | {bytes} | {} / {} | {} | {:.1} | {entries} |",
            r.stage,
            r.partition,
            r.records.0,
            r.records.1,
            if r.same { "yes" } else { "NO" },
            r.restore_ms,
        );
    }
    let differ: Vec<String> = rows
        .iter()
        .filter(|r| !r.same)
        .map(|r| format!("{}/{}", r.stage, r.partition))
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::state(
            "wfe state",
            format!(
                "the compacted state topic restores another snapshot than the whole topic for {}",
                differ.join(", ")
            ),
        ))
    }
}

/// Every input partition of one stage (a whole-fleet stage's one snapshot): its snapshot from
/// the whole state topic and from its compacted view, and the time to restore the latter into
/// a fresh stage.
fn stage_rows(cfg: &JobConfig, name: &str) -> Result<Vec<Row>> {
    let probe = cfg.build_stage(name)?;
    // A partition's snapshot is keyed by the first of its input topics in merge rank.
    let Some(&input) = wfe_contract::merge::ranked(probe.inputs()).first() else {
        return Err(Error::config("--stage", format!("`{name}` has no input")));
    };
    let whole = probe.whole_fleet();
    drop(probe);
    let kafka = &cfg.kafka;
    let (input_name, state_topic) = (kafka.topic(input), kafka.state_topic(name));
    let reader: BaseConsumer = kafka
        .reader()
        .create()
        .map_err(|e| kafka_error("reader", e))?;
    let patience = std::time::Duration::from_secs(30);
    let n_in = broker::partition_count(&reader, &input_name, patience)?;
    let n_state = broker::partition_count(&reader, &state_topic, patience)?;
    let logs: Vec<Vec<OwnedMessage>> = (0..n_state)
        .map(|sp| broker::read_partition(kafka, &state_topic, sp, Offset::Beginning))
        .collect::<Result<_>>()?;
    let group = kafka.group(name);
    let keys: Vec<(String, String, i32)> = if whole {
        vec![("all".into(), whole_fleet_key(&group, &input_name), 0)]
    } else {
        (0..n_in)
            .map(|p| (p.to_string(), changelog_key(&group, &input_name, p), p))
            .collect()
    };
    let mut rows = Vec::new();
    for (partition, key, p) in keys {
        let log = &logs[(p % n_state) as usize];
        let view = compacted(log);
        let from_log = restore_from(name, &key, log)?;
        let t = Instant::now();
        let from_view = restore_from(name, &key, view.iter().copied())?;
        if let Some((_, Some(state))) = &from_view {
            wfe_contract::state::restore(cfg.build_stage(name)?.as_mut(), state.clone())?;
        }
        rows.push(Row {
            stage: name.to_string(),
            partition,
            snapshot: from_view.as_ref().map(|(next, s)| {
                let (bytes, entries) = s
                    .as_ref()
                    .map_or((0, 0), |s| (s.bytes(), s.entries().len()));
                (*next, bytes, entries)
            }),
            records: (log.len(), view.len()),
            same: from_log == from_view,
            restore_ms: t.elapsed().as_secs_f64() * 1e3,
        });
    }
    Ok(rows)
}
