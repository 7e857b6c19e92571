//! # wfe-actuate: `decisions` in, `actions` out
//!
//! The actuator turns a decision (this workload should run `count` instances of a type, in a
//! tier) into the EC2 calls that get there from what the actuator itself last put in place:
//! `ec2:RunInstances` for more (with spot market options in the spot tier), and
//! `ec2:TerminateInstances` for fewer or for the old type when the type or tier changes.
//!
//! Guardrails that hold in every mode:
//! - **no double action**: the ids of decisions already acted on are part of the state; a
//!   replayed decision produces no second action (the cloud's ClientToken alone is not enough:
//!   some EC2 endpoints ignore it);
//! - **caps**: never more than `max_instances` per workload, nor more than `max_step` added by
//!   one decision; a capped call says so in its parameters;
//! - **idempotency key**: each action id derives from the decision id and is sent as the
//!   ClientToken.
//!
//! This version runs in `record-only` mode: each call is written to `actions` with its full
//! parameters and outcome `recorded`, and nothing is sent. Modes that call EC2 (DryRun, apply)
//! plug in behind the same [`Mode`] setting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wfe_contract::columns::{i64s, list_str, strings, timestamp_column, timestamps};
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

/// How the actuator acts.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Write the calls it would make to `actions`, send nothing.
    #[default]
    RecordOnly,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::RecordOnly => "record-only",
        }
    }
}

/// Settings of the actuate stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActuateConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Region the calls are for.
    #[serde(default = "d_region")]
    pub region: String,
    /// Most instances a workload may have.
    #[serde(default = "d_max")]
    pub max_instances: i64,
    /// Most instances one decision may add.
    #[serde(default = "d_step")]
    pub max_step: i64,
}

fn d_region() -> String {
    "us-east-1".into()
}
fn d_max() -> i64 {
    100
}
fn d_step() -> i64 {
    20
}

impl Default for ActuateConfig {
    fn default() -> Self {
        Self {
            mode: Mode::RecordOnly,
            region: d_region(),
            max_instances: d_max(),
            max_step: d_step(),
        }
    }
}

/// What the actuator has put in place for a workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Fleet {
    instance_type: String,
    tier: String,
    count: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    applied: HashSet<String>,
    fleets: HashMap<String, Fleet>,
}

/// The actuate stage.
pub struct Actuate {
    cfg: ActuateConfig,
    state: State,
}

#[derive(Default)]
struct Rows {
    id: Vec<String>,
    decision: Vec<String>,
    time: Vec<i64>,
    workload: Vec<String>,
    call: Vec<&'static str>,
    params: Vec<String>,
}

/// Deterministic action id (also the ClientToken): decision id and the call's place in it.
pub fn action_id(decision_id: &str, n: usize) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("action\u{1f}{decision_id}\u{1f}{n}").as_bytes())
    )
}

impl Actuate {
    pub fn new(cfg: ActuateConfig) -> Result<Self> {
        if cfg.max_instances < 0 || cfg.max_step <= 0 {
            return Err(Error::config(
                "stages.actuate.max_instances",
                "caps must be positive",
            ));
        }
        Ok(Self {
            cfg,
            state: State::default(),
        })
    }

