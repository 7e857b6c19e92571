"""Checks the deploy files offline (run by `make test`): what can be known without a cluster
or a container daemon.

- every YAML file parses, and every kustomization entry and generated file exists;
- one Deployment per stage service, running `wfe stage <name>` with the job's ConfigMap; the
  forecast stage on the GPU image, on GPU nodes, with a GPU;
- one KEDA ScaledObject per stage, aimed at its Deployment and scaling on that stage's consumer
  group (`<kafka.group_prefix>.<stage>`) and input topic, up to the topics' partition count;
- the agent DaemonSet runs `wfe agent --kafka` with the node's PID and network namespaces;
- the job config passes `wfe config --check` (it parses; every stage accepts its settings);
- every Dockerfile's build context has what it COPYs, and the cargo features it names exist;
- every wfe pod serves HTTP (`--http` on its named `http` port) with liveness on /health,
  readiness on /ready, and the scrape annotations Prometheus' config keeps; one Service covers
  that port;
- the fleet's API service (api.yaml): `wfe stage api` with the job, one replica and no
  autoscaler, its Service on the http and keda ports;
- the predictive-scaling example (deploy/k8s/examples/predictive-scaling.yaml): its wfe pod
  serves `--keda` where its Service and the ScaledObject's `scalerAddress` point, the
  subcommand it runs takes `--keda`, and the trigger's metadata holds only keys the scaler
  reads (pipeline/kube/src/keda/query.rs), with the required ones and values it accepts;
- deploy/prometheus/prometheus.yml parses and keeps the annotated pods; every metric the
  Grafana dashboard (deploy/grafana/wfe.json) queries is one wfe exports (described in
  pipeline/http/src/observe.rs, which the UI test checks against a real /metrics).

Usage: python deploy/check.py path/to/wfe
"""

import json
import pathlib
import re
import subprocess
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# A stage's input topic (its `Stage::inputs` as a service: one topic).
INPUTS = {
    "normalise": "metrics.raw",
    "fingerprint": "metrics.norm",
    "anomaly": "metrics.norm",
    "forecast": "metrics.norm",
    "tier-select": "forecasts",
    "actuate": "decisions",
}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
    return ok


def documents():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        try:
            for d in yaml.safe_load_all(path.read_text()):
                if d is not None:
                    docs.append((path.name, d))
        except yaml.YAMLError as e:
            check(False, f"{path.name}: not YAML: {e}")
    return docs


def check_http(name, d):
    """The pod serves wfe's HTTP side where its probes and scrape annotations look."""
    tpl = d["spec"]["template"]
    c = tpl["spec"]["containers"][0]
    args = c.get("args", [])
    if not check("--http" in args, f"{name}: no --http"):
        return
    port = int(args[args.index("--http") + 1].rsplit(":", 1)[1])
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    check(ports.get("http") == port, f"{name}: the http port is {ports.get('http')}, --http says {port}")
    for probe, path in [("livenessProbe", "/health"), ("readinessProbe", "/ready")]:
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "http", f"{name}: {probe} should GET {path} on http")
    ann = tpl["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true", f"{name}: not annotated for scraping")
    check(ann.get("prometheus.io/port") == str(port), f"{name}: scrape port {ann.get('prometheus.io/port')} != {port}")
    check(ann.get("prometheus.io/path") == "/metrics", f"{name}: scrape path")


def rust_keys(path, const):
    """The strings of `pub const NAME: [&str; N] = [...]` in a Rust file."""
    m = re.search(r"const " + const + r": \[&str; \d+\] = \[(.*?)\];", path.read_text(), re.S)
    return re.findall(r'"(\w+)"', m.group(1)) if m else []


