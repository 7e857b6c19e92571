mod fingerprint_tests {
    use crate::lstm::window::FP_CLIP;
    use crate::lstm::*;

    fn sine(n: usize, period: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 0.5 + 0.3 * (std::f64::consts::TAU * i as f64 / period as f64).sin())
            .collect()
    }

    #[test]
    fn a_series_fingerprint_reads_its_level_spread_and_period() {
        let y = sine(240, 10);
        let f = fingerprint(&y, 239, 60, 4).unwrap();
        assert!((f[0] - 0.5).abs() < 1e-3, "level {}", f[0]);
        assert!((f[1] - 0.3 / 2f64.sqrt()).abs() < 5e-3, "spread {}", f[1]);
        assert!((f[7] - 10.0 / 60.0).abs() < 1e-9, "period {}", f[7]);
        let flat = fingerprint(&[0.2; 120], 119, 60, 4).unwrap();
        assert!(
            (flat[0] - 0.2).abs() < 1e-12 && flat[1].abs() < 1e-12,
            "{flat:?}"
        );
        assert!(flat.iter().all(|v| v.is_finite()));
        // Shorter than a window, or an origin past the end: no fingerprint, no panic.
        assert!(fingerprint(&y, 30, 60, 4).is_none());
        assert!(fingerprint(&y, 240, 60, 4).is_none());
        // Fewer windows than asked: the ones there are.
        assert_eq!(fingerprint(&y, 119, 60, 12), fingerprint(&y, 119, 60, 2));
    }

    #[test]
    fn the_context_grows_by_the_fingerprint_and_a_flag_when_it_is_read() {
        let series = vec![sine(600, 20), sine(600, 50), vec![0.3; 600]];
        let mut cut = Cut::new(16, 24, vec![1, 4]);
        let levels = [0.1, 0.5, 0.9];
        assert_eq!(cut.shape(&levels).context, 2 + 3);
        let fp = FingerprintCut::fit(&series, &FingerprintConfig::default(), 24);
        assert_eq!(
            (fp.centre.len(), fp.spread.len()),
            (FINGERPRINT_LEN, FINGERPRINT_LEN)
        );
        assert!(fp.spread.iter().all(|s| *s > 0.0));
        cut.fingerprint = Some(fp);
        let shape = cut.shape(&levels);
        assert_eq!(shape.context, 2 + 3 + FINGERPRINT_LEN + 1);
        let (w, ctx, targets) = cut.training_set(&series, 8, 100);
        assert_eq!(ctx.len(), w.n * shape.context);
        assert_eq!(targets.len(), w.n * 2);
        assert!(ctx.iter().all(|v| v.is_finite()));
        // A history shorter than a fingerprint window: zeros and the flag down.
        let short = sine(30, 20);
        let mut w = Windows::new(16, 2);
        let mut c = Vec::new();
        cut.push(&short, 29, &mut w, &mut c).unwrap();
        assert_eq!(c.len(), shape.context);
        assert!(c[5..].iter().all(|v| *v == 0.0));
        // Standardised values are clipped: an odd series cannot swamp the context.
        let wild: Vec<f64> = (0..600)
            .map(|i| if i % 2 == 0 { 50.0 } else { -50.0 })
            .collect();
        let f = cut.fingerprint.as_ref().unwrap().at(&wild, 599).unwrap();
        assert!(f.iter().all(|v| v.abs() <= FP_CLIP), "{f:?}");
    }

    #[test]
    fn a_retrained_model_must_beat_the_current_one_on_the_same_steps() {
        assert!(beats(&[0.1, 0.2], &[0.2, 0.2]));
        assert!(
            !beats(&[0.2, 0.2], &[0.2, 0.2]),
            "a tie keeps the current model"
        );
        assert!(!beats(&[0.1, 0.5], &[0.2, 0.2]));
        // Horizons either cannot score are left out of the comparison.
        assert!(beats(&[0.1, f64::NAN], &[0.2, 0.05]) == (0.1 < 0.2));
        assert!(!beats(&[f64::NAN, f64::NAN], &[0.2, 0.2]));
        assert!(beats(&[f64::NAN], &[f64::NAN]), "nothing to lose");
        assert!(
            beats(&[0.3], &[0.1, 0.1]),
            "other horizons: the configured ones win"
        );
    }

    #[test]
    fn class_settings_are_checked() {
        let mut c = LstmConfig::default();
        c.fingerprint.classes.min_series = 1;
        assert!(
            c.validate("lstm")
                .unwrap_err()
                .to_string()
                .contains("min_series")
        );
        let mut c = LstmConfig::default();
        c.fingerprint.classes.epsilon_quantile = 0.0;
        assert!(
            c.validate("lstm")
                .unwrap_err()
                .to_string()
                .contains("epsilon_quantile")
        );
        let mut c = LstmConfig::default();
        c.fingerprint.window = 2;
        assert!(
            c.validate("lstm")
                .unwrap_err()
                .to_string()
                .contains("window")
        );
    }
}

