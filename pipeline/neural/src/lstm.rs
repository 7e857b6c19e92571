//! The LSTM autoencoder on libtorch.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};
use wfe_contract::{Error, Result};

use crate::config::{AutoencoderConfig, DeviceChoice, TrainReport, Windows};

/// Windows per forward pass at inference: bounds memory whatever the input size.
const INFER_CHUNK: usize = 4096;

/// libtorch has one random generator per process: two trainings at once (two stages, two
/// tests) would draw from it in turns and get other initial weights and batch orders than
/// their seeds give. Every libtorch call of this crate that creates or trains a network holds
/// this lock: a process's trainings take turns; inference draws nothing and takes no turn.
/// (Equal seeds then give models equal up to the order of libtorch's floating-point sums,
/// which is not fixed from one training to the next: embeddings were seen to differ in the
/// third decimal.)
static LIBTORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A panic elsewhere while holding it leaves nothing half-done here: take it anyway.
    LIBTORCH.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn device_of(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(Error::config(
            "device",
            "cuda was asked for but libtorch sees no CUDA device",
        )),
    }
}

pub(crate) fn torch_err(what: &'static str) -> impl Fn(tch::TchError) -> Error {
    move |e| Error::External {
        service: format!("libtorch ({what})"),
        message: e.to_string(),
        retryable: false,
    }
}

/// The weights of a network's variable store as bytes (libtorch's own format).
pub(crate) fn save_weights(vs: &nn::VarStore) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    vs.save_to_stream(&mut buf)
        .map_err(torch_err("save weights"))?;
    Ok(buf)
}

/// A network made by `build`, its weights then read from `weights` into the store `vs_of`
/// gives. Built in turn ([`one_at_a_time`]): a new network draws its initial weights from
/// libtorch's global generator, and must not draw from the middle of a seeded training's
/// stream.
pub(crate) fn load_weights<N>(
    build: impl FnOnce() -> N,
    vs_of: impl FnOnce(&mut N) -> &mut nn::VarStore,
    weights: Vec<u8>,
) -> Result<N> {
    let _turn = one_at_a_time();
    let mut net = build();
    vs_of(&mut net)
        .load_from_stream(std::io::Cursor::new(weights))
        .map_err(torch_err("load weights"))?;
    Ok(net)
}

/// The layers, on one variable store.
struct Net {
    vs: nn::VarStore,
    encoder: nn::LSTM,
    to_embedding: nn::Linear,
    decoder: nn::LSTM,
    to_output: nn::Linear,
}

impl Net {
    fn new(device: Device, features: usize, cfg: &AutoencoderConfig) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (f, h, e) = (features as i64, cfg.hidden as i64, cfg.embedding as i64);
        let rnn = nn::RNNConfig::default(); // batch first, one layer
        Self {
            encoder: nn::lstm(&root / "encoder", f, h, rnn),
            to_embedding: nn::linear(&root / "to_embedding", h, e, Default::default()),
            decoder: nn::lstm(&root / "decoder", e, h, rnn),
            to_output: nn::linear(&root / "to_output", h, f, Default::default()),
            vs,
        }
    }

    /// (embedding [n, e], reconstruction [n, steps, f]) of input [n, steps, f].
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (n, steps) = (x.size()[0], x.size()[1]);
        let (_, state) = self.encoder.seq(x);
        let last = state.h().squeeze_dim(0);
        let z = self.to_embedding.forward(&last);
        let e = z.size()[1];
        let repeated = z.unsqueeze(1).expand([n, steps, e], false);
        let (decoded, _) = self.decoder.seq(&repeated);
        let recon = self.to_output.forward(&decoded);
        (z, recon)
    }
}

/// An LSTM autoencoder over windows of `steps` x `features` (see the crate docs).
pub struct SeqAutoencoder {
    cfg: AutoencoderConfig,
    steps: usize,
    features: usize,
    device: Device,
    net: Net,
}

impl std::fmt::Debug for SeqAutoencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqAutoencoder")
            .field("steps", &self.steps)
            .field("features", &self.features)
            .field("hidden", &self.cfg.hidden)
            .field("embedding", &self.cfg.embedding)
            .field("device", &self.device)
            .finish()
    }
}

/// Values with NaN made 0, and the mask of observed values, as tensors on `device`.
/// Mini-batch training: `epochs` passes over `n` windows in a fresh random order, one
/// optimiser step per batch of `batch` on the loss `loss_of` gives for the batch's indices
/// (gradients clipped to norm 1). Returns the mean loss of the first and the last pass; a
/// loss that is not finite at the end is an error naming `what`.
pub(crate) fn epochs(
    opt: &mut nn::Optimizer,
    n: usize,
    batch: usize,
    epochs: usize,
    device: Device,
    what: &str,
    mut loss_of: impl FnMut(&Tensor) -> Tensor,
) -> Result<(f64, f64)> {
    let n = n as i64;
    let batch = (batch as i64).min(n);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for epoch in 0..epochs {
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let (mut total, mut batches) = (0.0, 0);
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let loss = loss_of(&order.narrow(0, start, len));
            opt.backward_step_clip_norm(&loss, 1.0);
            total += loss.double_value(&[]);
            batches += 1;
            start += len;
        }
        let mean = total / f64::from(batches.max(1));
        if epoch == 0 {
            first_loss = mean;
        }
        last_loss = mean;
    }
    if !last_loss.is_finite() {
        return Err(Error::bad_input(
            what,
            "training diverged (the loss is not finite): check the inputs' scale",
        ));
    }
    Ok((first_loss, last_loss))
}

