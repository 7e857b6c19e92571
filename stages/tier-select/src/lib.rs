//! # wfe-tier-select: `forecasts` in, `decisions` out
//!
//! For each forecast issuance of a workload (all its resources and horizons at one time),
//! every option of the [`Catalog`] (an instance type bought on demand, or as spot where it has
//! a spot price) is priced:
//! - **count**: for each resource and horizon, the forecast at the SLA quantile divided by
//!   what one instance gives (capacity x performance), rounded up; the largest wins and is
//!   the decision's driver;
//! - **cost**: count x the option's hourly price;
//! - **risk**: the chance the capacity is not enough: `1 - sla_quantile`, plus for spot the
//!   chance of an interruption within the driving horizon.
//!
//! The cheapest option whose risk stays within `max_risk` is chosen; if none does, the least
//! risky one, and the reason says so. Scale-in waits for `cooldown_s` after the last change,
//! so forecasts that wobble do not churn instances. Every row carries the options considered
//! (JSON) and a sentence saying why.

mod catalog;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{i64s, list_row_f64, strings, timestamp_column, timestamps};
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub use catalog::{Catalog, Instance};

/// Settings of the tier-select stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierSelectConfig {
    /// Catalog file (TOML); default: the shipped `catalog/aws-us-east-1.toml` snapshot.
    #[serde(default)]
    pub catalog: Option<std::path::PathBuf>,
    /// Forecast quantile level the capacity must cover.
    #[serde(default = "d_q")]
    pub sla_quantile: f64,
    /// Highest acceptable risk of not having enough capacity.
    #[serde(default = "d_risk")]
    pub max_risk: f64,
    /// Fewest instances a workload keeps.
    #[serde(default = "d_min")]
    pub min_instances: i64,
    /// Seconds after a change before the count may go down.
    #[serde(default = "d_cooldown")]
    pub cooldown_s: i64,
}

fn d_q() -> f64 {
    0.9
}
fn d_risk() -> f64 {
    0.15
}
fn d_min() -> i64 {
    1
}
fn d_cooldown() -> i64 {
    3 * 3600
}

impl Default for TierSelectConfig {
    fn default() -> Self {
        Self {
            catalog: None,
            sla_quantile: d_q(),
            max_risk: d_risk(),
            min_instances: d_min(),
            cooldown_s: d_cooldown(),
        }
    }
}

/// One forecast row, as tier selection needs it.
#[derive(Debug, Clone)]
struct Need {
    resource: String,
    unit: String,
    horizon_s: i64,
    level: f64,
    value: f64,
}

/// An option priced for one issuance.
#[derive(Debug, Clone, Serialize)]
pub struct Priced {
    pub tier: String,
    pub instance_type: String,
    pub count: i64,
    pub cost_per_hour: f64,
    pub risk: f64,
    pub feasible: bool,
    #[serde(skip)]
    driver: (String, i64, f64, f64),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Current {
    tier: String,
    instance_type: String,
    count: i64,
    changed_at: i64,
    /// The newest issuance decided on: a forecast delivered again (an at-least-once replay
    /// after a crash) is skipped, so it cannot move the cooldown or decide twice.
    #[serde(default)]
    decided: Option<i64>,
}

/// The tier-select stage.
pub struct TierSelect {
    cfg: TierSelectConfig,
    catalog: Catalog,
    current: HashMap<String, Current>,
}

#[derive(Default)]
struct Rows {
    id: Vec<String>,
    at: Vec<i64>,
    workload: Vec<String>,
    tier: Vec<String>,
    instance: Vec<String>,
    count: Vec<i64>,
    previous: Vec<i64>,
    cost: Vec<f64>,
    risk: Vec<f64>,
    d_res: Vec<String>,
    d_q: Vec<f64>,
    d_h: Vec<i64>,
    required: Vec<f64>,
    considered: Vec<String>,
    reason: Vec<String>,
}

/// Deterministic decision id: the same forecast yields the same id on every replay.
pub fn decision_id(workload: &str, at: i64) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("decision\u{1f}{workload}\u{1f}{at}").as_bytes())
    )
}