#[cfg(feature = "torch")]
mod trained {
    use crate::lstm::*;
    use wfe_neural::ForecasterConfig;

    #[test]
    fn lstm_learns_a_daily_pattern_and_brackets_it() {
        let season = 24;
        let series: Vec<Vec<f64>> = (0..6)
            .map(|s| {
                (0..season * 20)
                    .map(|i| {
                        let ph = ((i + s * 5) % season) as f64 / season as f64;
                        let noise = (((i * 7919 + s * 104729) % 101) as f64 / 101.0 - 0.5) * 0.04;
                        0.5 + 0.3 * (std::f64::consts::TAU * ph).sin() + noise
                    })
                    .collect()
            })
            .collect();
        let cut = Cut::new(16, season, vec![1, 6]);
        let cfg = LstmConfig {
            windows_per_series: 200,
            model: ForecasterConfig {
                epochs: 12,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        let (model, report) = LstmModel::train(&series, cut, &[0.1, 0.5, 0.9], &cfg).unwrap();
        assert!(report.last_loss < report.first_loss, "{report:?}");
        let y = &series[0];
        let origins: Vec<usize> = (season * 18..season * 20 - 7).collect();
        let f = model.forecast(y, &origins).unwrap();
        let (mut err, mut persist, mut inside) = (0.0, 0.0, 0.0);
        for (o, q) in origins.iter().zip(&f) {
            let q = q.as_ref().unwrap();
            let actual = y[o + 6];
            err += (q[1][1] - actual).abs();
            persist += (y[*o] - actual).abs();
            inside += f64::from(q[1][0] <= actual && actual <= q[1][2]);
        }
        let n = origins.len() as f64;
        assert!(err < 0.5 * persist, "lstm {err} vs persistence {persist}");
        assert!(inside / n > 0.5, "80% band covered {}", inside / n);
        // A window longer than the history is not a forecast, not a panic.
        assert!(model.forecast(&y[..5], &[4]).unwrap()[0].is_none());
    }

    #[test]
    fn empty_and_short_histories_are_skipped_not_a_panic() {
        let long: Vec<f64> = (0..800)
            .map(|i| 0.4 + 0.1 * (i as f64 / 30.0).sin())
            .collect();
        let series = vec![Vec::new(), vec![0.5; 3], long];
        let cut = Cut::new(16, 96, vec![1, 4]);
        let cfg = LstmConfig {
            model: ForecasterConfig {
                epochs: 1,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        let (_, report, valid, persist) =
            train_validated(&series, cut.clone(), &[0.1, 0.5, 0.9], &cfg).unwrap();
        assert!(report.windows > 0 && valid.iter().chain(&persist).all(|v| v.is_finite()));
        // Nothing long enough at all: a clear error.
        let err = LstmModel::train(&series[..2], cut, &[0.5], &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("each series needs more than"), "{err}");
    }

    /// Two kinds of series: smooth daily waves, and a noisy level with steps.
    fn two_kinds(n: usize, len: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let wave = |s: usize| -> Vec<f64> {
            (0..len)
                .map(|i| {
                    let ph = (i % 24) as f64 / 24.0;
                    let k = s as f64 * 0.01;
                    0.6 + k + (0.25 + k) * (std::f64::consts::TAU * ph).sin()
                })
                .collect()
        };
        let rough = |s: usize| -> Vec<f64> {
            let mut seed = 99 + s as u64;
            (0..len)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.1;
                    let level = if (i / 37) % 2 == 0 { 0.15 } else { 0.3 };
                    level + noise
                })
                .collect()
        };
        ((0..n).map(wave).collect(), (0..n).map(rough).collect())
    }

    #[test]
    fn classes_sort_series_by_fingerprint_and_a_variant_serves_its_class_only() {
        let (waves, rough) = two_kinds(6, 24 * 30);
        let series: Vec<Vec<f64>> = waves.iter().chain(&rough).cloned().collect();
        let mut cfg = LstmConfig {
            windows_per_series: 64,
            model: ForecasterConfig {
                epochs: 3,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        cfg.fingerprint.window = 8;
        cfg.fingerprint.classes.min_series = 3;
        cfg.fingerprint.classes.epsilon_quantile = 0.3;
        cfg.fingerprint.classes.epochs = 2;
        let levels = [0.1, 0.5, 0.9];
        let cut = Cut::new(16, 24, vec![1, 6]);
        let (mut model, _) = LstmModel::train(&series, cut, &levels, &cfg).unwrap();
        // Two classes of six: the waves and the rough ones.
        let classes = &model.classes.classes;
        assert_eq!(classes.len(), 2, "{classes:?}");
        assert!(classes.iter().all(|c| c.members.len() == 6), "{classes:?}");
        assert!(model.classes.epsilon > 0.0);
        for c in classes {
            assert!(c.radius >= model.classes.epsilon, "{c:?}");
            assert!(
                c.global_mae.is_finite() && c.variant_mae.is_finite(),
                "{c:?}"
            );
            let gain = 1.0 - cfg.fingerprint.classes.min_gain;
            assert_eq!(c.kept, c.variant_mae < c.global_mae * gain, "{c:?}");
            assert_eq!(model.variants.contains_key(&c.id), c.kept);
        }
        let fp = model.cut.fingerprint.clone().unwrap();
        assert_eq!(fp.windows, 3, "a season's worth of windows");
        let wave_class = model
            .classes
            .nearest(&fp.at(&waves[0], 719).unwrap())
            .unwrap()
            .id;
        let rough_class = model
            .classes
            .nearest(&fp.at(&rough[0], 719).unwrap())
            .unwrap()
            .id;
        assert_ne!(wave_class, rough_class);
        // Serve the waves' class by a variant (whether or not training kept one): the waves
        // go to it, the rough series and a series unlike any stay with the global model.
        let fw = model.cut.training_set(&waves, 32, 1000);
        let (variant, report) = model.net.fine_tune(&fw.0, &fw.1, &fw.2, 1, 1e-3).unwrap();
        assert!(report.first_loss.is_finite() && report.windows == fw.0.n);
        assert_eq!(variant.shape(), model.net.shape());
        model.variants.insert(wave_class, variant);
        model.variants.remove(&rough_class);
        for c in &mut model.classes.classes {
            c.kept = c.id == wave_class;
        }
        let odd: Vec<f64> = (0..720).map(|i| (i % 5) as f64 * 2.0).collect();
        let reqs: Vec<(&[f64], usize)> = vec![
            (&waves[1], 719),
            (&rough[1], 719),
            (&odd, 719),
            (&waves[2], 5),
        ];
        let out = model.forecast_many(&reqs).unwrap();
        assert_eq!(out[0].as_ref().unwrap().class, Some(wave_class));
        assert_eq!(out[1].as_ref().unwrap().class, None);
        assert_eq!(out[2].as_ref().unwrap().class, None);
        assert!(out[3].is_none(), "shorter than a window");
        // Saved and loaded, the model forecasts the same, variant included.
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::store::LocalDir::new(dir.path());
        let meta = crate::store::ModelMeta {
            format: crate::store::FORMAT,
            version: 0,
            trained: crate::store::Trained {
                code_version: "test".into(),
                created_unix: 0,
                source: "synthetic".into(),
                series: series.len(),
                from_ms: 0,
                to_ms: 0,
                step_s: 3600,
                horizons_s: vec![3600, 6 * 3600],
                season_s: 86_400,
            },
            cut: Cut::new(1, 1, vec![1]),
            levels: levels.to_vec(),
            validation_mae: vec![],
            persistence_mae: vec![],
            train: report,
            classes: Classes::default(),
        };
        let v = crate::store::save(&repo, &model, meta).unwrap();
        let (back, meta) = crate::store::load(&repo, 3600, v, None).unwrap();
        assert_eq!(meta.cut, model.cut, "the model's own cut is saved");
        // (JSON keeps floats to their last bit or so.)
        let sum = |c: &Classes| -> Vec<(u32, bool, usize, f64)> {
            let s = |m: &ClassMeta| m.members.iter().flatten().sum::<f64>() + m.radius;
            c.classes
                .iter()
                .map(|m| (m.id, m.kept, m.members.len(), s(m)))
                .collect()
        };
        for (a, b) in sum(&back.classes).iter().zip(sum(&model.classes)) {
            assert!(a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && (a.3 - b.3).abs() < 1e-9);
        }
        assert_eq!(back.variants.keys().collect::<Vec<_>>(), vec![&wave_class]);
        let again = back.forecast_many(&reqs).unwrap();
        for (a, b) in out.iter().zip(&again) {
            let (Some(a), Some(b)) = (a, b) else {
                assert_eq!(a.is_none(), b.is_none());
                continue;
            };
            assert_eq!(a.class, b.class);
            let gap = a.levels.iter().flatten().zip(b.levels.iter().flatten());
            assert!(gap.map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) < 1e-5);
        }
        // A variant's file gone: the version is refused with its name, not served half.
        std::fs::remove_file(
            dir.path()
                .join(format!("forecast-lstm/3600s/v{v}/class-{wave_class}.bin")),
        )
        .unwrap();
        let err = crate::store::load(&repo, 3600, v, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("class-{wave_class}.bin")), "{err}");
    }
}
