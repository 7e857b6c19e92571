//! # wfe-sql: SQL over what wfe has written
//!
//! `wfe sql "SELECT ..."` runs a query with [DataFusion] over the stored topics: the Parquet
//! files a run writes (`out/fingerprints.parquet`, the fingerprint store, `out/forecasts.parquet`
//! and the rest), and recordings of Kafka topics (`wfe record`: Arrow IPC stream `.arrows`
//! files, or Parquet). Each file is one table named after it, with every character that is not
//! a letter, a digit or `_` made `_`: `metrics.norm.parquet` is `metrics_norm`. A folder
//! registers each file in it. A rolled output (a live source's `out/forecasts.parquet/`
//! folder of `part-*` files) is one table named like the single file would be, over every
//! finished part. Parquet files are scanned lazily (only the columns and row
//! groups a query needs); IPC streams are read into memory first, as the stream format has no
//! index to scan by.
//!
//! Retention per tenant ([`retention`]): with rules, each table with a `workload` and a time
//! column is a view of the rows still retained, and [`Catalog::apply_retention`] rewrites the
//! files without the expired ones.
//!
//! This crate is the only one that links DataFusion (its build is the heaviest of the
//! workspace); the CLI calls it, no stage does.
//!
//! [DataFusion]: https://datafusion.apache.org

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use wfe_contract::{Error, Result};

pub mod retention;

pub use retention::{Retention, RetentionRule};

/// File extensions that become tables.
const EXTENSIONS: [&str; 2] = [".parquet", ".arrows"];

/// One registered table: its name and the file (or rolled output's folder) behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub path: PathBuf,
}

/// A query session over stored files.
pub struct Catalog {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
    tables: Vec<Table>,
    /// Per table (same order): the time column retention filters it by, with retention.
    time: Vec<Option<String>>,
    retention: Retention,
    now_ms: i64,
}

/// What [`Catalog::apply_retention`] did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub table: String,
    pub path: PathBuf,
    pub rows_before: usize,
    pub rows_after: usize,
}

/// Output formats of [`Catalog::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines, one object per row.
    Json,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(Error::config(
                "--format",
                format!("`{other}` is not table, csv or json"),
            )),
        }
    }
}

/// The table name of a stored file: its name without the extension, non-identifier
/// characters made `_` (`metrics.norm.parquet` -> `metrics_norm`).
pub fn table_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = EXTENSIONS.iter().find_map(|e| name.strip_suffix(e))?;
    let mut t: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        t.insert(0, '_');
    }
    Some(t)
}

/// Whether `path` is a rolled output: a folder named like a stored file.
fn is_rolled(path: &Path) -> bool {
    path.is_dir() && table_name(path).is_some()
}

/// The finished parts of a rolled output, in order (`part-*` files of the folder's format;
/// the open part is a hidden partial file and is not one of them).
pub fn parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let at = |e| Error::io(dir.display().to_string(), e);
    let ext = dir.extension().unwrap_or_default().to_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(at)? {
        let path = entry.map_err(at)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_file() && name.starts_with("part-") && path.extension() == Some(&ext) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The files behind a table: itself, or a rolled output's parts.
fn files_of(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        parts(path)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// The files under `paths` that become tables (a folder contributes its own files and
/// rolled outputs, sorted).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Table>> {
    let mut tables: Vec<Table> = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p.display().to_string(), e))?;
        let mut files = if is_rolled(p) {
            vec![p.clone()]
        } else if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p.display().to_string(), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                // A rolled output with no finished part yet (a live source just started)
                // is not a table yet.
                .filter(|f| f.is_file() || (is_rolled(f) && parts(f).is_ok_and(|p| !p.is_empty())))
                .filter(|f| table_name(f).is_some())
                .collect();
            found.sort();
            found
        } else if table_name(p).is_some() {
            vec![p.clone()]
        } else {
            return Err(Error::bad_input(
                p.display().to_string(),
                "not a .parquet or .arrows file",
            ));
        };
        for f in files.drain(..) {
            let name = table_name(&f).expect("filtered above");
            if let Some(t) = tables.iter().find(|t| t.name == name) {
                return Err(Error::bad_input(
                    f.display().to_string(),
                    format!(
                        "table `{name}` is already {}: pass one of the two folders",
                        t.path.display()
                    ),
                ));
            }
            tables.push(Table { name, path: f });
        }
    }
    if tables.is_empty() {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::bad_input(
            list.join(", "),
            "no .parquet or .arrows files to query: run `wfe run` (outputs.parquet) or \
             `wfe record` first, or pass --store",
        ));
    }
    Ok(tables)
}

