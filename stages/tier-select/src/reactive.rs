//! The reactive floor: a step of `metrics.norm` whose demand passes `burst_utilisation` of
//! the capacity decided for its workload adds on-demand instances at once, and no later
//! forecast scales in below what the demand last observed needs (with `hold_h`, the highest
//! demand of the last `hold_h` hours: [`crate::hold`]).

use std::collections::HashMap;

use arrow_array::RecordBatch;
use wfe_contract::{Context, Result};

use crate::hold::PeakHold;
use crate::plan::Need;
use crate::rows::Rows;
use crate::{Current, Priced, TierSelect, burst_id};

/// The floor's count: instances of `per` capacity each that hold `demand` at `target`
/// utilisation beside `held` capacity that stays (private capacity; for the tuner's arms, the
/// fleet in place, which makes the count the instances added).
pub(crate) fn floor_instances(demand: f64, held: f64, per: f64, target: f64) -> f64 {
    ((demand - held * target) / (target * per) - 1e-9).ceil()
}

impl TierSelect {
    pub(crate) fn reactive(&self) -> bool {
        self.cfg.burst_utilisation > 0.0 && !self.resources.is_empty()
    }

    /// The job's own floor, `[burst_utilisation, burst_target]`.
    pub(crate) fn own_floor(&self) -> [f64; 2] {
        [self.cfg.burst_utilisation, self.cfg.burst_target]
    }

    /// A workload's floor: its tuned arm's where the learner chooses floors too, else the
    /// job's own.
    pub(crate) fn floor_of(&self, workload: &str) -> [f64; 2] {
        let own = self.own_floor();
        // (The learner is looked up only where floors are tuned: this runs at every step.)
        let Some(t) = self.cfg.tuning.as_ref().filter(|t| !t.floors.is_empty()) else {
            return own;
        };
        (self.tuners.get(workload)).map_or(own, |l| t.floor_of_arm(l.chosen(), own))
    }

    /// The reactive floor over one `metrics.norm` batch: a step whose demand passes
    /// `burst_utilisation` of the capacity decided for its workload becomes a decision that
    /// adds on-demand instances up to `burst_target` utilisation.
    pub(crate) fn observe(
        &mut self,
        batch: &RecordBatch,
        rows: &mut Rows,
        ctx: &mut Context,
    ) -> Result<()> {
        // The maps are read while the stage changes: a copy per batch, not a borrow.
        let maps = self.resources.clone();
        wfe_domain::resources::for_each_resource_step(&maps, batch, |workload, time, values| {
            self.observe_step(workload, time, values, rows, ctx);
            Ok(())
        })
    }

