//! `wfe run --http`: an embedded run over real SMD machines serves `/metrics` with every
//! stage's counters, `/health` and `/ready`, the JSON API over its state (reads open on
//! loopback, changes only with the token), and a web UI that headless Chromium renders
//! from that state (a screenshot is saved under the test's target folder).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::held::Held;
use common::{STAGES, http, sample, shared_data};
use serde_json::Value;

const TOKEN: &str = "test-token-7f3a";
const MACHINES: [&str; 2] = ["machine-1-6", "machine-2-1"];

fn chromium() -> PathBuf {
    std::env::var_os("WFE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

fn get(addr: &str, path: &str) -> Value {
    let (status, body) = http("GET", addr, path, &[], "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn start(dir: &Path) -> Held {
    let data = shared_data();
    let only = MACHINES.map(|m| format!("\"{m}\"")).join(", ");
    std::fs::write(
        dir.join("job.toml"),
        format!(
            r#"
[[sources]]
path = "{}/smd"
only = [{only}]

[run]
progress = false

[[resources]]
name = "cpu"
metrics = ["m00"]
unit = "vcpu"
capacity = 64.0

[[resources]]
name = "memory"
metrics = ["m05"]
unit = "gib"
capacity = 256.0
"#,
            data.display()
        ),
    )
    .unwrap();
    let args = [
        "run",
        "--config",
        "job.toml",
        "--http",
        "127.0.0.1:0",
        "--hold",
    ];
    Held::spawn(
        dir,
        &[&args[..], &["--log-format", "json"]].concat(),
        &[("WFE_API_TOKEN", TOKEN)],
    )
}

#[test]
fn an_embedded_smd_run_serves_metrics_an_api_and_a_ui_that_chromium_renders() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path());
    let addr = run.address_after("http: serving on http://", Duration::from_secs(60));
    // Live while the run runs.
    let (status, body) = http("GET", &addr, "/health", &[], "");
    assert_eq!((status, body.trim()), (200, "ok"));
    run.wait_for(
        "serving its state until interrupted",
        Duration::from_secs(900),
    );
    let (status, _) = http("GET", &addr, "/ready", &[], "");
    assert_eq!(status, 200);

    check_metrics(&addr);
    let workload = check_api(&addr);
    check_control(&addr);
    check_ui(&addr, &workload);

    // Ctrl-C ends the hold; the process exits cleanly.
    let pid = run.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = run.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", run.log());

    // Structured logs: every tracing line is one JSON object with its fields.
    let log = run.log();
    let events: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["fields"].is_object())
    );
    assert!(
        events.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("reading "))),
        "{log}"
    );
}

/// Every stage's counters, in Prometheus' text format (promtool agrees).
fn check_metrics(addr: &str) {
    let (status, text) = http("GET", addr, "/metrics", &[], "");
    assert_eq!(status, 200);
    for stage in std::iter::once("ingest").chain(STAGES) {
        let out = sample(&text, "wfe_rows_out_total", &[("stage", stage)]).unwrap_or(0.0);
        assert!(out > 0.0, "{stage}: no rows out\n{text}");
        let s = [("stage", stage)];
        assert!(
            sample(&text, "wfe_batch_seconds_count", &s).unwrap_or(0.0) > 0.0,
            "{stage}: no batch latency"
        );
        assert!(
            sample(
                &text,
                "wfe_batch_seconds_bucket",
                &[("stage", stage), ("le", "+Inf")]
            )
            .is_some(),
            "{stage}: no latency histogram"
        );
        assert!(
            sample(&text, "wfe_mailbox_batches", &s).is_some() || stage == "ingest",
            "{stage}: no mailbox gauge"
        );
        if stage != "ingest" {
            let rows_in = sample(&text, "wfe_rows_in_total", &s).unwrap_or(0.0);
            assert!(rows_in > 0.0, "{stage}: no rows in");
        }
    }
    // Rows flow: what ingest emitted on metrics.raw, normalise received.
    let raw_out = sample(
        &text,
        "wfe_rows_out_total",
        &[("stage", "ingest"), ("topic", "metrics.raw")],
    );
    let raw_in = sample(
        &text,
        "wfe_rows_in_total",
        &[("stage", "normalise"), ("topic", "metrics.raw")],
    );
    assert_eq!(raw_out, raw_in);
    // Model errors: the fitted models' running error relative to persistence, per horizon.
    let n = text
        .lines()
        .filter(|l| l.starts_with("wfe_stage_measurement{"))
        .filter(|l| l.contains("name=\"relative_mae.ets."))
        .count();
    assert!(n > 0, "no running error of ets\n{text}");
    // No stage failed.
    assert_eq!(sample(&text, "wfe_stage_errors_total", &[]), None, "{text}");
    // Events by kind: SMD's test split carries labels, and the anomaly stage counts.
    // Every wfe metric is described (the catalog deploy/check.py holds the dashboard to).
    for line in text.lines().filter(|l| l.starts_with("wfe_")) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# HELP {base} ")),
            "{base} has no HELP"
        );
    }
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    if let Ok(mut p) = promtool {
        use std::io::Write;
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        panic!("promtool not found: `make test` installs Debian's prometheus, which has it");
    }
}

