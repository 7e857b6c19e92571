//! `[[sources]]`: which files a source names (a file, or a folder's data files) and how they
//! are laid out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wfe_contract::{Error, Result};

/// How a file is laid out.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// By extension, and for CSV by the header: `timestamp,split,label,...` is SMD,
    /// `timestamp,workload,metric,value` is long, anything else starting with a time column is wide.
    #[default]
    Auto,
    Smd,
    CsvLong,
    CsvWide,
    Parquet,
    Ipc,
}

/// One input: a file or a folder of files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A file, or a folder whose `*.csv`, `*.csv.gz`, `*.parquet` and `*.arrow` files are all read.
    pub path: PathBuf,
    /// `auto` (by extension and CSV header), `smd`, `csv-long`, `csv-wide`, `parquet` or `ipc`.
    #[serde(default)]
    pub format: Format,
    /// For `csv-wide`: the workload id. Default: the file name without extensions.
    #[serde(default)]
    pub workload: Option<String>,
    /// Unit of CSV timestamps: `s` (Unix seconds, as in SMD/ASD) or `ms`.
    #[serde(default = "default_unit")]
    pub timestamp_unit: String,
    /// Only read these entities (file stems) from a folder; empty means all.
    #[serde(default)]
    pub only: Vec<String>,
    /// Labels added to every row from this source, e.g. host metadata
    /// `{ "env.instance_type" = "m5.4xlarge", "env.kernel" = "6.1" }` (the fingerprint stage
    /// reads `env.*` labels as the workload's environment). A row's own label of the same
    /// key wins.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_unit() -> String {
    "s".into()
}

impl SourceConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            format: Format::Auto,
            workload: None,
            timestamp_unit: default_unit(),
            only: vec![],
            labels: BTreeMap::new(),
        }
    }

    pub(crate) fn ts_scale(&self) -> Result<i64> {
        match self.timestamp_unit.as_str() {
            "s" => Ok(1000),
            "ms" => Ok(1),
            other => Err(Error::config(
                "sources.timestamp_unit",
                format!("`{other}` is not `s` or `ms`"),
            )),
        }
    }
}

/// File extensions ingest reads, longest first so `.csv.gz` wins over `.csv`.
const EXTENSIONS: [&str; 5] = [".csv.gz", ".csv", ".parquet", ".arrow", ".ipc"];

/// The file name without `.csv.gz`, `.csv`, `.parquet`, `.arrow` or `.ipc`.
pub fn entity_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in EXTENSIONS {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem.to_string();
        }
    }
    name
}

fn is_data_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    EXTENSIONS.iter().any(|e| name.ends_with(e))
}

/// Expands the configured sources to the list of files, sorted, with their config.
pub fn expand(sources: &[SourceConfig]) -> Result<Vec<(PathBuf, SourceConfig)>> {
    let mut files = Vec::new();
    for src in sources {
        let meta = std::fs::metadata(&src.path)
            .map_err(|e| Error::io(src.path.display().to_string(), e))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&src.path)
                .map_err(|e| Error::io(src.path.display().to_string(), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_data_file(p))
                .filter(|p| src.only.is_empty() || src.only.contains(&entity_of(p)))
                .collect();
            found.sort();
            // A name in `only` that matches no file is a typo or a missing file: say so
            // rather than run without it.
            let missing: Vec<&String> = src
                .only
                .iter()
                .filter(|o| !found.iter().any(|p| entity_of(p) == **o))
                .collect();
            if !missing.is_empty() {
                return Err(Error::bad_input(
                    src.path.display().to_string(),
                    format!("`only` names {missing:?}, which the folder has no data file for"),
                ));
            }
            if found.is_empty() {
                return Err(Error::bad_input(
                    src.path.display().to_string(),
                    "folder holds no .csv, .csv.gz, .parquet or .arrow files",
                ));
            }
            files.extend(found.into_iter().map(|p| (p, src.clone())));
        } else {
            files.push((src.path.clone(), src.clone()));
        }
    }
    Ok(files)
}
