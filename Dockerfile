# syntax=docker/dockerfile:1
# One image for every meshgram process; the command chooses which:
#   python -m data_access | auth_svc | user_svc | storage_svc   the gRPC services
#   python -m data_access.migrate                               migrations (a one-shot job)
#   python -m tools.k8s_edge serve                              the Envoy edge (compose)
#   envoy -c /etc/envoy/envoy.yaml                              the Envoy edge (Kubernetes)
#   python -m tools.healthcheck HOST:PORT                       gRPC health check
# Build: docker build -t meshgram:dev .   (docs/deploy.md)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.9

# --- uv, installed from PyPI (the project's own way of installing) ---------------------------
FROM ${PYTHON_IMAGE} AS uv
ARG UV_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# --- generated code: stubs and Envoy's descriptor set (what `make proto` makes) --------------
# The code generator is a dev dependency (and needs the runtime ones, googleapis-common-protos):
# the whole lock goes into this stage only.
FROM uv AS generate
ENV UV_FROZEN=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/gen/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --no-install-project
COPY protos/ protos/
COPY tools/__init__.py tools/gen_protos.py tools/
RUN /gen/.venv/bin/python -m tools.gen_protos \
    && test -f meshgram/__init__.py && test -f envoy/api_descriptor.pb

# --- Swagger UI for the edge's /docs page, from npm (tools/docs_ui.py checks its sha512) ------
FROM ${PYTHON_IMAGE} AS docs-ui
# Debian's npm, as `make docs-ui` uses; only this stage has it. Unpinned: Debian's security
# updates replace exact versions, and nothing of it reaches the final image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY tools/__init__.py tools/docs_ui.py tools/
RUN python -m tools.docs_ui && test -f .build/docs-ui/swagger-ui-bundle.js

# --- runtime dependencies only (no dev group), in the path the final image uses --------------
FROM uv AS deps
ENV UV_FROZEN=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --no-install-project --no-dev

# --- the image ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="meshgram" \
      org.opencontainers.image.description="meshgram services, migrations and Envoy edge" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes can check runAsNonRoot without a name lookup.
RUN groupadd --system --gid 10001 meshgram \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin meshgram
WORKDIR /app
ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESHGRAM_ENV=production
COPY --from=deps /app/.venv /app/.venv
COPY meshkit/ meshkit/
COPY data_access/ data_access/
COPY auth_svc/ auth_svc/
COPY user_svc/ user_svc/
COPY storage_svc/ storage_svc/
COPY tools/ tools/
COPY envoy/ envoy/
COPY docs/openapi.json docs/openapi.json
COPY --from=generate /src/meshgram/ meshgram/
COPY --from=generate /src/envoy/api_descriptor.pb envoy/api_descriptor.pb
COPY --from=docs-ui /src/.build/docs-ui/ .build/docs-ui/
# Compiled once here: the code is read-only at run time (readOnlyRootFilesystem).
RUN python -m compileall -q meshkit data_access auth_svc user_svc storage_svc tools meshgram \
    && mkdir -p /app/var /var/cache/meshgram-edge \
    && chown 10001:10001 /app/var /var/cache/meshgram-edge
USER 10001:10001
# gRPC: data_access 50060, auth 50051, user 50052, storage 50053; metrics: gRPC port + 1000;
# the edge: 8080.
EXPOSE 50051 50052 50053 50060 8080
CMD ["python", "-c", "raise SystemExit('meshgram image: give a command, e.g. python -m auth_svc (see the Dockerfile header)')"]
