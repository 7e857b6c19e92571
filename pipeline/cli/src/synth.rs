//! `wfe synth`: a synthetic fleet built from the real shared series, for measuring wfe at
//! fleet scale (`wfe bench --fleet`, the Kafka load test at 1,000 workloads).
//!
//! Each synthetic workload copies one ASD server's metrics (the shapes of a real service:
//! daily pattern, bursts, the labelled incidents), shifted in time by a random offset (read
//! circularly, so workloads do not peak together), scaled by a random factor, and noised;
//! values stay in [0, 1] as the shared sets are. The file is one Parquet file of `metrics.raw`
//! rows in event-time order (all workloads' samples of one step, then the next), which is how
//! a fleet's metrics arrive and what ingest reads with one reader thread.
//!
//! Names keep the base server's prefix (`omi-7-f00042` copies `omi-7`), so the default job's
//! `omi-` resource map (m00 = CPU of 32 vCPU) sizes them. The same seed writes the same file.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use wfe_contract::{Error, Result};
use wfe_domain::stats::SplitMix;
use wfe_ingest::RawBuilder;

/// Rows per written batch (and Parquet row group page unit).
const BATCH_ROWS: usize = 64 * 1024;

#[derive(clap::Args, Clone, Debug)]
pub struct SynthArgs {
    /// Workloads in the fleet.
    #[arg(long, default_value_t = 1000)]
    pub workloads: usize,
    /// Days of event time (at the ASD step, 300 s).
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Metrics per workload: the first N of the ASD set's 19 (m00 is what the default job
    /// maps to CPU).
    #[arg(long, default_value_t = 3)]
    pub metrics: usize,
    /// Seed of the offsets, scales and noise.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The shared ASD folder the shapes come from (default: $WFE_DATA/asd, else
    /// ../shared/data/asd).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The Parquet file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// The real servers a fleet copies, with their time base.
pub struct Shapes {
    shapes: Vec<Shape>,
    /// First step's time and the step, in milliseconds.
    start: i64,
    step_ms: i64,
}

impl Shapes {
    /// Every entity of the ASD folder (`data`, else $WFE_DATA/asd, else ../shared/data/asd)
    /// with its first `metrics` metrics.
    pub fn load(data: Option<&Path>, metrics: usize) -> Result<Self> {
        if metrics == 0 {
            return Err(Error::config("--metrics", "must be above 0"));
        }
        let (shapes, start, step_ms) = shapes(&asd_dir(data), metrics)?;
        Ok(Self {
            shapes,
            start,
            step_ms,
        })
    }

    /// Steps of the fleet in a day.
    pub fn steps_per_day(&self) -> usize {
        (86_400_000 / self.step_ms.max(1)) as usize
    }
}

/// One real server's raw values, step by step.
struct Shape {
    name: String,
    /// Per step, the first `metrics` values (NaN where the step has none).
    steps: Vec<Vec<f64>>,
    metrics: Vec<String>,
}

/// One synthetic workload: which shape, where it starts reading, how it is scaled and noised.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    name: String,
    shape: usize,
    offset: usize,
    scale: f64,
    noise: f64,
}

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub rows: u64,
    pub steps: usize,
    pub bytes: u64,
}

/// The ASD folder: `--data`, else $WFE_DATA/asd, else ../shared/data/asd.
fn asd_dir(data: Option<&Path>) -> PathBuf {
    match data {
        Some(d) => d.to_path_buf(),
        None => crate::eval::data::shared_data().join("asd"),
    }
}

/// Every entity of `dir` through ingest and normalise (as the pipeline reads it), train and
/// test splits joined, the first `metrics` metrics kept.
fn shapes(dir: &Path, metrics: usize) -> Result<(Vec<Shape>, i64, i64)> {
    let mut out = Vec::new();
    let (mut start, mut step) = (i64::MAX, 0);
    for entity in crate::eval::data::entities(dir)? {
        let s = crate::eval::data::load(dir, &entity)?;
        if s.metrics.len() < metrics || s.times.len() < 2 {
            return Err(Error::config(
                "--metrics",
                format!(
                    "{entity} has {} metrics and {} steps; the fleet asks for {metrics} metrics",
                    s.metrics.len(),
                    s.times.len()
                ),
            ));
        }
        start = start.min(s.times[0]);
        step = s.times[1] - s.times[0];
        let steps = s
            .raw_train
            .into_iter()
            .chain(s.raw_test)
            .map(|mut v| {
                v.truncate(metrics);
                v
            })
            .collect();
        out.push(Shape {
            name: entity,
            steps,
            metrics: s.metrics[..metrics].to_vec(),
        });
    }
    Ok((out, start, step))
}

/// The fleet's members, drawn from `seed`.
fn members(shapes: &[Shape], n: usize, seed: u64) -> Vec<Member> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|i| {
            let shape = rng.below(shapes.len());
            Member {
                name: format!("{}-f{i:05}", shapes[shape].name),
                shape,
                offset: rng.below(shapes[shape].steps.len()),
                scale: 0.6 + 0.8 * rng.unit(),
                noise: 0.005 + 0.02 * rng.unit(),
            }
        })
        .collect()
}

