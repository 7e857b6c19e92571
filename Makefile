# wfe: two commands on a fresh machine.
#   make run    set up, build, and replay the shared SMD and ASD sets through all seven stages
#   make test   set up and pass every test (what CI runs, through .ci/run)
#   make bench  the embedded throughput table, beside the Python reference run in the same call
#   make fuzz   every parser fuzz target for FUZZ_SECONDS each (make test runs 64 cases of each)
#   make chaos  the six services over tansu, CHAOS_KILLS random kill -9s and a broker kill
#   make cycles the module import cycles of every library crate (fails while there is one)
#   make kafka-up / kafka-down   a Kafka-protocol broker (tansu) on 127.0.0.1:$(KAFKA_PORT)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
DATA ?= $(abspath ../shared/data)
VENV := .venv
PY := $(VENV)/bin/python
# No wheel cache: PyTorch's wheels would otherwise sit on disk twice (the cache and the venv).
# No conflict report: a CPU build's torch lacks the CUDA wheels it names on purpose (below), and
# pip would list them after every later install.
PIP := $(PY) -m pip install -q --disable-pip-version-check --no-cache-dir --no-warn-conflicts
export WFE_DATA := $(DATA)
# Tools the project installs for itself (gitignored).
TOOLS := $(abspath .tools)
TANSU_VERSION := 0.6.0
TANSU := $(TOOLS)/bin/tansu
export WFE_TANSU := $(TANSU)
KAFKA_PORT ?= 9092
KAFKA_DIR := $(abspath target/kafka-broker)
# libtorch for the LSTM models (tch 0.24 needs PyTorch 2.11.0 exactly): PyTorch's wheel from
# pip into the venv, its folder handed to torch-sys (LIBTORCH). Builds made here turn on the
# `torch` feature; a plain `cargo build` builds without the LSTM models.
# A CPU build links libtorch_cpu and libc10, which need two of CUDA's runtime libraries (cudart,
# cupti) and no other: the venv gets the wheel without its dependencies, and those two (torch's
# own pin of them): 1.4 GB with pyarrow, where torch, nvidia and triton took 4.5 GB. GPU=1 asks for a GPU build (the `cuda` feature,
# ../shared/GPU.md): the wheel with every CUDA library it names.
TORCH_VERSION := 2.11.0
CUDA_TOOLKIT := 13.0.2
GPU ?=
TORCH_STAMP := $(VENV)/.torch$(if $(filter 1,$(GPU)),-cuda,-cpu)
# torch-sys reads the wheel's folder (LIBTORCH), named by the shell when a recipe runs: the venv
# may be made by this same make, after make has read the folder (its wildcard would miss it).
TORCH_CARGO = LIBTORCH="$$(echo $(abspath $(VENV))/lib/python3*/site-packages/torch)" $(CARGO)
unexport LIBTORCH_USE_PYTORCH
export PATH := $(abspath $(VENV))/bin:$(PATH)
FEATURES := --features wfe-cli/$(if $(filter 1,$(GPU)),cuda,torch)
# Clippy's lints, denied, on wfe's own crates within the test build itself: clippy-driver
# compiles as rustc does, and cargo hands it only the workspace's crates, so linting costs
# no second build of the dependencies (`cargo clippy` would check all of them again). The
# flags reach clippy-driver through CLIPPY_ARGS, as `cargo clippy -- -D warnings` passes them.
# The fuzz and chaos targets build the same way, so they reuse the test build.
CLIPPY_DRIVER := $(shell rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
LINTED := RUSTC_WORKSPACE_WRAPPER=$(CLIPPY_DRIVER) CLIPPY_ARGS=-Dwarnings
# Debian packages the bundled librdkafka builds with (rdkafka's cmake-build feature).
SYSTEM_PACKAGES := cmake libcurl4-openssl-dev libssl-dev zlib1g-dev

.PHONY: run ui test bench fuzz chaos cycles build setup tools check-clippy test-tools system-packages prometheus browser-capture kubectl kafka-up kafka-down check-data clean

check-data:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup.rs) first"; exit 1; }
	@test -d "$(DATA)/smd" || { echo "shared data not found at $(DATA): run from the checkout beside ../shared, or set DATA=..."; exit 1; }

check-clippy:
	@test -n "$(CLIPPY_DRIVER)" || { echo "clippy-driver not found: rustup component add clippy"; exit 1; }

# Python with pyarrow: the test that other teams can read wfe's Parquet outputs.
$(VENV)/.pyarrow:
	python3 -m venv $(VENV)
	$(PIP) pyarrow
	touch $@

# pandas and scikit-learn: the reference implementation that `make bench` compares with.
$(VENV)/.peer: $(VENV)/.pyarrow
	$(PIP) pandas scikit-learn
	touch $@

# Python with confluent-kafka: the example that reads wfe topics with pyarrow alone.
$(VENV)/.kafka: $(VENV)/.pyarrow
	$(PIP) confluent-kafka
	touch $@

# moto's EC2 server: the actuator's tests run against it (started by the tests on loopback).
$(VENV)/.moto: $(VENV)/.pyarrow
	$(PIP) "moto[server]"
	touch $@

