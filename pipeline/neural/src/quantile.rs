//! The quantile LSTM forecaster on libtorch.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};
use wfe_contract::{Error, Result};

use crate::config::{ForecasterConfig, ForecasterShape, Precision, TrainReport, Windows};
use crate::lstm::{device_of, epochs, load_weights, one_at_a_time, save_weights, torch_err};

/// Windows per forward pass at inference when the caller does not say. The pass holds every
/// step's output of each window (heap profiles of the default job: 99.5 MB for one pass at
/// 1,000 workloads with 8,192, 92 MB for a pass of 1,024 windows, about 90 KB a window), and
/// 1,024 ran faster on the CPU as well (`wfe bench --forecast --batches 1024,8192`: 130,260
/// against 74,738 forecasts/s).
const INFER_CHUNK: usize = 1024;

struct Net {
    vs: nn::VarStore,
    lstm: nn::LSTM,
    hidden: nn::Linear,
    out: nn::Linear,
}

impl Net {
    fn new(device: Device, shape: &ForecasterShape, cfg: &ForecasterConfig) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let h = cfg.hidden as i64;
        let rnn = nn::RNNConfig {
            num_layers: cfg.layers.max(1) as i64,
            ..Default::default()
        };
        let head_in = h + shape.context as i64;
        Self {
            lstm: nn::lstm(&root / "lstm", shape.features as i64, h, rnn),
            hidden: nn::linear(&root / "hidden", head_in, h, Default::default()),
            out: nn::linear(
                &root / "out",
                h,
                (shape.horizons * shape.levels.len()) as i64,
                Default::default(),
            ),
            vs,
        }
    }

    /// Quantiles [n, horizons, levels] of inputs x [n, steps, f] and context [n, c].
    fn forward(&self, x: &Tensor, ctx: &Tensor, horizons: i64) -> Tensor {
        let (_, state) = self.lstm.seq(x);
        // Last layer's hidden state.
        let last = state.h().select(0, -1);
        let z = Tensor::cat(&[last, ctx.shallow_clone()], 1);
        let z = self.hidden.forward(&z).relu();
        let n = x.size()[0];
        self.out.forward(&z).view([n, horizons, -1])
    }
}

/// A global LSTM that forecasts several horizons at several quantile levels at once (see the
/// crate docs). Inputs and targets are whatever the caller built; the forecast stage feeds
/// scaled differences from the last value.
pub struct QuantileForecaster {
    cfg: ForecasterConfig,
    shape: ForecasterShape,
    device: Device,
    net: Net,
}

impl std::fmt::Debug for QuantileForecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantileForecaster")
            .field("shape", &self.shape)
            .field("hidden", &self.cfg.hidden)
            .field("device", &self.device)
            .finish()
    }
}

fn finite_or_zero(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|x| if x.is_finite() { *x } else { 0.0 })
        .collect()
}

fn inputs(
    w: &Windows,
    ctx: &[f32],
    c: usize,
    r: std::ops::Range<usize>,
    d: Device,
) -> (Tensor, Tensor) {
    let per = w.steps * w.features;
    let x = Tensor::from_slice(&finite_or_zero(&w.data[r.start * per..r.end * per]))
        .view([r.len() as i64, w.steps as i64, w.features as i64])
        .to_device(d);
    let cx = Tensor::from_slice(&finite_or_zero(&ctx[r.start * c..r.end * c]))
        .view([r.len() as i64, c as i64])
        .to_device(d);
    (x, cx)
}

impl QuantileForecaster {
    /// Trains on windows `w`, their context (`w.n x shape.context`) and targets
    /// (`w.n x shape.horizons`, NaN where unknown) by the mean pinball loss over the levels.
    pub fn train(
        w: &Windows,
        context: &[f32],
        targets: &[f32],
        shape: ForecasterShape,
        cfg: &ForecasterConfig,
    ) -> Result<(Self, TrainReport)> {
        cfg.validate("forecaster")?;
        check_targets(w, context, targets, &shape)?;
        let device = device_of(cfg.device)?;
        let _turn = one_at_a_time();
        tch::manual_seed(cfg.seed);
        let net = Net::new(device, &shape, cfg);
        let report = fit(&net, w, context, targets, &shape, cfg)?;
        Ok((
            Self {
                cfg: cfg.clone(),
                shape,
                device,
                net,
            },
            report,
        ))
    }

