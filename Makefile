# wfe: two commands on a fresh machine.
#   make run    set up, build, and replay the shared SMD and ASD sets through all seven stages
#   make test   set up and pass every test (what CI runs, through .ci/run)
#   make bench  the embedded throughput table, beside the Python reference run in the same call
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
DATA ?= $(abspath ../shared/data)
VENV := .venv
PY := $(VENV)/bin/python
export WFE_DATA := $(DATA)

.PHONY: run test bench build setup check-data clean

check-data:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup.rs) first"; exit 1; }
	@test -d "$(DATA)/smd" || { echo "shared data not found at $(DATA): run from the checkout beside ../shared, or set DATA=..."; exit 1; }

# Python with pyarrow: the test that other teams can read wfe's Parquet outputs.
$(VENV)/.pyarrow:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pyarrow
	touch $@

# pandas and scikit-learn: the reference implementation that `make bench` compares with.
$(VENV)/.peer: $(VENV)/.pyarrow
	$(PY) -m pip install -q --disable-pip-version-check pandas scikit-learn
	touch $@

setup: check-data $(VENV)/.pyarrow

build: check-data
	$(CARGO) build --release -p wfe-cli

# The default job reads ../shared/data; with another DATA, the same job with its paths moved.
run: build
ifeq ($(DATA),$(abspath ../shared/data))
	./target/release/wfe run
else
	./target/release/wfe config | sed 's#"\.\./shared/data#"$(DATA)#' > target/default-job.toml
	./target/release/wfe run --config target/default-job.toml
endif

test: setup
	$(CARGO) test --workspace
	$(CARGO) build -p wfe-cli
	rm -rf target/pyarrow-check
	./target/debug/wfe run --config pipeline/cli/tests/py/small.toml
	$(PY) pipeline/cli/tests/py/check_outputs.py ./target/debug/wfe target/pyarrow-check

bench: build $(VENV)/.peer
	./target/release/wfe bench --repeat 3 --peer $(DATA)/../bench/python_peer.py --python $(PY)

clean:
	rm -rf target $(VENV) out
