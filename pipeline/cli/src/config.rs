//! The job config: one TOML file describes the whole job (sources, stages and their settings,
//! outputs, and the mapping from metrics to resources), for embedded mode now and for stage
//! services over Kafka with the same file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wfe_actuate::ActuateConfig;
use wfe_anomaly::AnomalyConfig;
use wfe_contention::ContentionConfig;
use wfe_contract::{Error, Result, Stage, Topic};
use wfe_ec2::Clients;
use wfe_fingerprint::FingerprintConfig;
use wfe_forecast::{ForecastConfig, ResourceMap};
use wfe_ingest::SourceConfig;
use wfe_normalise::NormaliseConfig;
use wfe_runtime::sink::Roll;
use wfe_runtime::{Output, SinkFormat};
use wfe_tier_select::TierSelectConfig;

/// The documented default job (`wfe config` prints it).
pub const DEFAULT: &str = include_str!("../default.toml");

/// The built-in job of `wfe agent`: this machine sampled every 10 s.
pub const AGENT: &str = include_str!("../agent.toml");

/// The names of the stages after ingest, in pipeline order.
pub const STAGES: [&str; 7] = [
    "normalise",
    "fingerprint",
    "anomaly",
    "forecast",
    "tier-select",
    "actuate",
    "contention",
];

/// The stage that runs only with hosts configured.
const CONTENTION: &str = "contention";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Inputs of the ingest stage (`wfe run`; `wfe agent` samples the machine instead).
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// How the job runs.
    #[serde(default)]
    pub run: RunConfig,
    /// From metrics to resources in capacity units.
    #[serde(default)]
    pub resources: Vec<ResourceMap>,
    /// Each stage's settings.
    #[serde(default)]
    pub stages: StagesConfig,
    /// Which topics are written to files.
    #[serde(default)]
    pub outputs: OutputsConfig,
    /// The broker, for stage services, `wfe replay` and `wfe record`.
    #[serde(default)]
    pub kafka: wfe_kafka::KafkaConfig,
    /// How `wfe backtest` simulates provisioning.
    #[serde(default)]
    pub backtest: crate::backtest::BacktestConfig,
    /// What `wfe agent` samples and how often.
    #[serde(default)]
    pub agent: wfe_ingest::AgentConfig,
    /// Where `wfe receive` listens for Prometheus remote_write and how series map to workloads.
    #[serde(default)]
    pub remote_write: wfe_http::RemoteWriteConfig,
    /// How `wfe capture` turns packets into per-workload network features.
    #[serde(default)]
    pub packets: wfe_ingest::PacketConfig,
    /// How long each tenant's (workload prefix's) history is kept in the store: `wfe sql`
    /// answers from retained rows only, `wfe sql --apply-retention` rewrites the files.
    #[serde(default)]
    pub retention: Vec<wfe_sql::RetentionRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Batches a stage's mailbox holds before its producer waits.
    #[serde(default = "d_mailbox")]
    pub mailbox: usize,
    /// Stop at the first bad row instead of counting and skipping it.
    #[serde(default)]
    pub strict: bool,
    /// `max`, or a factor of event time such as `60x`.
    #[serde(default = "d_speed")]
    pub speed: String,
    /// Progress bar on a terminal.
    #[serde(default = "d_true")]
    pub progress: bool,
    /// Threads libtorch splits one operation of a model over (the LSTMs' forecasts and
    /// scores, the forecast stage's retraining), set as the stages are built; 0: libtorch's
    /// default, one per core. One by default: the stages, the forecast stage's fitting
    /// threads and its retrain thread already keep the cores busy, and a pool per core
    /// behind each of them oversubscribed them (`make run`'s job 35.3 s, 30.1 s with one,
    /// the same outputs; docs/performance.md).
    #[serde(default = "d_model_threads")]
    pub model_threads: usize,
}