def check_keda_example(wfe):
    path = K8S / "examples" / "predictive-scaling.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    query = ROOT / "pipeline" / "kube" / "src" / "keda" / "query.rs"
    keys, keda_keys = rust_keys(query, "KEYS"), rust_keys(query, "KEDA_KEYS")
    check(len(keys) >= 5 and "scalerAddress" in keda_keys, f"query.rs: keys {keys}, KEDA's {keda_keys}")
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    deps = kinds.get("Deployment", [])
    if not check(len(deps) == 1 and len(kinds.get("Service", [])) == 1 and kinds.get("ScaledObject"),
                 f"{path.name}: one Deployment, one Service, ScaledObjects"):
        return
    dep, svc = deps[0], kinds["Service"][0]
    check_http(f"{path.name} {dep['metadata']['name']}", dep)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    if not check("--keda" in args, f"{path.name}: the wfe pod does not serve --keda"):
        return
    port = int(args[args.index("--keda") + 1].rsplit(":", 1)[1])
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    help_text = subprocess.run([wfe, args[0], "--help"], capture_output=True, text=True).stdout
    check("--keda" in help_text, f"{path.name}: `wfe {args[0]}` takes no --keda")
    sel = svc["spec"]["selector"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in sel.items()), f"{path.name}: the Service does not select the pod")
    svc_ports = {p["port"]: named.get(p["targetPort"], p["targetPort"]) for p in svc["spec"]["ports"]}
    for so in kinds["ScaledObject"]:
        name = so["metadata"]["name"]
        for t in so["spec"]["triggers"]:
            if not check(t["type"] in ("external", "external-push"), f"{name}: trigger {t['type']}"):
                continue
            m = t["metadata"]
            host, _, p = m.get("scalerAddress", "").rpartition(":")
            check(host.split(".")[0] == svc["metadata"]["name"] and host.split(".")[1] == svc["metadata"]["namespace"],
                  f"{name}: scalerAddress {host} is not the Service {svc['metadata']['name']}")
            check(p.isdigit() and svc_ports.get(int(p)) == port,
                  f"{name}: scalerAddress port {p} does not reach --keda's {port}")
            for k in m:
                base = k[: -len("FromEnv")] if k.endswith("FromEnv") else k
                check(k in keda_keys or base in keys, f"{name}: metadata `{k}` is no key the scaler reads")
            check("workload" in m, f"{name}: no workload")
            check(float(m.get("targetPerReplica", 0)) > 0, f"{name}: targetPerReplica must be above 0")
            check(0 < float(m.get("quantile", 0.5)) < 1, f"{name}: quantile must be in (0, 1)")


def check_api(wfe, deployments, services, scaled):
    """The fleet's API service (api.yaml): `wfe stage api` with the job, one replica and no
    autoscaler (it holds every partition), its Service on the http and keda ports."""
    dep = deployments.get("wfe-api")
    if not check(dep is not None, "no Deployment wfe-api"):
        return
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    check(args[:2] == ["stage", "api"] and "/etc/wfe/job.toml" in args, f"wfe-api: args {args}")
    check(dep["spec"].get("replicas") == 1 and "wfe-api" not in scaled, "wfe-api: one replica, not autoscaled")
    help_text = subprocess.run([wfe, "stage", "--help"], capture_output=True, text=True).stdout
    check("`api`" in help_text and "--keda" in help_text, "`wfe stage --help` names no `api` or --keda")
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if check("--keda" in args, "wfe-api: no --keda"):
        port = int(args[args.index("--keda") + 1].rsplit(":", 1)[1])
        check(named.get("keda") == port, f"wfe-api: the keda port is {named.get('keda')}, --keda says {port}")
    svc = services.get("wfe-api")
    if check(svc is not None, "no Service wfe-api"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "wfe-api: the Service does not select the pod")
        targets = {p["targetPort"] for p in svc["spec"]["ports"]}
        check(targets == {"http", "keda"}, f"wfe-api: the Service targets {targets}")


