//! Rolled outputs, for sources that run for days (`wfe agent`, `wfe receive`, a live capture).
//!
//! A single output file is finished (its Parquet footer written, renamed into place) only when
//! the run ends, so a receiver killed after a week would leave nothing readable. A rolled
//! output is a folder named like the single file (`out/forecasts.parquet/`) holding numbered
//! parts (`part-00000000.parquet`, ...): a part is closed, and so complete and readable, once
//! it is old enough or holds enough rows, and the next batch opens the next one. A kill loses
//! no closed part, only the open one (written to its hidden partial file like any sink).
//!
//! Numbering goes on from the highest part already in the folder, so a restarted receiver
//! keeps what earlier runs wrote; `wfe sql` and Parquet readers take the folder as one table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use wfe_contract::{Error, Result};

use super::file::{self, Sink, SinkFormat};

/// When a rolled output closes its open part and starts the next; the first limit reached
/// wins. A batch is never split, so a part can hold more rows than `rows`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roll {
    /// Wall-clock age of the open part (checked at every batch and every runner tick).
    pub every: Option<Duration>,
    /// Rows in the open part.
    pub rows: Option<u64>,
}

/// The file name of part `n` of a rolled output in `format`.
pub fn part_name(n: u64, format: SinkFormat) -> String {
    format!("part-{n:08}.{}", format.extension())
}