/// The API over the run's state; returns the workload the UI will show.
fn check_api(addr: &str) -> String {
    let list = get(addr, "/api/v1/workloads");
    let ws = list["workloads"].as_array().unwrap();
    let names: Vec<&str> = ws.iter().map(|w| w["workload"].as_str().unwrap()).collect();
    assert_eq!(names, MACHINES, "{list}");
    for w in ws {
        assert!(w["decisions"].as_u64().unwrap() > 0, "{w}");
        assert!(w["cost_usd"].as_f64().unwrap() > 0.0, "{w}");
        assert_eq!(w["resources"], serde_json::json!(["cpu", "memory"]));
    }
    let cost = get(addr, "/api/v1/cost");
    let sum: f64 = ws.iter().map(|w| w["cost_usd"].as_f64().unwrap()).sum();
    assert!((cost["total_usd"].as_f64().unwrap() - sum).abs() < 1e-6 * sum.max(1.0));

    let w = MACHINES[0];
    let detail = get(addr, &format!("/api/v1/workloads/{w}"));
    let fp = &detail["fingerprint"];
    assert!(!fp["neighbours"].as_array().unwrap().is_empty(), "{detail}");
    assert_eq!(fp["neighbours"][0], MACHINES[1], "the only other workload");
    let d = &detail["latest_decision"];
    assert!(d["reason"].as_str().unwrap().len() > 20, "{d}");
    assert!(d["count"].as_i64().unwrap() >= 0);

    let series = get(addr, &format!("/api/v1/workloads/{w}/series"));
    for res in ["cpu", "memory"] {
        let r = &series["resources"][res];
        let actual = r["actual"].as_array().unwrap();
        let forecast = r["forecast"].as_array().unwrap();
        assert!(actual.len() > 100, "{res}: {} actual points", actual.len());
        assert!(forecast.len() > 100, "{res}: {} forecasts", forecast.len());
        let levels = r["levels"].as_array().unwrap();
        assert!(levels.len() >= 3, "{r}");
        // An interval: values rise with the level.
        let v = forecast.last().unwrap()["values"].as_array().unwrap();
        let (lo, hi) = (v[0].as_f64().unwrap(), v[v.len() - 1].as_f64().unwrap());
        assert!(lo <= hi, "{v:?}");
        assert_eq!(r["horizon_s"], r["horizons_s"][0]);
    }
    // Another horizon on request.
    let h = series["resources"]["cpu"]["horizons_s"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_i64()
        .unwrap();
    let other = get(addr, &format!("/api/v1/workloads/{w}/series?horizon_s={h}"));
    assert_eq!(other["resources"]["cpu"]["horizon_s"], h);
    let acts = get(addr, &format!("/api/v1/workloads/{w}/actions"));
    assert!(!acts["actions"].as_array().unwrap().is_empty(), "{acts}");
    let anomalies = get(addr, &format!("/api/v1/workloads/{w}/anomalies"));
    assert!(anomalies["anomalies"].is_array());

    let decisions = get(addr, &format!("/api/v1/workloads/{w}/decisions"));
    assert_eq!(
        decisions["decisions"].as_array().unwrap().len() as u64,
        detail["decisions"].as_u64().unwrap()
    );
    // Its cost beside what reactive scaling would have spent over the same window, both
    // simulated as `wfe backtest` does (its own unit tests price them by hand).
    let beside = get(addr, &format!("/api/v1/workloads/{w}/reactive"));
    let kept = series["resources"]["cpu"]["actual"].as_array().unwrap();
    assert_eq!(beside["from"], kept[0][0], "{beside}");
    assert_eq!(
        beside["steps"].as_u64(),
        Some(kept.len() as u64),
        "{beside}"
    );
    for policy in ["wfe", "reactive"] {
        let f = &beside[policy];
        assert!(f["cost"].as_f64().unwrap() > 0.0, "{beside}");
        assert!(
            f["underprovisioned_minutes"].as_f64().unwrap() >= 0.0,
            "{beside}"
        );
    }
    // The metrics its segments named are followed from a little before the first named each.
    let metrics = get(addr, &format!("/api/v1/workloads/{w}/metrics"));
    let followed = metrics["followed"].as_array().unwrap();
    assert!(!followed.is_empty(), "{metrics}");
    assert!(followed.len() <= wfe_http::api::FOLLOWED_CAP, "{metrics}");
    let m = followed[0].as_str().unwrap();
    let one = get(addr, &format!("/api/v1/workloads/{w}/metrics/{m}"));
    assert_eq!(one["followed"], true, "{one}");
    let points = one["points"].as_array().unwrap();
    assert!(
        points.len() > wfe_http::api::PREROLL,
        "{} points",
        points.len()
    );
    let named = one["anomalies"].as_array().unwrap();
    let first = named[0]["start"].as_i64().unwrap();
    if points.len() < wfe_http::api::METRIC_CAP {
        assert!(
            points[0][0].as_i64().unwrap() < first,
            "the series begins before the first segment that named it"
        );
    }
    let (status, body) = http(
        "GET",
        addr,
        &format!("/api/v1/workloads/{w}/metrics/nope"),
        &[],
        "",
    );
    assert_eq!(status, 404);
    assert!(body.contains("no metric `nope`"), "{body}");
    let (status, _) = http("GET", addr, &format!("/api/v1/workloads/{w}/nope"), &[], "");
    assert_eq!(status, 404);
    let (status, body) = http("GET", addr, "/api/v1/workloads/nope", &[], "");
    assert_eq!(status, 404);
    assert!(body.contains("no workload `nope`"), "{body}");
    w.to_string()
}

/// Reads are open on loopback; a change needs the token.
fn check_control(addr: &str) {
    let settings = get(addr, "/api/v1/control");
    assert_eq!(
        settings["actuate.mode"]["value"], "record-only",
        "{settings}"
    );
    let path = "/api/v1/control/actuate.mode";
    let body = r#"{"value":"record-only"}"#;
    let (status, _) = http("POST", addr, path, &[], body);
    assert_eq!(status, 401, "no token");
    let (status, _) = http("POST", addr, path, &[], "not json");
    assert_eq!(status, 401, "no token, whatever the body");
    let (status, _) = http(
        "POST",
        addr,
        path,
        &[("Authorization", "Bearer wrong")],
        body,
    );
    assert_eq!(status, 403, "wrong token");
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = http("POST", addr, path, &[("Authorization", &auth)], body);
    assert_eq!(status, 200, "{text}");
    // Without an AMI the actuator records only: `apply` is refused, naming what is allowed.
    let (status, text) = http(
        "POST",
        addr,
        path,
        &[("Authorization", &auth)],
        r#"{"value":"apply"}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("record-only"), "{text}");
    let (status, _) = http(
        "POST",
        addr,
        "/api/v1/control/nope",
        &[("Authorization", &auth)],
        body,
    );
    assert_eq!(status, 404);
    let (status, text) = http("POST", addr, path, &[("Authorization", &auth)], "{\"v\":1}");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("expected"), "{text}");
}

fn chromium_run(args: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1900"])
        .args(["--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {} ({e}): `make test` installs Debian's chromium, or set WFE_CHROMIUM", chromium().display()))
}

/// The page renders the workload's actuals, forecast bands and decisions from the API.
fn check_ui(addr: &str, workload: &str) {
    let url = format!("http://{addr}/?workload={workload}");
    let out = chromium_run(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("data-ready=\"1\""),
        "{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attr = |name: &str| -> u64 {
        let key = format!("data-{name}=\"");
        let at = dom
            .find(&key)
            .unwrap_or_else(|| panic!("no {key} in the page"));
        dom[at + key.len()..]
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // What the page should draw: the window from the oldest actual point kept to the newest
    // event, the forecasts that fall in it, and the decisions in force during it.
    let series = get(addr, &format!("/api/v1/workloads/{workload}/series"));
    let detail = get(addr, &format!("/api/v1/workloads/{workload}"));
    let res = ["cpu", "memory"].map(|r| &series["resources"][r]);
    let t0 = res
        .iter()
        .map(|r| r["actual"][0][0].as_i64().unwrap())
        .min()
        .unwrap();
    let t1 = detail["last_event_time"].as_i64().unwrap();
    let actual: usize = res
        .iter()
        .map(|r| r["actual"].as_array().unwrap().len())
        .sum();
    let forecast: usize = res
        .iter()
        .flat_map(|r| r["forecast"].as_array().unwrap())
        .filter(|p| (t0..=t1).contains(&p["target_time"].as_i64().unwrap()))
        .count();
    let times: Vec<i64> = series["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decided_at"].as_i64().unwrap())
        .collect();
    let decisions =
        times.iter().filter(|t| **t >= t0).count() + usize::from(times.iter().any(|t| *t < t0));
    assert!(
        forecast > 50 && decisions > 0,
        "{forecast} forecasts, {decisions} decisions in the window"
    );
    assert_eq!(attr("actual"), actual as u64, "every actual point drawn");
    assert_eq!(
        attr("forecast"),
        forecast as u64,
        "every forecast in the window drawn"
    );
    assert_eq!(
        attr("decisions"),
        decisions as u64,
        "every decision in the window drawn"
    );
    assert!(dom.contains(&format!("data-workload=\"{workload}\"")));
    for class in ["actual", "band", "median", "spot", "ondemand", "cost"] {
        assert!(
            dom.contains(&format!("class=\"{class}\"")),
            "no {class} drawn"
        );
    }
    // The neighbours table and the decision's explanation are on the page.
    let neighbours = dom.split("id=\"neighbours\"").nth(1).unwrap_or_default();
    let neighbours = neighbours.split("</div>").next().unwrap_or_default();
    assert!(
        neighbours.contains(&format!("<td class=\"\">{}</td>", MACHINES[1])),
        "neighbour not shown: {neighbours}"
    );
    assert!(dom.contains("class=\"reason\""));

    // Each anomaly band names the metrics that drove it (a hover title), and the anomalies
    // table lists the newest segments with theirs, newest first.
    let bands = dom.matches("class=\"anomaly\"").count();
    assert!(bands > 0, "no anomaly band in the window");
    assert_eq!(
        dom.matches("<title>anomaly ").count(),
        bands,
        "a band without its title"
    );
    let segments = series["anomalies"].as_array().unwrap();
    let newest = segments.last().unwrap();
    let top: Vec<&str> = (newest["top_metrics"].as_array().unwrap().iter())
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(!top.is_empty(), "{newest}");
    let table = dom.split("id=\"anomalies\"").nth(1).unwrap_or_default();
    let table = table.split("</div>").next().unwrap_or_default();
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), segments.len().min(10), "{table}");
    let links: Vec<&str> = rows[0]
        .split("data-metric=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    assert_eq!(
        links, top,
        "the newest segment's top metrics, each a link to its series, not first: {table}"
    );

    // wfe's cost beside reactive's, as the API prices them.
    let beside = get(addr, &format!("/api/v1/workloads/{workload}/reactive"));
    let card = dom.split("id=\"reactive\"").nth(1).unwrap_or_default();
    let card = card.split('>').next().unwrap_or_default();
    for (key, policy) in [("wfe-cost", "wfe"), ("reactive-cost", "reactive")] {
        let want = format!("{:.2}", beside[policy]["cost"].as_f64().unwrap());
        assert!(
            card.contains(&format!("data-{key}=\"{want}\"")),
            "{key} != {want}: {card}"
        );
    }

    // Click-through: a named metric's series, shaded where segments named it (the page the
    // link opens draws the same chart the click draws in place).
    let metric = get(
        addr,
        &format!("/api/v1/workloads/{workload}/metrics/{}", top[0]),
    );
    let points = metric["points"].as_array().unwrap().len();
    let named = metric["anomalies"].as_array().unwrap().len();
    let url_m = format!("{url}&metric={}", top[0]);
    let out = chromium_run(&["--dump-dom", &url_m]);
    let page = String::from_utf8_lossy(&out.stdout);
    let card = page.split("id=\"metric\"").nth(1).unwrap_or_default();
    let card = card.split('>').next().unwrap_or_default();
    for (key, want) in [("ready", 1), ("points", points), ("anomalies", named)] {
        assert!(
            card.contains(&format!("data-{key}=\"{want}\"")),
            "metric card {key} != {want}: {card}"
        );
    }
    assert!(
        page.contains("class=\"metric-line\""),
        "no metric series drawn"
    );

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wfe-ui.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    let out = chromium_run(&[&shot, &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1400, 1900));
    assert!(
        bytes.len() > 30_000,
        "a {} byte screenshot is too plain to hold the charts",
        bytes.len()
    );
    println!("screenshot of the UI: {}", png.display());
}
