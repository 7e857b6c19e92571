//! Files in any row order, read in time order within bounded memory.
//!
//! A stream must call a sample that arrives after newer ones late; a file is bounded input
//! and need not. Exports from time-series databases are often grouped by series (all of one
//! workload's metric, then the next): read in file order, every series after the first
//! would be late for normalise. So a long-format file (CSV long, Parquet, IPC) is put in
//! time order before it leaves ingest: an external merge sort. Rows are read in runs of at
//! most `run_rows`, each run sorted by event time (stably: rows of one time keep their file
//! order). A file that fits one run is served from memory; a longer one spills each sorted
//! run to a temporary Arrow IPC file and merges the runs, holding one batch per run. Memory
//! stays within about two runs whatever the file's size.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{RecordBatch, UInt32Array};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use wfe_contract::schemas::Topic;
use wfe_contract::{Error, Result};

use crate::chunk::{Chunk, ChunkReader, Rejection};

/// Rows in one sorted run (about 60 MB of `metrics.raw` rows, twice that while sorting).
pub const RUN_ROWS: usize = 2 << 20;
/// Rows per chunk served.
const OUT_ROWS: usize = 64 * 1024;
/// Rejections listed one by one; past this, each kind's rest is one summary.
const LISTED_REJECTIONS: usize = 10_000;

/// A reader's chunks, re-served in event-time order.
pub(crate) struct TimeOrdered {
    inner: Option<Box<dyn ChunkReader>>,
    path: String,
    run_rows: usize,
    out: Served,
    rejected: Vec<Rejection>,
}

enum Served {
    NotYet,
    Memory(VecDeque<RecordBatch>),
    Merge(Merge),
}

impl TimeOrdered {
    pub(crate) fn new(inner: Box<dyn ChunkReader>, path: String, run_rows: usize) -> Self {
        Self {
            inner: Some(inner),
            path,
            run_rows: run_rows.max(1),
            out: Served::NotYet,
            rejected: Vec::new(),
        }
    }

    /// Reads the whole input: sorted runs, in memory or spilled.
    fn prepare(&mut self, mut inner: Box<dyn ChunkReader>) -> Result<()> {
        let mut run: Vec<RecordBatch> = Vec::new();
        let mut rows = 0;
        let mut spilled: Vec<File> = Vec::new();
        let mut unlisted: BTreeMap<&'static str, u64> = BTreeMap::new();
        while let Some(chunk) = inner.next_chunk()? {
            for r in chunk.rejected {
                if self.rejected.len() < LISTED_REJECTIONS {
                    self.rejected.push(r);
                } else {
                    *unlisted.entry(r.kind).or_default() += r.count;
                }
            }
            rows += chunk.batch.num_rows();
            run.push(chunk.batch);
            if rows >= self.run_rows {
                spilled.push(self.spill(&sorted(&run)?)?);
                run.clear();
                rows = 0;
            }
        }
        for (kind, count) in unlisted {
            self.rejected.push(Rejection {
                kind,
                location: self.path.clone(),
                message: format!("{count} more rows of this kind, not listed one by one"),
                count,
            });
        }
        let last = sorted(&run)?;
        self.out = if spilled.is_empty() {
            Served::Memory(slices(last).into())
        } else {
            if last.num_rows() > 0 {
                spilled.push(self.spill(&last)?);
            }
            Served::Merge(Merge::new(spilled, &self.path)?)
        };
        Ok(())
    }

    /// Writes a sorted run to a temporary file (removed when closed) and rewinds it.
    fn spill(&self, run: &RecordBatch) -> Result<File> {
        let io = |e: std::io::Error| Error::io(format!("{} (sort spill)", self.path), e);
        let file = tempfile::tempfile().map_err(io)?;
        let mut w = StreamWriter::try_new(BufWriter::new(file), &run.schema())?;
        for s in slices(run.clone()) {
            w.write(&s)?;
        }
        w.finish()?;
        let mut file = w
            .into_inner()?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(file)
    }
}

