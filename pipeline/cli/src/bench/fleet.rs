//! `wfe bench --fleet 100,1000,10000`: the embedded pipeline at fleet sizes.
//!
//! Per size, `wfe synth` writes a fleet of that many workloads (the shared ASD shapes,
//! time-shifted, scaled and noised; `--days` of event time at 300 s), and each job (`light`:
//! the two baseline forecast models the Python peer also runs; `default`: the job's own
//! models) replays it once in a child process of its own, so that each run's peak memory is
//! its own (VmHWM never falls within a process). The child is `wfe bench --repeat 1 --json
//! --source FILE`, which prints one line of JSON ([`Summary`]) that this parent tabulates:
//! wall, values/s, peak memory and memory per workload, forecasts per second, CPU per stage,
//! and from each size to the next the growth of time per value (1.0 = cost grows with the
//! work, no faster).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result, Topic};
use wfe_runtime::RunReport;

use crate::synth::{self, Shapes, SynthArgs};

/// Metrics per synthetic workload (m00 is the CPU the default job maps; two more).
const METRICS: usize = 3;

/// One run's figures, as the child prints them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Summary {
    pub values: u64,
    pub secs: f64,
    pub cpu_s: f64,
    pub peak_bytes: u64,
    pub forecasts: u64,
    /// CPU seconds per actor, the source first.
    pub actors: Vec<(String, f64)>,
}

impl Summary {
    pub(super) fn of(report: &RunReport, cpu_s: f64, peak_bytes: u64) -> Self {
        Self {
            values: report.rows.get(&Topic::MetricsRaw).copied().unwrap_or(0),
            secs: report.elapsed.as_secs_f64(),
            cpu_s,
            peak_bytes,
            forecasts: report.rows.get(&Topic::Forecasts).copied().unwrap_or(0),
            actors: std::iter::once(&report.source)
                .chain(&report.stages)
                .map(|a| (a.name.clone(), a.cpu.as_secs_f64()))
                .collect(),
        }
    }
}

/// Which forecast models a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Job {
    /// Persistence and seasonal naive, as the Python peer.
    Light,
    /// The job config's own models (the default job: ETS, MSTL and the LSTM as well).
    Default,
}

impl Job {
    fn name(self) -> &'static str {
        self.into()
    }
}

/// One (job, size) row.
struct Row {
    job: Job,
    workloads: usize,
    s: Summary,
}

/// `wfe bench --fleet`.
pub(super) fn bench_fleet(
    sizes: &[usize],
    days: f64,
    jobs: &[Job],
    config: Option<&Path>,
) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let shapes = Shapes::load(None, METRICS)?;
    let mut rows = Vec::new();
    for &n in sizes {
        let file = PathBuf::from(format!("target/fleet/fleet-{n}x{days}d.parquet"));
        let t = std::time::Instant::now();
        let w = synth::write(
            &shapes,
            &SynthArgs {
                workloads: n,
                days,
                metrics: METRICS,
                seed: 42,
                data: None,
                out: file.clone(),
            },
        )?;
        eprintln!(
            "{}: {n} workloads, {} rows, written in {:.1} s",
            file.display(),
            w.rows,
            t.elapsed().as_secs_f64()
        );
        for &job in jobs {
            let s = child(&exe, &file, job, config, shapes.steps_per_day())?;
            eprintln!(
                "  {}: {:.2} s, {:.0} MiB",
                job.name(),
                s.secs,
                mib(s.peak_bytes)
            );
            rows.push(Row {
                job,
                workloads: n,
                s,
            });
        }
    }
    print_tables(&rows, days);
    Ok(())
}

