//! # wfe-ingest: files (or this machine) in, `metrics.raw` out
//!
//! The ingest stage is the pipeline's [`Source`]. [`AgentSource`] samples the machine it runs
//! on (`/proc`, cgroup v2: `wfe agent`); [`PacketSource`] turns a packet capture (a pcap file,
//! or a live interface through tcpdump: `wfe capture`) into per-workload network features;
//! [`FileSource`] reads:
//! - the shared SMD/ASD layout: `<entity>.csv(.gz)` with `timestamp,split,label,m00,...`
//!   (the entity is the workload; `split` and `label` become labels);
//! - generic long CSV: `timestamp,workload,metric,value`;
//! - generic wide CSV: `timestamp,<metric>,<metric>...` (workload from config or the file stem);
//! - Parquet and Arrow IPC files with the `metrics.raw` columns (`event_time` or `timestamp`,
//!   `workload`, `metric`, `value`, optional `labels`), cast to the topic's types.
//!
//! Each file is parsed on its own thread into chunks, and the source merges the files'
//! chunks by event time, so all workloads advance together (as they would live) and a replay
//! at a speed factor paces them correctly. Parsing is where most of a run's CPU goes, so the
//! threads also spread it over the machine's cores. Channels between threads are bounded:
//! a slow pipeline stops the readers instead of filling memory.
//!
//! Bad input never panics: a malformed row, a wrong column count or a non-numeric value is
//! reported with file, line and column and skipped (counted in `rejected.*`), or, with
//! `strict`, ends the run with that error. A missing or empty file is always an error.

pub mod agent;
mod chunk;
mod columnar;
mod config;
mod formats;
mod ordered;
pub mod packets;

use std::collections::BTreeMap;
#[cfg(test)]
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use wfe_contract::{Context, Error, Event, RecordBatch, Result, Source};

pub use agent::{AgentConfig, AgentSource};
use chunk::Chunk;
pub use chunk::{CHUNK_ROWS, Rejection};
pub use config::{Format, SourceConfig, entity_of, expand};
pub use packets::{PacketConfig, PacketSource};
pub use wfe_contract::raw::RawBuilder;

enum Msg {
    Chunk(Chunk),
    /// The file was read to its end. A lane that closes without it lost its reader.
    Done,
    Failed(Error),
}

struct Lane {
    /// The file's path, for errors.
    file: String,
    rx: Receiver<Msg>,
    head: Option<Chunk>,
    done: bool,
}

/// The ingest source: merges the chunks of all files by event time.
pub struct FileSource {
    lanes: Vec<Lane>,
    files: usize,
    finished: u64,
    label: String,
}

