#!/usr/bin/env bash
# The seven stage services over a real broker (tansu), measured in one run: throughput,
# end-to-end latency p50/p99, and the broker's own produce rate. The table is kept under
# load-tests/results/kafka-<UTC time>.txt. Arguments pass to kafka_pipeline.py (--speed,
# --partitions, --config).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s tools build
mkdir -p load-tests/results
out="load-tests/results/kafka-$(date -u +%Y%m%dT%H%M%SZ).txt"
.venv/bin/python load-tests/kafka_pipeline.py "$@" | tee "$out"
echo "saved $out"
