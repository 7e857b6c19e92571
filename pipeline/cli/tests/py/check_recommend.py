#!/usr/bin/env python3
"""Checks `wfe recommend --json` against the run's forecasts, computed here from the Parquet
output alone: per resource, the target is the largest value at the quantile level (the level
at or above it) over the newest forecast of each horizon up to MAX_HORIZON_S, plus MARGIN;
the lower bound the largest median; the upper bound the largest top quantile, plus MARGIN.

Usage: check_recommend.py RECOMMEND_JSON FORECASTS_PARQUET QUANTILE MARGIN MAX_HORIZON_S"""
import json
import sys

import pyarrow.parquet as pq

rec_path, forecasts, q, margin, max_h = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
answer = json.loads(open(rec_path).read().splitlines()[0])
rows = [r for r in pq.read_table(forecasts).to_pylist() if r["workload"] == answer["workload"]]


def at(levels, values, level):
    i = next((i for i, l in enumerate(levels) if l >= level - 1e-9), len(levels) - 1)
    return values[i]


failed = 0
for rec in answer["recommendations"]:
    mine = [r for r in rows if r["resource"] == rec["resource"] and r["horizon_s"] <= max_h]
    target = lower = upper = 0.0
    for h in sorted({r["horizon_s"] for r in mine}):
        of_h = [r for r in mine if r["horizon_s"] == h]
        newest = max(r["issued_at"] for r in of_h)
        row = [r for r in of_h if r["issued_at"] == newest][-1]
        lv, vs = row["quantile_levels"], row["quantile_values"]
        target = max(target, max(at(lv, vs, q), 0.0) * (1 + margin))
        lower = max(lower, max(at(lv, vs, 0.5), 0.0))
        upper = max(upper, max(max(vs), 0.0) * (1 + margin))
    target = max(target, lower)
    upper = max(upper, target)
    for name, want in [("target", target), ("lower_bound", lower), ("upper_bound", upper)]:
        ok = abs(rec[name] - want) <= 1e-9 * max(1.0, abs(want))
        failed += not ok
        print(("ok " if ok else "FAIL ") + f"{rec['resource']} {name}: {rec[name]} == {want} (from forecasts.parquet)")
if not answer["recommendations"]:
    print("FAIL no recommendations")
    failed += 1
sys.exit(1 if failed else 0)
