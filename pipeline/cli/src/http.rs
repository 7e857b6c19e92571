//! `--http ADDR`: what a wfe process serves over HTTP while it runs: `/metrics` (the
//! Prometheus recorder is installed only then), `/health`, `/ready`, the run-time settings,
//! and for embedded runs and the fleet's API service (`wfe stage api`) the API over the
//! run's state (with each workload's container-size recommendation, and its cost beside what
//! reactive scaling would have spent) and the web UI; with
//! `--keda`, KEDA's external-scaler calls over that same state (gRPC, on an address of its
//! own).
//!
//! The token for changes of state (and for API reads from other hosts) is read from the
//! environment (`WFE_API_TOKEN`), never from the command line, where `ps` would show it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wfe_contract::{Control, Health, Result, Stage, Topic};
use wfe_domain::ResourceMap;
use wfe_http::api::API_TOPICS;
use wfe_http::{ApiStage, ApiState, Endpoints, Server, WorkloadAnswer};
use wfe_kafka::StageFactory;
use wfe_kube::recommend::Policy;
use wfe_kube::recommend::patch::{object_name, vpa};
use wfe_kube::{KedaServer, ScalerOptions};
use wfe_runtime::RunOptions;

use crate::config::JobConfig;

/// Environment variable holding the API token.
pub const TOKEN_ENV: &str = "WFE_API_TOKEN";

#[derive(clap::Args, Debug, Default, Clone)]
pub struct HttpArgs {
    /// Serve /metrics, /health, /ready, the settings API and (embedded runs) the JSON API and
    /// web UI on this address, e.g. 127.0.0.1:9464 (port 0: any free port; the address is
    /// printed). Changes of state need the token in $WFE_API_TOKEN.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// With --http, in an embedded run: also serve KEDA's external-scaler protocol (gRPC) on
    /// this address, from the run's forecasts (a ScaledObject trigger of `type: external`
    /// names the workload; see deploy/k8s/examples/predictive-scaling.yaml).
    #[arg(long, value_name = "ADDR", requires = "http")]
    pub keda: Option<String>,
}

/// A running HTTP side.
pub struct Http {
    _server: Server,
    _keda: Option<KedaServer>,
    pub health: Arc<Health>,
    pub control: Arc<Control>,
    api: Option<Arc<ApiState>>,
}

/// Starts serving if `--http` was given; `job`: the job of an embedded run or of the fleet's
/// API service, whose state is kept and served (none: a stage service, which keeps none).
pub fn start(args: &HttpArgs, job: Option<&JobConfig>) -> Result<Option<Http>> {
    let Some(listen) = &args.http else {
        return Ok(None);
    };
    if args.keda.is_some() && job.is_none() {
        return Err(wfe_contract::Error::config(
            "--keda",
            "needs an embedded run or `wfe stage api` (the scaler answers from the API's state; \
             the other stage services and a --kafka producer keep none)",
        ));
    }
    let health = Arc::new(Health::default());
    let control = Arc::new(Control::new());
    let api = job.map(|_| ApiState::new());
    let views = match job {
        Some(j) => {
            let policy = j.stages.forecast.recommendation;
            vec![
                ("recommendation", recommendation(policy)),
                ("reactive", beside_reactive(j)?),
            ]
        }
        None => Vec::new(),
    };
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty());
    if token.is_none() {
        tracing::info!("{TOKEN_ENV} is not set: the API is read-only, and only from loopback");
    }
    let server = wfe_http::serve(
        listen,
        Endpoints {
            health: health.clone(),
            control: control.clone(),
            metrics: Some(wfe_http::observe::install()?),
            api: api.clone(),
            token,
            views,
        },
    )?;
    // Scripts and tests read the address from here (with port 0, the port chosen).
    eprintln!(
        "http: serving on http://{}/ (metrics, health, ready, control{})",
        server.addr(),
        if api.is_some() { ", api, ui" } else { "" }
    );
    let keda = match (&args.keda, &api, job) {
        (Some(listen), Some(state), Some(job)) => Some(keda(listen, state, job)?),
        _ => None,
    };
    Ok(Some(Http {
        _server: server,
        _keda: keda,
        health,
        control,
        api,
    }))
}

/// `/api/v1/workloads/{w}/recommendation`: the container sizes under the job's policy
/// (`[stages.forecast.recommendation]`, the one its forecast stage writes on the
/// `recommendations` topic), and the VPA object for a container named after the workload.
fn recommendation(policy: Policy) -> WorkloadAnswer {
    Arc::new(move |w, view| {
        let recs = wfe_kube::recommend::recommend(w, view, &policy);
        let container = object_name(w);
        serde_json::json!({
            "workload": w,
            "recommendations": recs,
            "vpa": vpa(&container, &recs),
        })
    })
}

/// `/api/v1/workloads/{w}/reactive`: wfe's decisions and the reactive baseline priced over the
/// demand the API keeps, by the backtest's simulation under the job's `[backtest]` settings.
fn beside_reactive(job: &JobConfig) -> Result<WorkloadAnswer> {
    let tier = wfe_tier_select::TierSelect::new(job.stages.tier_select.clone())?;
    let catalog = tier.catalog().clone();
    let (maps, cfg) = (job.resources.clone(), job.backtest.clone());
    Ok(Arc::new(
        move |w, view| match crate::backtest::beside::beside(w, view, &maps, &catalog, &cfg) {
            Ok(b) => serde_json::json!(b),
            Err(e) => serde_json::json!({ "workload": w, "error": e.to_string() }),
        },
    ))
}

/// Serves KEDA's calls over `state`; what a trigger leaves out comes from `job` (the
/// quantile its tier decisions cover).
fn keda(listen: &str, state: &Arc<ApiState>, job: &JobConfig) -> Result<KedaServer> {
    let mut opts = ScalerOptions::default();
    opts.defaults.quantile = job.stages.tier_select.sla_quantile;
    let server = KedaServer::start(listen, state.clone(), opts)?;
    // Scripts and tests read the address from here (with port 0, the port chosen).
    eprintln!("keda: serving on {} (external scaler)", server.addr());
    Ok(server)
}

impl Http {
    /// Adds the API's stage to an embedded run's stages (it reads what they produce).
    pub fn add_api_stage(&self, stages: &mut Vec<Box<dyn Stage>>, maps: &[ResourceMap]) {
        if let Some(api) = &self.api {
            let produced: Vec<Topic> = std::iter::once(Topic::MetricsRaw)
                .chain(stages.iter().flat_map(|s| s.outputs()))
                .collect();
            stages.push(Box::new(ApiStage::new(
                api.clone(),
                maps.to_vec(),
                &produced,
            )));
        }
    }

    /// The API's stage for `wfe stage api`: one per assigned partition, all folding into the
    /// state this side serves. None without that state.
    pub fn api_stage_factory(&self, maps: &[ResourceMap]) -> Option<StageFactory> {
        let api = self.api.clone()?;
        let maps = maps.to_vec();
        Some(Box::new(move || {
            let stage = ApiStage::new(api.clone(), maps.clone(), &API_TOPICS);
            Ok(Box::new(stage) as Box<dyn Stage>)
        }))
    }

    /// The run shares this side's health and settings.
    pub fn attach(&self, opts: &mut RunOptions) {
        opts.health = self.health.clone();
        opts.control = self.control.clone();
    }

    /// After the run: keep serving its final state until `stop` is set (Ctrl-C).
    pub fn hold(&self, stop: &AtomicBool) {
        eprintln!("http: the run has ended; serving its state until interrupted");
        self.health.set_ready(true);
        while !stop.load(Ordering::Relaxed) {
            self.health.beat();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