fn tensors(w: &Windows, range: std::ops::Range<usize>, device: Device) -> (Tensor, Tensor) {
    let per = w.steps * w.features;
    let slice = &w.data[range.start * per..range.end * per];
    let values: Vec<f32> = slice
        .iter()
        .map(|v| if v.is_finite() { *v } else { 0.0 })
        .collect();
    let mask: Vec<f32> = slice
        .iter()
        .map(|v| f32::from(v.is_finite() as u8))
        .collect();
    let shape = [range.len() as i64, w.steps as i64, w.features as i64];
    (
        Tensor::from_slice(&values).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(&t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]))
        .map_err(torch_err("read result"))
}

impl SeqAutoencoder {
    /// Trains on `w` (shuffled mini-batches, Adam, masked mean squared error).
    pub fn train(w: &Windows, cfg: &AutoencoderConfig) -> Result<(Self, TrainReport)> {
        cfg.validate("autoencoder")?;
        w.check("autoencoder training windows")?;
        if w.n < 2 {
            return Err(Error::bad_input(
                "autoencoder training windows",
                format!("need at least 2 windows, have {}", w.n),
            ));
        }
        let device = device_of(cfg.device)?;
        let _turn = one_at_a_time();
        let started = Instant::now();
        tch::manual_seed(cfg.seed);
        let net = Net::new(device, w.features, cfg);
        let mut opt = nn::Adam::default()
            .build(&net.vs, cfg.learning_rate)
            .map_err(torch_err("optimiser"))?;
        let (x, mask) = tensors(w, 0..w.n, device);
        let (first_loss, last_loss) = epochs(
            &mut opt,
            w.n,
            cfg.batch,
            cfg.epochs,
            device,
            "autoencoder training windows",
            |idx| {
                let (xb, mb) = (x.index_select(0, idx), mask.index_select(0, idx));
                let (_, recon) = net.forward(&xb);
                ((recon - &xb).square() * &mb).sum(Kind::Float) / mb.sum(Kind::Float).clamp_min(1.0)
            },
        )?;
        let report = TrainReport {
            windows: w.n,
            epochs: cfg.epochs,
            first_loss,
            last_loss,
            device: format!("{device:?}").to_lowercase(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let model = Self {
            cfg: cfg.clone(),
            steps: w.steps,
            features: w.features,
            device,
            net,
        };
        Ok((model, report))
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn features(&self) -> usize {
        self.features
    }

    pub fn embedding(&self) -> usize {
        self.cfg.embedding
    }

    fn check(&self, w: &Windows) -> Result<()> {
        w.check("autoencoder input")?;
        if (w.steps, w.features) != (self.steps, self.features) {
            return Err(Error::bad_input(
                "autoencoder input",
                format!(
                    "windows of {} x {} for a model of {} x {}",
                    w.steps, w.features, self.steps, self.features
                ),
            ));
        }
        Ok(())
    }

    /// Runs `f` on chunks of `w` without gradients and concatenates what it returns.
    fn infer(&self, w: &Windows, f: impl Fn(&Tensor, &Tensor) -> Tensor) -> Result<Vec<f32>> {
        self.check(w)?;
        // No turn taken: inference draws nothing from libtorch's generator (see `predict`).
        let mut out = Vec::new();
        let mut start = 0;
        while start < w.n {
            let end = (start + INFER_CHUNK).min(w.n);
            let (x, mask) = tensors(w, start..end, self.device);
            out.extend(tch::no_grad(|| to_vec(&f(&x, &mask)))?);
            start = end;
        }
        Ok(out)
    }

    /// Per window, the squared reconstruction error of each feature at its last step
    /// (`n x features`, NaN where the value is missing).
    pub fn last_step_errors(&self, w: &Windows) -> Result<Vec<f32>> {
        let last = self.steps as i64 - 1;
        self.infer(w, |x, mask| {
            let (_, recon) = self.net.forward(x);
            let err = (recon.select(1, last) - x.select(1, last)).square();
            let m = mask.select(1, last);
            // NaN where missing: 0/0.
            err * &m / &m
        })
    }

    /// Per window, its embedding (`n x embedding`).
    pub fn embed(&self, w: &Windows) -> Result<Vec<f32>> {
        self.infer(w, |x, _| self.net.forward(x).0)
    }

    fn from_saved(s: Saved) -> Result<Self> {
        s.cfg.validate("autoencoder")?;
        let device = device_of(s.cfg.device).unwrap_or(Device::Cpu);
        let net = load_weights(
            || Net::new(device, s.features, &s.cfg),
            |n| &mut n.vs,
            s.weights,
        )?;
        Ok(Self {
            cfg: s.cfg,
            steps: s.steps,
            features: s.features,
            device,
            net,
        })
    }
}

impl Clone for SeqAutoencoder {
    fn clone(&self) -> Self {
        let _turn = one_at_a_time(); // see from_saved
        let mut net = Net::new(self.device, self.features, &self.cfg);
        // Same shapes, so copying every variable cannot fail.
        net.vs
            .copy(&self.net.vs)
            .expect("a variable store of the same layers");
        Self {
            cfg: self.cfg.clone(),
            steps: self.steps,
            features: self.features,
            device: self.device,
            net,
        }
    }
}

/// The saved form: shape, settings and weights.
#[derive(Serialize, Deserialize)]
struct Saved {
    cfg: AutoencoderConfig,
    steps: usize,
    features: usize,
    weights: Vec<u8>,
}

impl Serialize for SeqAutoencoder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let weights = save_weights(&self.net.vs).map_err(serde::ser::Error::custom)?;
        Saved {
            cfg: self.cfg.clone(),
            steps: self.steps,
            features: self.features,
            weights,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SeqAutoencoder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::from_saved(Saved::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