/// One run in a child process of its own. The fleet has no `split` label: each workload's
/// scaler and anomaly detectors are learned from its first day (`learn_steps`). With the
/// job's default (1,440 steps, five days at 300 s) normalise held a shorter fleet whole and
/// released it at the end of the input, and the run measured that one release instead of a
/// fleet at work; with only the scaler's shortened, anomaly learned on the whole second day
/// and scored nothing.
fn child(
    exe: &Path,
    file: &Path,
    job: Job,
    config: Option<&Path>,
    learn_steps: usize,
) -> Result<Summary> {
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--repeat", "1", "--json", "--source"])
        .arg(file)
        .arg("--learn-steps")
        .arg(learn_steps.to_string());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    if job == Job::Default {
        cmd.arg("--all-models");
    }
    let what = format!("wfe bench --source {}", file.display());
    let out = cmd.output().map_err(|e| Error::io(what.clone(), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::External {
            service: what,
            message: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            retryable: false,
        });
    }
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| Error::External {
        service: what,
        message: format!("no summary line in its output ({e}): {text}"),
        retryable: false,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The previous size's row of the same job.
fn previous<'a>(rows: &'a [Row], r: &Row) -> Option<&'a Row> {
    rows.iter()
        .filter(|p| p.job == r.job && p.workloads < r.workloads)
        .max_by_key(|p| p.workloads)
}

fn print_tables(rows: &[Row], days: f64) {
    println!(
        "\nwfe bench --fleet: synthetic fleets from the ASD shapes, {days} days at 300 s, {METRICS} metrics per workload, scalers learned from the first day; one run each, 2 cores\n"
    );
    println!(
        "| job | workloads | values | wall s | values/s | peak MiB | KiB per workload (marginal) | forecasts/s | time per value vs previous size |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let prev = previous(rows, r);
        let per_workload = match prev {
            Some(p) => {
                (r.s.peak_bytes as f64 - p.s.peak_bytes as f64) / (r.workloads - p.workloads) as f64
            }
            None => r.s.peak_bytes as f64 / r.workloads as f64,
        } / 1024.0;
        let growth = prev.map_or("-".to_string(), |p| {
            format!(
                "{:.2} x",
                per_value(&r.s, r.s.secs) / per_value(&p.s, p.s.secs)
            )
        });
        println!(
            "| {} | {} | {} | {:.2} | {:.2} M | {:.0} | {per_workload:.1} | {:.0} | {growth} |",
            r.job.name(),
            r.workloads,
            r.s.values,
            r.s.secs,
            r.s.values as f64 / r.s.secs.max(1e-9) / 1e6,
            mib(r.s.peak_bytes),
            r.s.forecasts as f64 / r.s.secs.max(1e-9),
        );
    }
    println!(
        "\nCPU per stage, microseconds per value (growth of that figure from the previous size in brackets); \
         `other threads`: the process's CPU outside the actors' own threads (file readers, the \
         forecast models' fitting pool)\n"
    );
    let names: Vec<&str> = rows
        .first()
        .map(|r| r.s.actors.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    println!(
        "| job | workloads | {} | other threads |",
        names.join(" | ")
    );
    println!("|---|---:|{}", "---:|".repeat(names.len() + 1));
    for r in rows {
        let prev = previous(rows, r);
        let cells: Vec<String> = with_other(&r.s)
            .iter()
            .map(|(name, cpu)| {
                let now = per_value(&r.s, *cpu);
                let before = prev.and_then(|p| {
                    let (_, c) = with_other(&p.s).into_iter().find(|(n, _)| n == name)?;
                    Some(per_value(&p.s, c))
                });
                match before {
                    Some(b) if b > 0.0 => format!("{now:.3} ({:.2} x)", now / b),
                    _ => format!("{now:.3}"),
                }
            })
            .collect();
        println!(
            "| {} | {} | {} |",
            r.job.name(),
            r.workloads,
            cells.join(" | ")
        );
    }
}

/// CPU seconds per actor, then the rest of the process's (threads outside the actors).
fn with_other(s: &Summary) -> Vec<(String, f64)> {
    let actors: f64 = s.actors.iter().map(|a| a.1).sum();
    let mut all = s.actors.clone();
    all.push(("other threads".into(), (s.cpu_s - actors).max(0.0)));
    all
}

/// Microseconds of `secs` per value of the run.
fn per_value(s: &Summary, secs: f64) -> f64 {
    secs * 1e6 / s.values.max(1) as f64
}
