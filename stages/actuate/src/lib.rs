//! # wfe-actuate: `decisions` in, `actions` out
//!
//! The actuator turns a decision (this workload should run `count` instances of a type,
//! `spot_count` of them as spot and the rest on demand) into the EC2 calls that get there from
//! what is in place: `RunInstances` for what is missing of each market (spot market options
//! for spot), `TerminateInstances` for what is too much, newest first, or for all of the old
//! type when the type changes.
//!
//! What is in place is the actuator's own record of the calls it made (kept in its snapshot
//! and rebuilt from its `actions` after a crash); in `apply` mode, EC2 is asked first
//! (DescribeInstances by the `wfe:workload` tag), so instances that spot interruptions or
//! hands removed are launched again, and the record takes the instance ids.
//!
//! Modes ([`Mode`]): `record-only` writes the calls to `actions` and sends nothing;
//! `dry-run` sends them with EC2's DryRun flag, which checks permissions and parameters and
//! launches nothing; `apply` launches and terminates. Unset, the mode is `dry-run` as soon as
//! an AMI (`image_id`) says what to launch, and `record-only` before: nothing is ever
//! launched unless `apply` is asked for by name.
//!
//! Guardrails, in every mode:
//! - **no double action**: the ids of decisions acted on are part of the state; a replayed
//!   decision produces no second call. The ClientToken (derived from the decision) is sent
//!   too, but some EC2 endpoints (moto among them) ignore it, so the record is what holds;
//! - **caps**: at most `max_instances` per workload, `max_step` added by one decision,
//!   `max_fleet_instances` and `max_spend_per_hour` for all workloads together, the spend
//!   priced at the catalog's price at least (never at a decision's own word alone); a capped
//!   call says so in its parameters (`wfe:guardrails`). A decision that cannot be priced or
//!   checked (a type not in the catalog, counts out of order, a count beyond ten times
//!   `max_instances`) is refused: one `wfe:RefuseDecision` row with outcome `error` and why
//!   ([`guards`]);
//! - **rate and retries**: at most `max_calls_per_s` calls; throttling and transient errors
//!   are retried with backoff by the SDK (`max_attempts`); a call that still fails is an
//!   `actions` row with outcome `error` and the error, and the record keeps only what was
//!   done, so the next decision makes up the difference. Nothing is lost silently.
//!
//! **Spot interruptions** (`[stages.actuate.interruptions]`, `apply` mode): EC2's two-minute
//! warnings, forwarded by an EventBridge rule to an SQS queue, are read between decisions
//! (and on the runner's ticks). A warning for one of the record's spot instances launches
//! its replacement at once: spot again, unless spot of that type is scarce (`scarce_after`
//! warnings within `scarce_window_s`, or a spot launch that fails for capacity), then on
//! demand. The interrupted instance leaves the record (describe no longer counts it), the
//! notice's id counts as applied (a notice delivered twice replaces once), and the message is
//! deleted only once dealt with: a failed launch leaves it on the queue to come back.

mod applied;
mod config;
mod fleet;
pub mod guards;
mod notices;
mod plan;
mod rows;
mod snapshot;

use arrow_array::{Array, RecordBatch};
use serde_json::json;
use wfe_contract::columns::{f64s, i64s, strings, timestamps};
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub use config::{ActuateConfig, InterruptionSource, MODE_SETTING, Mode};
pub use fleet::{Fleet, Group};
use plan::{Call, Decision, launch_params};
use rows::Rows;
pub use rows::{action_id, interruption_id};
use snapshot::State;
pub use wfe_ec2::{
    Catalog, Cloud, Connect, Ec2, Ec2Settings, Launch, Notices, Received, Running, Sqs,
};

/// The actuate stage.
pub struct Actuate {
    cfg: ActuateConfig,
    /// Prices for the spend cap, whatever a decision says it costs.
    catalog: Catalog,
    state: State,
    cloud: Option<Box<dyn Cloud>>,
    notices: Option<Box<dyn Notices>>,
    last_poll: Option<std::time::Instant>,
}

