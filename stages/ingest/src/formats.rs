//! The file formats ingest reads, each turned into `metrics.raw` chunks.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use arrow_array::RecordBatch;
use wfe_contract::schemas::{Topic, labels};
use wfe_contract::{Error, Result};

use crate::chunk::{CHUNK_ROWS, Chunk, ChunkReader, Rejection, float_ms};
use crate::columnar::ArrowFileReader;
use crate::config::{Format, SourceConfig, entity_of};
use wfe_contract::raw::RawBuilder;

pub(crate) fn open(
    path: &Path,
    cfg: &SourceConfig,
    ts_scale: i64,
    strict: bool,
) -> Result<Box<dyn ChunkReader>> {
    let display = path.display().to_string();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = match cfg.format {
        Format::Auto if name.ends_with(".parquet") => Format::Parquet,
        Format::Auto if name.ends_with(".arrow") || name.ends_with(".ipc") => Format::Ipc,
        f => f,
    };
    let file = File::open(path).map_err(|e| Error::io(&display, e))?;
    if file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
        return Err(Error::bad_input(display, "empty file: no header line"));
    }
    match format {
        Format::Parquet | Format::Ipc => {
            let parquet = format == Format::Parquet;
            ArrowFileReader::open(path, file, parquet, ts_scale, strict)
        }
        _ => {
            let read: Box<dyn Read + Send> = if name.ends_with(".gz") {
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                    1 << 16,
                    file,
                )))
            } else {
                Box::new(file)
            };
            Ok(Box::new(CsvReader::new(
                path, read, format, cfg, ts_scale, strict,
            )?))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Smd,
    Long,
    Wide,
}

struct CsvReader {
    path: String,
    reader: LineRecords,
    layout: Layout,
    header: Vec<String>,
    workload: String,
    ts_scale: i64,
    strict: bool,
    record: Record,
    done: bool,
}

impl CsvReader {
    fn new(
        path: &Path,
        read: Box<dyn Read + Send>,
        format: Format,
        cfg: &SourceConfig,
        ts_scale: i64,
        strict: bool,
    ) -> Result<Self> {
        let display = path.display().to_string();
        let mut reader = LineRecords::new(read);
        let mut first = Record::default();
        let header: Vec<String> = if reader
            .next(&mut first)
            .map_err(|e| Error::io(&display, e))?
        {
            (0..first.len())
                .map(|i| String::from_utf8_lossy(&first[i]).trim().to_string())
                .collect()
        } else {
            vec![]
        };
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(Error::bad_input(display, "empty file: no header line"));
        }
        let lower: Vec<String> = header.iter().map(|h| h.to_ascii_lowercase()).collect();
        let detected = if lower.len() >= 3 && lower[..3] == ["timestamp", "split", "label"] {
            Layout::Smd
        } else if lower == ["timestamp", "workload", "metric", "value"] {
            Layout::Long
        } else {
            Layout::Wide
        };
        let layout = match format {
            Format::Auto => detected,
            Format::Smd => Layout::Smd,
            Format::CsvLong => Layout::Long,
            _ => Layout::Wide,
        };
        let need = match layout {
            Layout::Smd => 4,
            Layout::Long => 4,
            Layout::Wide => 2,
        };
        if header.len() < need || (layout != detected && layout != Layout::Wide) {
            return Err(Error::bad_input(
                format!("{display}:1"),
                format!(
                    "header `{}` does not fit the {:?} layout",
                    header.join(","),
                    format
                ),
            ));
        }
        let workload = cfg.workload.clone().unwrap_or_else(|| entity_of(path));
        Ok(Self {
            path: display,
            reader,
            layout,
            header,
            workload,
            ts_scale,
            strict,
            record: Record::default(),
            done: false,
        })
    }

    fn location(&self, line: u64, col: usize) -> String {
        match self.header.get(col) {
            Some(name) => format!("{}:{}:{} ({})", self.path, line, col + 1, name),
            None => format!("{}:{}:{}", self.path, line, col + 1),
        }
    }

    /// Records a bad value: an error when strict, else a rejection to report.
    fn reject(
        &self,
        rejected: &mut Vec<Rejection>,
        kind: &'static str,
        location: String,
        message: String,
    ) -> Result<()> {
        if self.strict {
            return Err(Error::bad_input(location, message));
        }
        rejected.push(Rejection {
            kind,
            location,
            message,
            count: 1,
        });
        Ok(())
    }

    fn parse_ts(&self, field: &[u8]) -> Option<i64> {
        let s = std::str::from_utf8(field).ok()?.trim();
        if let Ok(v) = s.parse::<i64>() {
            return v.checked_mul(self.ts_scale);
        }
        float_ms(fast_float2::parse(s).ok()?, self.ts_scale)
    }
}