# grpcio and its code generator: the independent KEDA client of the external-scaler test
# (setuptools kept below 82, which grpcio-tools would otherwise raise past what torch wants).
$(VENV)/.grpc: $(VENV)/.pyarrow
	$(PIP) grpcio grpcio-tools "setuptools<82"
	touch $@

# PyYAML: deploy/check.py reads the Kubernetes manifests with it.
$(VENV)/.yaml: $(VENV)/.pyarrow
	$(PIP) pyyaml
	touch $@

# PyTorch for a CPU build: the wheel alone, and the CUDA runtime and CUPTI that libtorch_cpu
# names (nothing imports torch in Python: torch-sys reads the wheel's folder).
$(VENV)/.torch-cpu: $(VENV)/.pyarrow
	$(PIP) "cuda-toolkit[cudart,cupti]==$(CUDA_TOOLKIT)"
	$(PIP) --no-deps torch==$(TORCH_VERSION)
	touch $@

# PyTorch for a GPU build (GPU=1): the wheel with its CUDA wheels, about 4.5 GB.
$(VENV)/.torch-cuda: $(VENV)/.pyarrow
	$(PIP) torch==$(TORCH_VERSION)
	touch $@

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing; \
	fi

# The Kafka-protocol broker the tests start (tansu, built from crates.io: about 20 minutes the
# first time on two cores, then cached in .tools).
$(TANSU):
	$(CARGO) install tansu --version $(TANSU_VERSION) --locked --features dynostore,libsql --root $(TOOLS)

# A real Prometheus for the remote_write test (Debian's package; not started as a service).
prometheus:
	@command -v prometheus >/dev/null || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends prometheus; }

# Debian's Chromium for the web UI test (run headless) and tcpdump for the packet-capture
# tests (`apt-get install` of both: 10.1 s here, index already fetched).
browser-capture:
	@command -v chromium >/dev/null && command -v tcpdump >/dev/null || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends chromium tcpdump; }

# kubectl for the offline check of `wfe recommend --kubernetes` patches (`kubectl patch
# --local`, no cluster): the machine's own if it has one, else Debian's kubernetes-client.
kubectl:
	@command -v kubectl >/dev/null || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends kubernetes-client; }

# The Debian packages and Python tools the tests use (one at a time: apt takes a lock).
test-tools: system-packages prometheus browser-capture kubectl $(VENV)/.kafka $(VENV)/.moto $(VENV)/.yaml $(VENV)/.grpc

tools: test-tools $(TANSU)

setup: check-data system-packages $(VENV)/.pyarrow $(TORCH_STAMP)

build: setup
	$(TORCH_CARGO) build --release -p wfe-cli $(FEATURES)

# The default job reads ../shared/data; with another DATA, the same job with its paths moved.
# RUN_ARGS: more `wfe run` options (`make ui` passes the HTTP side's).
RUN_ARGS ?=
HTTP_ADDR ?= 127.0.0.1:9464

run: build
	./target/release/wfe train --data $(DATA)/smd --data $(DATA)/asd
ifeq ($(DATA),$(abspath ../shared/data))
	./target/release/wfe run $(RUN_ARGS)
else
	./target/release/wfe config | sed 's#"\.\./shared/data#"$(DATA)#' > target/default-job.toml
	./target/release/wfe run --config target/default-job.toml $(RUN_ARGS)
endif

# `make run`, then the web UI, API and /metrics on http://$(HTTP_ADDR)/ until Ctrl-C.
ui:
	$(MAKE) run RUN_ARGS="--http $(HTTP_ADDR) --hold"

# tansu is needed by one test file only (pipeline/cli/tests/kafka.rs), so a fresh clone builds
# it at the lowest priority beside everything else: it takes the cores the test build leaves
# idle and then those the tests leave idle (about half, waiting on processes and sockets),
# and the test files whose names start with k run last, once it is there. Every test runs:
# the libraries and binaries, the test files not starting with k, the doc tests, then `k*`.
TEST_RUN = WFE_PYTHON=$(abspath $(PY)) WFE_MOTO=$(abspath $(VENV))/bin/moto_server $(LINTED) $(TORCH_CARGO) test --workspace $(FEATURES)
test: setup test-tools check-clippy
	@mkdir -p target; if [ -x $(TANSU) ]; then tansu=; else \
		nice -n 19 $(MAKE) --no-print-directory $(TANSU) > target/tansu-install.log 2>&1 & tansu=$$!; fi; \
	$(LINTED) $(TORCH_CARGO) test --workspace $(FEATURES) --no-run; \
	$(TEST_RUN) --lib --bins --test '[!k]*'; \
	$(TEST_RUN) --doc; \
	if [ -n "$$tansu" ] && ! wait $$tansu; then tail -40 target/tansu-install.log; exit 1; fi; \
	$(TEST_RUN) --test 'k*'
	# ./target/debug/wfe is the binary the integration tests just built and ran.
	rm -rf target/pyarrow-check
	./target/debug/wfe run --config pipeline/cli/tests/py/small.toml
	$(PY) pipeline/cli/tests/py/check_outputs.py ./target/debug/wfe target/pyarrow-check
	# The deploy files, offline: manifests parse and agree with the stages, the job config
	# passes `wfe config --check`, the Dockerfiles' build contexts hold what they copy.
	$(PY) deploy/check.py ./target/debug/wfe