    fn plan(&mut self, decision: &str, time: i64, workload: &str, want: Fleet, rows: &mut Rows) {
        let have = self.state.fleets.get(workload).cloned().unwrap_or_default();
        let mut calls: Vec<(&'static str, serde_json::Value)> = Vec::new();
        let mut target = want.clone();
        let mut notes = Vec::new();
        if target.count > self.cfg.max_instances {
            notes.push(format!(
                "capped from {} to max_instances {}",
                target.count, self.cfg.max_instances
            ));
            target.count = self.cfg.max_instances;
        }
        let same = have.instance_type == target.instance_type && have.tier == target.tier;
        let base = if same { have.count } else { 0 };
        if target.count - base > self.cfg.max_step {
            notes.push(format!(
                "step capped from {} to max_step {}",
                target.count - base,
                self.cfg.max_step
            ));
            target.count = base + self.cfg.max_step;
        }
        if !same && have.count > 0 {
            calls.push((
                "ec2:TerminateInstances",
                self.terminate(workload, &have, have.count),
            ));
        }
        if target.count > base {
            calls.push(("ec2:RunInstances", json!(null)));
        } else if target.count < base {
            calls.push((
                "ec2:TerminateInstances",
                self.terminate(workload, &have, base - target.count),
            ));
        }
        for (n, (call, params)) in calls.into_iter().enumerate() {
            let id = action_id(decision, n);
            let params = if call == "ec2:RunInstances" {
                let mut p = json!({
                    "Region": self.cfg.region,
                    "InstanceType": target.instance_type,
                    "MinCount": target.count - base,
                    "MaxCount": target.count - base,
                    "ClientToken": id,
                    "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                        {"Key": "wfe:workload", "Value": workload},
                        {"Key": "wfe:decision", "Value": decision},
                        {"Key": "wfe:tier", "Value": target.tier}]}],
                });
                if target.tier == "spot" {
                    p["InstanceMarketOptions"] = json!({"MarketType": "spot"});
                }
                p
            } else {
                params
            };
            let mut params = params;
            if !notes.is_empty() {
                params["wfe:guardrails"] = json!(notes);
            }
            rows.id.push(id);
            rows.decision.push(decision.to_string());
            rows.time.push(time);
            rows.workload.push(workload.to_string());
            rows.call.push(call);
            rows.params.push(params.to_string());
        }
        if target.count > 0 {
            self.state.fleets.insert(workload.to_string(), target);
        } else {
            self.state.fleets.remove(workload);
        }
    }

    fn terminate(&self, workload: &str, fleet: &Fleet, n: i64) -> serde_json::Value {
        json!({
            "Region": self.cfg.region,
            "Select": {"Tags": {"wfe:workload": workload}, "InstanceType": fleet.instance_type,
                       "Tier": fleet.tier, "Count": n, "Order": "newest-first"},
        })
    }

    /// Applies one recorded call to the fleet record (the inverse of [`Actuate::plan`]'s
    /// output); `None` when the params do not say enough.
    fn replay_call(&mut self, workload: &str, call: &str, p: &serde_json::Value) -> Option<()> {
        let fleet = self.state.fleets.entry(workload.to_string()).or_default();
        if call == "ec2:RunInstances" {
            let itype = p["InstanceType"].as_str()?;
            let tags = p["TagSpecifications"][0]["Tags"].as_array()?;
            let tier = tags.iter().find(|t| t["Key"] == "wfe:tier")?["Value"].as_str()?;
            let n = p["MinCount"].as_i64()?;
            if fleet.instance_type != itype || fleet.tier != tier {
                *fleet = Fleet {
                    instance_type: itype.into(),
                    tier: tier.into(),
                    count: 0,
                };
            }
            fleet.count += n;
        } else {
            let sel = &p["Select"];
            let (itype, tier, n) = (
                sel["InstanceType"].as_str()?,
                sel["Tier"].as_str()?,
                sel["Count"].as_i64()?,
            );
            if fleet.instance_type == itype && fleet.tier == tier {
                fleet.count -= n;
            }
        }
        if self
            .state
            .fleets
            .get(workload)
            .is_some_and(|f| f.count <= 0)
        {
            self.state.fleets.remove(workload);
        }
        Some(())
    }

    fn finish(&self, rows: Rows) -> Result<RecordBatch> {
        let n = rows.id.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(rows.id)),
            Arc::new(StringArray::from(rows.decision)),
            timestamp_column(rows.time),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.call)),
            Arc::new(StringArray::from(rows.params)),
            Arc::new(StringArray::from(vec![self.cfg.mode.name(); n])),
            Arc::new(StringArray::from(vec!["recorded"; n])),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            list_str(std::iter::repeat_n(None, n)),
        ];
        Ok(RecordBatch::try_new(Topic::Actions.schema(), columns)?)
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
        let mut rows = Rows::default();
        for r in 0..batch.num_rows() {
            let id = ids.value(r);
            if self.state.applied.contains(id) {
                ctx.event(Event::Dropped {
                    kind: "replayed_decision",
                    count: 1,
                });
                continue;
            }
            if count.value(r) < 0 || itype.value(r).is_empty() {
                let loc = format!("decision {id}");
                ctx.event(Event::Rejected {
                    kind: "bad_decision",
                    location: &loc,
                    message: "negative count or no instance type: nothing done",
                    count: 1,
                });
                continue;
            }
            let want = Fleet {
                instance_type: itype.value(r).into(),
                tier: tier.value(r).into(),
                count: count.value(r),
            };
            self.plan(id, time.value(r), workload.value(r), want, &mut rows);
            self.state.applied.insert(id.to_string());
        }
        ctx.count("actions.recorded", rows.id.len() as u64);
        if !rows.id.is_empty() {
            out.emit(Topic::Actions, self.finish(rows)?)?;
        }
        Ok(())
    }

    fn recovers_from_output(&self) -> bool {
        true
    }

    /// Replays `actions` written after the snapshot: their decisions count as applied, and
    /// each call moves the fleet record as it did when it was made.
    fn recover(&mut self, _t: Topic, batch: RecordBatch, _ctx: &mut Context) -> Result<()> {
        let decision = strings(&batch, "decision_id")?;
        let workload = strings(&batch, "workload")?;
        let call = strings(&batch, "api_call")?;
        let params = strings(&batch, "parameters")?;
        for r in 0..batch.num_rows() {
            self.state.applied.insert(decision.value(r).to_string());
            let at = || format!("actions row {r} (decision {})", decision.value(r));
            let p: serde_json::Value = serde_json::from_str(params.value(r))
                .map_err(|e| Error::bad_input(at(), format!("params are not JSON: {e}")))?;
            self.replay_call(workload.value(r), call.value(r), &p)
                .ok_or_else(|| {
                    Error::bad_input(at(), "params lack the instance type, tier or count")
                })?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.state = wfe_contract::state::decode(self.name(), state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
