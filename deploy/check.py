"""Checks the deploy files offline (run by `make test`): what can be known without a cluster
or a container daemon.

- every YAML file parses, and every kustomization entry and generated file exists;
- one Deployment per stage service, running `wfe stage <name>` with the job's ConfigMap; the
  forecast stage on the GPU image, on GPU nodes, with a GPU;
- one KEDA ScaledObject per stage, aimed at its Deployment and scaling on that stage's consumer
  group (`<kafka.group_prefix>.<stage>`) and input topic, up to the topics' partition count;
- the agent DaemonSet runs `wfe agent --kafka` with the node's PID and network namespaces;
- the job config passes `wfe config --check` (it parses; every stage accepts its settings);
- every Dockerfile's build context has what it COPYs, and the cargo features it names exist.

Usage: python deploy/check.py path/to/wfe
"""

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

    out = subprocess.run([wfe, "config", "--check", str(K8S / "job.toml")], capture_output=True, text=True)
    check(out.returncode == 0, f"wfe config --check job.toml: {out.stderr.strip()}")

    features = tomllib.loads((ROOT / "pipeline" / "cli" / "Cargo.toml").read_text()).get("features", {})
    for df in sorted((ROOT / "deploy" / "docker").glob("Dockerfile*")):
        text = df.read_text()
        check(text.lstrip().startswith("#") or text.lstrip().startswith("FROM"), f"{df.name}: no FROM")
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("COPY") and "--from=" not in line:
                for src in line.split()[1:-1]:
                    check((ROOT / src).exists(), f"{df.name}: COPY {src}: not in the build context")
        for f in re.findall(r"--features\s+wfe-cli/(\w+)", text):
            check(f in features, f"{df.name}: feature {f} is not wfe-cli's")
    ignored = (ROOT / ".dockerignore").read_text().split()
    check("target" in ignored, ".dockerignore must leave target/ out of the build context")

    for f in failures:
        print(f"deploy check: {f}", file=sys.stderr)
    n = len(docs)
    print(f"deploy: {n} Kubernetes documents, {len(INPUTS)} stages, 2 Dockerfiles: "
          + ("ok" if not failures else f"{len(failures)} problem(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/debug/wfe"))