    /// A copy of this model trained further on other windows (the same shape): `epochs`
    /// passes at `learning_rate`. The forecast stage's per-class variants start from the
    /// global model this way, so a class with few series still begins from what the fleet
    /// taught.
    pub fn fine_tune(
        &self,
        w: &Windows,
        context: &[f32],
        targets: &[f32],
        epochs: usize,
        learning_rate: f64,
    ) -> Result<(Self, TrainReport)> {
        let cfg = ForecasterConfig {
            epochs,
            learning_rate,
            ..self.cfg.clone()
        };
        cfg.validate("forecaster fine-tuning")?;
        check_targets(w, context, targets, &self.shape)?;
        let _turn = one_at_a_time();
        tch::manual_seed(cfg.seed);
        let mut net = Net::new(self.device, &self.shape, &self.cfg);
        net.vs
            .copy(&self.net.vs)
            .map_err(torch_err("copy weights"))?;
        let report = fit(&net, w, context, targets, &self.shape, &cfg)?;
        Ok((
            Self {
                cfg: self.cfg.clone(),
                shape: self.shape.clone(),
                device: self.device,
                net,
            },
            report,
        ))
    }

    pub fn shape(&self) -> &ForecasterShape {
        &self.shape
    }

    pub fn config(&self) -> &ForecasterConfig {
        &self.cfg
    }

    /// Where the model runs: `cpu` or `cuda:0`.
    pub fn device(&self) -> String {
        match self.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        }
    }

    /// Waits for the device to finish queued work (CUDA runs asynchronously): call before
    /// reading a clock.
    pub fn synchronize(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// Quantiles per window (`n x horizons x levels`, each window's levels ascending), in
    /// chunks of `chunk` windows (0: the default), at the given precision.
    pub fn predict(
        &self,
        w: &Windows,
        context: &[f32],
        chunk: usize,
        precision: Precision,
    ) -> Result<Vec<f32>> {
        self.shape.check(w, context, "forecaster input")?;
        let chunk = if chunk == 0 { INFER_CHUNK } else { chunk };
        // No turn taken: a forward pass without dropout draws nothing from libtorch's
        // generator, so it can run while a training holds the turn (the forecast stage
        // retrains on a thread of its own and keeps forecasting meanwhile).
        let h = self.shape.horizons as i64;
        let mut out = Vec::with_capacity(w.n * self.shape.horizons * self.shape.levels.len());
        let mut start = 0;
        while start < w.n {
            let end = (start + chunk).min(w.n);
            let (x, cx) = inputs(w, context, self.shape.context, start..end, self.device);
            let q = tch::no_grad(|| {
                let q = match precision {
                    Precision::Fp32 => self.net.forward(&x, &cx, h),
                    Precision::Mixed => tch::autocast(true, || self.net.forward(&x, &cx, h)),
                };
                // Quantiles must not cross: sort each window's levels.
                q.to_kind(Kind::Float).sort(-1, false).0
            });
            let v = Vec::<f32>::try_from(&q.to_device(Device::Cpu).reshape([-1]))
                .map_err(torch_err("read forecasts"))?;
            out.extend(v);
            start = end;
        }
        Ok(out)
    }

    /// Floating-point operations of one window's forward pass (multiply-adds count two):
    /// what the benchmark's arithmetic limit is computed from.
    pub fn flops_per_window(&self) -> f64 {
        let (h, f, s) = (
            self.cfg.hidden as f64,
            self.shape.features as f64,
            self.shape.steps as f64,
        );
        let layers = self.cfg.layers.max(1) as f64;
        // Each step of each layer: 4 gates of (input + hidden) x hidden.
        let first = 2.0 * 4.0 * (f + h) * h;
        let rest = 2.0 * 4.0 * (2.0 * h) * h * (layers - 1.0);
        let head = 2.0
            * ((h + self.shape.context as f64) * h
                + h * (self.shape.horizons * self.shape.levels.len()) as f64);
        s * (first + rest) + head
    }

    fn from_saved(s: SavedForecaster, device: Option<crate::config::DeviceChoice>) -> Result<Self> {
        s.cfg.validate("forecaster")?;
        let choice = device.unwrap_or(s.cfg.device);
        let device = match choice {
            crate::config::DeviceChoice::Cuda => device_of(choice)?,
            _ => device_of(choice).unwrap_or(Device::Cpu),
        };
        let net = load_weights(
            || Net::new(device, &s.shape, &s.cfg),
            |n| &mut n.vs,
            s.weights,
        )?;
        Ok(Self {
            cfg: s.cfg,
            shape: s.shape,
            device,
            net,
        })
    }

    /// The model as bytes: settings, shape and weights.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let saved = SavedForecaster {
            cfg: self.cfg.clone(),
            shape: self.shape.clone(),
            weights: save_weights(&self.net.vs)?,
        };
        postcard::to_stdvec(&saved).map_err(|e| Error::bad_input("forecaster", e.to_string()))
    }

    /// A model saved by [`Self::to_bytes`], on `device` (default: the one it was trained for,
    /// or the CPU when that is not here).
    pub fn from_bytes(bytes: &[u8], device: Option<crate::config::DeviceChoice>) -> Result<Self> {
        let saved: SavedForecaster = postcard::from_bytes(bytes).map_err(|e| {
            Error::bad_input(
                "forecaster model file",
                format!("not a saved forecaster: {e}"),
            )
        })?;
        Self::from_saved(saved, device)
    }
}

