//! Each step of a workload's resources: errors of forecasts whose actual came filed, the
//! models' standing read, and a job filed when a forecast is due.

use crate::config::ForecastConfig;
use crate::job::{Env, Job, Resolved, Standing};
use crate::models::Model;
use crate::paired;
use crate::ring::Errors;
use crate::series::{Pending, Series, Workload, history_len, new_series, steps_of, unused_series};

/// The standing of every model of a series at each horizon, now.
pub(crate) fn standing(
    cfg: &ForecastConfig,
    s: &mut Series,
    horizons: &[usize],
    season: usize,
    scratch: &mut Vec<f64>,
) -> Vec<Standing> {
    let last = s.history.ago(0).unwrap_or(f64::NAN);
    horizons
        .iter()
        .enumerate()
        .map(|(hi, &h)| {
            let seasonal_point = (h <= season).then(|| s.history.ago(season - h)).flatten();
            let judged = |ring: &mut Errors, point: f64, scratch: &mut Vec<f64>| {
                (ring.finite >= cfg.min_residuals).then(|| {
                    let v = ring
                        .quantiles(cfg, scratch)
                        .iter()
                        .map(|e| (point + e).max(0.0))
                        .collect();
                    (ring.finite, ring.mae(), v)
                })
            };
            let persistence = cfg
                .models
                .contains(&Model::Persistence)
                .then(|| judged(&mut s.err_persist[hi], last, scratch))
                .flatten();
            let seasonal = match seasonal_point {
                Some(p) if cfg.models.contains(&Model::SeasonalNaive) => {
                    judged(&mut s.err_seasonal[hi], p, scratch)
                }
                _ => None,
            };
            Standing {
                persistence,
                seasonal,
                seasonal_runs: seasonal_point.is_some(),
            }
        })
        .collect()
}

/// Per fitted model, at horizon `hi`, from its errors filed for targets up to `until` (so
/// the result does not depend on how the input was cut into batches): errors held, MAE,
/// and each level's error quantile.
pub(crate) fn fitted_standing(
    cfg: &ForecastConfig,
    s: &Series,
    hi: usize,
    until: i64,
    scratch: &mut Vec<f64>,
) -> Vec<(usize, f64, Vec<Option<f64>>)> {
    s.tracks
        .iter()
        .map(|t| {
            let t = &t[hi];
            let (n, mae) = t.point.stats_until(until);
            let offsets = cfg
                .quantiles
                .iter()
                .zip(&t.levels)
                .map(|(&l, ring)| ring.level_offset_until(l, until, cfg, scratch))
                .collect();
            (n, mae, offsets)
        })
        .collect()
}