fn d_mailbox() -> usize {
    16
}
fn d_speed() -> String {
    "max".into()
}
fn d_model_threads() -> usize {
    1
}
fn d_true() -> bool {
    true
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            mailbox: d_mailbox(),
            strict: false,
            speed: d_speed(),
            progress: true,
            model_threads: d_model_threads(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagesConfig {
    /// Stages to run after ingest; default: all seven (contention runs only where
    /// `[stages.contention]` lists hosts).
    #[serde(default = "d_enabled")]
    pub enabled: Vec<String>,
    #[serde(default)]
    pub normalise: NormaliseConfig,
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
    #[serde(default)]
    pub anomaly: AnomalyConfig,
    #[serde(default)]
    pub forecast: ForecastConfig,
    #[serde(default, rename = "tier-select")]
    pub tier_select: TierSelectConfig,
    #[serde(default)]
    pub actuate: ActuateConfig,
    #[serde(default)]
    pub contention: ContentionConfig,
}

fn d_enabled() -> Vec<String> {
    STAGES.iter().map(|s| s.to_string()).collect()
}

impl Default for StagesConfig {
    fn default() -> Self {
        Self {
            enabled: d_enabled(),
            normalise: Default::default(),
            fingerprint: Default::default(),
            anomaly: Default::default(),
            forecast: Default::default(),
            tier_select: Default::default(),
            actuate: Default::default(),
            contention: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsConfig {
    /// Folder the files go to (created if missing).
    #[serde(default = "d_dir")]
    pub dir: PathBuf,
    /// Topics written as Parquet (`<dir>/<topic>.parquet`).
    #[serde(default)]
    pub parquet: Vec<String>,
    /// Topics written as Arrow IPC streams (`<dir>/<topic>.arrows`).
    #[serde(default)]
    pub ipc: Vec<String>,
    /// Topics written as JSON lines (`<dir>/<topic>.jsonl`).
    #[serde(default)]
    pub jsonl: Vec<String>,
    /// Roll outputs: each becomes a folder of the file's name (`<dir>/<topic>.parquet/`)
    /// holding parts `part-00000000.parquet`, ...; a part is closed, so complete and readable,
    /// after this many seconds of wall-clock time. A kill loses only the open part, and a
    /// restart numbers on from the parts already there (they are kept). Unset: one file per
    /// topic, replaced at the end of each run; live sources (`wfe agent`, `wfe receive`,
    /// `wfe capture --interface`) roll every 600 s unless `roll_s` or `roll_rows` is set.
    #[serde(default)]
    pub roll_s: Option<f64>,
    /// Roll outputs after this many rows in a part (a batch is never split); with `roll_s`,
    /// whichever comes first.
    #[serde(default)]
    pub roll_rows: Option<u64>,
}

/// How often live sources roll their outputs when the config says nothing.
pub const LIVE_ROLL_S: f64 = 600.0;

impl OutputsConfig {
    /// For a source that runs until stopped: roll every [`LIVE_ROLL_S`] unless the config
    /// says how, so what it wrote stays readable while it runs and after a kill.
    pub fn roll_live(&mut self) {
        if self.roll_s.is_none() && self.roll_rows.is_none() {
            self.roll_s = Some(LIVE_ROLL_S);
        }
    }

    /// The rolling the settings ask for, checked.
    pub fn roll(&self) -> Result<Option<Roll>> {
        if self.roll_s.is_none() && self.roll_rows.is_none() {
            return Ok(None);
        }
        let every = match self.roll_s {
            Some(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(Error::config(
                    "outputs.roll_s",
                    format!("{s} is not a number of seconds between 0 and 1e9"),
                ));
            }
            None => None,
        };
        if self.roll_rows == Some(0) {
            return Err(Error::config("outputs.roll_rows", "must be at least 1"));
        }
        Ok(Some(Roll {
            every,
            rows: self.roll_rows,
        }))
    }
}

fn d_dir() -> PathBuf {
    "out".into()
}

impl JobConfig {
    /// Reads a config file, or the default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::parse(path, DEFAULT, "default config")
    }

    /// A job for `wfe agent`: without a file, the built-in agent job.
    pub fn load_agent(path: Option<&Path>) -> Result<Self> {
        Self::parse(path, AGENT, "built-in agent config")
    }

    fn parse(path: Option<&Path>, default: &str, default_name: &str) -> Result<Self> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| Error::io(p.display().to_string(), e))?,
                p.display().to_string(),
            ),
            None => (default.to_string(), default_name.to_string()),
        };
        let cfg: JobConfig =
            toml::from_str(&text).map_err(|e| Error::config(origin, e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        for name in &self.stages.enabled {
            if !STAGES.contains(&name.as_str()) {
                return Err(Error::config(
                    "stages.enabled",
                    format!("unknown stage `{name}`; stages: {STAGES:?}"),
                ));
            }
        }
        for name in &self.kafka.exactly_once {
            if !STAGES.contains(&name.as_str()) {
                return Err(Error::config(
                    "kafka.exactly_once",
                    format!("unknown stage `{name}`; stages: {STAGES:?}"),
                ));
            }
        }
        self.stages.contention.validate()?;
        self.speed()?;
        self.outputs(None)?;
        self.kafka.validate()?;
        Ok(())
    }

    /// The replay speed factor; `None` for as fast as possible.
    pub fn speed(&self) -> Result<Option<f64>> {
        let s = self.run.speed.trim();
        if s == "max" {
            return Ok(None);
        }
        match s.trim_end_matches('x').parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => Ok(Some(f)),
            _ => Err(Error::config(
                "run.speed",
                format!("`{s}` is not `max` or a factor like `10x`"),
            )),
        }
    }

    /// The outputs, with paths under `dir` (or the configured folder).
    pub fn outputs(&self, dir: Option<&Path>) -> Result<Vec<Output>> {
        let dir = dir.unwrap_or(&self.outputs.dir);
        let roll = self.outputs.roll()?;
        let mut out = Vec::new();
        for (format, topics) in [
            (SinkFormat::Parquet, &self.outputs.parquet),
            (SinkFormat::Ipc, &self.outputs.ipc),
            (SinkFormat::Jsonl, &self.outputs.jsonl),
        ] {
            for name in topics {
                let topic = Topic::from_name(name).ok_or_else(|| {
                    Error::config(
                        "outputs",
                        format!(
                            "unknown topic `{name}`; topics: {:?}",
                            Topic::ALL.map(|t| t.name())
                        ),
                    )
                })?;
                out.push(Output {
                    topic,
                    format,
                    path: dir.join(format!("{}.{}", topic.name(), format.extension())),
                    roll,
                });
            }
        }
        Ok(out)
    }

    /// Builds the enabled stages, in pipeline order, with one EC2 client per region and
    /// endpoint between them (tier-select's spot prices and the actuator's calls share it, and
    /// with it one rate limit: EC2's limits are per account and region).
    pub fn build_stages(&self) -> Result<Vec<Box<dyn Stage>>> {
        self.build_stages_with(&mut Clients::new())
    }

    /// [`Self::build_stages`] with the process's clients.
    pub fn build_stages_with(&self, clients: &mut Clients) -> Result<Vec<Box<dyn Stage>>> {
        let enabled = |n: &str| self.stages.enabled.iter().any(|e| e == n);
        let act = &self.stages.actuate;
        if enabled("actuate") && act.mode() != wfe_actuate::Mode::RecordOnly {
            // The actuator's settings (retries, rate: the user's) make the shared client.
            clients.ec2(&wfe_actuate::Actuate::ec2_settings(act))?;
        }
        STAGES
            .iter()
            .filter(|n| self.runs(n))
            .map(|n| self.build_stage_with(n, clients))
            .collect()
    }

    /// Whether stage `name` runs in this job: it is enabled and, for contention (which plans
    /// over hosts), `[stages.contention]` lists hosts.
    pub fn runs(&self, name: &str) -> bool {
        self.stages.enabled.iter().any(|e| e == name)
            && (name != CONTENTION || self.stages.contention.is_configured())
    }

    /// Builds one stage by name (one of [`STAGES`]), with clients of its own.
    pub fn build_stage(&self, name: &str) -> Result<Box<dyn Stage>> {
        self.build_stage_with(name, &mut Clients::new())
    }

    /// Builds one stage by name, its EC2 client (if it needs one) from `clients`.
    pub fn build_stage_with(&self, name: &str, clients: &mut Clients) -> Result<Box<dyn Stage>> {
        // Before any stage thread runs a model (libtorch reads it at a thread's first use).
        wfe_neural::set_threads(self.run.model_threads);
        let s = &self.stages;
        let mut connect = |settings: &wfe_ec2::Ec2Settings| clients.ec2(settings);
        Ok(match name {
            "normalise" => Box::new(wfe_normalise::Normalise::new(s.normalise.clone())?),
            "fingerprint" => Box::new(wfe_fingerprint::Fingerprint::new(s.fingerprint.clone())?),
            "anomaly" => Box::new(wfe_anomaly::Anomaly::new(s.anomaly.clone())?),
            "forecast" => Box::new(wfe_forecast::Forecast::new(
                s.forecast.clone(),
                self.resources.clone(),
            )?),
            "tier-select" => Box::new(
                wfe_tier_select::TierSelect::connect_with(s.tier_select.clone(), &mut connect)?
                    .with_resources(self.resources.clone()),
            ),
            CONTENTION if !s.contention.is_configured() => {
                return Err(Error::config(
                    "stages.contention.hosts",
                    "no hosts: contention plans moves between the hosts listed here",
                ));
            }
            CONTENTION => Box::new(wfe_contention::Contention::new(
                s.contention.clone(),
                self.resources.clone(),
            )?),
            "actuate" => {
                // One catalog for choosing and for pricing what is launched.
                let mut cfg = s.actuate.clone();
                if cfg.catalog.is_none() {
                    cfg.catalog = s.tier_select.catalog.clone();
                }
                Box::new(wfe_actuate::Actuate::connect_with(cfg, &mut connect)?)
            }
            other => {
                return Err(Error::config(
                    "stage",
                    format!(
                        "unknown stage `{other}`; stages: ingest, {}",
                        STAGES.join(", ")
                    ),
                ));
            }
        })
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;

    /// Any text given as a job config is a config or an error naming the problem.
    #[test]
    fn fuzz_config() {
        wfe_testkit::fuzz::run(
            "config",
            wfe_testkit::fuzz::mutations(DEFAULT.as_bytes().to_vec(), 8),
            |bytes| {
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(cfg) = toml::from_str::<JobConfig>(&text) {
                    let _ = cfg.validate();
                }
                Ok(())
            },
        );
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use wfe_tier_select::SpotPriceSource;

    /// The default job with spot prices read from, and the actuator dry-running against,
    /// moto: tier-select's source in `spot_region`.
    fn job(moto: &str, spot_region: &str) -> JobConfig {
        let mut cfg: JobConfig = toml::from_str(DEFAULT).expect("the default job");
        cfg.stages.tier_select.spot_prices = Some(SpotPriceSource {
            region: Some(spot_region.into()),
            endpoint: Some(moto.into()),
            refresh_s: 3600,
        });
        let act = &mut cfg.stages.actuate;
        act.mode = Some(wfe_actuate::Mode::DryRun);
        act.region = "us-east-1".into();
        act.endpoint = Some(moto.into());
        act.image_id = Some("ami-12c6146b".into());
        cfg
    }

    #[test]
    fn stages_of_one_process_share_one_ec2_client_per_region() {
        let moto = wfe_ec2::testing::Moto::start();
        let mut clients = Clients::with_credentials("testing", "testing");
        let stages = job(&moto.url, "us-east-1")
            .build_stages_with(&mut clients)
            .unwrap();
        let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
        assert!(
            names.contains(&"tier-select") && names.contains(&"actuate"),
            "{names:?}"
        );
        assert_eq!(clients.len(), 1, "tier-select and actuate share the client");

        // Spot prices from another region: a client of their own.
        let mut clients = Clients::with_credentials("testing", "testing");
        job(&moto.url, "eu-west-1")
            .build_stages_with(&mut clients)
            .unwrap();
        assert_eq!(clients.len(), 2);
    }
}
