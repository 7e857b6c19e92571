//! Labelled entities read the way the pipeline reads them: ingest, then normalise, so an
//! evaluation scores exactly what the stages see.

use std::path::{Path, PathBuf};

use wfe_contract::norm::{KeyCache, NormBatch, Slots};
use wfe_contract::schemas::labels;
use wfe_contract::{Context, Error, RecordBatch, Result, Source, Stage, Topic, VecCollector};
use wfe_normalise::{Normalise, NormaliseConfig};

/// One entity's normalised steps.
pub struct Series {
    /// Metric names, in the order of the values in each step.
    pub metrics: Vec<String>,
    pub train: Vec<Vec<f64>>,
    pub test: Vec<Vec<f64>>,
    /// The same steps' values as ingested, before scaling (what the forecast stage forecasts).
    pub raw_train: Vec<Vec<f64>>,
    pub raw_test: Vec<Vec<f64>>,
    /// Per test step: 1 where labelled anomalous.
    pub labels: Vec<u8>,
    /// Steps in time order (train then test), with their times.
    pub times: Vec<i64>,
    /// The times of the `test` steps alone (one per label).
    pub test_times: Vec<i64>,
    /// The step normalise settled on for the entity (ms; 0 before any step).
    pub step_ms: i64,
}

/// The shared data folder: $WFE_DATA, else ../shared/data (the checkout's neighbour).
pub fn shared_data() -> PathBuf {
    std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// The entities (file stems) of a data folder, sorted.
pub fn entities(dir: &Path) -> Result<Vec<String>> {
    let files = wfe_ingest::expand(&[wfe_ingest::SourceConfig::new(dir)])?;
    let mut names: Vec<String> = files
        .iter()
        .map(|(p, _)| wfe_ingest::entity_of(p))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(Error::config(
            "--data",
            format!("{} holds no data files", dir.display()),
        ));
    }
    Ok(names)
}

/// One entity's `metrics.norm` batches, through ingest and normalise.
pub fn normalised(dir: &Path, entity: &str) -> Result<Vec<RecordBatch>> {
    let mut cfg = wfe_ingest::SourceConfig::new(dir);
    cfg.only = vec![entity.to_string()];
    let mut src = wfe_ingest::FileSource::open(&[cfg], false)?;
    let mut stage = Normalise::new(NormaliseConfig::default())?;
    let mut ctx = Context::new("normalise");
    let mut out = VecCollector::new();
    while let Some(b) = src.next_batch(&mut ctx)? {
        stage.process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)?;
    }
    stage.flush(&mut ctx, &mut out)?;
    Ok(out.of(Topic::MetricsNorm))
}

/// Reads one entity through ingest and normalise, with both a train and a test split.
pub fn load(dir: &Path, entity: &str) -> Result<Series> {
    let s = load_batches(entity, normalised(dir, entity)?)?;
    if s.train.is_empty() || s.test.is_empty() {
        return Err(Error::config(
            "--data",
            format!(
                "{entity}: need rows with split=train and split=test, have {} and {}",
                s.train.len(),
                s.test.len()
            ),
        ));
    }
    Ok(s)
}

/// One entity's steps from its `metrics.norm` batches (rows without `split=test` count as
/// train).
pub fn load_batches(entity: &str, batches: Vec<RecordBatch>) -> Result<Series> {
    let _ = entity;
    let mut slots = Slots::default();
    let mut s = Series {
        metrics: Vec::new(),
        train: Vec::new(),
        test: Vec::new(),
        raw_train: Vec::new(),
        raw_test: Vec::new(),
        labels: Vec::new(),
        times: Vec::new(),
        test_times: Vec::new(),
        step_ms: 0,
    };
    let (mut v, mut raw) = (Vec::new(), Vec::new());
    for b in batches {
        let nb = NormBatch::new(&b)?;
        let mut cache = KeyCache::default();
        for step in nb.steps() {
            let map = cache.get(&nb, &step, 0, &mut slots).clone();
            nb.dense(&step, &map, slots.len(), &mut v, &mut raw);
            let l = step.label.unwrap_or("");
            s.times.push(step.time);
            s.step_ms = step.step_ms;
            if labels::get(l, "split") == Some("test") {
                s.test.push(v.clone());
                s.raw_test.push(raw.clone());
                s.labels.push((labels::get(l, "label") == Some("1")) as u8);
                s.test_times.push(step.time);
            } else {
                s.train.push(v.clone());
                s.raw_train.push(raw.clone());
            }
        }
    }
    s.metrics = slots.names.clone();
    Ok(s)
}

/// A labelled anomalous segment with the metrics experts named.
pub struct Interpretation {
    /// Test-step range, end exclusive.
    pub start: usize,
    pub end: usize,
    /// Metric names (`m00` is metric 1).
    pub metrics: Vec<String>,
}

/// Reads `<entity>.interpretation.txt` (`start-end:1,2,...`) if present. Its end is one past
/// the segment in SMD and the last row in ASD: whichever the labels agree with is used.
pub fn interpretation(dir: &Path, entity: &str, labels: &[u8]) -> Result<Vec<Interpretation>> {
    let path: PathBuf = dir.join(format!("{entity}.interpretation.txt"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let mut segs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            Error::config(
                format!("{}:{}", path.display(), i + 1),
                format!("`{line}` is not start-end:m,m,..."),
            )
        };
        let (range, ms) = line.split_once(':').ok_or_else(bad)?;
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let (start, end): (usize, usize) =
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        let metrics = ms
            .split(',')
            .map(|m| {
                m.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&m| m >= 1)
                    .map(|m| format!("m{:02}", m - 1))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        if start > end || start >= labels.len() {
            return Err(bad());
        }
        segs.push(Interpretation {
            start,
            end,
            metrics,
        });
    }
    // Inclusive ends: the step at `end` is labelled anomalous in most segments.
    let inclusive = segs
        .iter()
        .filter(|s| labels.get(s.end) == Some(&1))
        .count()
        * 2
        > segs.len();
    for s in &mut segs {
        if inclusive {
            s.end += 1;
        }
        s.end = s.end.min(labels.len());
    }
    Ok(segs)
}
