# pixelmesh: `make up` starts the whole mesh, `make test` runs every test, `make down` stops.
# Both install what is missing into .cache/: `make up` only what the mesh runs on (uv, the
# Python packages, Kafka jars, MinIO), `make test` also buf, Helm and Zipkin.

SHELL := /bin/bash
CACHE := .cache
UV := $(CACHE)/tools/bin/uv
PY := .venv/bin/python
BUF := $(CACHE)/node/node_modules/.bin/buf

.PHONY: help install install-mesh up down status lint test unit protos protos-check lint-protos clean bench bench-install bench-workers

help:
	@echo "make up | down | status | test | lint | unit | bench | bench-workers | protos | protos-check | lint-protos | clean"

$(UV):
	python3 -m venv $(CACHE)/tools
	$(CACHE)/tools/bin/pip install -q uv==0.13.9

.venv/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages -q
	@touch $@

# What running the mesh needs: the Python packages, Kafka and MinIO.
install-mesh: .venv/.synced
	@bash deploy/local/kafka.sh install
	@bash deploy/local/minio.sh install

# What `make test` needs besides: buf (the protos' lint), Helm (the chart's tests) and
# Zipkin (the tracing UI's test).
install: install-mesh
	@bash deploy/local/buf.sh install
	@bash deploy/local/helm.sh install
	@bash deploy/local/tracing.sh install

# TRACING_UI=1 make up: also start the local tracing UI (Zipkin fed over OTLP/HTTP)
# and point every service's OTLP exporter at it.
# (tracing.sh start installs Zipkin on first use.)
up: install-mesh
	@if [ -n "$(TRACING_UI)" ]; then bash deploy/local/tracing.sh start; fi
	@$(if $(TRACING_UI),OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$${TRACING_OTLP_PORT:-4318} )$(PY) deploy/local/mesh.py up

down:
	@if [ -x $(PY) ]; then $(PY) deploy/local/mesh.py down; fi
	@bash deploy/local/tracing.sh stop >/dev/null

status:
	@$(PY) deploy/local/mesh.py status
	@bash deploy/local/tracing.sh status || true

protos: .venv/.synced
	$(PY) libs/apis/generate.py

protos-check: .venv/.synced
	$(PY) libs/apis/generate.py --check

lint-protos: .venv/.synced
	@bash deploy/local/buf.sh install
	$(BUF) lint

# Unit tests only (no Kafka/MinIO): fast feedback while editing.
unit: .venv/.synced
	$(PY) -m pytest -q libs services

# ruff: the format and the lint rules of pyproject.toml, on libs/ and services/; mypy: the
# packages that [tool.mypy] in pyproject.toml names.
lint: .venv/.synced
	.venv/bin/ruff format --check -q libs services
	.venv/bin/ruff check -q libs services
	.venv/bin/mypy

test: install lint
	$(PY) -m pytest -q

# What the bench needs besides the mesh: wrk (Debian's package) and the LiteLLM proxy
# (pinned, in its own venv under .cache/litellm, never in .venv).
bench-install: install-mesh
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
		{ echo "make bench: could not install wrk (apt-get install -y wrk)" >&2; exit 1; }
	@bash deploy/local/litellm.sh install

# The one benchmark command: a fake OpenAI upstream, the whole mesh with an
# openai worker on it and the LiteLLM proxy on it, driven by wrk with the same load, in
# one run; then the worker benchmark. ~15 minutes; prints its figures, asserts nothing.
bench: bench-install
	$(PY) -m tests.bench.gateway
	$(PY) -m tests.bench.workers

# Provider worker benchmark: one midjourney worker holding 1,000 30 s jobs
# (RSS, CPU, drain) and jobs/s of 1 vs 2 bfl workers. A few minutes; prints its figures.
bench-workers: install-mesh
	$(PY) -m tests.bench.workers

clean: down
	rm -rf .run
