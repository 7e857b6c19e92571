"""Load test of the seven stage services over a real broker, measured in one run.

1. starts a tansu broker (SQLite storage in a fresh folder) on a free port;
2. starts the six stage services after ingest (release `wfe stage NAME`), one process each;
3. replays the job's sources onto `metrics.raw` at max speed (or at `--speed`), then waits
   until every partition of `actions` carries the end-of-stream marker;
4. reads `metrics.raw` and `decisions` back and computes, from Kafka message timestamps,
   the end-to-end latency from a sample's message to the decision it led to;
5. measures the broker's own produce rate in the same run: the recorded `metrics.raw`
   messages produced again, unchanged, to a fresh topic (`wfe replay --in`);
6. says where the CPU went: each process's from start to the end of `actions`, and the part
   of each service's in librdkafka's threads; with `--topics`, what every topic holds.

Prints the tables. Run through `load-tests/kafka-pipeline.sh` (builds, sets up the venv).
"""

import argparse
import bisect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["normalise", "fingerprint", "anomaly", "forecast", "tier-select", "actuate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_messages(bootstrap: str, topic: str, idle_s: float = 2.0, limit_s: float = 600.0):
    """Every message of a topic, from the beginning to its end now, in partition and offset
    order. Past the high watermarks it goes on reading until nothing came for `idle_s`: tansu
    0.6.0's memory storage moves a partition's high watermark by one per produced record batch,
    not per record, so a reader that stops at the watermark (`schemas/examples/read_topic.py`,
    right on Kafka and on tansu's SQLite) misses the end of each partition there."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "load-test-reader",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    high = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got = []
    deadline = time.time() + limit_s
    while True:
        m = consumer.poll(idle_s)
        if m is None:
            # Positions are invalid (negative) until a partition's first fetch.
            at = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in partitions])}
            if all(high[p] <= 0 or at[p] >= high[p] for p in partitions):
                break
        elif m.error():
            raise SystemExit(f"{topic}/{m.partition()}: {m.error()}")
        else:
            got.append(m)
        if time.time() > deadline:
            raise SystemExit(f"{topic}: still reading after {limit_s:.0f} s")
    consumer.close()
    return sorted(got, key=lambda m: (m.partition(), m.offset()))


class EndWatch:
    """One reader of `topic` for the whole run, that says when every partition's last message
    is the end-of-stream marker. One reader, kept open: a reader made and closed at every poll
    closes with a fetch in flight, and tansu 0.6.0 ends its storage loop (every later request
    fails) when a request's client is gone before its answer, which a loaded broker made
    likely (docs/performance.md)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.partitions = partitions
        self.last = {}
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "load-test-end-watch",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        })
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])

    def ended(self) -> bool:
        while (m := self.consumer.poll(0.2)) is not None:
            if m.error():
                continue
            control = dict(m.headers() or []).get("wfe.control")
            if control != b"progress":
                self.last[m.partition()] = control == b"end-of-stream"
        return len(self.last) == self.partitions and all(self.last.values())

    def close(self) -> None:
        # Paused, the reader stops fetching; the fetch in flight is answered before it closes.
        self.consumer.pause(self.consumer.assignment())
        time.sleep(1.5)
        self.consumer.close()


def rows(m) -> pa.Table:
    with pa.ipc.open_stream(m.value()) as r:
        return r.read_all()