/// The part number a file name stands for, if it is one of `format`'s parts.
fn part_number(name: &str, format: SinkFormat) -> Option<u64> {
    let digits = name
        .strip_prefix("part-")?
        .strip_suffix(format.extension())?
        .strip_suffix('.')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The number the next part in `dir` takes: one past the highest there, 0 in an empty folder.
fn next_part(dir: &Path, format: SinkFormat) -> Result<u64> {
    let at = |e| Error::io(dir.display().to_string(), e);
    let mut next = 0;
    for entry in std::fs::read_dir(dir).map_err(at)? {
        let name = entry.map_err(at)?.file_name();
        if let Some(n) = part_number(&name.to_string_lossy(), format) {
            next = next.max(n.saturating_add(1));
        }
    }
    Ok(next)
}

/// The part being written: its sink, when it was opened and the rows in it.
struct Open {
    sink: Box<dyn Sink>,
    since: Instant,
    rows: u64,
}

/// A sink that writes a folder of parts (see the module documentation).
pub(super) struct Rolling {
    format: SinkFormat,
    dir: PathBuf,
    schema: Arc<Schema>,
    roll: Roll,
    next: u64,
    open: Option<Open>,
}

impl Rolling {
    /// Creates `dir` if needed; fails, naming it, when a file (a run without rolling) is there.
    pub(super) fn new(
        format: SinkFormat,
        dir: PathBuf,
        schema: Arc<Schema>,
        roll: Roll,
    ) -> Result<Self> {
        if dir.is_file() {
            return Err(Error::config(
                "outputs.roll_s",
                format!(
                    "{} is a file written without rolling; a rolled output is a folder of that \
                     name: move the file away",
                    dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let next = next_part(&dir, format)?;
        Ok(Self {
            format,
            dir,
            schema,
            roll,
            next,
            open: None,
        })
    }

    fn due(&self) -> bool {
        self.open.as_ref().is_some_and(|o| {
            self.roll.every.is_some_and(|d| o.since.elapsed() >= d)
                || self.roll.rows.is_some_and(|r| o.rows >= r)
        })
    }

    /// Closes the open part, which makes it a finished file in the folder.
    fn close_part(&mut self) -> Result<()> {
        match self.open.take() {
            Some(o) => o.sink.close(),
            None => Ok(()),
        }
    }
}

impl Sink for Rolling {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let open = match &mut self.open {
            Some(o) => o,
            None => {
                let path = self.dir.join(part_name(self.next, self.format));
                self.next += 1;
                let sink = file::open(self.format, path, self.schema.clone())?;
                self.open.insert(Open {
                    sink,
                    since: Instant::now(),
                    rows: 0,
                })
            }
        };
        open.sink.write(batch)?;
        open.rows += batch.num_rows() as u64;
        if self.due() {
            self.close_part()?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        if self.due() {
            self.close_part()?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.close_part()
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("workload", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["w"; rows as usize])),
                Arc::new(Int64Array::from_iter_values(0..rows)),
            ],
        )
        .unwrap()
    }

    /// The finished parts in `dir` and the rows each holds.
    fn parts(dir: &Path, format: SinkFormat) -> Vec<(String, usize)> {
        let mut found: Vec<(String, usize)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| part_number(&p.file_name().unwrap().to_string_lossy(), format).is_some())
            .map(|p| {
                let rows = match format {
                    SinkFormat::Parquet => {
                        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                            std::fs::File::open(&p).unwrap(),
                        )
                        .unwrap()
                        .build()
                        .unwrap()
                        .map(|b| b.unwrap().num_rows())
                        .sum()
                    }
                    SinkFormat::Ipc => arrow_ipc::reader::StreamReader::try_new(
                        std::fs::File::open(&p).unwrap(),
                        None,
                    )
                    .unwrap()
                    .map(|b| b.unwrap().num_rows())
                    .sum(),
                    SinkFormat::Jsonl => std::fs::read_to_string(&p).unwrap().lines().count(),
                };
                (p.file_name().unwrap().to_string_lossy().into_owned(), rows)
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn parts_close_by_rows_survive_a_kill_and_a_restart_numbers_on() {
        let tmp = tempfile::tempdir().unwrap();
        let schema = batch(1).schema();
        let by_rows = Roll {
            every: None,
            rows: Some(10),
        };
        for format in [SinkFormat::Parquet, SinkFormat::Ipc, SinkFormat::Jsonl] {
            let dir = tmp.path().join(format!("t.{}", format.extension()));
            let mut s =
                super::super::open_output(format, dir.clone(), schema.clone(), Some(by_rows))
                    .unwrap();
            assert_eq!(s.path(), dir);
            // 4 + 4 + 4 rows: the part closes after the batch that reaches 10 (12 rows).
            for _ in 0..3 {
                s.write(&batch(4)).unwrap();
            }
            s.write(&batch(0)).unwrap(); // nothing, and no empty part
            s.write(&batch(3)).unwrap();
            // Killed: dropped without close. The finished part is whole; the open one is a
            // hidden partial file, not a part.
            drop(s);
            let name = |n| part_name(n, format);
            assert_eq!(parts(&dir, format), [(name(0), 12)], "{format:?}");
            // The restart numbers on from the parts there (the partial is overwritten).
            let mut s =
                super::super::open_output(format, dir.clone(), schema.clone(), Some(by_rows))
                    .unwrap();
            s.write(&batch(5)).unwrap();
            s.close().unwrap();
            assert_eq!(
                parts(&dir, format),
                [(name(0), 12), (name(1), 5)],
                "{format:?}"
            );
        }
    }

    #[test]
    fn an_old_part_closes_on_a_tick_without_new_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t.parquet");
        let every = Roll {
            every: Some(Duration::from_millis(50)),
            rows: None,
        };
        let mut s =
            Rolling::new(SinkFormat::Parquet, dir.clone(), batch(1).schema(), every).unwrap();
        s.write(&batch(2)).unwrap();
        s.tick().unwrap();
        assert!(
            parts(&dir, SinkFormat::Parquet).is_empty(),
            "not old enough yet"
        );
        std::thread::sleep(Duration::from_millis(60));
        s.tick().unwrap();
        assert_eq!(
            parts(&dir, SinkFormat::Parquet),
            [(part_name(0, SinkFormat::Parquet), 2)]
        );
        // A file where the folder should be (a run without rolling) is named in the error.
        let file = tmp.path().join("f.parquet");
        std::fs::write(&file, b"x").unwrap();
        let err = Rolling::new(SinkFormat::Parquet, file, batch(1).schema(), every)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("f.parquet") && err.contains("without rolling"),
            "{err}"
        );
    }

    #[test]
    fn part_names_round_trip_and_nothing_else_is_a_part() {
        let f = SinkFormat::Parquet;
        assert_eq!(part_name(7, f), "part-00000007.parquet");
        assert_eq!(part_number(&part_name(7, f), f), Some(7));
        assert_eq!(part_number("part-00000007.arrows", f), None);
        assert_eq!(part_number(".part-00000007.parquet.partial", f), None);
        assert_eq!(part_number("part-.parquet", f), None);
        assert_eq!(part_number("part-1x.parquet", f), None);
        assert_eq!(
            part_number("part-123456789012.parquet", f),
            Some(123456789012)
        );
    }
}