    /// One step of the reactive floor.
    fn observe_step(
        &mut self,
        workload: &str,
        time: i64,
        values: &[Option<f64>],
        rows: &mut Rows,
        ctx: &mut Context,
    ) {
        // Every step is marked observed, also before the workload's first decision: a step
        // delivered again after that decision (an at-least-once replay) must not be judged
        // against a fleet that did not exist when it was first seen.
        if !self.current.contains_key(workload) {
            // (Looked up first: the name is copied once per workload, not per step.)
            self.current
                .insert(workload.to_string(), Current::default());
        }
        let [utilisation, target] = self.floor_of(workload);
        let cur = self.current.get_mut(workload).expect("inserted above");
        if cur.observed.is_some_and(|t| time <= t) {
            return;
        }
        cur.observed = Some(time);
        let in_place = cur.count;
        if self.cfg.hold_h > 0 {
            hold(&mut self.holds, self.cfg.hold_h, workload, (time, values));
        }
        if in_place <= 0 {
            return;
        }
        // The type's place in the catalog, not a copy of it: the stage changes below.
        let Some(ii) = self
            .catalog
            .instance
            .iter()
            .position(|i| i.r#type == cur.instance_type)
        else {
            return;
        };
        // The resource furthest past its share of the capacity in place (private capacity
        // included).
        let private = self.private_of(workload);
        let inst = &self.catalog.instance[ii];
        let mut worst: Option<(usize, f64, f64)> = None;
        for (ri, v) in values.iter().enumerate() {
            let unit = &self.resources[ri].unit;
            let (Some(v), Some(cap)) = (v, inst.capacity(unit)) else {
                continue;
            };
            let per = cap * inst.performance;
            let load = v / (in_place as f64 * per + private(unit)).max(1e-12);
            if load > utilisation && worst.is_none_or(|w| load > w.2) {
                worst = Some((ri, *v, load));
            }
        }
        let cur = self.current.get_mut(workload).expect("looked up above");
        cur.last_seen.clear();
        cur.last_seen.extend_from_slice(values);
        let Some((ri, value, load)) = worst else {
            return;
        };
        let inst = &self.catalog.instance[ii];
        let res = &self.resources[ri];
        let per = inst.capacity(&res.unit).unwrap_or(1.0) * inst.performance;
        let own = private(&res.unit);
        let count = floor_instances(value, own, per, target) as i64;
        if count <= cur.count {
            return;
        }
        let prev = cur.count;
        cur.count = count;
        cur.changed_at = time;
        let spot = cur.spot_count.min(count);
        let tier = if spot == count {
            "spot".to_string()
        } else {
            inst.family_tier.clone()
        };
        cur.tier = tier.clone();
        let needs = cur.needs.clone();
        let spot_price = inst.spot_price.unwrap_or(inst.on_demand_price);
        let cost = spot as f64 * spot_price + (count - spot) as f64 * inst.on_demand_price;
        let risk = if needs.is_empty() {
            0.0
        } else {
            self.rules().risk(inst, &needs, count, spot)
        };
        ctx.count("decisions.bursts", 1);
        ctx.count("decisions.changes", 1);
        rows.id.push(burst_id(workload, time));
        rows.at.push(time);
        rows.workload.push(workload.to_string());
        rows.tier.push(tier);
        rows.instance.push(inst.r#type.clone());
        rows.count.push(count);
        rows.spot.push(spot);
        rows.previous.push(prev);
        rows.cost.push(cost);
        rows.risk.push(risk);
        rows.d_res.push(res.name.clone());
        // Observed, not forecast: the driver is the actual value (level 1, horizon 0).
        rows.d_q.push(1.0);
        rows.d_h.push(0);
        rows.required.push(value);
        rows.considered.push("[]".into());
        rows.reason.push(format!(
            "reactive floor: observed {} {value:.2} {} is {:.0} % of the {:.2} that {prev} x {} give (burst_utilisation {:.0} %): scale up now to {count} ({} more on demand) for {:.0} % utilisation, before the next forecast ({})",
            res.name,
            res.unit,
            load * 100.0,
            prev as f64 * per,
            inst.r#type,
            utilisation * 100.0,
            count - prev,
            target * 100.0,
            self.prices.origin
        ));
    }

    /// `needs` with no value under `hold_margin` x the highest demand of the last `hold_h`
    /// hours of its resource, where that raised any; `None` where it raised none (or the
    /// margin is off). The objective then buys the headroom with the forecast's mix.
    pub(crate) fn held_needs(&self, workload: &str, needs: &[Need]) -> Option<Vec<Need>> {
        let (margin, window) = (self.cfg.hold_margin, self.cfg.hold_h);
        if margin <= 0.0 || window == 0 || !self.reactive() {
            return None;
        }
        let holds = self.holds.get(workload)?;
        let now = self.current.get(workload)?.observed?;
        let least = |need: &Need| {
            // The map of that name for this workload: several may share it by prefix.
            let ri = (self.resources.iter())
                .position(|r| r.name == need.resource && r.applies_to(workload))?;
            Some(holds.get(ri)?.peak(now, window)? * margin)
        };
        let mut raised = false;
        let out = needs
            .iter()
            .map(|need| {
                let mut need = need.clone();
                if let Some(least) = least(&need) {
                    for v in need.values.iter_mut().filter(|v| **v < least) {
                        *v = least;
                        raised = true;
                    }
                }
                need
            })
            .collect();
        raised.then_some(out)
    }

    /// The fewest instances of `best`'s type that hold the demand last observed at `target`
    /// utilisation (the reactive floor's `burst_target`), or with `hold_h` the highest demand
    /// observed in its window, with the resource that sets it.
    pub(crate) fn floor_count(
        &self,
        prev: &Current,
        prev_workload: &str,
        best: &Priced,
        target: f64,
    ) -> Option<FloorCount> {
        if !self.reactive() {
            return None;
        }
        let inst = self.catalog.get(&best.instance_type)?;
        let window = self.cfg.hold_h;
        let held = (self.holds.get(prev_workload))
            .filter(|_| window > 0)
            .zip(prev.observed);
        prev.last_seen
            .iter()
            .enumerate()
            .zip(&self.resources)
            .filter_map(|((ri, seen), res)| {
                let peak = held.and_then(|(h, now)| h.get(ri)?.peak(now, window));
                let v = match (*seen, peak) {
                    (Some(s), Some(p)) => s.max(p),
                    (s, p) => s.or(p)?,
                };
                let cap = inst.capacity(&res.unit)?;
                let own = self.private_of(prev_workload)(&res.unit);
                let per = cap * inst.performance;
                let n = floor_instances(v, own, per, target) as i64;
                let held = peak.is_some_and(|p| p > seen.unwrap_or(f64::NEG_INFINITY));
                let v = v - own * target;
                let what = format!("{} {v:.2} {}", res.name, res.unit);
                Some(FloorCount {
                    count: n,
                    what: match held {
                        true => format!("{what}, the highest of the last {window} h"),
                        false => what,
                    },
                    held,
                })
            })
            .max_by_key(|f| f.count)
    }
}

/// The reactive floor's count for a decision, with the demand that sets it.
pub(crate) struct FloorCount {
    pub count: i64,
    /// The resource and its demand, for the reason.
    pub what: String,
    /// Whether the demand is a peak the floor remembers (`hold_h`), above the last observed.
    pub held: bool,
}

/// Files a step's demand (time, per resource map) in its workload's peak holds over `window`
/// hours.
fn hold(
    holds: &mut HashMap<String, Vec<PeakHold>>,
    window: u32,
    workload: &str,
    (time, values): (i64, &[Option<f64>]),
) {
    let holds = match holds.get_mut(workload) {
        Some(h) => h,
        None => holds.entry(workload.to_string()).or_default(),
    };
    holds.resize_with(values.len().max(holds.len()), Default::default);
    for (h, v) in holds.iter_mut().zip(values) {
        if let Some(v) = v {
            h.observe(time, *v, window);
        }
    }
}