impl TierSelect {
    pub fn new(cfg: TierSelectConfig) -> Result<Self> {
        if !(0.0 < cfg.sla_quantile && cfg.sla_quantile < 1.0) {
            return Err(Error::config(
                "stages.tier-select.sla_quantile",
                "must be in (0, 1)",
            ));
        }
        if !(0.0..=1.0).contains(&cfg.max_risk) {
            return Err(Error::config(
                "stages.tier-select.max_risk",
                "must be in [0, 1]",
            ));
        }
        let catalog = match &cfg.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::shipped()?,
        };
        Ok(Self {
            cfg,
            catalog,
            current: HashMap::new(),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Prices every option for a set of needs.
    fn price(&self, needs: &[Need]) -> Vec<Priced> {
        let mut out = Vec::new();
        for inst in &self.catalog.instance {
            for (tier, price, rate) in inst.markets() {
                let mut count = self.cfg.min_instances;
                let mut driver = (String::new(), 0, self.cfg.sla_quantile, 0.0);
                for n in needs {
                    let Some(per) = inst.capacity(&n.unit) else {
                        continue;
                    };
                    let c = (n.value / (per * inst.performance)).ceil() as i64;
                    if c > count || driver.0.is_empty() {
                        driver = (n.resource.clone(), n.horizon_s, n.level, n.value);
                    }
                    count = count.max(c);
                }
                let hours = (driver.1 as f64 / 3600.0).max(1.0 / 60.0);
                let interruption = 1.0 - (1.0 - rate).powf(hours);
                let risk = (1.0 - driver.2) + interruption;
                out.push(Priced {
                    tier: tier.to_string(),
                    instance_type: inst.r#type.clone(),
                    count,
                    cost_per_hour: count as f64 * price,
                    risk,
                    feasible: risk <= self.cfg.max_risk,
                    driver,
                });
            }
        }
        out
    }

    fn decide(
        &mut self,
        workload: &str,
        at: i64,
        needs: &[Need],
        rows: &mut Rows,
        ctx: &mut Context,
    ) -> Result<()> {
        let options = self.price(needs);
        let best = options
            .iter()
            .filter(|o| o.feasible)
            .min_by(|a, b| {
                a.cost_per_hour
                    .total_cmp(&b.cost_per_hour)
                    .then(a.risk.total_cmp(&b.risk))
            })
            .or_else(|| options.iter().min_by(|a, b| a.risk.total_cmp(&b.risk)))
            .cloned()
            .ok_or_else(|| Error::config("catalog", "has no instance types"))?;
        let prev = self.current.get(workload).cloned().unwrap_or_default();
        let mut chosen = best.clone();
        let mut reason = if best.feasible {
            format!(
                "cheapest option within risk {:.2}: {} x {} ({}) at {:.3}/h, driven by {} p{:.0} at {} s ({:.2} needed)",
                self.cfg.max_risk,
                best.count,
                best.instance_type,
                best.tier,
                best.cost_per_hour,
                best.driver.0,
                best.driver.2 * 100.0,
                best.driver.1,
                best.driver.3
            )
        } else {
            format!(
                "no option keeps risk within {:.2}: least risky chosen ({:.3})",
                self.cfg.max_risk, best.risk
            )
        };
        let same_kind = prev.instance_type == best.instance_type && prev.tier == best.tier;
        if same_kind && best.count < prev.count && at - prev.changed_at < self.cfg.cooldown_s * 1000
        {
            chosen.count = prev.count;
            chosen.cost_per_hour =
                best.cost_per_hour / best.count.max(1) as f64 * prev.count as f64;
            reason = format!(
                "scale-in from {} to {} held: last change {} s ago, cooldown {} s",
                prev.count,
                best.count,
                (at - prev.changed_at) / 1000,
                self.cfg.cooldown_s
            );
        }
        if !same_kind || chosen.count != prev.count {
            self.current.insert(
                workload.to_string(),
                Current {
                    tier: chosen.tier.clone(),
                    instance_type: chosen.instance_type.clone(),
                    count: chosen.count,
                    changed_at: at,
                    decided: None,
                },
            );
        }
        self.current
            .entry(workload.to_string())
            .or_default()
            .decided = Some(at);
        let prev_count = if same_kind { prev.count } else { 0 };
        if chosen.count != prev_count {
            ctx.count("decisions.changes", 1);
        }
        rows.id.push(decision_id(workload, at));
        rows.at.push(at);
        rows.workload.push(workload.to_string());
        rows.tier.push(chosen.tier.clone());
        rows.instance.push(chosen.instance_type.clone());
        rows.count.push(chosen.count);
        rows.previous.push(prev_count);
        rows.cost.push(chosen.cost_per_hour);
        rows.risk.push(chosen.risk);
        rows.d_res.push(chosen.driver.0.clone());
        rows.d_q.push(chosen.driver.2);
        rows.d_h.push(chosen.driver.1);
        rows.required.push(chosen.driver.3);
        rows.considered
            .push(serde_json::to_string(&options).unwrap_or_default());
        rows.reason.push(reason);
        Ok(())
    }

    /// The value at the SLA level from a row's quantiles (the nearest level at or above it).
    fn at_level(&self, levels: &[f64], values: &[f64]) -> Option<(f64, f64)> {
        let i = levels
            .iter()
            .position(|l| *l >= self.cfg.sla_quantile - 1e-9)
            .or_else(|| levels.len().checked_sub(1))?;
        Some((levels[i], *values.get(i)?))
    }

    fn finish(rows: Rows) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(rows.id)),
            timestamp_column(rows.at),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.tier)),
            Arc::new(StringArray::from(rows.instance)),
            Arc::new(Int64Array::from(rows.count)),
            Arc::new(Int64Array::from(rows.previous)),
            Arc::new(Float64Array::from(rows.cost)),
            Arc::new(Float64Array::from(rows.risk)),
            Arc::new(StringArray::from(rows.d_res)),
            Arc::new(Float64Array::from(rows.d_q)),
            Arc::new(Int64Array::from(rows.d_h)),
            Arc::new(Float64Array::from(rows.required)),
            Arc::new(StringArray::from(rows.considered)),
            Arc::new(StringArray::from(rows.reason)),
        ];
        Ok(RecordBatch::try_new(Topic::Decisions.schema(), columns)?)
    }
}