/// Adds one step of a workload's resource values and, when a forecast is due, files a job.
#[allow(clippy::too_many_arguments)]
pub(crate) fn observe(
    env: &mut Env<'_>,
    wk: &mut Workload,
    id: usize,
    name: &str,
    time: i64,
    step_ms: i64,
    raw: &[f64],
    jobs: &mut Vec<Job>,
) {
    let (cfg, resources) = (env.cfg, env.resources);
    let season = steps_of(cfg.season_s, step_ms);
    if wk.series.is_empty() || wk.step_ms != step_ms {
        wk.horizons = cfg
            .horizons_s
            .iter()
            .map(|h| steps_of(*h, step_ms))
            .collect();
        wk.applies = resources.iter().map(|r| r.applies_to(name)).collect();
        wk.series = (wk.applies.iter())
            .map(|&a| match a {
                true => new_series(cfg, step_ms),
                false => unused_series(),
            })
            .collect();
        wk.step_ms = step_ms;
    }
    if wk.res_slots.len() != resources.len() || wk.res_slots_at != wk.slots.len() {
        // Resolve each resource's metrics to slots again only when new metrics appeared.
        wk.res_slots = resources
            .iter()
            .map(|r| {
                r.metrics
                    .iter()
                    .filter_map(|m| wk.slots.names.iter().position(|n| n == m))
                    .collect()
            })
            .collect();
        wk.res_slots_at = wk.slots.len();
    }
    for (ri, res) in resources.iter().enumerate() {
        if !wk.applies[ri] {
            continue;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for &slot in &wk.res_slots[ri] {
            if let Some(v) = raw.get(slot).copied().filter(|v| v.is_finite()) {
                sum += v;
                n += 1;
            }
        }
        let y = if n == 0 {
            f64::NAN
        } else {
            sum / n as f64 * res.capacity
        };
        let s = &mut wk.series[ri];
        if s.is_unused() {
            // A state that says the resource applies but holds no rings for it (written
            // damaged, or by a config whose prefixes differed) starts the series afresh.
            *s = new_series(cfg, step_ms);
        }
        if let Some((t, v)) = s.history.push(time, y)
            && s.hold_from.is_some_and(|from| t >= from)
        {
            s.spill.push((t, v));
        }
        if y.is_finite() {
            let ago = |k: usize| time - k as i64 * step_ms;
            for (hi, &h) in wk.horizons.iter().enumerate() {
                if let Some(p) = s.history.ago(h) {
                    let e = env.error(name, time, ago(h), y - p);
                    s.err_persist[hi].push(time, e);
                }
                if h <= season
                    && let Some(p) = s.history.ago(season)
                {
                    let e = env.error(name, time, ago(season), y - p);
                    s.err_seasonal[hi].push(time, e);
                }
            }
        }
    }
    resolve_pending(env, wk, name, time);
    let every = cfg.every_s as i64 * 1000;
    let due =
        wk.last_issue.is_none_or(|last| time - last >= every) && time.rem_euclid(every) < step_ms;
    if !due {
        return;
    }
    wk.last_issue = Some(time);
    let keep = history_len(cfg, step_ms);
    for (ri, _) in resources.iter().enumerate() {
        if !wk.applies[ri] || wk.series[ri].history.ago(0).is_none() {
            continue;
        }
        let s = &wk.series[ri];
        // The cross-validation reads the whole held history once; later forecasts the latest.
        let take = if s.validated {
            keep
        } else {
            s.history.values.len()
        };
        let from = s.history.values.len().saturating_sub(take);
        let hist: Vec<f64> = s.history.values.range(from..).copied().collect();
        let standing = standing(cfg, &mut wk.series[ri], &wk.horizons, season, env.scratch);
        wk.series[ri].hold_from.get_or_insert(time);
        jobs.push(Job {
            workload: id,
            resource: ri,
            time,
            step_ms,
            history: hist,
            standing,
        });
    }
}

/// Files the errors of fitted models' forecasts whose target time has come.
pub(crate) fn resolve_pending(env: &mut Env<'_>, wk: &mut Workload, name: &str, time: i64) {
    let step_ms = wk.step_ms;
    for (ri, s) in wk.series.iter_mut().enumerate() {
        let cap = env.resources.get(ri).map_or(1.0, |r| r.capacity);
        resolve_series(env, s, name, time, cap, step_ms);
    }
}

/// [`resolve_pending`] for one series.
pub(crate) fn resolve_series(
    env: &mut Env<'_>,
    s: &mut Series,
    name: &str,
    time: i64,
    cap: f64,
    step_ms: i64,
) {
    let spilled = |t: i64| {
        s.spill
            .iter()
            .find(|x| x.0 == t)
            .map(|x| x.1)
            .filter(|v| v.is_finite())
    };
    let value_at = |t: i64| s.history.at(t).or_else(|| spilled(t));
    paired::resolve(env, &mut s.paired, name, time, value_at);
    if s.pending.iter().all(|p| p.target > time) {
        return;
    }
    let (due, wait): (Vec<Pending>, Vec<Pending>) =
        s.pending.drain(..).partition(|p| p.target <= time);
    s.pending = wait;
    for p in due {
        let Some(actual) = value_at(p.target) else {
            continue;
        };
        let e = env.error(name, p.target, p.origin, actual - p.point);
        let t = &mut s.tracks[p.model][p.horizon];
        t.point.push(p.target, e);
        for (ring, v) in t.levels.iter_mut().zip(&p.values) {
            let e = if e.is_finite() { actual - v } else { f64::NAN };
            ring.push(p.target, e);
        }
        // Persistence's error over the same span: the yardstick the drift check divides by.
        let at_origin = value_at(p.origin);
        if e.is_finite()
            && let Some(o) = at_origin
        {
            env.resolved.push(Resolved {
                model: p.model,
                horizon: p.horizon,
                error: (actual - p.point).abs() / cap,
                persistence: (actual - o).abs() / cap,
                step_ms,
            });
        }
    }
}
