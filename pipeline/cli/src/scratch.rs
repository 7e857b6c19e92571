//! A job's private copy of its model folder. The forecast stage writes retrained versions
//! into its model folder (the feedback loop): a benchmark or a backtest that wrote into the
//! user's folder would change the models `wfe run` and `wfe eval` load next, and each run
//! would start from what the one before had written.

use wfe_contract::{Error, Result};

use crate::config::JobConfig;

/// The job with its model folder replaced by a scratch copy of every version of every model
/// kind (removed when the returned folder is dropped); the job as it is where its folder is
/// not there. Without it each `wfe bench --fleet` size started from what the one before had
/// written (a 28-day fleet of 200 workloads took 81.9 s once and 27.5 s again, its three
/// retrainings done).
pub fn scratch_models(cfg: &JobConfig) -> Result<(Option<tempfile::TempDir>, JobConfig)> {
    let Some(dir) = cfg
        .stages
        .forecast
        .model_dir
        .as_ref()
        .filter(|d| d.is_dir())
    else {
        return Ok((None, cfg.clone()));
    };
    let scratch = tempfile::tempdir().map_err(|e| Error::io("a scratch model folder", e))?;
    copy_tree(dir, scratch.path())?;
    let mut cfg = cfg.clone();
    cfg.stages.forecast.model_dir = Some(scratch.path().to_path_buf());
    Ok((Some(scratch), cfg))
}

/// Copies the files and folders under `from` into `to` (which exists).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from.display().to_string(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(from.display().to_string(), e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let io = |e| Error::io(src.display().to_string(), e);
        if entry.file_type().map_err(io)?.is_dir() {
            std::fs::create_dir(&dst).map_err(io)?;
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run reads a copy of the model folder, nested folders and all, and what it writes
    /// there leaves the user's folder as it was.
    #[test]
    fn a_run_writes_retrained_models_into_a_scratch_copy_not_the_users_folder() {
        let user = tempfile::tempdir().unwrap();
        let v1 = user.path().join("forecast-lstm/300s/v1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("meta.json"), "{}").unwrap();
        // A class's variant beside the model (a backtest once copied model.bin and meta.json
        // only, and the version with a kept class failed to load from its copy).
        std::fs::write(v1.join("class-2.bin"), "variant").unwrap();
        let mut cfg = JobConfig::load(None).unwrap();
        cfg.stages.forecast.model_dir = Some(user.path().to_path_buf());
        let (scratch, run) = scratch_models(&cfg).unwrap();
        let copy = run.stages.forecast.model_dir.clone().unwrap();
        assert_ne!(copy, user.path());
        let read = |d: &std::path::Path| {
            std::fs::read_to_string(d.join("forecast-lstm/300s/v1/meta.json"))
        };
        assert_eq!(read(&copy).unwrap(), "{}");
        let variant = copy.join("forecast-lstm/300s/v1/class-2.bin");
        assert_eq!(std::fs::read_to_string(variant).unwrap(), "variant");
        std::fs::create_dir(copy.join("forecast-lstm/300s/v2")).unwrap();
        assert!(!user.path().join("forecast-lstm/300s/v2").exists());
        drop(scratch);
        assert!(!copy.exists(), "the scratch copy outlived its run");
        // No folder (or none there): the job as it is.
        cfg.stages.forecast.model_dir = Some(user.path().join("absent"));
        assert!(scratch_models(&cfg).unwrap().0.is_none());
    }
}