impl Stage for TierSelect {
    fn name(&self) -> &'static str {
        "tier-select"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::Forecasts]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Decisions]
    }

    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let issued = timestamps(&batch, "issued_at")?;
        let workload = strings(&batch, "workload")?;
        let resource = strings(&batch, "resource")?;
        let unit = strings(&batch, "unit")?;
        let horizon = i64s(&batch, "horizon_s")?;
        let levels = batch.column_by_name("quantile_levels").map(Arc::clone);
        let values = batch.column_by_name("quantile_values").map(Arc::clone);
        let (Some(levels), Some(values)) = (levels, values) else {
            return Err(Error::bad_input("forecasts", "quantile columns missing"));
        };
        // Group rows by issuance, keeping first-seen order (the forecast stage emits an
        // issuance's rows together).
        let mut groups: Vec<((String, i64), Vec<Need>)> = Vec::new();
        for r in 0..batch.num_rows() {
            let key = (workload.value(r).to_string(), issued.value(r));
            let lv = list_row_f64(levels.as_ref(), r)?;
            let vv = list_row_f64(values.as_ref(), r)?;
            let need = match self.at_level(&lv, &vv) {
                Some((level, value)) if value.is_finite() && value >= 0.0 => Some(Need {
                    resource: resource.value(r).to_string(),
                    unit: unit.value(r).to_string(),
                    horizon_s: horizon.value(r),
                    level,
                    value,
                }),
                _ => {
                    let loc = format!("{} at {}", key.0, key.1);
                    ctx.event(Event::Rejected {
                        kind: "bad_forecast",
                        location: &loc,
                        message: "forecast is NaN, negative or has no quantiles: not used",
                        count: 1,
                    });
                    None
                }
            };
            let pos = match groups.iter().position(|(k, _)| *k == key) {
                Some(p) => p,
                None => {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[pos].1.extend(need);
        }
        let mut rows = Rows::default();
        for ((w, at), needs) in groups {
            if self
                .current
                .get(&w)
                .and_then(|c| c.decided)
                .is_some_and(|d| at <= d)
            {
                ctx.event(Event::Dropped {
                    kind: "replayed_forecast",
                    count: 1,
                });
                continue;
            }
            if needs.is_empty() {
                ctx.count("skipped.no_usable_forecast", 1);
                continue;
            }
            if needs.iter().all(|n| {
                self.catalog
                    .instance
                    .iter()
                    .all(|i| i.capacity(&n.unit).is_none())
            }) {
                let loc = format!("{w} at {at}");
                ctx.event(Event::Rejected {
                    kind: "unknown_unit",
                    location: &loc,
                    message: "no forecast unit is one the catalog measures (vcpu, gib, gbps)",
                    count: 1,
                });
                continue;
            }
            self.decide(&w, at, &needs, &mut rows, ctx)?;
        }
        if !rows.id.is_empty() {
            out.emit(Topic::Decisions, Self::finish(rows)?)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &self.current)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.current = wfe_contract::state::decode(self.name(), state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
