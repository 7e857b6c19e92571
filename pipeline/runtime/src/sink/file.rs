//! One topic written to one file: the formats, the `Sink` trait and the three file sinks,
//! each written to a partial file and renamed over its path when closed.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde::Deserialize;
use wfe_contract::{Error, Result};

/// File formats a topic can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    Parquet,
    Ipc,
    Jsonl,
}

impl SinkFormat {
    pub fn extension(self) -> &'static str {
        match self {
            SinkFormat::Parquet => "parquet",
            SinkFormat::Ipc => "arrows",
            SinkFormat::Jsonl => "jsonl",
        }
    }
}

/// Where a topic's batches go.
pub trait Sink: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Called every runner tick between batches: time-based work (rolling a part).
    fn tick(&mut self) -> Result<()> {
        Ok(())
    }
    /// Finishes the file (footer, flush).
    fn close(self: Box<Self>) -> Result<()>;
    fn path(&self) -> &Path;
}

/// Where a sink writes until it is closed: `.<file name>.partial` in the same folder (so the
/// rename is atomic).
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Makes a finished file the output: flushed, on disk, then renamed over `path`.
fn commit(w: BufWriter<File>, path: &Path) -> Result<()> {
    let file = w
        .into_inner()
        .map_err(|e| Error::io(path.display().to_string(), e.into_error()))?;
    file.sync_all()
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    std::fs::rename(partial_path(path), path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// Opens a sink for `schema` at `path` (written to [`partial_path`] until closed).
pub fn open(format: SinkFormat, path: PathBuf, schema: Arc<Schema>) -> Result<Box<dyn Sink>> {
    let partial = partial_path(&path);
    let file = File::create(&partial).map_err(|e| Error::io(partial.display().to_string(), e))?;
    let w = BufWriter::with_capacity(1 << 20, file);
    let err = |e: String| Error::io(path.display().to_string(), std::io::Error::other(e));
    Ok(match format {
        SinkFormat::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            let writer = parquet::arrow::ArrowWriter::try_new(w, schema, Some(props))
                .map_err(|e| err(e.to_string()))?;
            Box::new(ParquetSink {
                path,
                writer: Some(writer),
            })
        }
        SinkFormat::Ipc => {
            let writer = arrow_ipc::writer::StreamWriter::try_new(w, &schema)
                .map_err(|e| err(e.to_string()))?;
            Box::new(IpcSink { path, writer })
        }
        SinkFormat::Jsonl => Box::new(JsonSink {
            path,
            writer: arrow_json::LineDelimitedWriter::new(w),
        }),
    })
}

struct ParquetSink {
    path: PathBuf,
    writer: Option<parquet::arrow::ArrowWriter<BufWriter<File>>>,
}

impl Sink for ParquetSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| io_err(&self.path, "already closed"))?;
        w.write(batch)
            .map_err(|e| io_err(&self.path, &e.to_string()))
    }
    fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let inner = w
                .into_inner()
                .map_err(|e| io_err(&self.path, &e.to_string()))?;
            commit(inner, &self.path)?;
        }
        Ok(())
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

struct IpcSink {
    path: PathBuf,
    writer: arrow_ipc::writer::StreamWriter<BufWriter<File>>,
}

impl Sink for IpcSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| io_err(&self.path, &e.to_string()))
    }
    fn close(mut self: Box<Self>) -> Result<()> {
        self.writer
            .finish()
            .map_err(|e| io_err(&self.path, &e.to_string()))?;
        let Self { path, writer } = *self;
        let inner = writer
            .into_inner()
            .map_err(|e| io_err(&path, &e.to_string()))?;
        commit(inner, &path)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

struct JsonSink {
    path: PathBuf,
    writer: arrow_json::LineDelimitedWriter<BufWriter<File>>,
}

impl Sink for JsonSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let plain = undictionary(batch)?;
        self.writer
            .write(&plain)
            .map_err(|e| io_err(&self.path, &e.to_string()))
    }
    fn close(mut self: Box<Self>) -> Result<()> {
        self.writer
            .finish()
            .map_err(|e| io_err(&self.path, &e.to_string()))?;
        let Self { path, writer } = *self;
        commit(writer.into_inner(), &path)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

fn io_err(path: &Path, msg: &str) -> Error {
    Error::io(
        path.display().to_string(),
        std::io::Error::other(msg.to_string()),
    )
}

/// Casts dictionary columns to plain strings (for readers that want values, not keys).
pub fn undictionary(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if let DataType::Dictionary(_, v) = f.data_type() {
            columns.push(arrow_cast::cast(c, v)?);
            fields.push(Field::new(f.name(), v.as_ref().clone(), f.is_nullable()));
        } else {
            columns.push(c.clone());
            fields.push(f.as_ref().clone());
        }
    }
    let schema = Schema::new(fields).with_metadata(schema.metadata().clone());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
