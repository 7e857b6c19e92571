//! A stage restored from a changelog's entries when a workload's paired errors are held
//! wholly in runs (a multiple of [`crate::runs::RUN`] of them, none waiting): the workload's
//! `pairs/` entry is still written, for the runs to be put back into.

use super::*;
use crate::paired::Paired;
use crate::series::{Workload, new_series};

#[test]
fn paired_errors_held_wholly_in_runs_come_back() {
    let cfg = ForecastConfig::default();
    let mut stage = Forecast::new(cfg.clone(), cpu()).unwrap();
    let mut wk = Workload {
        series: vec![new_series(&cfg, 300_000)],
        ..Default::default()
    };
    let mut paired = Paired::new(&cfg);
    for t in 0..crate::runs::RUN as i64 {
        paired.persistence.push(t, t as f64 / 10.0);
    }
    wk.series[0].paired = vec![paired];
    stage.workloads = Keyed::from_items(vec![("machine-1-1".into(), wk)]);
    let split = stage.snapshot_split().unwrap().unwrap();
    assert!(split.entries().contains_key("pairs/machine-1-1"));
    let mut back = Forecast::new(cfg, cpu()).unwrap();
    back.restore_split(split).unwrap();
    let ring = &back.workloads.items[0].series[0].paired[0].persistence;
    // Errors are held in single precision.
    let want: Vec<f32> = (0..crate::runs::RUN).map(|t| t as f32 / 10.0).collect();
    assert_eq!(ring.values.iter().copied().collect::<Vec<_>>(), want);
}