/// Parses a float. Metric files are mostly short plain decimals (`0.061728`, `12`): those take
/// an exact shortcut (an integer of at most 15 digits divided by a power of ten is correctly
/// rounded, so the result equals a full parse); anything else goes to fast-float2.
fn parse_f64(field: &[u8]) -> Result<f64, ()> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (neg, digits) = match field.first() {
        Some(b'-') => (true, &field[1..]),
        _ => (false, field),
    };
    if !digits.is_empty() && digits.len() <= 16 {
        let (mut mantissa, mut count, mut frac, mut dot, mut ok) =
            (0u64, 0usize, 0usize, false, true);
        for &c in digits {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + u64::from(c - b'0');
                    count += 1;
                    frac += usize::from(dot);
                }
                b'.' if !dot => dot = true,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && count > 0 && count <= 15 {
            let v = mantissa as f64 / POW10[frac];
            return Ok(if neg { -v } else { v });
        }
    }
    fast_float2::parse::<f64, _>(field).map_err(|_| ())
}

#[cfg(test)]
pub(crate) fn parse_f64_for_tests(field: &[u8]) -> Option<f64> {
    parse_f64(field).ok()
}

/// One CSV record: its fields as ranges of one buffer, and its line number.
#[derive(Default)]
struct Record {
    buf: Vec<u8>,
    fields: Vec<(usize, usize)>,
    line: u64,
}

impl Record {
    fn len(&self) -> usize {
        self.fields.len()
    }
}

impl std::ops::Index<usize> for Record {
    type Output = [u8];
    fn index(&self, i: usize) -> &[u8] {
        let (a, b) = self.fields[i];
        &self.buf[a..b]
    }
}

/// Splits CSV input into records. Metric files are plain numbers and names, so a line without
/// a quote is split on commas directly, which is several times cheaper than a general CSV
/// state machine; a line with a quote goes through the csv crate, so quoted fields (with
/// commas inside) still parse correctly. Empty lines are skipped, CRLF is accepted.
struct LineRecords {
    input: Box<dyn BufRead + Send>,
    line: u64,
}

impl LineRecords {
    fn new(read: Box<dyn Read + Send>) -> Self {
        Self {
            input: Box::new(BufReader::with_capacity(1 << 16, read)),
            line: 0,
        }
    }

    /// Reads the next non-empty record into `rec`; false at the end of input.
    fn next(&mut self, rec: &mut Record) -> std::io::Result<bool> {
        loop {
            rec.buf.clear();
            rec.fields.clear();
            if self.input.read_until(b'\n', &mut rec.buf)? == 0 {
                return Ok(false);
            }
            self.line += 1;
            rec.line = self.line;
            while rec.buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                rec.buf.pop();
            }
            if rec.buf.is_empty() {
                continue;
            }
            if rec.buf.contains(&b'"') {
                let mut r = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(&rec.buf[..]);
                let mut quoted = csv::ByteRecord::new();
                r.read_byte_record(&mut quoted)
                    .map_err(std::io::Error::other)?;
                let mut buf = Vec::with_capacity(rec.buf.len());
                for f in quoted.iter() {
                    rec.fields.push((buf.len(), buf.len() + f.len()));
                    buf.extend_from_slice(f);
                }
                rec.buf = buf;
            } else {
                let mut start = 0;
                for (i, b) in rec.buf.iter().enumerate() {
                    if *b == b',' {
                        rec.fields.push((start, i));
                        start = i + 1;
                    }
                }
                rec.fields.push((start, rec.buf.len()));
            }
            return Ok(true);
        }
    }
}

/// A field quoted in an error message, shortened to 40 characters.
fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).chars().take(40).collect()
}

