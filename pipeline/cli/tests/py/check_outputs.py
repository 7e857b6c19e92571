#!/usr/bin/env python3
"""Checks that wfe's Parquet outputs open in pyarrow with the documented schemas.

Usage: check_outputs.py WFE_BINARY OUT_DIR
Compares each out/<topic>.parquet with `wfe schemas --json`: the topic name and version in
the schema metadata, the column names in order, and their Arrow types."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

wfe, out = sys.argv[1], Path(sys.argv[2])
documented = json.loads(subprocess.check_output([wfe, "schemas", "--json"]))
failures, checked = [], 0
for schema in documented:
    topic = schema["metadata"]["wfe.schema.name"]
    path = out / f"{topic}.parquet"
    if not path.exists():
        failures.append(f"{path} is missing")
        continue
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("wfe.schema.name") != topic or meta.get("wfe.schema.version") != schema["metadata"]["wfe.schema.version"]:
        failures.append(f"{topic}: metadata {meta.get('wfe.schema.name')} v{meta.get('wfe.schema.version')}")
    names = [f["name"] for f in schema["fields"]]
    if table.column_names != names:
        failures.append(f"{topic}: columns {table.column_names} != {names}")
    if table.num_rows == 0:
        failures.append(f"{topic}: no rows")
    for f in schema["fields"]:
        t = table.schema.field(f["name"]).type
        dt = f["data_type"]
        want = {"Float64": pa.float64(), "Float32": pa.float32(), "Int64": pa.int64(), "Boolean": pa.bool_(), "Utf8": pa.string()}
        if isinstance(dt, str) and dt in want and t != want[dt]:
            failures.append(f"{topic}.{f['name']}: {t} != {dt}")
        if isinstance(dt, dict) and "Timestamp" in dt and not pa.types.is_timestamp(t):
            failures.append(f"{topic}.{f['name']}: {t} is not a timestamp")
        if isinstance(dt, dict) and "Dictionary" in dt and not (pa.types.is_dictionary(t) or pa.types.is_string(t)):
            failures.append(f"{topic}.{f['name']}: {t} is not a string column")
        if isinstance(dt, dict) and "List" in dt and not pa.types.is_list(t):
            failures.append(f"{topic}.{f['name']}: {t} is not a list")
    checked += 1
    print(f"ok {topic}: {table.num_rows} rows, {len(names)} columns")
for f in failures:
    print("FAIL", f)
print(f"pyarrow: {checked - len(set(x.split(':')[0] for x in failures))} passed, {len(set(x.split(':')[0] for x in failures))} failed")
sys.exit(1 if failures else 0)
