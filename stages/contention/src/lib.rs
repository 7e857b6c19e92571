//! # wfe-contention: `forecasts` and `metrics.norm` in, `migrations` out
//!
//! Workloads placed on hosts share them: a host is contended when its workloads together may
//! ask for more than it has. This stage watches that as the pipeline runs, with the policy
//! of `wfe_kube::contention` (the one `wfe contention`'s backtest replays):
//! - where each workload runs: `placement` in the config, else its `host` label (the label
//!   `host_label` names, on its `metrics.norm` samples); its environment from its `env.*`
//!   labels; the hosts and their capacities from the config ([`ContentionConfig`]);
//! - each workload's observed demand of `resource` (through `[[resources]]`, as the forecast
//!   stage reads it) over the last `history_s`, from which pairs' correlations are read;
//! - each workload's newest forecast per horizon, read as a normal distribution;
//! - at each forecast issuance, once every placed workload's forecasts of it have been read
//!   ([`ready`]: workloads arrive out of step), every host's chance of passing its capacity;
//!   a host above `bound` gets the fewest moves that bring it within, each to a host of the
//!   workload's environment that stays within it, on `migrations` with the reason. A planned
//!   move stands (the workload counts on its new host) until its host label changes.
//!
//! Modules: [`config`] (settings), [`state`] (per workload: where, forecasts, history; one
//! changelog entry each), [`ready`] (when an issuance can be planned), [`issuance`] (one
//! planning round), [`rows`] (the output batch).
//!
//! The stage must see every workload that shares a host ([`Stage::whole_fleet`]). Embedded it
//! does; `wfe stage contention` is one service that reads every partition of its inputs into
//! this one stage (merged by source batch in a replay, in arrival order live), so it runs as
//! one replica.

pub mod config;
pub mod issuance;
pub mod ready;
pub mod rows;
pub mod state;

use arrow_array::RecordBatch;
use wfe_contract::norm::NormBatch;
use wfe_contract::schemas::labels;
use wfe_contract::{Collector, Context, Error, Result, Stage, Topic};
use wfe_domain::resources::{ResourceMap, resource_steps};
use wfe_kube::contention::issued::issued;
use wfe_kube::contention::plan::{Contention as Contended, Host, Move};

pub use config::{ContentionConfig, HostConfig};
use state::State;

/// One planning round's outcome: its issuance, the contended hosts and the moves.
type Round = (i64, Vec<Contended>, Vec<Move>);

/// The contention stage.
pub struct Contention {
    cfg: ContentionConfig,
    resources: Vec<ResourceMap>,
    /// Index of `cfg.resource` in `resources`.
    resource: usize,
    hosts: Vec<Host>,
    state: State,
}

impl Contention {
    pub fn new(cfg: ContentionConfig, resources: Vec<ResourceMap>) -> Result<Self> {
        cfg.validate()?;
        let resource = resources
            .iter()
            .position(|r| r.name == cfg.resource)
            .ok_or_else(|| {
                Error::config(
                    "contention.resource",
                    format!("`{}` is not one of the job's [[resources]]", cfg.resource),
                )
            })?;
        let hosts = cfg.planner_hosts();
        Ok(Self {
            cfg,
            resources,
            resource,
            hosts,
            state: State::default(),
        })
    }

    /// Where each workload runs and its demand, from a `metrics.norm` batch (descending from
    /// source batch [`Context::seq`], in a replay). A workload that runs nowhere known is not
    /// kept.
    fn observe(&mut self, batch: &RecordBatch, ctx: &mut Context) -> Result<()> {
        let seq = ctx.seq();
        let nb = NormBatch::new(batch)?;
        let key = self.cfg.host_label.as_str();
        for step in nb.steps() {
            let l = step.label.unwrap_or("");
            let entry = match self.state.workloads.get_mut(step.workload) {
                Some(e) => e,
                None if self.cfg.placement.contains_key(step.workload)
                    || labels::get(l, key).is_some() =>
                {
                    self.state
                        .workloads
                        .entry(step.workload.to_string())
                        .or_default()
                }
                None => continue,
            };
            // Labels repeat step after step: read them when they change.
            if entry.seen_labels.as_deref() == Some(l) {
                continue;
            }
            entry.seen_labels = Some(l.to_string());
            entry.set_label(labels::get(l, key));
            entry.environment = labels::environment(l);
            // A host no host of the config is named: the workload counts nowhere (said once
            // per change of its labels).
            if let Some(h) = entry.host(step.workload, &self.cfg)
                && !self.hosts.iter().any(|x| x.name == h)
            {
                let at = format!("workload {} at {}", step.workload, step.time);
                let why = format!("host `{h}` is not in stages.contention.hosts: not planned");
                ctx.reject("unknown_host", &at, &why);
            }
        }
        for step in resource_steps(&self.resources, batch)? {
            let Some(e) = self.state.workloads.get_mut(&step.workload) else {
                continue;
            };
            if let Some(s) = seq
                && e.seq.is_none_or(|(last, _)| last != s)
            {
                e.seq = Some((s, step.time));
            }
            if let Some(v) = step.values[self.resource] {
                e.observe(step.time, v);
            }
        }
        Ok(())
    }

