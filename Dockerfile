# syntax=docker/dockerfile:1
# Every pixelmesh service's image, from the repository root (see .dockerignore):
#   docker build --build-arg SERVICE=routing -t pixelmesh/routing:0.1.0 .
# SERVICE is one of edge, pricing, routing, status, storage, worker (every provider
# worker runs the worker image).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the uv workspace package and its locked dependencies, in /opt/venv ----
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<edge|pricing|routing|status|storage|worker>" >&2; exit 1; }
RUN pip install --no-cache-dir --root-user-action=ignore uv==0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
# --no-editable: the workspace packages are installed into the venv, not linked to /src.
RUN uv sync --frozen --no-dev --no-editable --package "pixelmesh-${SERVICE}"

# ---- runtime: the venv on a slim Python, no build tools, a non-root user ----
FROM ${PYTHON_IMAGE}
ARG SERVICE
RUN groupadd --system --gid 10001 pixelmesh \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pixelmesh
COPY --from=builder /opt/venv /opt/venv
# Listen on every interface inside the container (EDGE_HTTP_HOST is read by the edge only).
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GRPC_HOST=0.0.0.0 METRICS_PORT=9100 EDGE_HTTP_HOST=0.0.0.0 \
    PIXELMESH_SERVICE=${SERVICE}
WORKDIR /tmp
USER 10001:10001
# The gRPC port (GRPC_PORT; each service has its own default, see deploy/local/mesh.env),
# the edge's HTTP port 8080, metrics 9100.
EXPOSE 8080 9100
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"$PIXELMESH_SERVICE\" \"$@\"", "--"]