/// A workload or metric name as written (invalid UTF-8 replaced), never shortened: two pods
/// that share a long prefix stay two workloads.
fn name(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

impl ChunkReader for CsvReader {
    fn time_ordered(&self) -> bool {
        self.layout != Layout::Long
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let width = self.header.len();
        let first_metric = match self.layout {
            Layout::Smd => 3,
            Layout::Wide => 1,
            Layout::Long => 3,
        };
        let rows = if self.layout == Layout::Long {
            CHUNK_ROWS * 64
        } else {
            CHUNK_ROWS
        };
        let mut b = RawBuilder::with_capacity(rows * (width - first_metric).max(1));
        let mut rejected = Vec::new();
        let wl = b.workload_key(&self.workload.clone());
        if self.layout != Layout::Long {
            for name in &self.header[first_metric..] {
                b.metric_key(name);
            }
        }
        let mut n = 0;
        let mut last_label: Option<(Vec<u8>, Vec<u8>, i32)> = None;
        while n < rows {
            let more = self
                .reader
                .next(&mut self.record)
                .map_err(|e| Error::io(&self.path, e))?;
            if !more {
                self.done = true;
                break;
            }
            n += 1;
            let line = self.record.line;
            if self.record.len() != width {
                let msg = format!("expected {width} columns, found {}", self.record.len());
                self.reject(
                    &mut rejected,
                    "column_count",
                    format!("{}:{line}", self.path),
                    msg,
                )?;
                continue;
            }
            let Some(ts) = self.parse_ts(&self.record[0]) else {
                let msg = format!("timestamp `{}` is not a number", text(&self.record[0]));
                self.reject(&mut rejected, "bad_timestamp", self.location(line, 0), msg)?;
                continue;
            };
            match self.layout {
                Layout::Long => {
                    let value = match fast_float2::parse::<f64, _>(self.record[3].trim_ascii()) {
                        Ok(v) => v,
                        Err(_) => {
                            let msg = format!("value `{}` is not a number", text(&self.record[3]));
                            self.reject(&mut rejected, "non_numeric", self.location(line, 3), msg)?;
                            continue;
                        }
                    };
                    // Names whole, as Parquet and IPC give them: `text` shortens for messages only.
                    let (w, m) = (name(&self.record[1]), name(&self.record[2]));
                    if w.is_empty() || m.is_empty() {
                        let msg = "empty workload or metric".to_string();
                        self.reject(&mut rejected, "empty_name", self.location(line, 1), msg)?;
                        continue;
                    }
                    let (w, m) = (b.workload_key(&w), b.metric_key(&m));
                    b.push(ts, w, m, value, None);
                }
                Layout::Smd | Layout::Wide => {
                    let label = if self.layout == Layout::Smd {
                        // Consecutive rows mostly share split and label: build the label set
                        // only when they change.
                        let (split, lab) = (&self.record[1], &self.record[2]);
                        match &last_label {
                            Some((s, l, k)) if s.as_slice() == split && l.as_slice() == lab => {
                                Some(*k)
                            }
                            _ => {
                                let split_s = std::str::from_utf8(split).unwrap_or("").trim();
                                let lab_s = std::str::from_utf8(lab).unwrap_or("").trim();
                                let set = if lab_s.is_empty() {
                                    labels::format([("split", split_s)])
                                } else {
                                    labels::format([("label", lab_s), ("split", split_s)])
                                };
                                let k = b.label_key(&set);
                                last_label = Some((split.to_vec(), lab.to_vec(), k));
                                Some(k)
                            }
                        }
                    } else {
                        None
                    };
                    // Values and metric keys per value; time, workload and label once per row.
                    for col in first_metric..width {
                        let field = self.record[col].trim_ascii();
                        if field.is_empty() {
                            let msg = "empty value: sample skipped".to_string();
                            self.reject(
                                &mut rejected,
                                "empty_value",
                                self.location(line, col),
                                msg,
                            )?;
                            continue;
                        }
                        match parse_f64(field) {
                            Ok(v) => {
                                b.push_value((col - first_metric) as i32, v);
                            }
                            Err(_) => {
                                let msg = format!(
                                    "value `{}` is not a number: sample skipped",
                                    text(field)
                                );
                                self.reject(
                                    &mut rejected,
                                    "non_numeric",
                                    self.location(line, col),
                                    msg,
                                )?;
                            }
                        }
                    }
                    b.end_row(ts, wl, label);
                }
            }
        }
        if b.is_empty() {
            if self.done && rejected.is_empty() {
                return Ok(None);
            }
            if self.done {
                // Only rejections left: report them on an empty chunk.
                let batch = RecordBatch::new_empty(Topic::MetricsRaw.schema());
                return Ok(Some(Chunk {
                    batch,
                    first_ts: i64::MAX,
                    rejected,
                }));
            }
        }
        let first_ts = b.first_time().unwrap_or(i64::MAX);
        Ok(Some(Chunk {
            batch: b.finish()?,
            first_ts,
            rejected,
        }))
    }
}
