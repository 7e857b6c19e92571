//! `wfe sql "SELECT ..."`: SQL over the stored topics (see `wfe_sql` for how files become
//! tables).

use std::path::PathBuf;

use wfe_contract::Result;
use wfe_sql::{Catalog, Format};

#[derive(clap::Args)]
pub struct SqlArgs {
    /// The statement, e.g. "SELECT workload, count(*) FROM fingerprints GROUP BY workload".
    /// `SHOW TABLES` lists the tables, `DESCRIBE t` a table's columns.
    query: String,
    /// A stored file (.parquet, .arrows) or a folder of them; repeat for more. Each file is
    /// a table named after it: `metrics.norm.parquet` is `metrics_norm`.
    #[arg(long, default_value = "out")]
    store: Vec<PathBuf>,
    /// `table`, `csv` or `json` (one object per line).
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn sql(args: SqlArgs) -> Result<()> {
    let format: Format = args.format.parse()?;
    let catalog = Catalog::open(&args.store)?;
    let batches = catalog.query(&args.query)?;
    print!("{}", Catalog::render(&batches, format)?);
    Ok(())
}
