//! The files a run's outputs (or `wfe record`) hold for one topic, and their batches: a
//! Parquet or Arrow IPC stream file, a folder of such files named after the topic, or a
//! rolled output's parts. `wfe similar` reads fingerprints from them, `wfe recommend`
//! forecasts.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use wfe_contract::{Error, Result};

/// Whether `p` is named like an output of `topic` (a file, or a rolled output's folder).
fn is_output_of(p: &Path, topic: &str) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name.starts_with(topic) && (name.ends_with(".parquet") || name.ends_with(".arrows"))
}

/// The store's files of `topic`: the path itself, or the matching files of a folder; a
/// rolled output (a live source's `<topic>.parquet/` folder) gives its finished parts.
pub fn topic_files(store: &Path, topic: &str) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(store).map_err(|e| Error::io(store.display().to_string(), e))?;
    if !meta.is_dir() {
        return Ok(vec![store.to_path_buf()]);
    }
    if is_output_of(store, topic) {
        return wfe_sql::parts(store);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for p in std::fs::read_dir(store)
        .map_err(|e| Error::io(store.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_output_of(p, topic))
    {
        if p.is_dir() {
            files.extend(wfe_sql::parts(&p)?);
        } else {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_input(
            store.display().to_string(),
            format!(
                "no {topic}*.parquet or {topic}*.arrows files here: run `wfe run` with \
                 `{topic}` in outputs.parquet, or pass --store"
            ),
        ));
    }
    Ok(files)
}

/// All batches of one Parquet or Arrow IPC stream file.
pub fn read(path: &Path) -> Result<Vec<RecordBatch>> {
    let at = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(at.clone(), e))?;
    let bad = |e: String| Error::bad_input(at.clone(), e);
    if path.extension().is_some_and(|e| e == "parquet") {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| bad(e.to_string()))?
            .map(|b| b.map_err(|e| bad(e.to_string())))
            .collect()
    } else {
        arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| bad(e.to_string()))?
            .map(|b| b.map_err(|e| bad(e.to_string())))
            .collect()
    }
}