    /// A `forecasts` batch: its rows kept by issuance, for planning when ready.
    fn forecasts(&mut self, batch: &RecordBatch, ctx: &mut Context) -> Result<()> {
        for r in issued(batch, &self.cfg.resource)? {
            if self.state.shared.planned.is_some_and(|p| r.at <= p) {
                ctx.count("forecasts.late", 1);
            }
            if r.horizon_s <= self.cfg.max_horizon_s
                && let Some(e) = self.state.workloads.get_mut(&r.workload)
            {
                e.forecast(r.at, r.horizon_s, r.demand);
            }
        }
        Ok(())
    }

    /// Plans every issuance not planned yet that is ready (see [`ready`]; all of them at
    /// the `end` of the input), oldest first.
    fn plan_ready(&mut self, end: bool, ctx: &mut Context) -> Vec<Round> {
        let mut rounds = Vec::new();
        while let Some(t) = self.next_issuance() {
            if !ready::is_ready(&self.state, &self.cfg, t, end) {
                break;
            }
            rounds.push(self.plan(t, ctx));
        }
        rounds
    }

    /// The oldest issuance after the last planned one, of any workload.
    fn next_issuance(&self) -> Option<i64> {
        let after = self
            .state
            .shared
            .planned
            .map_or(i64::MIN, |p| p.saturating_add(1));
        self.state
            .workloads
            .values()
            .filter_map(|e| e.issuances.range(after..).next().map(|(t, _)| *t))
            .min()
    }

    /// Plans at issuance `at`; then forgets the workloads neither observed nor forecast
    /// within the history before it.
    fn plan(&mut self, at: i64, ctx: &mut Context) -> Round {
        let planned = issuance::plan_at(&mut self.state, &self.cfg, &self.hosts, at);
        self.state.shared.planned = Some(at);
        let since = at.saturating_sub(self.cfg.history_s.saturating_mul(1000));
        let before = self.state.workloads.len();
        self.state.workloads.retain(|_, e| {
            e.planned(at, since);
            e.history.back().is_some_and(|(t, _)| *t >= since)
                || e.newest().is_some_and(|t| t >= since)
        });
        ctx.count(
            "workload.retired",
            (before - self.state.workloads.len()) as u64,
        );
        ctx.count("hosts.contended", planned.contended.len() as u64);
        let unresolved = planned.contended.iter().filter(|c| c.unresolved).count();
        ctx.count("hosts.unresolved", unresolved as u64);
        ctx.count("moves", planned.moves.len() as u64);
        (at, planned.contended, planned.moves)
    }

    fn emit(&self, rounds: &[Round], out: &mut dyn Collector) -> Result<()> {
        if let Some(b) = rows::migrations(rounds, &self.cfg.resource, self.cfg.bound)? {
            out.emit(Topic::Migrations, b)?;
        }
        Ok(())
    }
}

impl Stage for Contention {
    fn name(&self) -> &'static str {
        "contention"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsNorm, Topic::Forecasts]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Migrations]
    }

    /// A host's workloads are keyed into every partition.
    fn whole_fleet(&self) -> bool {
        true
    }

    fn process_batch(
        &mut self,
        topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        match topic {
            Topic::MetricsNorm => self.observe(&batch, ctx)?,
            Topic::Forecasts => self.forecasts(&batch, ctx)?,
            _ => {}
        }
        let rounds = self.plan_ready(false, ctx);
        self.emit(&rounds, out)
    }

    /// The end of the input: the issuances still waiting are planned.
    fn flush(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        let rounds = self.plan_ready(true, ctx);
        self.emit(&rounds, out)
    }

    wfe_contract::state_hooks!(state);
}

#[cfg(test)]
mod tests;
