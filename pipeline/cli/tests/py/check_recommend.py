#!/usr/bin/env python3
"""Checks `wfe recommend --json` against the run's forecasts, computed here from the Parquet
output alone: per resource, the target is the largest value at the quantile level (the level
at or above it) over the newest forecast of each horizon up to MAX_HORIZON_S, plus MARGIN;
the lower bound the largest median; the upper bound the largest top quantile, plus MARGIN.

With RECOMMENDATIONS_PARQUET (the `recommendations` topic the forecast stage wrote at each
issuance), every row of it is computed the same way from its issuance's forecasts, and the
newest row per resource equals what `wfe recommend` said.

Usage: check_recommend.py RECOMMEND_JSON FORECASTS_PARQUET QUANTILE MARGIN MAX_HORIZON_S [RECOMMENDATIONS_PARQUET]"""
import json
import math
import sys

import pyarrow.parquet as pq

rec_path, forecasts, q, margin, max_h = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
answer = json.loads(open(rec_path).read().splitlines()[0])
all_rows = pq.read_table(forecasts).to_pylist()
rows = [r for r in all_rows if r["workload"] == answer["workload"]]


def at(levels, values, level):
    i = next((i for i, l in enumerate(levels) if l >= level - 1e-9), len(levels) - 1)
    return values[i]


def sizes(newest_rows):
    """(target, lower, upper) from one forecast row per horizon; rows without a finite value
    at the quantile, the median or the top are passed over; None when none is left."""
    target = lower = upper = 0.0
    used = 0
    for row in newest_rows:
        lv, vs = row["quantile_levels"], row["quantile_values"]
        finite = [v for v in vs if v is not None and not math.isnan(v)]
        picks = [at(lv, vs, q), at(lv, vs, 0.5), max(finite) if finite else math.nan]
        if not all(v is not None and math.isfinite(v) for v in picks):
            continue
        used += 1
        target = max(target, max(picks[0], 0.0) * (1 + margin))
        lower = max(lower, max(picks[1], 0.0))
        upper = max(upper, max(picks[2], 0.0) * (1 + margin))
    if not used:
        return None
    target = max(target, lower)
    return target, lower, max(upper, target)


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


failed = 0
for rec in answer["recommendations"]:
    mine = [r for r in rows if r["resource"] == rec["resource"] and r["horizon_s"] <= max_h]
    newest_rows = []
    for h in sorted({r["horizon_s"] for r in mine}):
        of_h = [r for r in mine if r["horizon_s"] == h]
        newest = max(r["issued_at"] for r in of_h)
        newest_rows.append([r for r in of_h if r["issued_at"] == newest][-1])
    target, lower, upper = sizes(newest_rows) or (math.nan,) * 3
    for name, want in [("target", target), ("lower_bound", lower), ("upper_bound", upper)]:
        ok = close(rec[name], want)
        failed += not ok
        print(("ok " if ok else "FAIL ") + f"{rec['resource']} {name}: {rec[name]} == {want} (from forecasts.parquet)")
if not answer["recommendations"]:
    print("FAIL no recommendations")
    failed += 1
if len(sys.argv) > 6:
    # Every row of the topic from its own issuance's forecasts (all of the run's workloads).
    by_issue = {}
    for r in all_rows:
        if r["horizon_s"] <= max_h:
            by_issue.setdefault((r["issued_at"], r["workload"], r["resource"]), []).append(r)
    sized = {k: v for k, v in ((k, sizes(rs)) for k, rs in by_issue.items()) if v is not None}
    topic = pq.read_table(sys.argv[6]).to_pylist()
    wrong = 0
    for t in topic:
        want = sized.get((t["issued_at"], t["workload"], t["resource"]))
        got = (t["target"], t["lower_bound"], t["upper_bound"])
        wrong += want is None or not all(close(a, b) for a, b in zip(got, want)) \
            or (t["quantile"], t["margin"]) != (q, margin)
    print(("ok " if topic and not wrong and len(topic) == len(sized) else "FAIL ")
          + f"recommendations.parquet: {len(topic)} rows, {wrong} unlike their issuance's forecasts; {len(sized)} issuances sized here")
    failed += wrong + (not topic) + (len(topic) != len(sized))
    # The newest row per resource is what `wfe recommend` says.
    for rec in answer["recommendations"]:
        mine = [t for t in topic if t["workload"] == answer["workload"] and t["resource"] == rec["resource"]]
        last = max(mine, key=lambda t: t["issued_at"]) if mine else None
        ok = last is not None and all(close(last[k], rec[k]) for k in ("target", "lower_bound", "upper_bound")) \
            and last["horizon_s"] == rec["horizon_s"]
        failed += not ok
        print(("ok " if ok else "FAIL ") + f"{rec['resource']}: the topic's newest row equals wfe recommend's")
sys.exit(1 if failed else 0)
