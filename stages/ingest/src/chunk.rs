//! What a file reader hands the merging thread: chunks of `metrics.raw` rows with the bad
//! input met on the way, and the trait every format's reader implements.

use arrow_array::RecordBatch;
use wfe_contract::Result;

/// Rows of a wide file per emitted chunk (a chunk holds rows x metrics values).
pub const CHUNK_ROWS: usize = 1024;

/// A parsed chunk from one file, with the bad-input events met while parsing it.
pub(crate) struct Chunk {
    pub(crate) batch: RecordBatch,
    pub(crate) first_ts: i64,
    pub(crate) rejected: Vec<Rejection>,
}

/// A skipped record, reported to the source's context on the merging thread.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: &'static str,
    pub location: String,
    pub message: String,
    /// Rows it stands for (1, or a summary of many of one kind).
    pub count: u64,
}

/// A file read in chunks of `metrics.raw`.
pub(crate) trait ChunkReader: Send {
    fn next_chunk(&mut self) -> Result<Option<Chunk>>;
    /// Whether rows come in time order by the format's nature (a wide CSV row is one time);
    /// long formats do not, and are sorted ([`crate::ordered`]).
    fn time_ordered(&self) -> bool {
        true
    }
}

/// A float timestamp scaled to milliseconds, or `None` when it is not finite or its
/// milliseconds do not fit an i64 (a plain `as` cast would saturate without a word).
pub(crate) fn float_ms(v: f64, scale: i64) -> Option<i64> {
    let ms = (v * scale as f64).round();
    // 2^63 is exactly representable; anything at or past it does not fit.
    (ms.is_finite() && ms.abs() < 9_223_372_036_854_775_808.0).then_some(ms as i64)
}
