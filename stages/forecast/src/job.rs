//! A forecast due (a job, with the history and the models' standing it reads) and what each
//! workload's step reads and reports while errors are filed.

use wfe_domain::ResourceMap;
use wfe_domain::spans::{AnomalySpans, covered};

use crate::config::ForecastConfig;

/// What every workload's step reads: the settings, the flagged spans, a scratch buffer, and
/// the count of errors masked.
pub(crate) struct Env<'a> {
    pub(crate) cfg: &'a ForecastConfig,
    pub(crate) resources: &'a [ResourceMap],
    pub(crate) spans: &'a AnomalySpans,
    pub(crate) scratch: &'a mut Vec<f64>,
    pub(crate) masked: u64,
    /// The fitted models' forecasts resolved in this batch.
    pub(crate) resolved: Vec<Resolved>,
    /// The workload whose spans were looked up last, and its spans: a step files several
    /// errors of one workload, and hashing its name for each was a tenth of the stage.
    pub(crate) flagged: (String, &'a [(i64, i64)]),
}

impl<'a> Env<'a> {
    /// What every step reads, with nothing filed yet.
    pub(crate) fn new(
        cfg: &'a ForecastConfig,
        resources: &'a [ResourceMap],
        spans: &'a AnomalySpans,
        scratch: &'a mut Vec<f64>,
    ) -> Self {
        Self {
            cfg,
            resources,
            spans,
            scratch,
            masked: 0,
            resolved: Vec::new(),
            flagged: (String::new(), &[]),
        }
    }

    /// An error at `t` from a forecast made at `origin`, or missing when either is flagged.
    pub(crate) fn error(&mut self, name: &str, t: i64, origin: i64, e: f64) -> f64 {
        if !self.cfg.mask_anomalies {
            return e;
        }
        if self.flagged.0 != name {
            self.flagged.0.clear();
            self.flagged.0.push_str(name);
            self.flagged.1 = self.spans.of(name);
        }
        let spans = self.flagged.1;
        if covered(spans, t) || covered(spans, origin) {
            self.masked += 1;
            return f64::NAN;
        }
        e
    }
}

/// A fitted model's forecast whose actual arrived: its absolute error and persistence's over
/// the same span, both over the resource's capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved {
    pub(crate) model: usize,
    pub(crate) horizon: usize,
    pub(crate) error: f64,
    pub(crate) persistence: f64,
    pub(crate) step_ms: i64,
}

/// A forecast due: one resource of one workload at one time, with the history it reads.
pub(crate) struct Job {
    pub(crate) workload: usize,
    pub(crate) resource: usize,
    pub(crate) time: i64,
    pub(crate) step_ms: i64,
    /// Gap-filled later; oldest first, ending at `time`.
    pub(crate) history: Vec<f64>,
    /// The models' errors as they stood at `time`, per horizon.
    pub(crate) standing: Vec<Standing>,
}

/// What a series' errors said of each model at one horizon when a forecast was due: the
/// batch goes on before its jobs run, and later errors must not leak into them.
pub(crate) struct Standing {
    /// Persistence and seasonal naive, when they can be judged: (errors, MAE, calibrated
    /// values).
    pub(crate) persistence: Option<(usize, f64, Vec<f64>)>,
    pub(crate) seasonal: Option<(usize, f64, Vec<f64>)>,
    /// Whether the history reaches a season back from the target.
    pub(crate) seasonal_runs: bool,
}

/// A fitted model's forecast at one origin: the point and the configured levels, per horizon.
#[derive(Clone)]
pub(crate) struct Made {
    pub(crate) points: Vec<f64>,
    pub(crate) levels: Vec<Vec<f64>>,
}

impl Made {
    pub(crate) fn flat(points: Vec<f64>, n_levels: usize) -> Self {
        let levels = points.iter().map(|&p| vec![p; n_levels]).collect();
        Self { points, levels }
    }
}

/// What a job takes from the gradient-boosted model, made before the jobs spread over
/// threads: this forecast, the forecasts at the cross-validation origins (for the job that
/// validates its series), the version, and whether a model folder is set but has nothing
/// usable for the job's step.
#[derive(Default)]
pub(crate) struct FromGbm {
    pub(crate) now: Option<Made>,
    pub(crate) cv: Option<Vec<Option<Made>>>,
    pub(crate) version: Option<u64>,
    pub(crate) missing: bool,
}
