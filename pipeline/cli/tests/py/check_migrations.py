#!/usr/bin/env python3
"""Checks the run's `migrations` topic against `wfe contention --configured --json`: the
contention stage, planning as the pipeline ran, and the backtest, replaying the same placement
over the run's stored outputs, must make the same moves at the same issuances (workload,
hosts, reason; risks to 1e-12), and there must be some.

Usage: check_migrations.py CONTENTION_JSON MIGRATIONS_PARQUET"""
import json
import sys

import pyarrow.parquet as pq

answer = json.loads(open(sys.argv[1]).read())
moves = answer["outcome"]["moves"]
rows = pq.read_table(sys.argv[2]).to_pylist()
assert moves, "the backtest planned no move: nothing to compare"
assert len(moves) == len(rows), f"{len(moves)} moves replayed, {len(rows)} on the topic"
for (at, m), r in zip(moves, rows):
    assert int(r["planned_at"].timestamp() * 1000) == at, (at, r)
    for k, c in [("workload", "workload"), ("from", "from_host"), ("to", "to_host"), ("reason", "reason")]:
        assert m[k] == r[c], (k, m, r)
    for k in ["from_risk", "from_risk_after", "to_risk_after"]:
        assert abs(m[k] - r[k]) <= 1e-12 * max(1.0, abs(m[k])), (k, m[k], r[k])
    assert r["to_risk_after"] <= r["bound"], r
print(f"all {len(rows)} moves the same")