impl FileSource {
    /// Starts one reader thread per file. Errors on a missing path or a bad setting; errors in
    /// a file's content surface from [`Source::next_batch`].
    pub fn open(sources: &[SourceConfig], strict: bool) -> Result<Self> {
        if sources.is_empty() {
            return Err(Error::config(
                "sources",
                "no [[sources]] to read: name files or folders (or sample this machine with `wfe agent`)",
            ));
        }
        let files = expand(sources)?;
        let label = sources
            .iter()
            .map(|s| s.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut lanes = Vec::with_capacity(files.len());
        for (path, cfg) in files.iter().cloned() {
            let scale = cfg.ts_scale()?;
            let (tx, rx) = sync_channel(2);
            let file = path.display().to_string();
            std::thread::Builder::new()
                .name(format!("ingest-{}", entity_of(&path)))
                .spawn(move || read_file(path, cfg, scale, strict, tx))
                .map_err(|e| Error::io("ingest thread", e))?;
            lanes.push(Lane {
                file,
                rx,
                head: None,
                done: false,
            });
        }
        Ok(Self {
            files: lanes.len(),
            lanes,
            finished: 0,
            label,
        })
    }
}

/// One file's reader thread. A panic inside a parser (ours or a format library's, on a file
/// nobody foresaw) is contained and sent on as the file's error, so the run fails naming the
/// file instead of finishing without it.
fn read_file(path: PathBuf, cfg: SourceConfig, ts_scale: i64, strict: bool, tx: SyncSender<Msg>) {
    let at = format!("reader of {}", path.display());
    let result = wfe_contract::panic::contain(&at, || {
        let mut reader = formats::open(&path, &cfg, ts_scale, strict)?;
        if !reader.time_ordered() {
            let what = path.display().to_string();
            reader = Box::new(ordered::TimeOrdered::new(reader, what, ordered::RUN_ROWS));
        }
        while let Some(mut chunk) = reader.next_chunk()? {
            if !cfg.labels.is_empty() {
                chunk.batch = with_labels(&chunk.batch, &cfg.labels)?;
            }
            if tx.send(Msg::Chunk(chunk)).is_err() {
                return Ok(()); // the source was dropped: stop quietly
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            let _ = tx.send(Msg::Done);
        }
        Err(e) => {
            let _ = tx.send(Msg::Failed(e));
        }
    }
}

/// Adds a source's labels to every row of a `metrics.raw` batch. Only the dictionary of
/// distinct label sets is rewritten (plus one entry for rows without labels), never the rows.
fn with_labels(batch: &RecordBatch, extra: &BTreeMap<String, String>) -> Result<RecordBatch> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use arrow_array::{Array, DictionaryArray, Int32Array, StringArray};
    use wfe_contract::schemas::labels;
    let idx = batch.schema().index_of("labels")?;
    let dict = batch
        .column(idx)
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| Error::bad_input("metrics.raw labels", "not Dictionary(Int32, Utf8)"))?;
    let values = dict
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::bad_input("metrics.raw labels", "not Dictionary(Int32, Utf8)"))?;
    let merge = |own: &str| {
        let mut set = extra.clone();
        set.extend(labels::parse(own));
        labels::format(set.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    let mut merged: Vec<String> = values.iter().map(|v| merge(v.unwrap_or(""))).collect();
    let unlabelled = merged.len() as i32;
    merged.push(merge(""));
    let keys: Int32Array = (0..dict.len())
        .map(|i| {
            Some(if dict.is_null(i) {
                unlabelled
            } else {
                dict.keys().value(i)
            })
        })
        .collect();
    let column = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(StringArray::from(merged)))?;
    let mut columns = batch.columns().to_vec();
    columns[idx] = Arc::new(column);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("{} file(s) from {}", self.files, self.label)
    }

    fn next_batch(&mut self, ctx: &mut Context) -> Result<Option<RecordBatch>> {
        // Fill every lane's head, then take the one with the earliest event time.
        for lane in self
            .lanes
            .iter_mut()
            .filter(|l| l.head.is_none() && !l.done)
        {
            match lane.rx.recv() {
                Ok(Msg::Chunk(c)) => lane.head = Some(c),
                Ok(Msg::Failed(e)) => {
                    lane.done = true;
                    return Err(e);
                }
                Ok(Msg::Done) => {
                    lane.done = true;
                    self.finished += 1;
                }
                Err(_) => {
                    lane.done = true;
                    return Err(Error::Panicked {
                        at: format!("reader of file {} of {}", lane.file, self.label),
                        message: "its thread ended before the end of the file".into(),
                    });
                }
            }
        }
        let next = self
            .lanes
            .iter_mut()
            .filter(|l| l.head.is_some())
            .min_by_key(|l| l.head.as_ref().map(|c| c.first_ts))
            .and_then(|l| l.head.take());
        Ok(next.map(|chunk| {
            for r in &chunk.rejected {
                ctx.event(Event::Rejected {
                    kind: r.kind,
                    location: &r.location,
                    message: &r.message,
                    count: r.count,
                });
            }
            ctx.count("rows_out", chunk.batch.num_rows() as u64);
            chunk.batch
        }))
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.finished, Some(self.files as u64))
    }
}

#[cfg(test)]
mod tests;
