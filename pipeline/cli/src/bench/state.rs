//! `wfe bench --state 1000,10000`: what a stage service's changelog costs at fleet sizes.
//!
//! Each stage after ingest runs over the job's data, all but its last `LIVE_BATCHES` input
//! batches, so its workloads are past their learning periods. Its state, split into entries
//! ([`wfe_contract::state::Split`]), is then copied until it holds N workloads (each copy of a
//! workload under a name of its own), and restored into a fresh stage: a stage holding N
//! workloads in steady state. Then, through the changelog code a service runs (the broker
//! aside, [`MemoryChangelog`]):
//! - a first commit writes every entry (a service's first commit, or a replay at full speed
//!   where every workload moves between two commits);
//! - the held-back batches go through the stage, and a second commit writes what they
//!   changed: the job's own workloads moved, the copies did not (a live fleet between two
//!   commits, where a workload sends a sample a minute and commits come every two seconds);
//! - the changelog is restored into a fresh stage, from the newest record of each key.
//!
//! The first commit's bytes are also what every commit wrote before the state was split (the
//! whole state, each time).

use std::collections::BTreeMap;
use std::time::Instant;

use wfe_contract::state::Split;
use wfe_contract::{Context, Result, Stage, Topic, VecCollector};
use wfe_kafka::service::MemoryChangelog;

use crate::config::{JobConfig, STAGES};

/// Input batches held back for the second commit.
const LIVE_BATCHES: usize = 2;
/// Entry maps that hold one item per workload (the rest, e.g. a metric set's basis, are
/// shared by the workloads and not copied).
const PER_WORKLOAD: [&str; 10] = [
    "w", "spans", "applied", "fleet", "ets", "pairs", "level", "pos", "runs", "held",
];
/// Per-workload maps whose entries are named `<workload>:<run>` (a workload's runs).
const RUN_MAPS: [&str; 2] = ["runs", "held"];

/// One stage's figures at one fleet size.
struct Row {
    stage: &'static str,
    workloads: usize,
    entries: usize,
    first: (usize, f64),
    live: (usize, usize, f64),
    restore_ms: f64,
}

impl Row {
    const HEADER: &str = "| stage | workloads | entries | first commit: bytes | ms | live commit: entries | bytes | ms | restore ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|";

    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.1} | {:.0} |",
            self.stage,
            self.workloads,
            self.entries,
            self.first.0,
            self.first.1,
            self.live.0,
            self.live.1,
            self.live.2,
            self.restore_ms
        )
    }
}

pub fn bench_state(cfg: &JobConfig, sizes: &[usize]) -> Result<()> {
    eprintln!("running the job's stages over its data, one after another...");
    let mut inputs = stage_inputs(cfg)?;
    let chunk = (cfg.kafka.max_message_bytes / 2).clamp(512, 512 * 1024);
    let mut rows = Vec::new();
    for name in STAGES.into_iter().filter(|n| cfg.runs(n)) {
        let Some(batches) = inputs.remove(name) else {
            continue;
        };
        let (warm, live) = batches.split_at(batches.len().saturating_sub(LIVE_BATCHES));
        let (warm, live) = (warm.to_vec(), live.to_vec());
        drop(batches);
        let mut stage = cfg.build_stage(name)?;
        feed(stage.as_mut(), &warm)?;
        drop(warm);
        let Some(base) = stage.snapshot_split()? else {
            continue;
        };
        for &n in sizes {
            let row = measure(cfg, name, &base, n, &live, chunk)?;
            eprintln!("{}", row.line());
            rows.push(row);
        }
    }
    println!("{}", Row::HEADER);
    for r in &rows {
        println!("{}", r.line());
    }
    Ok(())
}

