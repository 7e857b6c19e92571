#!/usr/bin/env python3
"""Checks `wfe contention --json` against the run's metrics.norm, computed here alone: the
host capacity (FILL x the workloads' summed peaks of m00 x CAPACITY, over the hosts) and the
minutes the placement as it was passed it (each time any workload was observed: per host the
sum of each workload's newest value no older than stale_ms; contended for the span to the next
time, at most stale_ms). Every planned move must leave its destination within the bound.

Usage: check_contention.py CONTENTION_JSON METRICS_NORM_PARQUET FILL CAPACITY"""
import bisect
import json
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq

answer = json.loads(open(sys.argv[1]).read())
fill, capacity = float(sys.argv[3]), float(sys.argv[4])
t = pq.read_table(sys.argv[2], columns=["event_time", "workload", "metric", "raw_value"])
t = t.filter(pc.equal(t["metric"].cast("string"), "m00"))
series = {}
for r in t.to_pylist():
    if r["raw_value"] is not None:
        ms = int(r["event_time"].timestamp() * 1000) if hasattr(r["event_time"], "timestamp") else r["event_time"]
        series.setdefault(r["workload"], []).append((ms, r["raw_value"] * capacity))
for s in series.values():
    s.sort()
failed = 0


def check(ok, what):
    global failed
    failed += not ok
    print(("ok " if ok else "FAIL ") + what)


peaks = sum(max(v for _, v in s) for s in series.values())
want_cap = fill * peaks / len(answer["hosts"])
check(abs(answer["capacity"] - want_cap) <= 1e-9 * want_cap, f"capacity {answer['capacity']} == {want_cap}")
check(sorted(answer["placement"]) == sorted(series), f"every workload placed: {answer['placement']}")
stale = answer["stale_ms"]
times = sorted({ms for s in series.values() for ms, _ in s})
keys = {w: [ms for ms, _ in s] for w, s in series.items()}
minutes = 0.0
for k, now in enumerate(times[:-1]):
    load = {}
    for w, s in series.items():
        i = bisect.bisect_right(keys[w], now) - 1
        if i >= 0 and now - s[i][0] <= stale:
            load[answer["placement"][w]] = load.get(answer["placement"][w], 0.0) + s[i][1]
    if any(v > answer["capacity"] for v in load.values()):
        minutes += min(times[k + 1] - now, stale) / 60000.0
got = answer["outcome"]["contended_minutes_static"]
check(abs(got - minutes) < 1e-6, f"contended minutes as placed: {got} == {minutes}")
for at, m in answer["outcome"]["moves"]:
    check(m["to_risk_after"] <= answer["bound"] and m["from"] != m["to"], f"move at {at}: {m['workload']} {m['from']} -> {m['to']}")
print(f"planned: {answer['outcome']['contended_minutes_planned']} minutes, {len(answer['outcome']['moves'])} moves")
sys.exit(1 if failed else 0)
