# meshgram: the front panel. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
STAMP := .venv/.meshgram-synced
PROTOS := $(shell find protos -name '*.proto')
GENERATED := meshgram/__init__.py envoy/api_descriptor.pb

.PHONY: help install run dev test lint fmt proto migrate bench profile docs clean h2load chromium docs-ui fuzz rotate-keys seed admin metrics certs

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

run: install docs-ui ## run everything: embedded Postgres (unless DATABASE_URL), migrations, services, Envoy
	$(PY) -m tools.run

dev: install docs-ui ## like run, restarting the services when code changes
	$(PY) -m tools.run --reload

CHROMIUM := $(firstword $(wildcard /usr/bin/chromium /usr/lib/chromium/chromium))

chromium:
ifeq ($(CHROMIUM),)
	@echo "installing Chromium (Debian package) for the browser end-to-end test"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
endif

test: install chromium docs-ui ## run the whole test suite (unit, integration, end-to-end incl. a real browser)
	$(PY) -m pytest

fuzz: install docs-ui ## fuzz every public RPC through the edge with many examples; counts per RPC at the end
	MESHGRAM_FUZZ_PROFILE=long $(PY) -m pytest tests/e2e/fuzz

lint: install docs-ui ## pre-commit checks (ruff, format, mypy --strict, buf), lock file, Dockerfile/compose/k8s validated offline
	$(UV) lock --check
	.venv/bin/pre-commit run --all-files --show-diff-on-failure
	$(PY) -m tools.validate_deploy

fmt: install ## apply ruff fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

proto: $(STAMP) ## regenerate stubs, typing stubs, Envoy's descriptor set and docs/openapi.json
	$(PY) -m tools.gen_protos
	$(PY) -m tools.gen_openapi

migrate: install ## apply database migrations (embedded Postgres unless DATABASE_URL)
	$(PY) -m data_access.migrate

SEED_USERS ?= 100000

seed: install ## add seeded users with follows to make run's database (SEED_USERS=100000; docs/search.md)
	$(PY) -m tools.seed --users $(SEED_USERS)

admin: install ## make the account with EMAIL an admin in make run's database (REVOKE=1: a user again)
	@test -n "$(EMAIL)" || { echo "usage: make admin EMAIL=someone@example.com [REVOKE=1]"; exit 2; }
	$(PY) -m tools.admin --email "$(EMAIL)" $(if $(REVOKE),--revoke,)

# The same AUTH_* settings as `make run` (.env included, the shell's variables winning).
certs: install ## development CA, the edge's HTTPS certificate and SPIFFE certificates for every service, in var/certs (HOSTS="*.example.test ...": more names for the edge)
	$(PY) -m tools.dev_certs $(foreach host,$(HOSTS),--host '$(host)')

rotate-keys: install ## new access-token signing key (signs after the publish delay); deletes retired ones
	$(PY) -c 'from dotenv import load_dotenv; load_dotenv(".env"); from auth_svc.keys import main; main(["rotate"])'

H2LOAD := $(shell command -v h2load 2>/dev/null)

h2load:
ifeq ($(H2LOAD),)
	@echo "installing h2load (Debian package nghttp2-client) for the load generator"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client
endif

bench: install h2load ## benchmark a mesh of its own through Envoy: cached, uncached, write mix, login
	$(PY) -m bench

metrics: install ## per-RPC req/s, errors and p50/p99 of the running mesh, plus Envoy's totals (ONCE=1: one summary)
	$(PY) -m tools.metrics_summary $(if $(ONCE),--once)

profile: install h2load ## the read benchmarks under py-spy; flame graphs + summary in var/profiles
	$(PY) -m bench --profile var/profiles --only cached uncached

docs: install docs-ui ## regenerate docs/api.md, docs/openapi.json and the k8s edge ConfigMap from the protos and envoy/
	$(PY) -m tools.gen_api_docs
	$(PY) -m tools.gen_openapi
	$(PY) -m tools.k8s_edge configmap

# Swagger UI for the edge's API reference page at /docs, fetched once with npm (version and
# sha512 pinned in tools/docs_ui.py); npm comes from Debian when missing, as Chromium does.
SWAGGER_UI := .build/docs-ui/swagger-ui-bundle.js

$(SWAGGER_UI): tools/docs_ui.py | $(STAMP)
	@command -v npm >/dev/null || { \
	  echo "installing npm (Debian package) to fetch Swagger UI for the page at /docs"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	$(PY) -m tools.docs_ui

docs-ui: $(SWAGGER_UI) ## fetch Swagger UI (npm) for the API reference page the edge serves at /docs

clean: ## remove the venv, generated code and caches (keeps var/ data)
	rm -rf .venv .tools meshgram envoy/api_descriptor.pb .build .mypy_cache .ruff_cache .pytest_cache
	rm -rf clients/python/build clients/python/dist clients/python/src/meshgram clients/python/src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