/// The record's key for interruption notices (their ids are remembered beside decisions').
const NOTICES: &str = "\u{1f}notices";

/// The `api_call` of the row that says a decision was refused before any call.
pub const REFUSE_CALL: &str = "wfe:RefuseDecision";

fn load_catalog(cfg: &ActuateConfig) -> Result<Catalog> {
    match &cfg.catalog {
        Some(path) => Catalog::load(path),
        None => Catalog::shipped(),
    }
}

impl Actuate {
    /// The stage; `dry-run` and `apply` connect to EC2 with the standard credential chain.
    pub fn new(cfg: ActuateConfig) -> Result<Self> {
        Self::connect_with(cfg, &mut |s| Ok(Box::new(Ec2::connect(s)?)))
    }

    /// The stage, its EC2 client (in `dry-run` and `apply`) from `connect`: a process running
    /// several stages hands out one client per region (`wfe_ec2::Clients`). The notice queue's
    /// SQS client is the actuator's alone and is built here.
    pub fn connect_with(cfg: ActuateConfig, connect: Connect<'_>) -> Result<Self> {
        cfg.validate()?;
        let cloud: Option<Box<dyn Cloud>> = match cfg.mode() {
            Mode::RecordOnly => None,
            _ => Some(connect(&cfg.ec2_settings())?),
        };
        let notices: Option<Box<dyn Notices>> = match &cfg.interruptions {
            Some(src) => Some(Box::new(Sqs::connect(
                &cfg.sqs_settings(src),
                &src.queue_url,
            )?)),
            None => None,
        };
        Ok(Self {
            catalog: load_catalog(&cfg)?,
            cfg,
            state: State::default(),
            cloud,
            notices,
            last_poll: None,
        })
    }