def check_observability():
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
    if check("wfe" in jobs, "prometheus.yml: no `wfe` job"):
        keeps = [r for r in jobs["wfe"].get("relabel_configs", []) if r.get("action") == "keep"]
        check(any("__meta_kubernetes_pod_annotation_prometheus_io_scrape" in r.get("source_labels", []) for r in keeps),
              "prometheus.yml: the wfe job does not keep the annotated pods")
    observe = (ROOT / "pipeline" / "http" / "src" / "observe.rs").read_text()
    exported = set(re.findall(r'describe_\w+!\(\s*"(wfe_\w+)"', observe))
    check(len(exported) >= 10, f"observe.rs: only {len(exported)} described metrics found")
    dash = json.loads((ROOT / "deploy" / "grafana" / "wfe.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    check(len(exprs) >= 8, "grafana: too few queries")
    for e in exprs:
        for m in re.findall(r"\b(wfe_\w+)", e):
            base = re.sub(r"_(bucket|count|sum)$", "", m)
            check(base in exported, f"grafana: `{m}` is not a metric wfe exports")


def main(wfe):
    docs = documents()
    kustomization = next((d for n, d in docs if n == "kustomization.yaml"), None)
    if check(kustomization is not None, "deploy/k8s/kustomization.yaml missing"):
        for r in kustomization.get("resources", []):
            check((K8S / r).is_file(), f"kustomization: resource {r} does not exist")
        for g in kustomization.get("configMapGenerator", []):
            for f in g.get("files", []):
                check((K8S / f).is_file(), f"kustomization: file {f} does not exist")
    job = tomllib.loads((K8S / "job.toml").read_text())
    prefix = job.get("kafka", {}).get("group_prefix", "wfe")
    partitions = job.get("kafka", {}).get("partitions", 4)

    by_kind = {}
    for name, d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for stage, topic in INPUTS.items():
        dep = deployments.get(f"wfe-{stage}")
        if not check(dep is not None, f"no Deployment wfe-{stage}"):
            continue
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        check(c["args"][:2] == ["stage", stage], f"wfe-{stage}: args {c['args']}")
        check("/etc/wfe/job.toml" in c["args"], f"wfe-{stage}: not given the job config")
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        check(vols.get("job", {}).get("configMap", {}).get("name") == "wfe-job", f"wfe-{stage}: job ConfigMap")
        selector = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in selector.items()), f"wfe-{stage}: selector does not match its pods")
        if stage == "forecast":
            check(c["image"] == "wfe-gpu", "forecast: not on the GPU image")
            check("nvidia.com/gpu" in c["resources"].get("limits", {}), "forecast: no GPU requested")
            check("nvidia.com/gpu.present" in pod.get("nodeSelector", {}), "forecast: no GPU node selector")
        else:
            check(c["image"] == "wfe", f"wfe-{stage}: image {c['image']}")
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind.get("ScaledObject", [])}
    for stage, topic in INPUTS.items():
        so = scaled.get(f"wfe-{stage}")
        if not check(so is not None, f"no ScaledObject for wfe-{stage}"):
            continue
        t = so["spec"]["triggers"][0]
        check(t["type"] == "kafka", f"wfe-{stage}: trigger {t['type']}")
        m = t["metadata"]
        check(m["consumerGroup"] == f"{prefix}.{stage}", f"wfe-{stage}: group {m['consumerGroup']}")
        check(m["topic"] == topic, f"wfe-{stage}: topic {m['topic']}, its input is {topic}")
        check(so["spec"]["maxReplicaCount"] <= partitions, f"wfe-{stage}: more replicas than partitions")
    agents = by_kind.get("DaemonSet", [])
    if check(len(agents) == 1, "one agent DaemonSet"):
        pod = agents[0]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        check(c["args"][:2] == ["agent", "--kafka"], f"agent args {c['args']}")
        check(pod.get("hostPID") and pod.get("hostNetwork"), "agent: the node's PID and network namespaces")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        check(job.get("agent", {}).get("cgroup_root", "/sys/fs/cgroup") in mounts, "agent: cgroup_root not mounted")

    pods = [(d["metadata"]["name"], d) for d in by_kind.get("Deployment", []) + by_kind.get("DaemonSet", [])]
    for name, d in pods:
        check_http(name, d)
    services = [d for d in by_kind.get("Service", []) if d["metadata"]["name"] == "wfe-metrics"]
    if check(len(services) == 1, "no wfe-metrics Service"):
        spec = services[0]["spec"]
        check(spec.get("selector") == {"app.kubernetes.io/name": "wfe"}, "wfe-metrics: selector")
        check(any(p.get("targetPort") == "http" for p in spec.get("ports", [])), "wfe-metrics: not on the http port")
    check_api(wfe, deployments, {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}, scaled)
    check_observability()
    check_keda_example(wfe)

    out = subprocess.run([wfe, "config", "--check", str(K8S / "job.toml")], capture_output=True, text=True)
    check(out.returncode == 0, f"wfe config --check job.toml: {out.stderr.strip()}")

    features = tomllib.loads((ROOT / "pipeline" / "cli" / "Cargo.toml").read_text()).get("features", {})
    # Every folder the workspace builds from (members, path dependencies, patched crates).
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    paths = list(workspace["workspace"]["members"])
    for table in [workspace["workspace"].get("dependencies", {}), *workspace.get("patch", {}).values()]:
        paths += [d["path"] for d in table.values() if isinstance(d, dict) and "path" in d]
    needed = {pathlib.PurePosixPath(p).parts[0] for p in paths}
    for df in sorted((ROOT / "deploy" / "docker").glob("Dockerfile*")):
        text = df.read_text()
        check(text.lstrip().startswith("#") or text.lstrip().startswith("FROM"), f"{df.name}: no FROM")
        copied = set()
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("COPY") and "--from=" not in line:
                for src in line.split()[1:-1]:
                    check((ROOT / src).exists(), f"{df.name}: COPY {src}: not in the build context")
                    copied.add(src.rstrip("/"))
        for folder in sorted(needed - copied):
            check(False, f"{df.name}: the workspace builds from {folder}/, which is not COPYed")
        for f in re.findall(r"--features\s+wfe-cli/(\w+)", text):
            check(f in features, f"{df.name}: feature {f} is not wfe-cli's")
    ignored = (ROOT / ".dockerignore").read_text().split()
    check("target" in ignored, ".dockerignore must leave target/ out of the build context")

    for f in failures:
        print(f"deploy check: {f}", file=sys.stderr)
    n = len(docs)
    print(f"deploy: {n} Kubernetes documents, {len(INPUTS)} stages, 2 Dockerfiles, scrape config, dashboard: "
          + ("ok" if not failures else f"{len(failures)} problem(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/debug/wfe"))