/// One stage at `n` workloads: copies of `base`, committed, moved, committed, restored.
fn measure(
    cfg: &JobConfig,
    name: &'static str,
    base: &Split,
    n: usize,
    live: &[(Topic, wfe_contract::RecordBatch)],
    chunk: usize,
) -> Result<Row> {
    let fleet = copies(base, n);
    let workloads = fleet
        .entries()
        .keys()
        .filter(|k| k.starts_with("w/") || k.starts_with("fleet/"))
        .count();
    let mut stage = cfg.build_stage(name)?;
    wfe_contract::state::restore(stage.as_mut(), fleet)?;
    let mut log = MemoryChangelog::default();
    let t = Instant::now();
    let (split, token) = stage.snapshot_changes(None)?.unwrap_or_default();
    let first = log.commit(&split, chunk)?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let entries = split.entries().len();
    drop(split);
    feed(stage.as_mut(), live)?;
    // What the service does: the entries changed since the snapshot the changelog holds.
    let t = Instant::now();
    let (split, _) = stage.snapshot_changes(Some(token))?.unwrap_or_default();
    let second = log.commit(&split, chunk)?;
    let live_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(stage);
    let t = Instant::now();
    let restored = log.restore(name)?;
    wfe_contract::state::restore(cfg.build_stage(name)?.as_mut(), restored)?;
    let restore_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Row {
        stage: name,
        workloads,
        entries,
        first: (first.bytes, first_ms),
        live: (second.entries, second.bytes, live_ms),
        restore_ms,
    })
}

/// `base` with its per-workload entries copied until there are about `n` workloads (a copy
/// `k` of workload `w` is `w~k`).
fn copies(base: &Split, n: usize) -> Split {
    let per = |k: &str| {
        k.split_once('/')
            .is_some_and(|(map, _)| PER_WORKLOAD.contains(&map))
    };
    let own = base
        .entries()
        .keys()
        .filter(|k| k.starts_with("w/") || k.starts_with("fleet/"))
        .count()
        .max(1);
    let mut out: BTreeMap<String, Vec<u8>> = base.entries().clone();
    for k in 1..n.div_ceil(own) {
        for (key, value) in base.entries() {
            if per(key) {
                out.insert(copy_key(key, k), value.clone());
            }
        }
    }
    Split::from_entries(out)
}

/// The key of copy `k` of a per-workload entry: the workload `w` becomes `w~k`.
fn copy_key(key: &str, k: usize) -> String {
    match key.split_once('/') {
        Some((map, name)) if RUN_MAPS.contains(&map) => match name.rsplit_once(':') {
            Some((w, run)) => format!("{map}/{w}~{k}:{run}"),
            None => format!("{key}~{k}"),
        },
        _ => format!("{key}~{k}"),
    }
}

/// Hands `batches` to the stage, in order.
fn feed(stage: &mut dyn Stage, batches: &[(Topic, wfe_contract::RecordBatch)]) -> Result<()> {
    let mut ctx = Context::new(stage.name());
    let mut out = VecCollector::new();
    for (topic, b) in batches {
        stage.process_batch(*topic, b.clone(), &mut ctx, &mut out)?;
        out.batches.clear();
    }
    Ok(())
}

/// Each stage's input batches: the job's sources through normalise, its output through the
/// stages that read it, and so on down the chain (each stage's inputs in the order they were
/// made, one topic after another: the merge's order does not matter for a state's size).
fn stage_inputs(
    cfg: &JobConfig,
) -> Result<BTreeMap<&'static str, Vec<(Topic, wfe_contract::RecordBatch)>>> {
    let mut made: BTreeMap<Topic, Vec<wfe_contract::RecordBatch>> = BTreeMap::new();
    let mut source = wfe_ingest::FileSource::open(&cfg.sources, cfg.run.strict)?;
    let mut ctx = Context::new("ingest");
    let raw = made.entry(Topic::MetricsRaw).or_default();
    while let Some(b) = wfe_contract::Source::next_batch(&mut source, &mut ctx)? {
        raw.push(b);
    }
    let mut inputs = BTreeMap::new();
    for name in STAGES.into_iter().filter(|n| cfg.runs(n)) {
        let mut stage = cfg.build_stage(name)?;
        let batches: Vec<(Topic, wfe_contract::RecordBatch)> = stage
            .inputs()
            .into_iter()
            .flat_map(|t| {
                made.get(&t)
                    .into_iter()
                    .flatten()
                    .map(move |b| (t, b.clone()))
            })
            .collect();
        let mut ctx = Context::new(name);
        let mut out = VecCollector::new();
        for (t, b) in &batches {
            stage.process_batch(*t, b.clone(), &mut ctx, &mut out)?;
        }
        stage.flush(&mut ctx, &mut out)?;
        for (t, b) in out.drain() {
            made.entry(t).or_default().push(b);
        }
        inputs.insert(name, batches);
    }
    Ok(inputs)
}
