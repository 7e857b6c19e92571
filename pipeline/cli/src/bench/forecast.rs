//! `wfe bench --forecast`: forecasts per second of each forecast model on one SMD machine's
//! series: the statistical models one forecast at a time, the gradient-boosted model one at a
//! time (as the stage's fallback path) and batched (as the stage and the evaluation call it),
//! the LSTM at several batch sizes on every device this build can reach, with the arithmetic
//! limit that bounds it.

use wfe_contract::Result;

/// `wfe bench --forecast`.
pub(super) fn bench(batches: &[usize]) -> Result<()> {
    use std::time::Instant;
    use wfe_forecast::lstm::{Cut, LstmModel};
    use wfe_forecast::models::{Model, filled, point_forecasts};
    use wfe_neural::{DeviceChoice, Precision, Windows};

    let cfg = wfe_forecast::ForecastConfig::default();
    let dir = crate::eval::data::shared_data().join("smd");
    let s = crate::eval::data::load(&dir, "machine-1-6")?;
    let series: Vec<Vec<f64>> = (0..s.metrics.len())
        .map(|j| filled(&s.raw_train.iter().map(|r| r[j]).collect::<Vec<_>>()))
        .collect();
    let (season, horizons) = (1440, vec![15, 60]);
    let keep = (season * cfg.stats.mstl_seasons).max(cfg.stats.ets_window) + 1;
    println!("forecasts of one SMD machine's 38 metrics (60 s steps), horizons 15 min and 1 h\n");
    println!(
        "| model | device | batch | forecasts/s | ms per forecast |\n|---|---|---:|---:|---:|"
    );
    for m in Model::STATISTICAL {
        let t = Instant::now();
        let mut n = 0usize;
        for hist in histories(&series, keep) {
            if point_forecasts(m, hist, season, &horizons, &cfg.stats).is_ok() {
                n += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "| {} | cpu, 1 thread | 1 | {:.0} | {:.3} |",
            m.name(),
            n as f64 / secs,
            secs * 1e3 / n.max(1) as f64
        );
    }
    let gbm_note = gbm_rows(&series, season, &horizons, keep)?;
    if !wfe_neural::available() {
        println!(
            "\n{gbm_note}\n(this wfe has no libtorch: the LSTM rows need the `torch` build, `make build`)"
        );
        return Ok(());
    }
    let cut = Cut::new(cfg.lstm.steps, season, horizons);
    let mut lcfg = cfg.lstm.clone();
    lcfg.model.epochs = 1;
    lcfg.windows_per_series = 16;
    let levels = wfe_forecast::lstm::served_levels(&cfg.quantiles);
    let mut devices = vec![DeviceChoice::Cpu];
    if wfe_neural::matmul_flops(DeviceChoice::Cuda, Precision::Fp32).is_ok() {
        devices.push(DeviceChoice::Cuda);
    }
    let mut limits = Vec::new();
    for device in devices {
        lcfg.model.device = device;
        let (model, _) = LstmModel::train(&series, cut.clone(), &levels, &lcfg)?;
        let flops = model.net.flops_per_window();
        // Real windows, repeated up to the largest batch.
        let mut base = Windows::new(cut.steps, 2);
        let mut ctx = Vec::new();
        for y in &series {
            for k in 0..8 {
                model
                    .cut
                    .push(y, y.len() - 1 - k * 1500, &mut base, &mut ctx);
            }
        }
        let precisions: &[Precision] = if device == DeviceChoice::Cuda {
            &[Precision::Fp32, Precision::Mixed]
        } else {
            &[Precision::Fp32]
        };
        for &p in precisions {
            let peak = wfe_neural::matmul_flops(device, p)?;
            limits.push(format!(
                "{} {:?}: matmul {:.2} TFLOP/s -> at most {:.0} forecasts/s at {:.2} MFLOP each",
                model.net.device(),
                p,
                peak / 1e12,
                peak / flops,
                flops / 1e6
            ));
            for &b in batches {
                let mut w = Windows::new(cut.steps, 2);
                let mut c = Vec::with_capacity(b * ctx.len() / base.n);
                let per = cut.steps * 2;
                let cw = ctx.len() / base.n;
                for i in 0..b {
                    let k = i % base.n;
                    w.push(base.data[k * per..(k + 1) * per].iter().copied())?;
                    c.extend_from_slice(&ctx[k * cw..(k + 1) * cw]);
                }
                model.net.predict(&w, &c, b, p)?; // warm-up
                model.net.synchronize();
                let reps = (65_536 / b).clamp(3, 200);
                let t = Instant::now();
                for _ in 0..reps {
                    model.net.predict(&w, &c, b, p)?;
                }
                model.net.synchronize();
                let secs = t.elapsed().as_secs_f64();
                let rate = (b * reps) as f64 / secs;
                println!(
                    "| lstm {:?} | {} | {b} | {rate:.0} | {:.4} |",
                    p,
                    model.net.device(),
                    1e3 / rate
                );
            }
        }
    }
    println!("\n{gbm_note}");
    println!(
        "\narithmetic limit (a forecast = one window through the LSTM and head, all horizons and levels):"
    );
    for l in limits {
        println!("- {l}");
    }
    Ok(())
}

/// The gradient-boosted model's rows: trained on the same series with one budget and a
/// fifth of the default training rows (the forecast's cost depends on its trees, and the
/// bench should not spend minutes training), then timed one forecast at a time (as the stage
/// calls it per series) and at many origins of a series per call (as the evaluation and a
/// series' cross-validation call it).
fn gbm_rows(series: &[Vec<f64>], season: usize, horizons: &[usize], keep: usize) -> Result<String> {
    use std::time::Instant;
    use wfe_forecast::gbm::{GbmConfig, GbmModel};

    let cfg = GbmConfig {
        budgets: vec![0.5],
        max_rows: 40_000,
        ..GbmConfig::default()
    };
    let (model, report) = GbmModel::train(series, horizons, season, &cfg)?;
    let t = Instant::now();
    let mut n = 0usize;
    for hist in histories(series, keep) {
        if model.forecast(hist).is_some() {
            n += 1;
        }
    }
    let one = t.elapsed().as_secs_f64();
    let batch = 1024;
    let t = Instant::now();
    let mut m = 0usize;
    for y in series {
        let origins: Vec<usize> = (0..batch).map(|k| y.len() - 1 - k * 7).collect();
        m += model.forecast_at(y, &origins).iter().flatten().count();
    }
    let many = t.elapsed().as_secs_f64();
    for (b, count, secs) in [(1, n, one), (batch, m, many)] {
        println!(
            "| gbm | cpu, 1 thread | {b} | {:.0} | {:.3} |",
            count as f64 / secs,
            secs * 1e3 / count.max(1) as f64
        );
    }
    Ok(format!(
        "gbm: {:?} trees per horizon, trained on {:?} rows (one budget) in {:.1} s",
        report.trees, report.rows, report.seconds
    ))
}

/// The histories one-at-a-time forecasts are timed on: four per series, ending 997 steps
/// apart, each the last `keep` values (what the stage gives a model).
fn histories(series: &[Vec<f64>], keep: usize) -> impl Iterator<Item = &[f64]> {
    series.iter().flat_map(move |y| {
        (0..4).filter_map(move |k| {
            let end = y.len().checked_sub(1 + k * 997)?;
            Some(&y[end + 1 - keep.min(end + 1)..=end])
        })
    })
}
