//! Helpers for other stages' tests: real data through ingest and normalise.

use std::path::PathBuf;

use wfe_contract::{Context, RecordBatch, Source, Stage, Topic, VecCollector};

use crate::{Normalise, NormaliseConfig};

/// `../shared/data` beside the checkout, or `$WFE_DATA`.
pub fn shared_data() -> PathBuf {
    let data = std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    assert!(
        data.join("smd").is_dir(),
        "shared data not found at {} (set WFE_DATA)",
        data.display()
    );
    data
}

/// `metrics.norm` batches of the named entities of `set` (`smd` or `asd`), at most
/// `max_raw_batches` ingest chunks of them.
pub fn normalised(set: &str, entities: &[&str], max_raw_batches: usize) -> Vec<RecordBatch> {
    let mut cfg = wfe_ingest::SourceConfig::new(shared_data().join(set));
    cfg.only = entities.iter().map(|s| s.to_string()).collect();
    let mut src = wfe_ingest::FileSource::open(&[cfg], true).expect("open shared data");
    let mut stage = Normalise::new(NormaliseConfig::default()).expect("config");
    let mut ctx = Context::new("normalise");
    let mut out = VecCollector::new();
    let mut n = 0;
    while let Some(b) = src.next_batch(&mut ctx).expect("read") {
        stage
            .process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)
            .expect("normalise");
        n += 1;
        if n >= max_raw_batches {
            break;
        }
    }
    stage.flush(&mut ctx, &mut out).expect("flush");
    out.of(Topic::MetricsNorm)
}
