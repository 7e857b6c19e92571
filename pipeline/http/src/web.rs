//! The HTTP endpoints of a running wfe process: `/metrics`, `/health`, `/ready`, the JSON API
//! over the run's latest state (`/api/v1/...`), the run-time settings, and the web UI (`/`).
//!
//! Access: `/metrics`, `/health` and `/ready` are open (Prometheus and the kubelet scrape them
//! from other hosts). The API's reads are open to loopback peers; from elsewhere, and for
//! every change of state (`POST`), they need `Authorization: Bearer <token>` with the token
//! the process was started with (`WFE_API_TOKEN`). Without a token, state changes are off.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use wfe_contract::control::ControlError;
use wfe_contract::{Control, Health, Result};

use crate::api::{ApiState, WorkloadView};
use crate::server::Server;

/// The page, served as is: one file, no external scripts (it works offline and in tests).
const UI: &str = include_str!("ui.html");

/// What the server exposes.
#[derive(Clone)]
pub struct Endpoints {
    pub health: Arc<Health>,
    pub control: Arc<Control>,
    /// The installed Prometheus recorder; `/metrics` answers 404 without one.
    pub metrics: Option<PrometheusHandle>,
    /// The run's state, for the API and the UI (the embedded runner); `None` for a stage
    /// service, which serves `/metrics`, `/health`, `/ready` and its settings only.
    pub api: Option<Arc<ApiState>>,
    /// Token for changes of state and for reads from other hosts; `None`: no changes.
    pub token: Option<String>,
    /// Answers other crates compute from one workload's view, each served at
    /// `/api/v1/workloads/{w}/{name}` (the container-size recommendation of wfe-kube): this
    /// crate serves them without knowing their policy.
    pub views: Vec<(&'static str, WorkloadAnswer)>,
}

/// An answer computed from a workload's name and view.
pub type WorkloadAnswer = Arc<dyn Fn(&str, &WorkloadView) -> Value + Send + Sync>;

/// Serves `ep` on `listen` until the returned server is dropped.
pub fn serve(listen: &str, ep: Endpoints) -> Result<Server> {
    let ep = web::Data::new(ep);
    Server::start(listen, "http", 2, move |app| {
        app.app_data(ep.clone())
            .app_data(web::PayloadConfig::new(64 * 1024))
            .route("/metrics", web::get().to(metrics))
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .route("/", web::get().to(ui))
            .route("/api/v1/control", web::get().to(control_list))
            .route("/api/v1/control/{name}", web::post().to(control_set))
            .route("/api/v1/workloads", web::get().to(workloads))
            .route("/api/v1/workloads/{w}", web::get().to(workload))
            .route("/api/v1/workloads/{w}/series", web::get().to(series))
            .route("/api/v1/workloads/{w}/metrics", web::get().to(metric_names))
            .route("/api/v1/workloads/{w}/metrics/{m}", web::get().to(metric))
            .route("/api/v1/workloads/{w}/{list}", web::get().to(list))
            .route("/api/v1/cost", web::get().to(cost));
    })
}

fn error(status: actix_web::http::StatusCode, msg: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg.into() }))
}