    /// The stage with a given cloud client (e.g. one with fixed credentials).
    pub fn with_cloud(cfg: ActuateConfig, cloud: Box<dyn Cloud>) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            catalog: load_catalog(&cfg)?,
            cfg,
            state: State::default(),
            cloud: Some(cloud),
            notices: None,
            last_poll: None,
        })
    }

    /// The stage with a given notice source (e.g. one with fixed credentials).
    pub fn with_notices(mut self, notices: Box<dyn Notices>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// Registers [`MODE_SETTING`] (the first instance to run does), or takes its value.
    fn follow_control(&mut self, ctx: &mut Context) {
        let mode = self.cfg.mode();
        let Some(want) = ctx.control().get(MODE_SETTING) else {
            let allowed: &[&str] = match self.cloud {
                Some(_) => &["dry-run", "apply"],
                None => &["record-only"],
            };
            let doc = "How the actuator acts: `dry-run` checks each call with EC2's DryRun flag, `apply` launches and terminates (from the next batch on; a restart goes back to the configured mode)";
            ctx.control()
                .register(MODE_SETTING, mode.name(), allowed, doc);
            return;
        };
        match Mode::from_name(&want) {
            Some(m) if m != mode && (m == Mode::RecordOnly || self.cloud.is_some()) => {
                tracing::warn!(
                    from = mode.name(),
                    to = m.name(),
                    "actuator mode changed at run time"
                );
                ctx.count("mode.changed", 1);
                self.cfg.mode = Some(m);
            }
            _ => {}
        }
    }

    /// How long applied ids are remembered, in milliseconds of event time.
    fn window_ms(&self) -> i64 {
        (self.cfg.remember_s.min(i64::MAX as u64 / 1000) as i64) * 1000
    }

    /// The EC2 settings of a config, for [`Ec2`] constructors.
    pub fn ec2_settings(cfg: &ActuateConfig) -> Ec2Settings {
        cfg.ec2_settings()
    }

    /// What the record says a workload runs.
    pub fn fleet(&self, workload: &str) -> Option<&Fleet> {
        self.state.fleets.get(workload)
    }

    /// In `apply` mode, what EC2 says the workload runs (the record for the other modes).
    fn in_place(&mut self, workload: &str, ctx: &mut Context) -> Fleet {
        let recorded = self.state.fleets.get(workload).cloned().unwrap_or_default();
        if self.cfg.mode() != Mode::Apply {
            return recorded;
        }
        let Some(cloud) = self.cloud.as_mut() else {
            return recorded;
        };
        match cloud.describe(workload) {
            Ok(mut running) => {
                // Instances replaced after a notice are being reclaimed: not counted; once
                // gone, forgotten.
                let gone: Vec<String> = self
                    .state
                    .interrupted
                    .iter()
                    .filter(|(id, w)| *w == workload && !running.iter().any(|r| &r.id == *id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.state.interrupted.remove(&id);
                }
                running.retain(|r| !self.state.interrupted.contains_key(&r.id));
                let actual = Fleet::from_running(&running, &recorded);
                if actual != recorded {
                    ctx.count("fleet.reconciled", 1);
                }
                actual
            }
            Err(e) => {
                let loc = format!("describe {workload}");
                let msg = format!("{e}; planning from the record");
                ctx.reject("describe_failed", &loc, &msg);
                recorded
            }
        }
    }

    fn act(&mut self, d: &Decision<'_>, rows: &mut Rows, ctx: &mut Context) {
        let have = self.in_place(d.workload, ctx);
        let (od, spot, notes) = plan::capped(&self.cfg, &self.state.fleets, d, &have);
        let calls = plan::calls(d, &have, od, spot);
        // A change of type: launches go to a record of the new type, terminations come off the
        // old one; whatever of the old one is left (a termination that failed) is stray.
        let same = have.instance_type == d.instance_type;
        let mut old = have.clone();
        let mut fleet = if same {
            have
        } else {
            Fleet {
                instance_type: d.instance_type.to_string(),
                tier: d.tier.to_string(),
                ..Default::default()
            }
        };
        for (n, call) in calls.into_iter().enumerate() {
            let id = action_id(d.id, n);
            let target = match (&call, same) {
                (Call::Terminate { .. }, false) => &mut old,
                _ => &mut fleet,
            };
            let (name, mut params, outcome) = self.execute(d, &call, &id, target);
            if !notes.is_empty() {
                params["wfe:guardrails"] = json!(notes);
            }
            // What a restart needs to price the fleet for the spend cap.
            params["wfe:unit_cost"] = json!(d.unit_cost);
            let loc = format!("decision {} {name}", d.id);
            rows.call(
                ctx, id, d.id, d.time, d.workload, name, &params, &outcome, &loc,
            );
        }
        if !same {
            fleet.stray.extend(old.on_demand.ids());
            fleet.stray.extend(old.spot.ids());
            fleet.stray.extend(old.stray);
        }
        fleet.unit_cost = d.unit_cost;
        if fleet.size() > 0 {
            self.state.fleets.insert(d.workload.to_string(), fleet);
        } else {
            self.state.fleets.remove(d.workload);
        }
    }

    /// Makes one call in the configured mode and moves `fleet` by what was done.
    #[allow(clippy::type_complexity)]
    fn execute(
        &mut self,
        d: &Decision<'_>,
        call: &Call,
        id: &str,
        fleet: &mut Fleet,
    ) -> (
        &'static str,
        serde_json::Value,
        Result<(&'static str, Option<Vec<String>>)>,
    ) {
        let mode = self.cfg.mode();
        match call {
            Call::Launch { spot, count } => {
                let req = plan::launch_request(&self.cfg, d, *spot, *count, id);
                let params = launch_params(&self.cfg.region, &req, mode == Mode::DryRun);
                let result = match (mode, self.cloud.as_mut()) {
                    (Mode::RecordOnly, _) | (_, None) => Ok(("recorded", None)),
                    (Mode::DryRun, Some(c)) => c.launch(&req, true).map(|_| ("dry-run-ok", None)),
                    (Mode::Apply, Some(c)) => {
                        c.launch(&req, false).map(|ids| ("applied", Some(ids)))
                    }
                };
                if let Ok((_, ids)) = &result {
                    let group = if *spot {
                        &mut fleet.spot
                    } else {
                        &mut fleet.on_demand
                    };
                    match ids {
                        Some(ids) => group.add_ids(ids, d.time),
                        None => group.add_count(*count),
                    }
                }
                ("ec2:RunInstances", params, result)
            }
            Call::Terminate {
                spot,
                ids,
                count,
                stray,
            } => {
                let params = json!({
                    "Region": self.cfg.region,
                    "InstanceIds": ids,
                    "DryRun": mode == Mode::DryRun,
                    "Select": {"Tags": {"wfe:workload": d.workload},
                               "InstanceType": fleet.instance_type,
                               "Market": if *spot { "spot" } else { "on-demand" },
                               "Count": count, "Order": "newest-first", "Stray": stray},
                });
                let result = match (mode, self.cloud.as_mut()) {
                    (Mode::RecordOnly, _) | (_, None) => Ok(("recorded", None)),
                    // Dry-run launches nothing, so its record holds no instance ids to check.
                    (Mode::DryRun, _) if ids.is_empty() => Ok(("recorded", None)),
                    (Mode::DryRun, Some(c)) => c.terminate(ids, true).map(|_| ("dry-run-ok", None)),
                    (Mode::Apply, _) if ids.len() as i64 != *count => Err(Error::state(
                        "actuate",
                        format!(
                            "{} instance ids known for {count} to terminate: describe found fewer",
                            ids.len()
                        ),
                    )),
                    (Mode::Apply, Some(c)) => {
                        c.terminate(ids, false).map(|done| ("applied", Some(done)))
                    }
                };
                if result.is_ok() {
                    if *stray {
                        fleet.stray.retain(|id| !ids.contains(id));
                    } else {
                        let group = if *spot {
                            &mut fleet.spot
                        } else {
                            &mut fleet.on_demand
                        };
                        group.remove(*count, ids);
                    }
                }
                ("ec2:TerminateInstances", params, result)
            }
        }
    }

    fn finish(&self, rows: Rows) -> Result<RecordBatch> {
        rows.finish(self.cfg.mode())
    }
}

impl Stage for Actuate {
    fn name(&self) -> &'static str {
        "actuate"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::Decisions]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Actions]
    }

    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let ids = strings(&batch, "decision_id")?;
        let time = timestamps(&batch, "decided_at")?;
        let workload = strings(&batch, "workload")?;
        let tier = strings(&batch, "tier")?;
        let itype = strings(&batch, "instance_type")?;
        let count = i64s(&batch, "count")?;
        let cost = f64s(&batch, "expected_cost_per_hour")?;
        // Version 1 decisions have no spot_count: all of `count` is in `tier`.
        let spot = batch
            .column_by_name("spot_count")
            .map(|_| i64s(&batch, "spot_count"))
            .transpose()?;
        self.follow_control(ctx);
        let mut rows = Rows::default();
        self.poll(&mut rows, ctx);
        for r in 0..batch.num_rows() {
            let id = ids.value(r);
            if self.state.applied.contains(workload.value(r), id) {
                ctx.event(Event::Dropped {
                    kind: "replayed_decision",
                    count: 1,
                });
                continue;
            }
            if self
                .state
                .applied
                .is_stale(workload.value(r), time.value(r), self.window_ms())
            {
                // Its id may be forgotten already: acting could be a second action.
                ctx.event(Event::Dropped {
                    kind: "stale_decision",
                    count: 1,
                });
                continue;
            }
            let n = count.value(r);
            let s = match &spot {
                Some(a) if !a.is_null(r) => a.value(r),
                _ if tier.value(r) == "spot" => n,
                _ => 0,
            };
            let asked = guards::Asked {
                instance_type: itype.value(r),
                count: n,
                spot: s,
                cost_per_hour: cost.value(r),
            };
            let unit_cost = match guards::unit_cost(&asked, &self.catalog, self.cfg.max_instances) {
                Ok(u) => u,
                Err(why) => {
                    let loc = format!("decision {id}");
                    ctx.reject("bad_decision", &loc, &format!("{why}: nothing done"));
                    rows.refused(id, time.value(r), workload.value(r), &asked, &why);
                    let window = self.window_ms();
                    self.state.applied.insert(
                        workload.value(r),
                        id.to_string(),
                        time.value(r),
                        window,
                    );
                    continue;
                }
            };
            let d = Decision {
                id,
                time: time.value(r),
                workload: workload.value(r),
                tier: tier.value(r),
                instance_type: itype.value(r),
                count: n,
                spot: s,
                unit_cost,
            };
            self.act(&d, &mut rows, ctx);
            let window = self.window_ms();
            self.state
                .applied
                .insert(d.workload, id.to_string(), d.time, window);
        }
        if !rows.id.is_empty() {
            out.emit(Topic::Actions, self.finish(rows)?)?;
        }
        Ok(())
    }

    /// Between decisions: the notice queue.
    fn on_tick(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        self.follow_control(ctx);
        let mut rows = Rows::default();
        self.poll(&mut rows, ctx);
        if !rows.id.is_empty() {
            out.emit(Topic::Actions, self.finish(rows)?)?;
        }
        Ok(())
    }

    fn recovers_from_output(&self) -> bool {
        true
    }

    /// Replays `actions` written after the snapshot: their decisions count as applied, and
    /// each call that was done moves the fleet record as it did when it was made.
    fn recover(&mut self, _t: Topic, batch: RecordBatch, _ctx: &mut Context) -> Result<()> {
        let decision = strings(&batch, "decision_id")?;
        let time = timestamps(&batch, "event_time")?;
        let workload = strings(&batch, "workload")?;
        let call = strings(&batch, "api_call")?;
        let params = strings(&batch, "parameters")?;
        let outcome = strings(&batch, "outcome")?;
        let ids = batch.column_by_name("instance_ids").cloned();
        for r in 0..batch.num_rows() {
            let at = || format!("actions row {r} (decision {})", decision.value(r));
            let p: serde_json::Value = serde_json::from_str(params.value(r))
                .map_err(|e| Error::bad_input(at(), format!("params are not JSON: {e}")))?;
            let done = matches!(outcome.value(r), "recorded" | "dry-run-ok" | "applied");
            let replaces = p["wfe:replaces"].as_str();
            // A decision counts as acted on whatever its outcome (the next one makes up the
            // difference); a notice only once its replacement was launched (it comes back).
            if replaces.is_none() || done {
                let window = self.window_ms();
                let key = if replaces.is_some() {
                    NOTICES
                } else {
                    workload.value(r)
                };
                self.state.applied.insert(
                    key,
                    decision.value(r).to_string(),
                    time.value(r),
                    window,
                );
            }
            if !done {
                continue;
            }
            let done = ids
                .as_ref()
                .and_then(|c| wfe_contract::columns::list_row_str(c.as_ref(), r).ok())
                .filter(|v| !v.is_empty());
            let fleet = self
                .state
                .fleets
                .entry(workload.value(r).to_string())
                .or_default();
            fleet
                .replay(call.value(r), &p, done.as_deref(), time.value(r))
                .ok_or_else(|| {
                    Error::bad_input(at(), "params lack the instance type, market or count")
                })?;
            if let Some(c) = p["wfe:unit_cost"].as_f64() {
                fleet.unit_cost = c;
            }
            if let Some(x) = replaces {
                fleet.spot.remove(1, &[x.to_string()]);
                self.state
                    .interrupted
                    .insert(x.to_string(), workload.value(r).to_string());
            }
            if fleet.size() == 0 {
                self.state.fleets.remove(workload.value(r));
            }
        }
        Ok(())
    }

    wfe_contract::state_hooks!(state);
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod moto_tests;