fn check_targets(
    w: &Windows,
    context: &[f32],
    targets: &[f32],
    shape: &ForecasterShape,
) -> Result<()> {
    shape.check(w, context, "forecaster training windows")?;
    if targets.len() != w.n * shape.horizons {
        return Err(Error::bad_input(
            "forecaster training targets",
            format!(
                "{} targets for {} windows x {} horizons",
                targets.len(),
                w.n,
                shape.horizons
            ),
        ));
    }
    if w.n < 2 {
        return Err(Error::bad_input(
            "forecaster training windows",
            format!("need at least 2 windows, have {}", w.n),
        ));
    }
    Ok(())
}

/// Trains `net` in place by the mean pinball loss over the levels (NaN targets masked out):
/// `cfg.epochs` shuffled passes in batches of `cfg.batch` at `cfg.learning_rate`.
fn fit(
    net: &Net,
    w: &Windows,
    context: &[f32],
    targets: &[f32],
    shape: &ForecasterShape,
    cfg: &ForecasterConfig,
) -> Result<TrainReport> {
    let started = Instant::now();
    let device = net.vs.device();
    let mut opt = nn::Adam::default()
        .build(&net.vs, cfg.learning_rate)
        .map_err(torch_err("optimiser"))?;
    let (x, cx) = inputs(w, context, shape.context, 0..w.n, device);
    let h = shape.horizons as i64;
    let y = Tensor::from_slice(&finite_or_zero(targets))
        .view([w.n as i64, h])
        .to_device(device);
    let mask: Vec<f32> = targets
        .iter()
        .map(|t| f32::from(t.is_finite() as u8))
        .collect();
    let mask = Tensor::from_slice(&mask)
        .view([w.n as i64, h, 1])
        .to_device(device);
    let levels: Vec<f32> = shape.levels.iter().map(|&l| l as f32).collect();
    let tau = Tensor::from_slice(&levels)
        .view([1, 1, -1])
        .to_device(device);
    let (first_loss, last_loss) = epochs(
        &mut opt,
        w.n,
        cfg.batch,
        cfg.epochs,
        device,
        "forecaster training windows",
        |idx| {
            let q = net.forward(&x.index_select(0, idx), &cx.index_select(0, idx), h);
            let d = y.index_select(0, idx).unsqueeze(-1) - &q;
            let m = mask.index_select(0, idx);
            let pin = (&tau * &d).maximum(&((&tau - 1.0) * &d)) * &m;
            pin.sum(Kind::Float) / (m.sum(Kind::Float) * shape.levels.len() as f64).clamp_min(1.0)
        },
    )?;
    Ok(TrainReport {
        windows: w.n,
        epochs: cfg.epochs,
        first_loss,
        last_loss,
        device: format!("{device:?}").to_lowercase(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The matrix-multiply rate libtorch reaches on `device` (FLOP/s, a 2048 x 2048 product,
/// after a warm-up): the arithmetic limit a benchmark sets model throughput against. Mixed
/// precision multiplies in bf16 on CUDA (the CPU has no mixed path here).
pub fn matmul_flops(device: crate::config::DeviceChoice, precision: Precision) -> Result<f64> {
    let device = device_of(device)?;
    let _turn = one_at_a_time();
    let kind = match (precision, device) {
        (Precision::Mixed, Device::Cuda(_)) => Kind::BFloat16,
        _ => Kind::Float,
    };
    let n = 2048i64;
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let _ = a.matmul(&b);
    sync();
    let reps = if device == Device::Cpu { 4 } else { 50 };
    let started = Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&b);
    }
    sync();
    let secs = started.elapsed().as_secs_f64();
    Ok(2.0 * (n as f64).powi(3) * reps as f64 / secs)
}

#[derive(Serialize, Deserialize)]
struct SavedForecaster {
    cfg: ForecasterConfig,
    shape: ForecasterShape,
    weights: Vec<u8>,
}
