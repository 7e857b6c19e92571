//! Parquet and Arrow IPC files holding the `metrics.raw` columns.
//!
//! Columns are found by name and cast to the topic's types. Timestamps are converted row by
//! row with checked arithmetic: a null, an integer whose milliseconds overflow (nanoseconds
//! read as seconds, say) or a float out of range is a rejected row naming the file and row,
//! never the epoch or a saturated value. IPC files are checked before arrow-ipc reads them
//! ([`wfe_contract::ipc`]): a hostile length is an error, not an abort.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{ArrowError, DataType};
use wfe_contract::columns::timestamp_column;
use wfe_contract::schemas::{Topic, dict_type, ts_type};
use wfe_contract::{Error, Result};

use crate::chunk::{Chunk, ChunkReader, Rejection, float_ms};

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

pub(crate) struct ArrowFileReader {
    path: String,
    batches: Batches,
    ts_scale: i64,
    strict: bool,
    /// Rows read so far, so a rejected row is named by its row number in the file.
    rows: u64,
}

impl ArrowFileReader {
    /// A Parquet (`parquet`) or Arrow IPC file's reader.
    pub(crate) fn open(
        path: &Path,
        file: File,
        parquet: bool,
        ts_scale: i64,
        strict: bool,
    ) -> Result<Box<dyn ChunkReader>> {
        let display = path.display().to_string();
        let batches: Batches = if parquet {
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.with_batch_size(64 * 1024).build())
                    .map_err(|e| {
                        Error::bad_input(&display, format!("not a readable Parquet file: {e}"))
                    })?;
            Box::new(reader)
        } else {
            open_ipc(&display, file)?
        };
        Ok(Box::new(Self::new(display, batches, ts_scale, strict)))
    }

    fn new(path: String, batches: Batches, ts_scale: i64, strict: bool) -> Self {
        Self {
            path,
            batches,
            ts_scale,
            strict,
            rows: 0,
        }
    }

    /// The batch as `metrics.raw`, without the rows whose timestamp is unusable.
    fn convert(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<Rejection>)> {
        let get = |names: &[&str]| names.iter().find_map(|n| batch.column_by_name(n)).cloned();
        let missing = |what: &str| {
            Error::bad_input(
                &self.path,
                format!(
                    "column `{what}` missing: expected the metrics.raw columns (event_time, workload, metric, value[, labels]), found {}",
                    wfe_contract::schemas::schema_label(&batch.schema())
                ),
            )
        };
        let cast = |a: &ArrayRef, to: &DataType, what: &str| {
            arrow_cast::cast(a, to)
                .map_err(|e| Error::bad_input(&self.path, format!("column `{what}`: {e}")))
        };
        let ts = get(&["event_time", "timestamp"]).ok_or_else(|| missing("event_time"))?;
        let ms = self.milliseconds(&ts, &cast)?;
        let rejected = self.rejections(&ts, &ms)?;
        let workload = cast(
            &get(&["workload"]).ok_or_else(|| missing("workload"))?,
            &dict_type(),
            "workload",
        )?;
        let metric = cast(
            &get(&["metric"]).ok_or_else(|| missing("metric"))?,
            &dict_type(),
            "metric",
        )?;
        let value = cast(
            &get(&["value"]).ok_or_else(|| missing("value"))?,
            &DataType::Float64,
            "value",
        )?;
        let labels = match get(&["labels"]) {
            Some(l) => cast(&l, &dict_type(), "labels")?,
            None => arrow_array::new_null_array(&dict_type(), batch.num_rows()),
        };
        let keep: Option<BooleanArray> =
            (!rejected.is_empty()).then(|| ms.iter().map(|v| Some(v.is_some())).collect());
        let ts = timestamp_column(ms.into_iter().map(|v| v.unwrap_or(0)).collect());
        let out = RecordBatch::try_new(
            Topic::MetricsRaw.schema(),
            vec![ts, workload, metric, value, labels],
        )?;
        let out = match keep {
            Some(mask) => arrow_select::filter::filter_record_batch(&out, &mask)?,
            None => out,
        };
        Ok((out, rejected))
    }

    /// Each row's time in milliseconds; `None` where it is null or does not fit.
    fn milliseconds(
        &self,
        ts: &ArrayRef,
        cast: &dyn Fn(&ArrayRef, &DataType, &str) -> Result<ArrayRef>,
    ) -> Result<Vec<Option<i64>>> {
        let scale = self.ts_scale;
        Ok(match ts.data_type() {
            // Arrow's unit conversion gives null where the milliseconds overflow.
            DataType::Timestamp(..) => cast(ts, &ts_type(), "event_time")?
                .as_primitive::<TimestampMillisecondType>()
                .iter()
                .collect(),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                cast(ts, &DataType::Float64, "event_time")?
                    .as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.and_then(|v| float_ms(v, scale)))
                    .collect()
            }
            _ => cast(ts, &DataType::Int64, "event_time")?
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.and_then(|v| v.checked_mul(scale)))
                .collect(),
        })
    }

    /// A rejection per unusable timestamp (an error on the first one when strict).
    fn rejections(&self, ts: &ArrayRef, ms: &[Option<i64>]) -> Result<Vec<Rejection>> {
        let mut out = Vec::new();
        for (i, _) in ms.iter().enumerate().filter(|(_, v)| v.is_none()) {
            let location = format!("{}: row {}", self.path, self.rows + i as u64 + 1);
            let message = if ts.is_null(i) {
                "event_time is null".to_string()
            } else {
                let shown = arrow_cast::display::array_value_to_string(ts, i)
                    .unwrap_or_else(|_| "?".into());
                format!(
                    "event_time {shown} does not fit a millisecond timestamp (timestamp_unit is {} ms per unit)",
                    self.ts_scale
                )
            };
            if self.strict {
                return Err(Error::bad_input(location, message));
            }
            out.push(Rejection {
                kind: "bad_timestamp",
                location,
                message,
                count: 1,
            });
        }
        Ok(out)
    }
}

/// An IPC file (or, failing the file magic, a stream), every length checked first.
fn open_ipc(path: &str, mut file: File) -> Result<Batches> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let bad = |e: ArrowError| {
        Error::bad_input(
            path,
            format!("not a readable Arrow IPC file or stream: {e}"),
        )
    };
    if wfe_contract::ipc::is_file(&mut file)? {
        wfe_contract::ipc::check_file(&mut file, len, path)?;
        let r = arrow_ipc::reader::FileReader::try_new(file, None).map_err(bad)?;
        return Ok(Box::new(r));
    }
    wfe_contract::ipc::check_stream(&mut file, len, path)?;
    let r = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None).map_err(bad)?;
    Ok(Box::new(r))
}

impl ChunkReader for ArrowFileReader {
    fn time_ordered(&self) -> bool {
        false
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        match self.batches.next() {
            None => Ok(None),
            Some(Err(e)) => Err(Error::bad_input(&self.path, e.to_string())),
            Some(Ok(batch)) => {
                let (out, rejected) = self.convert(&batch)?;
                self.rows += batch.num_rows() as u64;
                let ts = out.column(0).as_primitive::<TimestampMillisecondType>();
                let first_ts = ts.values().first().copied().unwrap_or(i64::MAX);
                Ok(Some(Chunk {
                    batch: out,
                    first_ts,
                    rejected,
                }))
            }
        }
    }
}
