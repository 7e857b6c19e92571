#!/usr/bin/env bash
# Embedded throughput beside the Python reference, measured in one call; the table is kept
# under load-tests/results/<UTC time>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p load-tests/results
out="load-tests/results/$(date -u +%Y%m%dT%H%M%SZ).txt"
make bench | tee "$out"
echo "saved $out"