fn df_err(what: impl Into<String>) -> impl FnOnce(datafusion::error::DataFusionError) -> Error {
    let what = what.into();
    move |e| Error::bad_input(what, e.to_string())
}

/// The time column retention reads in a table: the first of [`retention::TIME_COLUMNS`] that
/// is a timestamp, when the table also has a `workload` column.
fn time_column(schema: &arrow_schema::Schema) -> Option<String> {
    schema.field_with_name("workload").ok()?;
    retention::TIME_COLUMNS
        .iter()
        .find(|c| {
            schema
                .field_with_name(c)
                .is_ok_and(|f| matches!(f.data_type(), arrow_schema::DataType::Timestamp(..)))
        })
        .map(|c| c.to_string())
}

impl Catalog {
    /// Registers every stored file under `paths` as a table (no retention).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        Self::open_with(paths, &Retention::default(), 0)
    }

    /// Registers every stored file under `paths` as a table of the rows `retention` keeps as
    /// of `now_ms` (epoch milliseconds).
    pub fn open_with(paths: &[PathBuf], retention: &Retention, now_ms: i64) -> Result<Self> {
        let tables = discover(paths)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        // `SHOW TABLES` and `information_schema.columns` describe the store.
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        let mut times = Vec::new();
        for t in &tables {
            let at = t.path.display().to_string();
            let df = read(&ctx, &runtime, &t.path)?;
            let time = time_column(df.schema().as_arrow());
            let view = match time.as_deref().and_then(|c| retention.predicate(c, now_ms)) {
                Some(pred) => {
                    let expr = df.parse_sql_expr(&pred).map_err(df_err(at.clone()))?;
                    df.clone().filter(expr).map_err(df_err(at.clone()))?
                }
                None => df.clone(),
            };
            ctx.register_table(&t.name, view.into_view())
                .map_err(df_err(at))?;
            times.push(time.filter(|_| !retention.is_empty()));
        }
        Ok(Self {
            ctx,
            runtime,
            tables,
            time: times,
            retention: retention.clone(),
            now_ms,
        })
    }

    /// Rewrites every file that holds expired rows without them (the retention the catalog
    /// was opened with; a rolled output part by part); returns what it did per file,
    /// unchanged files left out.
    pub fn apply_retention(&self) -> Result<Vec<Compaction>> {
        let mut done = Vec::new();
        for (t, time) in self.tables.iter().zip(&self.time) {
            let Some(pred) = time
                .as_deref()
                .and_then(|c| self.retention.predicate(c, self.now_ms))
            else {
                continue;
            };
            for file in files_of(&t.path)? {
                if let Some(c) = self.compact(&t.name, &file, &pred)? {
                    done.push(c);
                }
            }
        }
        Ok(done)
    }

    /// Rewrites one file with the rows `pred` keeps, if it drops any.
    fn compact(&self, table: &str, file: &Path, pred: &str) -> Result<Option<Compaction>> {
        let at = file.display().to_string();
        let all = read(&self.ctx, &self.runtime, file)?;
        let before = self
            .runtime
            .block_on(all.clone().count())
            .map_err(df_err(at.clone()))?;
        let expr = all.parse_sql_expr(pred).map_err(df_err(at.clone()))?;
        let kept = all.clone().filter(expr).map_err(df_err(at.clone()))?;
        let kept = self
            .runtime
            .block_on(kept.collect())
            .map_err(df_err(at.clone()))?;
        let after: usize = kept.iter().map(|b| b.num_rows()).sum();
        if after == before {
            return Ok(None);
        }
        // The rows go back in the file's own schema (DataFusion reads strings as views and
        // drops the topic metadata): readers, and the other parts of a rolled output, see
        // the same columns as before.
        let schema = file_schema(file)?;
        let kept = kept
            .iter()
            .map(|b| conform(b, &schema).map_err(|e| Error::bad_input(at.clone(), e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        rewrite(file, schema, &kept)?;
        Ok(Some(Compaction {
            table: table.to_string(),
            path: file.to_path_buf(),
            rows_before: before,
            rows_after: after,
        }))
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Runs one read-only statement and collects its result. DDL (`CREATE`, `DROP`), DML and
    /// `COPY ... TO` (which would write files anywhere the process may) and other statements
    /// (`SET`, transactions) are refused by the planner: `wfe sql` reads the store, and the
    /// one writer of stored files is retention ([`Catalog::apply_retention`]).
    pub fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.runtime.block_on(async {
            let df = self
                .ctx
                .sql_with_options(sql, read_only)
                .await
                .map_err(df_err("query (read-only: no DDL, DML, COPY or SET)"))?;
            df.collect().await.map_err(df_err("query"))
        })
    }

    /// Renders a result in `format`.
    pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
        let err = |e: arrow_schema::ArrowError| Error::bad_input("query result", e.to_string());
        match format {
            Format::Table => Ok(arrow_cast::pretty::pretty_format_batches(batches)
                .map_err(err)?
                .to_string()
                + "\n"),
            Format::Csv => {
                let mut buf = Vec::new();
                {
                    let mut w = arrow_csv_writer(&mut buf);
                    for b in batches {
                        w.write(b).map_err(err)?;
                    }
                }
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
            Format::Json => {
                let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
                for b in batches {
                    w.write(b).map_err(err)?;
                }
                w.finish().map_err(err)?;
                Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
            }
        }
    }
}

fn arrow_csv_writer(buf: &mut Vec<u8>) -> datafusion::arrow::csv::Writer<&mut Vec<u8>> {
    datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(buf)
}

/// Writes `batches` to a new file beside `path` in `path`'s format, then renames it over
/// `path`: a reader sees the old file or the new one.
fn rewrite(path: &Path, schema: arrow_schema::SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let at = path.display().to_string();
    let tmp = path.with_extension("retention-tmp");
    let err = |e: &dyn std::fmt::Display| Error::bad_input(at.clone(), e.to_string());
    let file = File::create(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    if path.extension().is_some_and(|e| e == "parquet") {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| err(&e))?;
        for b in batches {
            w.write(b).map_err(|e| err(&e))?;
        }
        w.close().map_err(|e| err(&e))?;
    } else {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(file, &schema).map_err(|e| err(&e))?;
        for b in batches {
            w.write(b).map_err(|e| err(&e))?;
        }
        w.finish().map_err(|e| err(&e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(at.clone(), e))
}

/// The Arrow schema a stored file was written with (metadata included).
fn file_schema(path: &Path) -> Result<arrow_schema::SchemaRef> {
    let at = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(at.clone(), e))?;
    if path.extension().is_some_and(|e| e == "parquet") {
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::bad_input(at, e.to_string()))?;
        return Ok(b.schema().clone());
    }
    // Checked by `read_stream` when the catalog read it.
    let r = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
        .map_err(|e| Error::bad_input(at, e.to_string()))?;
    Ok(r.schema())
}

/// `batch` with the columns of `schema`, each cast to its type.
fn conform(
    batch: &RecordBatch,
    schema: &arrow_schema::SchemaRef,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                arrow_schema::ArrowError::SchemaError(format!("no column `{}`", f.name()))
            })?;
            arrow_cast::cast(c, f.data_type())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// All rows of a stored file or rolled output: Parquet scanned lazily, IPC streams read.
fn read(ctx: &SessionContext, runtime: &tokio::runtime::Runtime, path: &Path) -> Result<DataFrame> {
    let at = path.display().to_string();
    let files = files_of(path)?;
    if files.is_empty() {
        return Err(Error::bad_input(
            at,
            "a rolled output with no finished part yet (parts close every outputs.roll_s)",
        ));
    }
    if path.extension().is_some_and(|e| e == "parquet") {
        // A folder is scanned as one listing table; its trailing `/` says it is a folder.
        let url = if path.is_dir() {
            format!("{at}/")
        } else {
            at.clone()
        };
        return runtime
            .block_on(ctx.read_parquet(&url, ParquetReadOptions::default()))
            .map_err(df_err(at));
    }
    let mut batches = Vec::new();
    for f in &files {
        batches.extend(read_stream(f)?);
    }
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Err(Error::bad_input(at, "the recording holds no batch"));
    };
    let table = MemTable::try_new(schema, vec![batches]).map_err(df_err(at.clone()))?;
    ctx.read_table(Arc::new(table)).map_err(df_err(at))
}

/// Every batch of an Arrow IPC stream file (a `wfe record` recording).
fn read_stream(path: &Path) -> Result<Vec<RecordBatch>> {
    let at = path.display().to_string();
    let mut file = File::open(path).map_err(|e| Error::io(at.clone(), e))?;
    let len = file.metadata().map_err(|e| Error::io(at.clone(), e))?.len();
    wfe_contract::ipc::check_stream(&mut file, len, &at)?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
        .map_err(|e| Error::bad_input(at.clone(), e.to_string()))?;
    reader
        .map(|b| b.map_err(|e| Error::bad_input(at.clone(), e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests;