bench: build $(VENV)/.peer
	./target/release/wfe bench --repeat 3 --peer $(DATA)/../bench/python_peer.py --python $(PY)

# The fuzz targets (proptest; see pipeline/testkit): CSV long/wide/SMD, Parquet, IPC files,
# streams and the IPC check, pcap captures and headers, remote_write, the Kafka codec, the
# job config. Each runs FUZZ_SECONDS; executions per target are printed at the end.
FUZZ_SECONDS ?= 600
FUZZ_REPORT := $(abspath target/fuzz-report.txt)
fuzz: setup check-clippy
	mkdir -p target && rm -f $(FUZZ_REPORT)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_REPORT=$(FUZZ_REPORT) $(LINTED) $(TORCH_CARGO) test $(FEATURES) \
		-p wfe-ingest -p wfe-http -p wfe-kafka -p wfe-cli fuzz -- --test-threads 1
	@echo "target executions seconds"; cat $(FUZZ_REPORT)

# Chaos over Kafka (pipeline/cli/tests/kafka.rs): the job streams through the six services
# while a random one is killed with SIGKILL every CHAOS_EVERY_MS and restarted, CHAOS_KILLS
# times, with one broker kill; then decisions must equal the embedded run's, no action twice,
# dead letters only the injected ones. `make test` runs 4 kills 7 s apart and no broker kill.
CHAOS_KILLS ?= 60
# A killed stage's replacement starts once the dead member's session is over (6 s in the test
# job, plus 1 s): tansu 0.6 can keep a dead member assigned where real Kafka evicts it. Kills
# come CHAOS_EVERY_MS apart, or that 7 s when it is longer.
CHAOS_EVERY_MS ?= 7000
chaos: setup tools check-clippy
	WFE_CHAOS_KILLS=$(CHAOS_KILLS) WFE_CHAOS_EVERY_MS=$(CHAOS_EVERY_MS) WFE_CHAOS_BROKER=1 \
		WFE_PYTHON=$(abspath $(PY)) WFE_MOTO=$(abspath $(VENV))/bin/moto_server $(LINTED) $(TORCH_CARGO) test $(FEATURES) \
		-p wfe-cli --test kafka chaos -- --nocapture

# Module import cycles (issue 22's "no module import cycles"): cargo-modules' use graph per
# library crate, cycles found by .ci/module-cycles.py. cargo-modules builds rust-analyzer's
# crates (its first install here took about 40 minutes of wall time on two cores, at low
# priority beside other builds and paused for 13 of them; not timed alone; then cached in
# .tools), so this is a target of its own, not part of `make test`. 0.27 is the last release
# for rustc 1.95.
CARGO_MODULES := $(TOOLS)/bin/cargo-modules
$(CARGO_MODULES):
	$(CARGO) install cargo-modules --version 0.27.0 --locked --root $(TOOLS)

LIB_CRATES := wfe-schemas wfe-contract wfe-domain wfe-numeric wfe-runtime wfe-kafka wfe-sql \
	wfe-ec2 wfe-http wfe-neural wfe-ingest wfe-normalise wfe-fingerprint wfe-anomaly \
	wfe-forecast wfe-tier-select wfe-actuate
cycles: setup $(CARGO_MODULES)
	$(PY) .ci/module-cycles.py $(CARGO_MODULES) $(LIB_CRATES)

# A broker for demos and load tests, its data kept in target/kafka-broker across restarts.
kafka-up: $(TANSU)
	@mkdir -p $(KAFKA_DIR)
	@if [ -f $(KAFKA_DIR)/pid ] && kill -0 $$(cat $(KAFKA_DIR)/pid) 2>/dev/null; then \
		echo "tansu already running (pid $$(cat $(KAFKA_DIR)/pid))"; exit 0; fi; \
	cd $(KAFKA_DIR) && nohup $(TANSU) broker \
		--listener-url tcp://127.0.0.1:$(KAFKA_PORT) --advertised-listener-url tcp://127.0.0.1:$(KAFKA_PORT) \
		--storage-engine sqlite://tansu.db > tansu.log 2>&1 & echo $$! > $(KAFKA_DIR)/pid; \
	for i in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$(KAFKA_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	echo "tansu on 127.0.0.1:$(KAFKA_PORT) (pid $$(cat $(KAFKA_DIR)/pid), data in $(KAFKA_DIR))"

kafka-down:
	@if [ -f $(KAFKA_DIR)/pid ]; then kill $$(cat $(KAFKA_DIR)/pid) 2>/dev/null || true; rm -f $(KAFKA_DIR)/pid; echo "tansu stopped"; fi

clean:
	rm -rf target $(VENV) out $(TOOLS)
