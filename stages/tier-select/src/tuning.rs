//! The stage's side of tuning from realised cost ([`crate::tuner`]): an option chosen under
//! every arm at each issuance, and every arm scored on each observed step.

use arrow_array::RecordBatch;
use wfe_contract::{Context, Result};

use crate::config::Arm;
use crate::plan::{self, Choice, Need, Priced, Rules};
use crate::tuner::{ArmPlan, Burst, Learner};
use crate::{Current, TierSelect};

impl TierSelect {
    /// Whether decisions are tuned: `[tuning]` set and `[[resources]]` to observe demand by.
    pub(crate) fn tuned(&self) -> bool {
        self.cfg.tuning.is_some() && !self.resources.is_empty()
    }

    /// The option to decide with and, when tuned, a sentence on the arm: every arm's choice
    /// becomes the counterfactual plan its later steps are scored on, and the learner's arm
    /// decides. `None` when no instance type measures the needs.
    pub(crate) fn tuned_choice(
        &mut self,
        workload: &str,
        at: i64,
        rules: &Rules,
        needs: &[Need],
        prev: &Current,
        ctx: &mut Context,
    ) -> Option<(Choice, Option<String>)> {
        let (Some(cfg), Some(model)) = (self.cfg.tuning.clone(), rules.cost) else {
            return plan::choose(&self.catalog, rules, needs).map(|c| (c, None));
        };
        if !self.tuned() {
            return plan::choose(&self.catalog, rules, needs).map(|c| (c, None));
        }
        // One choice per price: the floor does not move it, only what the fleet meets after.
        let mut choices = Vec::with_capacity(cfg.arms.len());
        for m in &cfg.arms {
            let mut r = rules.clone();
            r.cost = Some(crate::CostModel {
                shortfall_price: model.shortfall_price * m,
                ..model
            });
            choices.push(plan::choose(&self.catalog, &r, needs)?);
        }
        let own = self.own_floor();
        let arms = cfg.arm_list(own);
        let of_arm = |k: usize| k % cfg.arms.len();
        let plans = (arms.iter().enumerate())
            .map(|(k, arm)| self.arm_plan(prev, workload, &choices[of_arm(k)].chosen, arm.floor))
            .collect();
        let learner = (self.tuners)
            .entry(workload.to_string())
            .or_insert_with(|| Learner::new(&cfg, own));
        if !learner.fits(&cfg) {
            *learner = Learner::new(&cfg, own);
        }
        let before = learner.chosen();
        let k = learner.choose(&cfg, own);
        learner.plan(at, plans);
        if k != before {
            ctx.count("tuning.switches", 1);
        }
        let weights = learner.weights(&cfg);
        let hours = learner.hours();
        let with_floors = !cfg.floors.is_empty();
        let name = |a: &Arm| {
            let [u, t] = a.floor;
            if with_floors {
                format!("x{} floor {u}/{t}", a.multiplier)
            } else {
                format!("x{}", a.multiplier)
            }
        };
        ctx.count(
            &format!("tuning.arm.{}", name(&arms[k]).replace(' ', ".")),
            1,
        );
        let note = format!(
            "tuned: shortfall_price {} ({:.4} USD per unit-minute), {} over {:.0} h of realised cost (weights {})",
            name(&arms[k]),
            model.shortfall_price * arms[k].multiplier,
            if hours < cfg.warmup_h {
                "the configured price during the warm-up"
            } else {
                "the arm of least cost"
            },
            hours,
            (arms.iter().zip(&weights))
                .map(|(a, w)| format!("{}: {w:.2}", name(a)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        Some((choices.swap_remove(of_arm(k)), Some(note)))
    }

    /// What `chosen` puts in place, raised to the reactive floor `floor` as the decision
    /// would be: capacity per resource map and USD per hour.
    fn arm_plan(
        &self,
        prev: &Current,
        workload: &str,
        chosen: &Priced,
        floor: [f64; 2],
    ) -> ArmPlan {
        let Some(inst) = self.catalog.get(&chosen.instance_type) else {
            return ArmPlan {
                capacity: vec![None; self.resources.len()],
                cost_per_hour: chosen.cost_per_hour,
                burst: None,
            };
        };
        let mut count = chosen.count;
        let mut cost_per_hour = chosen.cost_per_hour;
        if let Some(n) = self
            .floor_count(prev, workload, chosen, floor[1])
            .map(|f| f.count)
            && n > count
        {
            cost_per_hour += (n - count) as f64 * inst.on_demand_price;
            count = n;
        }
        let private = self.private_of(workload);
        let capacity = (self.resources.iter())
            .map(|r| {
                let c = inst.capacity(&r.unit)?;
                Some(count as f64 * c * inst.performance + private(&r.unit))
            })
            .collect();
        // The floor between issuances, as `observe` applies it to the fleet in place.
        let burst = self.reactive().then(|| Burst {
            per_instance: (self.resources.iter())
                .map(|r| Some(inst.capacity(&r.unit)? * inst.performance))
                .collect(),
            price_per_hour: inst.on_demand_price,
            utilisation: floor[0],
            target: floor[1],
        });
        ArmPlan {
            capacity,
            cost_per_hour,
            burst,
        }
    }

    /// Scores every tuned workload's arms on the steps of one `metrics.norm` batch.
    pub(crate) fn score_arms(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(cfg) = self.cfg.tuning.clone() else {
            return Ok(());
        };
        let price = self.cfg.shortfall_price;
        for step in wfe_domain::resources::resource_steps(&self.resources, batch)? {
            if let Some(l) = self.tuners.get_mut(&step.workload) {
                l.score(&cfg, step.time, &step.values, price);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wfe_contract::{Stage, Topic, VecCollector};
    use wfe_normalise::testing::normalised;

    use crate::tests::{asd_cpu, col, forecasts};
    use crate::{Objective, TierSelectConfig, TuningConfig};

    use super::*;

    /// Expected cost at a price near an instance's own per vCPU-minute (so the arms choose
    /// apart), tuned after two hours, over ASD's CPU (m00 x 32 vCPU).
    fn tuned_stage() -> TierSelect {
        let cfg = TierSelectConfig {
            objective: Objective::ExpectedCost,
            shortfall_price: 0.0005,
            max_spot_share: 1.0,
            tuning: Some(TuningConfig {
                warmup_h: 2.0,
                ..TuningConfig::default()
            }),
            ..Default::default()
        };
        TierSelect::new(cfg)
            .unwrap()
            .with_resources(vec![asd_cpu()])
    }

    /// omi-5's steps, each batch followed by a forecast issued at its last step: far above
    /// what the server uses (p10 / p50 / p90 of 10 / 30 / 100 vCPU).
    fn run(st: &mut TierSelect, norm: &[RecordBatch], ctx: &mut Context) -> VecCollector {
        let mut out = VecCollector::new();
        for b in norm {
            st.process_batch(Topic::MetricsNorm, b.clone(), ctx, &mut out)
                .unwrap();
            let steps = wfe_domain::resources::resource_steps(&st.resources, b).unwrap();
            let Some(last) = steps.iter().map(|s| s.time).max() else {
                continue;
            };
            let f = forecasts(&[(
                "omi-5",
                last / 1000,
                "cpu",
                "vcpu",
                3600,
                [10.0, 30.0, 100.0],
            )]);
            st.process_batch(Topic::Forecasts, f, ctx, &mut out)
                .unwrap();
        }
        out
    }

    #[test]
    fn a_workload_whose_forecasts_run_high_moves_to_a_cheaper_arm_and_says_so() {
        let mut st = tuned_stage();
        assert_eq!(st.inputs(), [Topic::Forecasts, Topic::MetricsNorm]);
        let norm = normalised("asd", &["omi-5"], 8);
        let mut ctx = Context::new("tier-select");
        let out = run(&mut st, &norm, &mut ctx);
        let reasons = col(&out, "reason");
        assert!(reasons.len() >= 3, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .all(|r| r.starts_with("tuned: shortfall_price x")),
            "{reasons:?}"
        );
        assert!(
            reasons[0].contains("x1 (0.0005 USD per unit-minute)"),
            "{}",
            reasons[0]
        );
        let l = &st.tuners["omi-5"];
        assert!(l.hours() > 2.0, "{} h scored", l.hours());
        // Capacity the server never used cost every larger arm more: a cheaper arm decides.
        let cfg = st.cfg.tuning.clone().unwrap();
        assert!(cfg.arms[l.chosen()] < 1.0, "{:?}", l.costs());
        let last = reasons.last().unwrap();
        assert!(last.contains("the arm of least cost"), "{last}");
        // Less capacity bought: c7i.8xlarge (32 vCPU) at the configured price, m7i.xlarge
        // (4 vCPU) once the cheaper arm decides.
        let cost: Vec<f64> = (col(&out, "expected_cost_per_hour").iter())
            .map(|c| c.parse().unwrap())
            .collect();
        assert!(cost.last() < cost.first(), "{cost:?}");
        assert!(ctx.counters()["tuning.switches"] >= 1);
        let arms: u64 = (ctx.counters().iter())
            .filter(|(k, _)| k.starts_with("tuning.arm."))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(arms, reasons.len() as u64);
    }

    /// The learners are in the stage's snapshot: a stage restored half-way decides what the
    /// one that never stopped decides.
    #[test]
    fn a_restored_stage_decides_as_the_one_that_never_stopped() {
        let norm = normalised("asd", &["omi-5"], 8);
        let (first, second) = norm.split_at(norm.len() / 2);
        let mut ctx = Context::new("tier-select");
        let mut st = tuned_stage();
        run(&mut st, first, &mut ctx);
        let split = st.snapshot_split().unwrap().unwrap();
        assert!(
            split.entries().keys().any(|k| k.starts_with("tuning.v2/")),
            "{:?}",
            split.entries().keys()
        );
        let mut restored = tuned_stage();
        wfe_contract::state::restore(&mut restored, split).unwrap();
        assert_eq!(restored.tuners, st.tuners);
        let a = run(&mut st, second, &mut ctx);
        let b = run(&mut restored, second, &mut ctx);
        assert!(a.rows(Topic::Decisions) > 0);
        for c in ["count", "spot_count", "instance_type", "reason"] {
            assert_eq!(col(&a, c), col(&b, c), "{c}");
        }
    }

    /// With `floors`, each workload's floor is its arm's: a learner held at the arm of the
    /// lowest floor bursts where the job's own floor would not, and says so.
    #[test]
    fn a_workload_s_reactive_floor_is_its_arm_s() {
        let floors = vec![[0.05, 0.04], [0.8, 0.7]];
        let stage = |arm: Option<usize>| {
            let cfg = TierSelectConfig {
                burst_utilisation: 0.8,
                burst_target: 0.7,
                tuning: Some(TuningConfig {
                    floors: floors.clone(),
                    warmup_h: 0.0,
                    ..TuningConfig::default()
                }),
                ..tuned_stage().cfg
            };
            let mut st = TierSelect::new(cfg)
                .unwrap()
                .with_resources(vec![asd_cpu()]);
            let cfg = st.cfg.tuning.clone().unwrap();
            let own = st.own_floor();
            assert_eq!(own, [0.8, 0.7]);
            assert_eq!(cfg.arm_list(own).len(), 2 * cfg.arms.len());
            // Starts at x1 at the job's own floor, the second of the list.
            let neutral = cfg.neutral_arm(own);
            assert_eq!(cfg.arm_list(own)[neutral].floor, [0.8, 0.7]);
            assert_eq!(cfg.arm_list(own)[neutral].multiplier, 1.0);
            if let Some(k) = arm {
                assert_eq!(cfg.floor_of_arm(k, own), [0.05, 0.04]);
                // A learner of zero costs held at arm k (nothing is cheaper by SWITCH).
                let mut l = serde_json::to_value(Learner::new(&cfg, own)).unwrap();
                l["chosen"] = serde_json::json!(k);
                st.tuners
                    .insert("omi-5".into(), serde_json::from_value(l).unwrap());
            }
            st
        };
        let norm = normalised("asd", &["omi-5"], 4);
        let bursts = |st: &mut TierSelect| {
            let out = run(st, &norm, &mut Context::new("tier-select"));
            let reasons = col(&out, "reason");
            (reasons.into_iter())
                .filter(|r| r.starts_with("reactive floor"))
                .collect::<Vec<_>>()
        };
        // omi-5 uses a few of the ~100 vCPU its forecasts buy: under 80 %, over 5 %.
        assert!(bursts(&mut stage(None)).is_empty());
        let low = bursts(&mut stage(Some(2)));
        assert!(!low.is_empty());
        assert!(
            low.iter().all(|r| r.contains("(burst_utilisation 5 %)")),
            "{low:?}"
        );
    }

    #[test]
    fn tuning_is_checked_against_its_objective_and_arms() {
        let tuning = Some(TuningConfig::default());
        let risk = TierSelectConfig {
            tuning: tuning.clone(),
            ..Default::default()
        };
        let e = TierSelect::new(risk).err().unwrap().to_string();
        assert!(
            e.contains("stages.tier-select.tuning") && e.contains("expected-cost"),
            "{e}"
        );
        for arms in [vec![], vec![0.5, 2.0], vec![2.0, 1.0], vec![1.0, f64::NAN]] {
            let cfg = TierSelectConfig {
                objective: Objective::ExpectedCost,
                tuning: Some(TuningConfig {
                    arms: arms.clone(),
                    ..TuningConfig::default()
                }),
                ..Default::default()
            };
            let e = TierSelect::new(cfg).err().unwrap().to_string();
            assert!(e.contains("tuning.arms"), "{arms:?}: {e}");
        }
        // Floors: valid pairs, the job's own among them, the floor on.
        let with_floors = |floors: Vec<[f64; 2]>, burst: f64| TierSelectConfig {
            objective: Objective::ExpectedCost,
            burst_utilisation: burst,
            tuning: Some(TuningConfig {
                floors,
                ..TuningConfig::default()
            }),
            ..Default::default()
        };
        let own = [0.8, 0.7];
        for (floors, burst, key) in [
            (vec![[0.5, 0.6], own], 0.8, "tuning.floors"),
            (vec![[0.5, 0.4], [1.2, 0.9], own], 0.8, "tuning.floors"),
            (vec![[0.5, 0.4]], 0.8, "tuning.floors"),
            (vec![own], 0.0, "tuning.floors"),
        ] {
            let mut cfg = with_floors(floors.clone(), burst);
            cfg.burst_target = 0.7;
            let e = TierSelect::new(cfg).err().unwrap().to_string();
            assert!(e.contains(key), "{floors:?}: {e}");
        }
        let mut ok = with_floors(vec![[0.5, 0.4], own], 0.8);
        ok.burst_target = 0.7;
        assert!(TierSelect::new(ok).is_ok());
        // Without resources to observe demand by, nothing is tuned (forecasts only).
        let cfg = TierSelectConfig {
            objective: Objective::ExpectedCost,
            tuning,
            ..Default::default()
        };
        let st = TierSelect::new(cfg).unwrap();
        assert_eq!(st.inputs(), [Topic::Forecasts]);
    }
}
