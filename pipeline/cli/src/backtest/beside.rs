//! What reactive scaling would have done beside what wfe did, for one workload of a run (the
//! API's `/api/v1/workloads/W/reactive`, the UI's "beside reactive" card).
//!
//! Over the window the API keeps of the workload's actual demand, wfe's decisions and the
//! HPA baseline of `wfe backtest` ([`super::policies::reactive`]) both go through the
//! backtest's simulation ([`super::sim::simulate`]): the same start delay, prices and seeded
//! spot interruptions, so the two figures compare as the backtest's do. The decision in force
//! when the window begins is taken as in place then (the API keeps the newest 500 decisions;
//! older than those, the oldest kept stands in).

use std::collections::BTreeMap;

use serde::Serialize;
use wfe_contract::{Error, Result};
use wfe_domain::ResourceMap;
use wfe_http::api::WorkloadView;
use wfe_tier_select::Catalog;

use super::policies::{plan_of, reactive};
use super::sim::simulate;
use super::{BacktestConfig, Demand, Figures};

/// The two policies over one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Beside {
    pub workload: String,
    /// The window: first and last step (ms), steps, and the resources priced.
    pub from: i64,
    pub to: i64,
    pub steps: usize,
    pub resources: Vec<String>,
    pub wfe: Figures,
    pub reactive: Figures,
}

/// The workload's actual demand as the backtest reads it: the job's resources that have
/// actual points, at the times every one of them has a point.
pub fn demand_of(workload: &str, view: &WorkloadView, maps: &[ResourceMap]) -> Result<Demand> {
    let series: Vec<(&ResourceMap, BTreeMap<i64, f64>)> = maps
        .iter()
        .filter_map(|m| {
            let r = view.resources.get(&m.name)?;
            let points: BTreeMap<i64, f64> = r.actual.iter().copied().collect();
            (!points.is_empty()).then_some((m, points))
        })
        .collect();
    let Some((_, first)) = series.first() else {
        return Err(Error::bad_input(
            workload.to_string(),
            "no actual demand kept yet for any of the job's resources",
        ));
    };
    let (mut times, mut values) = (Vec::new(), Vec::new());
    for &t in first.keys() {
        let row: Option<Vec<f64>> = series.iter().map(|(_, p)| p.get(&t).copied()).collect();
        if let Some(row) = row {
            times.push(t);
            values.push(row);
        }
    }
    if times.is_empty() {
        return Err(Error::bad_input(
            workload.to_string(),
            "no time at which every resource has an actual point",
        ));
    }
    // The step: the smallest gap between kept points (a window with one point: a minute).
    let step_ms = super::step_of(&times);
    Ok(Demand {
        entity: workload.to_string(),
        resources: (series.iter())
            .map(|(m, _)| (m.name.clone(), m.unit.clone()))
            .collect(),
        times,
        step_ms,
        values,
        train: Vec::new(),
        train_times: Vec::new(),
    })
}

/// wfe's decisions and the reactive baseline over the workload's kept demand.
pub fn beside(
    workload: &str,
    view: &WorkloadView,
    maps: &[ResourceMap],
    catalog: &Catalog,
    cfg: &BacktestConfig,
) -> Result<Beside> {
    let d = demand_of(workload, view, maps)?;
    let decisions = (view.decisions.iter())
        .map(|x| (x.decided_at, x.instance_type.clone(), x.count, x.spot_count));
    let wfe = simulate(&d, catalog, cfg, &plan_of(&d, catalog, decisions)?)?;
    let reactive = simulate(&d, catalog, cfg, &reactive(&d, catalog, cfg)?)?;
    Ok(Beside {
        workload: workload.to_string(),
        from: d.times[0],
        to: *d.times.last().unwrap_or(&d.times[0]),
        steps: d.times.len(),
        resources: d.resources.iter().map(|(n, _)| n.clone()).collect(),
        wfe,
        reactive,
    })
}