/// Equal in constant time (a wrong token's timing says nothing of the right one).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request may go on, and if not, why.
#[derive(Debug, PartialEq)]
enum Access {
    Granted,
    /// No token given: 401.
    NeedsToken,
    /// 403, with the reason.
    Denied(&'static str),
}

/// Reads from loopback always; everything else with the bearer token.
fn access(
    loopback: bool,
    authorization: Option<&str>,
    token: Option<&str>,
    change: bool,
) -> Access {
    if loopback && !change {
        return Access::Granted;
    }
    let Some(token) = token else {
        return Access::Denied(if change {
            "changes of state are off: start wfe with WFE_API_TOKEN set"
        } else {
            "reads from other hosts are off: start wfe with WFE_API_TOKEN set"
        });
    };
    match authorization.and_then(|v| v.strip_prefix("Bearer ")) {
        None => Access::NeedsToken,
        Some(g) if same(g.trim().as_bytes(), token.as_bytes()) => Access::Granted,
        Some(_) => Access::Denied("wrong token"),
    }
}

/// None when the request may go on, else the answer.
fn authorise(req: &HttpRequest, ep: &Endpoints, change: bool) -> Option<HttpResponse> {
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match access(loopback, header, ep.token.as_deref(), change) {
        Access::Granted => None,
        Access::NeedsToken => Some(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(json!({ "error": "this needs `Authorization: Bearer <token>`" })),
        ),
        Access::Denied(why) => Some(error(actix_web::http::StatusCode::FORBIDDEN, why)),
    }
}

async fn metrics(ep: web::Data<Endpoints>) -> HttpResponse {
    match &ep.metrics {
        Some(h) => {
            h.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(h.render())
        }
        None => HttpResponse::NotFound().body("no metrics recorder in this process"),
    }
}

async fn health(ep: web::Data<Endpoints>) -> HttpResponse {
    match ep.health.live() {
        Ok(()) => HttpResponse::Ok().body("ok\n"),
        Err(why) => HttpResponse::ServiceUnavailable().body(format!("{why}\n")),
    }
}

async fn ready(ep: web::Data<Endpoints>) -> HttpResponse {
    if ep.health.is_ready() {
        HttpResponse::Ok().body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable().body("not ready\n")
    }
}

async fn ui(req: HttpRequest, ep: web::Data<Endpoints>) -> HttpResponse {
    if let Some(denied) = authorise(&req, &ep, false) {
        return denied;
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(UI)
}

async fn control_list(req: HttpRequest, ep: web::Data<Endpoints>) -> HttpResponse {
    if let Some(denied) = authorise(&req, &ep, false) {
        return denied;
    }
    HttpResponse::Ok().json(ep.control.list())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    value: String,
}

async fn control_set(
    req: HttpRequest,
    ep: web::Data<Endpoints>,
    name: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    // The token first: an unauthorised caller learns nothing, not even what a body must be.
    if let Some(denied) = authorise(&req, &ep, true) {
        return denied;
    }
    let body: SetBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: {e}; expected {{\"value\": \"...\"}}"),
            );
        }
    };
    match ep.control.set(&name, &body.value) {
        Ok(previous) => {
            tracing::warn!(setting = %name, value = %body.value, %previous, peer = ?req.peer_addr(), "setting changed through the API");
            HttpResponse::Ok()
                .json(json!({ "name": *name, "value": body.value, "previous": previous }))
        }
        Err(e @ ControlError::Unknown(..)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ControlError::NotAllowed { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Runs `f` on the run's state, after the access check; 404 without an API (a stage service).
fn with_state(
    req: &HttpRequest,
    ep: &Endpoints,
    f: impl FnOnce(&crate::api::State) -> HttpResponse,
) -> HttpResponse {
    if let Some(denied) = authorise(req, ep, false) {
        return denied;
    }
    match &ep.api {
        Some(api) => api.read(f),
        None => error(
            actix_web::http::StatusCode::NOT_FOUND,
            "this process keeps no run state (a stage service): ask the embedded run's API",
        ),
    }
}

/// Runs `f` on one workload's view; 404 naming it when there is none.
fn with_workload(
    req: &HttpRequest,
    ep: &Endpoints,
    w: &str,
    f: impl FnOnce(&WorkloadView) -> Value,
) -> HttpResponse {
    with_state(req, ep, |s| match s.workloads.get(w) {
        Some(v) => HttpResponse::Ok().json(f(v)),
        None => error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("no workload `{w}` ({} known)", s.workloads.len()),
        ),
    })
}

fn summary(name: &str, v: &WorkloadView) -> Value {
    let d = v.decisions.iter().last();
    json!({
        "workload": name,
        "last_event_time": v.last_event_time,
        "resources": v.resources.keys().collect::<Vec<_>>(),
        "cost_usd": v.running_cost(),
        "cost_per_hour": v.cost_per_hour,
        "decision": d.map(|d| json!({
            "decision_id": d.decision_id, "tier": d.tier, "instance_type": d.instance_type,
            "count": d.count, "spot_count": d.spot_count, "decided_at": d.decided_at,
        })),
        "decisions": v.decisions.len(),
        "anomalies": v.anomalies.len(),
        "open_anomalies": v.anomalies.iter().filter(|a| a.end.is_none()).count(),
        "cold_start": v.fingerprint.as_ref().is_some_and(|f| f.cold_start),
    })
}

async fn workloads(req: HttpRequest, ep: web::Data<Endpoints>) -> HttpResponse {
    with_state(&req, &ep, |s| {
        let list: Vec<Value> = s.workloads.iter().map(|(k, v)| summary(k, v)).collect();
        HttpResponse::Ok()
            .json(json!({ "workloads": list, "rows": s.rows, "rejected": s.rejected }))
    })
}

async fn workload(
    req: HttpRequest,
    ep: web::Data<Endpoints>,
    w: web::Path<String>,
) -> HttpResponse {
    with_workload(&req, &ep, &w, |v| {
        let mut out = summary(&w, v);
        out["fingerprint"] = json!(v.fingerprint);
        out["cold_start_from"] = json!(v.cold_start);
        out["latest_decision"] = json!(v.decisions.iter().last());
        out["horizons_s"] = json!(
            v.resources
                .iter()
                .map(|(k, r)| (k.clone(), r.forecasts.keys().copied().collect::<Vec<_>>()))
                .collect::<std::collections::BTreeMap<_, _>>()
        );
        out
    })
}

#[derive(Deserialize)]
struct SeriesQuery {
    /// Forecast horizon to show; default: each resource's shortest.
    horizon_s: Option<i64>,
}

async fn series(
    req: HttpRequest,
    ep: web::Data<Endpoints>,
    w: web::Path<String>,
    q: web::Query<SeriesQuery>,
) -> HttpResponse {
    with_workload(&req, &ep, &w, |v| {
        let resources: serde_json::Map<String, Value> = v
            .resources
            .iter()
            .map(|(name, r)| {
                let h = q
                    .horizon_s
                    .filter(|h| r.forecasts.contains_key(h))
                    .or_else(|| r.forecasts.keys().next().copied());
                let f = h.and_then(|h| r.forecasts.get(&h));
                let value = json!({
                    "unit": r.unit,
                    "actual": r.actual,
                    "horizons_s": r.forecasts.keys().collect::<Vec<_>>(),
                    "horizon_s": h,
                    "levels": f.map(|f| f.levels.clone()).unwrap_or_default(),
                    "forecast": f.map(|f| json!(f.points)).unwrap_or(json!([])),
                });
                (name.clone(), value)
            })
            .collect();
        json!({ "workload": *w, "resources": resources, "anomalies": v.anomalies, "decisions": v.decisions })
    })
}

/// A workload's anomaly segments, decisions or actions.
/// The metrics of a workload: those followed (named by its anomaly segments) and all seen.
async fn metric_names(
    req: HttpRequest,
    ep: web::Data<Endpoints>,
    w: web::Path<String>,
) -> HttpResponse {
    with_workload(&req, &ep, &w, |v| {
        let m = &v.metrics;
        json!({ "workload": *w, "followed": m.followed.keys().collect::<Vec<_>>(), "seen": m.recent.keys().collect::<Vec<_>>() })
    })
}

/// One metric's series (values before scaling): followed since a segment named it, else its
/// newest few points; 404 naming it when never seen.
async fn metric(
    req: HttpRequest,
    ep: web::Data<Endpoints>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (w, m) = path.into_inner();
    with_state(&req, &ep, |s| {
        let found = s.workloads.get(&w).map(|v| v.metrics.series(&m));
        match found {
            Some(Some((points, followed))) => HttpResponse::Ok().json(json!({
                "workload": w, "metric": m, "followed": followed, "points": points,
                // The segments that named it, to shade on its chart.
                "anomalies": s.workloads[&w].anomalies.iter().filter(|a| a.top_metrics.contains(&m)).collect::<Vec<_>>(),
            })),
            Some(None) => error(
                actix_web::http::StatusCode::NOT_FOUND,
                format!("workload `{w}` has no metric `{m}`"),
            ),
            None => error(
                actix_web::http::StatusCode::NOT_FOUND,
                format!("no workload `{w}` ({} known)", s.workloads.len()),
            ),
        }
    })
}

async fn list(
    req: HttpRequest,
    ep: web::Data<Endpoints>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (w, list) = path.into_inner();
    if let Some((_, answer)) = ep.views.iter().find(|(name, _)| *name == list) {
        let answer = answer.clone();
        return with_workload(&req, &ep, &w, |v| answer(&w, v));
    }
    if !["anomalies", "decisions", "actions"].contains(&list.as_str()) {
        let mut known = vec!["series", "metrics", "anomalies", "decisions", "actions"];
        known.extend(ep.views.iter().map(|(name, _)| *name));
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("no `{list}`: {}", known.join(", ")),
        );
    }
    with_workload(&req, &ep, &w, |v| {
        let items = match list.as_str() {
            "anomalies" => json!(v.anomalies),
            "decisions" => json!(v.decisions),
            _ => json!(v.actions),
        };
        json!({ "workload": w, list.clone(): items })
    })
}

async fn cost(req: HttpRequest, ep: web::Data<Endpoints>) -> HttpResponse {
    with_state(&req, &ep, |s| {
        let per: serde_json::Map<String, Value> = s
            .workloads
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!({ "cost_usd": v.running_cost(), "cost_per_hour": v.cost_per_hour }),
                )
            })
            .collect();
        let total: f64 = s.workloads.values().map(|v| v.running_cost()).sum();
        let rate: f64 = s.workloads.values().map(|v| v.cost_per_hour).sum();
        HttpResponse::Ok()
            .json(json!({ "total_usd": total, "cost_per_hour": rate, "workloads": per }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_open_on_loopback_and_everything_else_needs_the_token() {
        let t = Some("s3cret");
        let ok = Some("Bearer s3cret");
        assert_eq!(access(true, None, t, false), Access::Granted);
        assert_eq!(access(true, None, None, false), Access::Granted);
        // Changes, even from loopback.
        assert_eq!(access(true, None, t, true), Access::NeedsToken);
        assert_eq!(
            access(true, Some("Bearer nope"), t, true),
            Access::Denied("wrong token")
        );
        assert_eq!(
            access(true, Some("s3cret"), t, true),
            Access::NeedsToken,
            "not a bearer header"
        );
        assert_eq!(access(true, ok, t, true), Access::Granted);
        assert!(
            matches!(access(true, ok, None, true), Access::Denied(w) if w.contains("WFE_API_TOKEN"))
        );
        // Reads from another host.
        assert_eq!(access(false, None, t, false), Access::NeedsToken);
        assert_eq!(access(false, ok, t, false), Access::Granted);
        assert!(matches!(access(false, ok, None, false), Access::Denied(_)));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(same(b"", b""));
    }
}
