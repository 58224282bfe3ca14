# Strata's command interface. The two commands a newcomer needs: `make demo` and `make test`.
# Both install and start every server they need (infra/stack.sh), on a fresh machine too.

SHELL := /bin/bash
CARGO ?= cargo
STACK := infra/stack.sh
SERVICES := infra/services.sh
# `make run BALLISTA=1` / `make demo BALLISTA=1`: recomputes on a local Ballista cluster.
ifdef BALLISTA
export STRATA__BATCH__ENGINE := ballista
endif

.PHONY: help setup build up down run stop status demo test e2e fuzz chaos test-unit lint fmt clean-data bench-speed bench-batch bench-serving bench-scale bench-dashboard bench-sql bench-promql bench-ingest bench-alerting

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup: ## install the servers, tools and build dependencies (idempotent)
	$(STACK) install
	$(CARGO) fetch

build: ## build every binary (debug profile)
	$(CARGO) build --workspace --bins

up: ## start ClickHouse, SeaweedFS (S3) and the tansu broker on loopback; create topics
	$(STACK) up

down: stop ## stop the Strata services and every server `make up` started
	$(STACK) down

run: build ## start the Strata services in the background (logs in .strata/logs)
	$(SERVICES) start

stop: ## stop the Strata services and the demo generator
	$(SERVICES) stop

status: ## what is running
	-$(STACK) status
	$(SERVICES) status

demo: up run ## the whole pipeline with live generated load
	$(SERVICES) gen --live --events 0 --rate 2000 --series 500 --metrics 8 --duplicates 0.01 \
		--late 0.01 --malformed 0.005 --format mixed --no-progress
	$(SERVICES) producers
	@infra/demo-info.sh

test: up ## start the stack, then build and run the whole test suite
	$(CARGO) test --workspace --no-run
	$(CARGO) test --workspace

# Every target builds with --workspace, so that one set of artifacts per profile serves them all
# (a `-p` build unifies features differently and rebuilds DataFusion and the rest).
e2e: up ## only the end-to-end tests (the whole pipeline; part of make test)
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --test integration -- e2e:: grafana_panels:: current_clickhouse:: services_script::

fuzz: up ## schemathesis, the PromQL fuzz and the security tests against strata-serving (part of make test)
	$(CARGO) test --workspace --test integration -- schemathesis:: fuzz:: security::

# Release build: the faults are about correctness, but a debug build's unoptimized DataFusion and
# Parquet code keeps the scheduled recomputes busy for minutes on end and starves the broker.
chaos: up ## 2M events through the pipeline while everything fails; counts what was lost (release build)
	$(CARGO) build --release --workspace --bins
	target/release/strata-chaos

test-unit: ## only the tests that need no server
	$(CARGO) test --workspace --lib --bins

BENCH := $(CARGO) bench --workspace

bench-speed: up ## speed layer vs ClickHouse's Kafka engine and the raw consumer (release build)
	$(BENCH) --bench speed

bench-batch: up ## archive vs the raw consumer, recompute of 10M events vs DuckDB (release build)
	@.strata/venv/bin/python -c 'import duckdb' 2>/dev/null || .strata/venv/bin/pip install -q --disable-pip-version-check duckdb==2.0.1
	$(BENCH) --bench batch

bench-serving: up ## merged query_range (24 h, 100 series) vs ClickHouse answering directly (release build)
	$(BENCH) --bench serving

bench-scale: up ## one dashboard query on batch views of ~1M and ~50M minute rows: latency growth, memory, start-up
	$(BENCH) --bench scale

bench-dashboard: up ## the Grafana overview dashboard, 16 viewers refreshing at once (6 h and 7 d)
	$(BENCH) --bench dashboard

bench-promql: up ## dashboard and rule PromQL (6 h, 7 d, offset 1w, a [1d] median, a group_left join) vs a real Prometheus on the same samples (release build)
	$(BENCH) --bench promql

bench-sql: up ## a 1M-row SQL result over HTTP JSON, the PostgreSQL protocol and Arrow Flight SQL (release build)
	$(BENCH) --bench sql

bench-ingest: up ## the same samples by remote write, by OTLP/HTTP and straight to Kafka (release build)
	$(BENCH) --bench ingest

bench-alerting: up ## anomalies through the pipeline to vmalert and Alertmanager: delay vs the floor, false positives (release build)
	$(CARGO) build --release --workspace --bins
	$(BENCH) --bench alerting

lint: ## formatting and clippy, as CI wants them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

clean-data: down ## stop everything and delete local server data (.strata/, keeps installs)
	rm -rf .strata/seaweedfs .strata/clickhouse .strata/lake .strata/logs .strata/run