/// A member's value of metric `m` at step `t`: the shape read circularly from its offset,
/// scaled, noised, kept in [0, 1]; `None` where the shape has no value.
fn value(member: &Member, shape: &Shape, t: usize, m: usize, rng: &mut SplitMix) -> Option<f64> {
    let v = shape.steps[(member.offset + t) % shape.steps.len()][m];
    if !v.is_finite() {
        return None;
    }
    let noise = (rng.unit() * 2.0 - 1.0) * member.noise;
    Some((v * member.scale + noise).clamp(0.0, 1.0))
}

/// Writes the fleet of `args` (its shapes already loaded with `args.metrics` metrics) and
/// says how much.
pub fn write(all: &Shapes, args: &SynthArgs) -> Result<Written> {
    if args.workloads == 0 || !args.days.is_finite() || args.days <= 0.0 {
        return Err(Error::config(
            "wfe synth",
            "--workloads and --days must be above 0 (and --days finite)",
        ));
    }
    let (shapes, start, step_ms) = (&all.shapes, all.start, all.step_ms);
    let steps = ((args.days * 86_400_000.0) / step_ms as f64)
        .round()
        .max(1.0) as usize;
    let fleet = members(shapes, args.workloads, args.seed);
    let at = args.out.display().to_string();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    let tmp = args.out.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let schema = wfe_contract::Topic::MetricsRaw.schema();
    let bad = |e: parquet::errors::ParquetError| Error::io(at.clone(), std::io::Error::other(e));
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(bad)?;
    let mut rng = SplitMix(args.seed ^ 0x5EED_F1EE7);
    let mut b = RawBuilder::with_capacity(BATCH_ROWS);
    let mut rows = 0u64;
    for t in 0..steps {
        let ts = start + t as i64 * step_ms;
        for member in &fleet {
            let shape = &shapes[member.shape];
            let wk = b.workload_key(&member.name);
            for (m, metric) in shape.metrics.iter().enumerate() {
                if let Some(v) = value(member, shape, t, m, &mut rng) {
                    let mk = b.metric_key(metric);
                    b.push(ts, wk, mk, v, None);
                }
            }
            if b.len() >= BATCH_ROWS {
                rows += b.len() as u64;
                let full = std::mem::replace(&mut b, RawBuilder::with_capacity(BATCH_ROWS));
                w.write(&full.finish()?).map_err(bad)?;
            }
        }
    }
    rows += b.len() as u64;
    if !b.is_empty() {
        w.write(&b.finish()?).map_err(bad)?;
    }
    w.close().map_err(bad)?;
    std::fs::rename(&tmp, &args.out).map_err(|e| Error::io(at.clone(), e))?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    Ok(Written { rows, steps, bytes })
}

/// `wfe synth`.
pub fn synth(args: SynthArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let w = write(&Shapes::load(args.data.as_deref(), args.metrics)?, &args)?;
    println!(
        "{}: {} workloads x {} steps, {} rows, {:.1} MiB, in {:.1} s",
        args.out.display(),
        args.workloads,
        w.steps,
        w.rows,
        w.bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str, n: usize) -> Shape {
        Shape {
            name: name.into(),
            steps: (0..n)
                .map(|i| vec![i as f64 / n as f64, f64::NAN])
                .collect(),
            metrics: vec!["m00".into(), "m01".into()],
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_fleet_and_names_keep_the_shapes_prefix() {
        let shapes = [shape("omi-1", 10), shape("omi-2", 20)];
        let a = members(&shapes, 50, 7);
        assert_eq!(a, members(&shapes, 50, 7));
        assert_ne!(a, members(&shapes, 50, 8));
        for m in &a {
            assert!(m.name.starts_with(&format!("{}-f", shapes[m.shape].name)));
            assert!(m.offset < shapes[m.shape].steps.len());
            assert!((0.6..1.4).contains(&m.scale), "{m:?}");
        }
        // Both shapes are used.
        assert!(a.iter().any(|m| m.shape == 0) && a.iter().any(|m| m.shape == 1));
    }

    #[test]
    fn values_wrap_around_the_shape_stay_in_range_and_skip_gaps() {
        let s = shape("omi-1", 10);
        let m = Member {
            name: "x".into(),
            shape: 0,
            offset: 8,
            scale: 1.4,
            noise: 0.0,
        };
        let mut rng = SplitMix(1);
        // Step 3 from offset 8 reads the shape's step 1 (11 mod 10).
        assert_eq!(value(&m, &s, 3, 0, &mut rng), Some(0.1 * 1.4));
        // Scaled past 1, kept at 1; NaN in the shape gives no sample.
        let big = Member {
            offset: 9,
            scale: 1.4,
            ..m.clone()
        };
        let noisy = Member {
            noise: 0.5,
            ..big.clone()
        };
        assert_eq!(
            value(&big, &s, 0, 0, &mut rng),
            Some(0.9f64 * 1.4).map(|v| v.min(1.0))
        );
        for t in 0..100 {
            let v = value(&noisy, &s, t, 0, &mut rng).unwrap();
            assert!((0.0..=1.0).contains(&v));
        }
        assert_eq!(value(&m, &s, 0, 1, &mut rng), None);
    }
}