#[cfg(test)]
mod tests {
    use wfe_http::api::{DecisionView, ResourceView, WorkloadView};
    use wfe_tier_select::{TierSelect, TierSelectConfig};

    use super::*;

    const STEP: i64 = 300_000;

    fn cpu() -> ResourceMap {
        ResourceMap {
            name: "cpu".into(),
            metrics: vec!["m00".into()],
            unit: "vcpu".into(),
            capacity: 64.0,
            workload_prefix: None,
        }
    }

    /// Ten hours of `vcpu` demand a step, and one decision at the start for `count` of `ty`.
    fn view(vcpu: f64, ty: &str, count: i64) -> WorkloadView {
        let mut v = WorkloadView::default();
        let actual = (0..120).map(|k| (k * STEP, vcpu)).collect();
        v.resources.insert(
            "cpu".into(),
            ResourceView {
                unit: "vcpu".into(),
                actual,
                forecasts: BTreeMap::new(),
            },
        );
        v.decisions = std::iter::once(DecisionView {
            decision_id: "d".into(),
            decided_at: 0,
            tier: "on-demand".into(),
            instance_type: ty.into(),
            count,
            previous_count: 0,
            spot_count: 0,
            expected_cost_per_hour: 0.0,
            risk: 0.0,
            driver_resource: "cpu".into(),
            driver_quantile: 0.9,
            driver_horizon_s: 3600,
            required: vcpu,
            reason: String::new(),
            cost_to_date: 0.0,
        })
        .collect();
        v
    }

    fn catalog() -> Catalog {
        TierSelect::new(TierSelectConfig::default())
            .unwrap()
            .catalog()
            .clone()
    }

    #[test]
    fn both_policies_are_priced_over_the_same_window_by_hand() {
        let catalog = catalog();
        let cfg = BacktestConfig::default();
        let base = &catalog.instance[super::super::policies::baseline(&catalog, &cfg).unwrap()];
        let per = base.capacity("vcpu").unwrap() * base.performance;
        // Demand of 2.5 instances at full use: reactive holds what its target utilisation
        // asks for, wfe (one decision of 3 of the baseline type) holds 3.
        let demand = 2.5 * per;
        let b = beside(
            "w",
            &view(demand, &base.r#type, 3),
            &[cpu()],
            &catalog,
            &cfg,
        )
        .unwrap();
        assert_eq!((b.from, b.to, b.steps), (0, 119 * STEP, 120));
        assert_eq!(b.resources, vec!["cpu".to_string()]);
        let hours = 120.0 * STEP as f64 / 3.6e6;
        let want = |n: f64| n * base.on_demand_price * hours;
        assert!((b.wfe.cost - want(3.0)).abs() < 1e-6, "{:?}", b.wfe);
        assert_eq!(b.wfe.underprovisioned_minutes, 0.0);
        let n = (demand / (per * cfg.target_utilisation) - 1e-9).ceil();
        assert!(
            (b.reactive.cost - want(n)).abs() < 1e-6,
            "{n}: {:?}",
            b.reactive
        );
        // Two instances for 2.5 of demand: short at every step.
        let short = beside(
            "w",
            &view(demand, &base.r#type, 2),
            &[cpu()],
            &catalog,
            &cfg,
        )
        .unwrap();
        assert_eq!(short.wfe.underprovisioned_minutes, 120.0 * 5.0);
    }

    #[test]
    fn a_workload_without_demand_or_decisions_says_why() {
        let catalog = catalog();
        let cfg = BacktestConfig::default();
        let empty = WorkloadView::default();
        let e = beside("w", &empty, &[cpu()], &catalog, &cfg).unwrap_err();
        assert!(e.to_string().contains("no actual demand"), "{e}");
        let mut none = view(1.0, "m5.large", 1);
        none.decisions = Default::default();
        let e = beside("w", &none, &[cpu()], &catalog, &cfg).unwrap_err();
        assert!(e.to_string().contains("made no decision"), "{e}");
    }
}
