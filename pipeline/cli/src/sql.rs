//! `wfe sql "SELECT ..."`: SQL over the stored topics (see `wfe_sql` for how files become
//! tables), with the job's retention per tenant: queries see retained rows only, and
//! `--apply-retention` rewrites the files without the expired ones.

use std::path::PathBuf;

use wfe_contract::{Error, Result};
use wfe_sql::{Catalog, Format, Retention};

use crate::config::JobConfig;

#[derive(clap::Args)]
pub struct SqlArgs {
    /// The statement, e.g. "SELECT workload, count(*) FROM fingerprints GROUP BY workload".
    /// `SHOW TABLES` lists the tables, `DESCRIBE t` a table's columns. Optional with
    /// --apply-retention.
    query: Option<String>,
    /// A stored file (.parquet, .arrows) or a folder of them; repeat for more. Each file is
    /// a table named after it: `metrics.norm.parquet` is `metrics_norm`.
    #[arg(long, default_value = "out")]
    store: Vec<PathBuf>,
    /// `table`, `csv` or `json` (one object per line).
    #[arg(long, default_value = "table")]
    format: String,
    /// Job config whose `[[retention]]` rules apply (default: the built-in job, which keeps
    /// everything).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The instant retention counts back from: RFC 3339 (`2023-12-01T00:00:00Z`) or epoch
    /// milliseconds; default: now. For stores of recorded history.
    #[arg(long)]
    as_of: Option<String>,
    /// Rewrite every stored file that holds expired rows without them, and say what was done.
    #[arg(long)]
    apply_retention: bool,
}

/// Epoch milliseconds of `--as-of`.
fn instant(s: &str) -> Result<i64> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        Error::config(
            "--as-of",
            format!("`{s}` is neither RFC 3339 (2023-12-01T00:00:00Z) nor epoch milliseconds"),
        )
    };
    let ts = arrow_cast::parse::string_to_timestamp_nanos(s.trim()).map_err(|_| bad())?;
    Ok(ts.div_euclid(1_000_000))
}

pub fn sql(args: SqlArgs) -> Result<()> {
    let format: Format = args.format.parse()?;
    let job = JobConfig::load(args.config.as_deref())?;
    let retention = Retention::new(&job.retention)?;
    let now = match &args.as_of {
        Some(s) => instant(s)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    };
    let catalog = Catalog::open_with(&args.store, &retention, now)?;
    if args.apply_retention {
        if retention.is_empty() {
            return Err(Error::config(
                "retention",
                "no [[retention]] rules in the job config (--config FILE): nothing would expire",
            ));
        }
        let done = catalog.apply_retention()?;
        for c in &done {
            eprintln!(
                "retention: {} ({}): {} rows, {} expired, {} kept",
                c.table,
                c.path.display(),
                c.rows_before,
                c.rows_before - c.rows_after,
                c.rows_after
            );
        }
        if done.is_empty() {
            eprintln!("retention: nothing expired");
        }
    }
    match args.query {
        Some(q) => print!("{}", Catalog::render(&catalog.query(&q)?, format)?),
        None if args.apply_retention => {}
        None => {
            return Err(Error::config(
                "query",
                "give a statement (or --apply-retention)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn as_of_takes_rfc3339_or_milliseconds() {
        assert_eq!(super::instant("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            super::instant("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(
            super::instant("yesterday")
                .unwrap_err()
                .to_string()
                .contains("--as-of")
        );
    }
}
