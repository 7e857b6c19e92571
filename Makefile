# wfe: two commands on a fresh machine.
#   make run   - set up, build, replay the shared SMD and ASD sets through all seven stages
#   make test  - set up and pass every test
SHELL := /bin/bash
CARGO ?= cargo
DATA ?= $(abspath ../shared/data)
export WFE_DATA := $(DATA)

.PHONY: run test build setup

setup:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }
	@test -d "$(DATA)/smd" || { echo "shared data not found at $(DATA): set DATA=..."; exit 1; }

build: setup
	$(CARGO) build --release -p wfe-cli

run: build
	./target/release/wfe run

test: setup
	$(CARGO) test --workspace