impl ChunkReader for TimeOrdered {
    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if let Some(inner) = self.inner.take() {
            self.prepare(inner)?;
        }
        let next = match &mut self.out {
            Served::NotYet => None,
            Served::Memory(q) => q.pop_front(),
            Served::Merge(m) => m.next()?,
        };
        let rejected = std::mem::take(&mut self.rejected);
        let batch = match next {
            Some(b) => b,
            // Rejections of a file without a usable row still travel, on an empty chunk.
            None if !rejected.is_empty() => RecordBatch::new_empty(Topic::MetricsRaw.schema()),
            None => return Ok(None),
        };
        Ok(Some(Chunk {
            first_ts: first_time(&batch),
            batch,
            rejected,
        }))
    }
}

fn times(b: &RecordBatch) -> &[i64] {
    b.column(0)
        .as_primitive::<TimestampMillisecondType>()
        .values()
}

fn first_time(b: &RecordBatch) -> i64 {
    times(b).first().copied().unwrap_or(i64::MAX)
}

/// The run's rows in one batch, stably sorted by event time.
fn sorted(run: &[RecordBatch]) -> Result<RecordBatch> {
    let all = arrow_select::concat::concat_batches(&Topic::MetricsRaw.schema(), run)?;
    let ts = times(&all);
    if ts.is_sorted() {
        return Ok(all);
    }
    let mut idx: Vec<u32> = (0..all.num_rows() as u32).collect();
    idx.sort_by_key(|&i| ts[i as usize]);
    Ok(arrow_select::take::take_record_batch(
        &all,
        &UInt32Array::from(idx),
    )?)
}

/// A batch as chunks of at most [`OUT_ROWS`].
fn slices(b: RecordBatch) -> Vec<RecordBatch> {
    let n = b.num_rows();
    (0..n)
        .step_by(OUT_ROWS)
        .map(|at| b.slice(at, OUT_ROWS.min(n - at)))
        .collect()
}

/// The k-way merge of sorted runs: one batch of each in memory, the smallest head next
/// (ties: the earlier run, so rows of one time keep their file order).
struct Merge {
    runs: Vec<StreamReader<BufReader<File>>>,
    heads: Vec<Option<(RecordBatch, usize)>>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    what: String,
}

impl Merge {
    fn new(files: Vec<File>, what: &str) -> Result<Self> {
        let mut m = Self {
            runs: Vec::with_capacity(files.len()),
            heads: Vec::with_capacity(files.len()),
            heap: BinaryHeap::new(),
            what: what.to_string(),
        };
        for f in files {
            m.runs.push(StreamReader::try_new(BufReader::new(f), None)?);
            m.heads.push(None);
        }
        for r in 0..m.runs.len() {
            m.advance_batch(r)?;
        }
        Ok(m)
    }

    /// Loads run `r`'s next batch and queues its first row.
    fn advance_batch(&mut self, r: usize) -> Result<()> {
        self.heads[r] = match self.runs[r].next().transpose()? {
            Some(b) if b.num_rows() > 0 => {
                self.heap.push(Reverse((times(&b)[0], r)));
                Some((b, 0))
            }
            _ => None,
        };
        Ok(())
    }

    /// The next [`OUT_ROWS`] rows in time order.
    fn next(&mut self) -> Result<Option<RecordBatch>> {
        // The batches rows are taken from (a run's batch stays while rows of it are picked).
        let mut pool: Vec<RecordBatch> = Vec::new();
        let mut pool_of: Vec<Option<usize>> = vec![None; self.runs.len()];
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(OUT_ROWS);
        while picks.len() < OUT_ROWS {
            let Some(Reverse((_, r))) = self.heap.pop() else {
                break;
            };
            let Some((batch, row)) = self.heads[r].as_mut() else {
                return Err(Error::state(
                    "ingest",
                    format!("{}: sort merge lost run {r}", self.what),
                ));
            };
            let slot = *pool_of[r].get_or_insert_with(|| {
                pool.push(batch.clone());
                pool.len() - 1
            });
            picks.push((slot, *row));
            *row += 1;
            if *row < batch.num_rows() {
                let t = times(batch)[*row];
                self.heap.push(Reverse((t, r)));
            } else {
                pool_of[r] = None;
                self.advance_batch(r)?;
            }
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let refs: Vec<&RecordBatch> = pool.iter().collect();
        Ok(Some(arrow_select::interleave::interleave_record_batch(
            &refs, &picks,
        )?))
    }
}

#[cfg(test)]
mod tests;
