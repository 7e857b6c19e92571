//! Topic outputs to files: Parquet, Arrow IPC (stream format) and JSON lines.
//!
//! IPC uses the stream format because stages grow their string dictionaries as new workloads
//! appear, and only the stream format carries a replaced dictionary; it is also the format of
//! a Kafka message value. JSON lines are for people: dictionary columns are written as plain
//! strings.
//!
//! A sink writes to a hidden `.<name>.partial` file beside its path and, on close, flushes it
//! to disk and renames it over the path: a run killed at any instant leaves the previous
//! output (or none) in place, never a truncated file without its footer. A partial file left
//! by a kill is overwritten by the next run. Outputs of long-lived sources roll ([`roll`]):
//! a folder of parts, each finished once old or large enough.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_schema::Schema;
use wfe_contract::Result;

mod file;
mod roll;

pub use file::{Sink, SinkFormat, open, partial_path, undictionary};
pub use roll::{Roll, part_name};

/// Opens a sink for `schema` at `path`: one file, or with `roll` a folder of parts there.
pub fn open_output(
    format: SinkFormat,
    path: PathBuf,
    schema: Arc<Schema>,
    roll: Option<Roll>,
) -> Result<Box<dyn Sink>> {
    match roll {
        Some(roll) => Ok(Box::new(roll::Rolling::new(format, path, schema, roll)?)),
        None => open(format, path, schema),
    }
}
