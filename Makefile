# meshgram: the front panel. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
STAMP := .venv/.meshgram-synced
PROTOS := $(shell find protos -name '*.proto')
GENERATED := meshgram/__init__.py envoy/api_descriptor.pb

.PHONY: help install run dev test lint fmt proto migrate bench profile docs clean h2load chromium

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

$(GENERATED) &: $(PROTOS) $(STAMP) tools/gen_protos.py
	$(PY) -m tools.gen_protos

install: $(STAMP) $(GENERATED)

run: install ## run everything: embedded Postgres (unless DATABASE_URL), migrations, services, Envoy
	$(PY) -m tools.run

dev: install ## like run, restarting the services when code changes
	$(PY) -m tools.run --reload

CHROMIUM := $(firstword $(wildcard /usr/bin/chromium /usr/lib/chromium/chromium))

chromium:
ifeq ($(CHROMIUM),)
	@echo "installing Chromium (Debian package) for the browser end-to-end test"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
endif

test: install chromium ## run the whole test suite (unit, integration, end-to-end incl. a real browser)
	$(PY) -m pytest

lint: install ## the pre-commit checks on every file (ruff, format, mypy --strict, buf) + lock file in sync
	$(UV) lock --check
	.venv/bin/pre-commit run --all-files --show-diff-on-failure

fmt: install ## apply ruff fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

proto: $(STAMP) ## regenerate stubs, typing stubs and Envoy's descriptor set
	$(PY) -m tools.gen_protos

migrate: install ## apply database migrations (embedded Postgres unless DATABASE_URL)
	$(PY) -m data_access.migrate

H2LOAD := $(shell command -v h2load 2>/dev/null)

h2load:
ifeq ($(H2LOAD),)
	@echo "installing h2load (Debian package nghttp2-client) for the load generator"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client
endif

bench: install h2load ## benchmark the running mesh through Envoy (start it with `make run` first)
	$(PY) -m bench

profile: install h2load ## run the benchmark under py-spy; flame graphs + summary in var/profiles
	$(PY) -m tools.profile

docs: install ## regenerate docs/api.md from the proto comments
	$(PY) -m tools.gen_api_docs

clean: ## remove the venv, generated code and caches (keeps var/ data)
	rm -rf .venv .tools meshgram envoy/api_descriptor.pb .build .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