def cpu_seconds(pid: int, stat: str = "") -> float:
    """User + system CPU time of a live process (or one thread's `stat`) so far, or NaN once gone."""
    try:
        fields = Path(stat or f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # utime and stime are fields 14 and 15 of stat(5); after the ")" they are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kafka_client_cpu_seconds(pid: int) -> float:
    """CPU time so far of a process's live librdkafka threads (named `rdk:...`; a client's
    threads that already ended are not counted), or NaN once the process is gone."""
    total = 0.0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            if (task / "comm").read_text().startswith("rdk:"):
                total += cpu_seconds(int(task.name), f"/proc/{pid}/task/{task.name}/stat")
    except OSError:
        return float("nan")
    return total


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def compare_embedded(wfe: str, job: Path, work: Path, fleet: dict) -> str:
    """The job run embedded (`wfe run`, outputs in the work folder) against the fleet's
    decisions, keyed by workload and time: how many each has alone, and how many differ."""
    embedded_job = work / "embedded.toml"
    embedded_job.write_text(re.sub(r'(?m)^dir = ".*"$', f'dir = "{work / "embedded"}"', job.read_text()))
    subprocess.run([wfe, "run", "--config", str(embedded_job)], check=True, capture_output=True)
    with pa.OSFile(str(work / "embedded/decisions.arrows")) as f:
        t = pa.ipc.open_stream(f).read_all()
    embedded = {row[:2]: row[2:] for row in zip(
        t.column("workload").to_pylist(), t.column("decided_at").cast(pa.int64()).to_pylist(),
        t.column("count").to_pylist(), t.column("spot_count").to_pylist(), t.column("instance_type").to_pylist(),
        t.column("reason").to_pylist())}
    with open(work / "fleet-decisions.txt", "w") as f:
        for k in sorted(fleet):
            print(*k, *fleet[k], sep="\t", file=f)
    only_fleet = sorted(k for k in fleet if k not in embedded)
    only_embedded = sorted(k for k in embedded if k not in fleet)
    other = sorted(k for k, v in fleet.items() if k in embedded and embedded[k][:3] != v[:3])
    # The first few of each kind, to stderr: where to look.
    for what, keys in [("over Kafka only", only_fleet), ("embedded only", only_embedded), ("other capacity", other)]:
        for k in keys[:4]:
            print(f"{what}: {k} fleet {fleet.get(k)} embedded {embedded.get(k)}", file=sys.stderr)
    return f"{t.num_rows:,}, {len(only_fleet):,}, {len(only_embedded):,}, {len(other):,}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wfe", default=str(ROOT / "target/release/wfe"))
    ap.add_argument("--tansu", default=str(ROOT / ".tools/bin/tansu"))
    ap.add_argument("--config", default=str(ROOT / "pipeline/cli/tests/kafka/job.toml"))
    ap.add_argument("--speed", default="max")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--fleet", type=int, default=0,
                    help="replay a synthetic fleet of this many workloads (`wfe synth`) instead of the job's sources")
    ap.add_argument("--days", type=float, default=2.0, help="days of event time of the --fleet fleet")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work folder (broker data, logs, fleet file) rather than remove it at the end")
    ap.add_argument("--topics", action="store_true",
                    help="also print what every topic holds at the end (reads them all back: minutes at --fleet 1000)")
    ap.add_argument("--storage", default="sqlite://tansu.db",
                    help="tansu's storage engine (`memory://tansu/` keeps nothing on disk: the broker's persistence left out)")
    ap.add_argument("--compare", action="store_true",
                    help="also run the job embedded (`wfe run`, no broker) and count the decisions that differ")
    ap.add_argument("--hops", action="store_true",
                    help="read the stages' output topics back (not the changelogs) for the latency hop by hop")
    ap.add_argument("--commit-ms", type=int, default=None,
                    help="the services' commit interval with --fleet (each commit writes the changed "
                         "workloads' state; default: the product's, 10 s)")
    ap.add_argument("--producer-property", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka producer setting for the services (`kafka.producer_properties`), to compare")
    ap.add_argument("--consumer-property", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka consumer setting for the services (`kafka.consumer_properties`), to compare")
    args = ap.parse_args()
    # A stop (timeout, Ctrl-C's cousin) still runs the `finally` that ends the services.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="wfe-loadtest-"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    data = os.environ.get("WFE_DATA", str(ROOT.parent / "shared/data"))
    job = work / "job.toml"
    text = (Path(args.config).read_text().replace("../shared/data", data)
            .replace("partitions = 3", f"partitions = {args.partitions}"))
    if args.fleet:
        fleet = work / "fleet.parquet"
        subprocess.run([args.wfe, "synth", "--workloads", str(args.fleet), "--days", str(args.days),
                        "--out", str(fleet)], check=True, env={**os.environ, "WFE_DATA": data})
        # The job's [[sources]] tables (one after another) give way to the one fleet file.
        text = re.sub(r"\[\[sources\]\].*?(?=\n\[(?!\[sources))", f'[[sources]]\npath = "{fleet}"\n', text,
                      count=1, flags=re.S)
        if "[stages.normalise]" not in text:
            # The fleet has no `split=train` label: normalise learns each scaler from its first
            # day (288 steps of 300 s) rather than the default 1,440 steps (five days).
            text += "\n[stages.normalise]\nlearn_steps = 288\n"
        # The test job notices a killed instance within 6 s; a broker this busy answers
        # heartbeats slower than that, and each missed one rebalanced every service.
        text = text.replace('"session.timeout.ms" = "6000"', '"session.timeout.ms" = "45000"')
        text = text.replace('"heartbeat.interval.ms" = "500"', '"heartbeat.interval.ms" = "3000"')
        # The test job commits every 500 ms so its kill tests replay little; a fleet runs with
        # the product's default (each commit writes the changed workloads' state).
        setting = "" if args.commit_ms is None else f"commit_interval_ms = {args.commit_ms}"
        text = text.replace("commit_interval_ms = 500", setting)
    for kind, given in [("producer", args.producer_property), ("consumer", args.consumer_property)]:
        if given:
            props = "".join(f'"{k}" = "{v}"\n' for k, v in (p.split("=", 1) for p in given))
            header = f"[kafka.{kind}_properties]\n"
            # Into the job's own table where it has one (TOML forbids a second).
            text = text.replace(header, header + props, 1) if header in text else text + f"\n{header}{props}"
    job.write_text(text)
    url = f"tcp://{bootstrap}"
    procs = []
    names = ["tansu", *STAGES]  # procs[i] runs names[i]
    log = lambda name: open(work / f"{name}.log", "w")
    procs.append(subprocess.Popen([args.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                   "--storage-engine", args.storage], cwd=work,
                                  stdout=log("tansu"), stderr=subprocess.STDOUT))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    wfe = lambda *a: [args.wfe, *a, "--config", str(job), "--bootstrap", bootstrap]
    try:
        for s in STAGES:
            procs.append(subprocess.Popen(wfe("stage", s), stdout=log(s), stderr=subprocess.STDOUT,
                                          env={**os.environ, "RUST_LOG": "warn"}))
        time.sleep(3)  # group joins
        watch = EndWatch(bootstrap, "actions", args.partitions)
        # CPU spent before the replay: each process's start (a wfe process registers
        # libtorch's operators, about 0.3 CPU s) and the group joins, not the pipeline's work.
        cpu0 = {name: cpu_seconds(p.pid) for name, p in zip(names, procs)}
        t0 = time.time()
        out = subprocess.run(wfe("replay", "--speed", args.speed), capture_output=True, text=True, check=True)
        t_replayed = time.time()
        while not watch.ended():
            time.sleep(0.3)
        t_end = time.time()
        watch.close()
        # CPU of each process from start to the end of `actions`: where the pipeline's time goes.
        cpu = {name: cpu_seconds(p.pid) for name, p in zip(names, procs)}
        cpu_client = {name: kafka_client_cpu_seconds(p.pid) for name, p in zip(names, procs) if name != "tansu"}

        raw = read_messages(bootstrap, "metrics.raw")
        decisions = read_messages(bootstrap, "decisions")
        # When each workload's samples reached the broker: per raw message, the newest sample
        # time it carried and the message's timestamp, in event-time order.
        arrival = {}
        produced = {}  # trace id of each raw message -> its timestamp
        values = 0
        for m in raw:
            h = dict(m.headers() or [])
            if h.get("wfe.control"):
                continue
            produced[h.get("wfe.trace-id")] = m.timestamp()[1]
            t = rows(m)
            values += t.num_rows
            # A message holds one partition's workloads: each one's newest sample in it.
            newest = {}
            for wl, at in zip(t.column("workload").to_pylist(), t.column("event_time").cast(pa.int64()).to_pylist()):
                newest[wl] = max(newest.get(wl, at), at)
            for wl, at in newest.items():
                arrival.setdefault(wl, []).append((at, m.timestamp()[1]))
        for v in arrival.values():
            v.sort()
        lat = []
        lat_at = []  # each latency's decision time (event time, ms)
        trig = []
        n_decisions = 0
        fleet_decisions = {}  # (workload, decided_at) -> (count, spot_count, instance type)
        for m in decisions:
            h = dict(m.headers() or [])
            if h.get("wfe.control"):
                continue
            t = rows(m)
            n_decisions += t.num_rows
            ts_ms = m.timestamp()[1]
            # The trace id travels from the raw message whose arrival made the chain compute
            # this decision: the pipeline's own latency, without waiting for data.
            if h.get("wfe.trace-id") in produced:
                trig += [ts_ms - produced[h["wfe.trace-id"]]] * t.num_rows
            for row in zip(t.column("workload").to_pylist(), t.column("decided_at").cast(pa.int64()).to_pylist(),
                           t.column("count").to_pylist(), t.column("spot_count").to_pylist(),
                           t.column("instance_type").to_pylist(), t.column("reason").to_pylist()):
                fleet_decisions[row[:2]] = row[2:]
            for wl, at in zip(t.column("workload").to_pylist(), t.column("decided_at").cast(pa.int64()).to_pylist()):
                msgs = arrival.get(wl, [])
                # The first raw message of the workload whose samples reach the decision's time.
                i = bisect.bisect_left(msgs, (at, -1))
                if i < len(msgs):
                    lat.append(ts_ms - msgs[i][1])
                    lat_at.append(at)

        # What every topic holds at the end, output and changelog alike: the broker's work.
        topics = []
        if args.topics:
            listed = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
            topics = sorted(t for t in listed if not t.startswith("__"))
        elif args.hops:
            topics = ["metrics.norm", "anomalies", "fingerprints", "forecasts", "decisions", "actions"]
        held = {}
        reached = {}
        for t in topics:
            ms = raw if t == "metrics.raw" else read_messages(bootstrap, t)
            held[t] = (len(ms), sum(len(m.value() or b"") + len(m.key() or b"") for m in ms))
            # Where a raw message's trace went: the first message of each topic that carries
            # its trace id, from the raw message's timestamp (the latency, hop by hop).
            first = {}
            for m in ms:
                tid = dict(m.headers() or []).get("wfe.trace-id")
                if tid in produced and not dict(m.headers() or []).get("wfe.control"):
                    first[tid] = min(first.get(tid, m.timestamp()[1]), m.timestamp()[1])
            if first and t != "metrics.raw":
                reached[t] = [ts - produced[tid] for tid, ts in first.items()]

        # The broker alone: the same messages, produced again unchanged.
        rec = work / "raw.arrow"
        subprocess.run([args.wfe, "record", "--topic", "metrics.raw", "--out", str(rec), "--bootstrap", bootstrap,
                        "--config", str(job)], check=True, capture_output=True)
        t1 = time.time()
        rep = subprocess.run([args.wfe, "replay", "--in", str(rec), "--topic", "loadtest.raw-copy", "--bootstrap",
                              bootstrap, "--config", str(job)], capture_output=True, text=True)
        if rep.returncode != 0:
            raise SystemExit(rep.stderr)
        t_copy = time.time() - t1
        raw_bytes = sum(len(m.value() or b"") for m in raw)
        n_raw = sum(1 for m in raw if not dict(m.headers() or []).get("wfe.control"))
        e2e = t_end - t0
        what = f"a synthetic fleet of {args.fleet:,} workloads, {args.days} days" if args.fleet else "the job's sources"
        print(f"\nwfe load test: {values:,} values ({n_raw} messages, {raw_bytes / 1e6:.1f} MB) of {what} through 7 "
              f"stage services over tansu ({args.storage.split(':')[0]} storage), {args.partitions} partitions, "
              f"replay speed {args.speed}")
        print("| measure | value |")
        print("|---|---|")
        print(f"| pipeline throughput (values/s, replay start to last partition of `actions` ended) | {values / e2e:,.0f} |")
        print(f"| replay onto metrics.raw alone (values/s) | {values / (t_replayed - t0):,.0f} |")
        print(f"| broker's own produce rate, same messages again (values/s) | {values / t_copy:,.0f} |")
        print(f"| broker's own produce rate (MB/s, messages/s) | {raw_bytes / 1e6 / t_copy:.1f}, {n_raw / t_copy:,.0f} |")
        print(f"| pipeline / broker rate | {(values / e2e) / (values / t_copy):.2f} |")
        print(f"| decisions | {n_decisions:,} ({len(lat):,} matched to their sample's message) |")
        if args.compare:
            print(f"| decisions embedded (`wfe run`), over Kafka only, embedded only, same workload and time "
                  f"but other capacity | {compare_embedded(args.wfe, job, work, fleet_decisions)} |")
        print(f"| end-to-end latency, sample message to decision message, p50 (ms) | {percentile(lat, 0.5):,.0f} |")
        print(f"| end-to-end latency p99 (ms) | {percentile(lat, 0.99):,.0f} |")
        # Early decisions wait for data by design (normalise learns each scaler from the first
        # days and holds those steps until it has): the pipeline's own latency shows once warm.
        if lat_at:
            lo, hi = min(lat_at), max(lat_at)
            warm = [x for x, at in zip(lat, lat_at) if at >= lo + (hi - lo) / 2]
            print(f"| the same for decisions in the second half of the event time, p50 / p99 (ms) | "
                  f"{percentile(warm, 0.5):,.0f} / {percentile(warm, 0.99):,.0f} ({len(warm):,} decisions) |")
        print(f"| processing latency, triggering raw message to decision (trace id), p50 / p99 (ms) | "
              f"{percentile(trig, 0.5):,.0f} / {percentile(trig, 0.99):,.0f} ({len(trig):,} decisions) |")
        print(f"| wall time: replay + drain (s) | {e2e:.1f} |")
        print("\n| process | CPU s, start to end of `actions` | of it from the replay's start | that per value (us) | in librdkafka's threads, from start (s) |")
        print("|---|---:|---:|---:|---:|")
        run = {name: s - cpu0[name] for name, s in cpu.items()}
        for name, s in cpu.items():
            client = f"{cpu_client[name]:.2f}" if name in cpu_client else "—"
            print(f"| {'broker (tansu)' if name == 'tansu' else 'wfe stage ' + name} | {s:.2f} | "
                  f"{run[name]:.2f} | {run[name] / values * 1e6:.2f} | {client} |")
        print(f"| all | {sum(cpu.values()):.2f} | {sum(run.values()):.2f} | "
              f"{sum(run.values()) / values * 1e6:.2f} | {sum(cpu_client.values()):.2f} |")
        if held:
            print("\n| topic | messages | MB (keys + values) |")
            print("|---|---:|---:|")
            for t, (n, b) in held.items():
                print(f"| {t} | {n:,} | {b / 1e6:.1f} |")
            print("\n| topic | raw messages traced to it | from the raw message, p50 / p99 (ms) |")
            print("|---|---:|---:|")
            for t, lat_t in sorted(reached.items(), key=lambda kv: percentile(kv[1], 0.5)):
                print(f"| {t} | {len(lat_t):,} | {percentile(lat_t, 0.5):,.0f} / {percentile(lat_t, 0.99):,.0f} |")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        # The broker's data and the fleet file take ~600 MB a run at --fleet 1000: runs left
        # behind filled a CI disk once. The logs go with them unless --keep.
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
