# syntax=docker/dockerfile:1
# The consent-sidecar image: build wheels in one stage, install only them into a slim runtime.
#
#   docker build -t consent-sidecar:0.2.0 .
#   docker run --read-only -p 50051:50051 -e CONSENT_SIDECAR_LISTEN=0.0.0.0:50051 consent-sidecar:0.2.0
#
# The decision API listens on 127.0.0.1:50051 by default: pod-local, which is what a sidecar
# needs (the containers of a pod share one network namespace) and all the unauthenticated
# decision port should ever offer. `docker run -p` publishes a port only to a container that
# listens on every interface, hence the -e above: use it on a trusted host only.
#
# No container engine runs on our machines, so `make test` lints this file (hadolint) and
# tests/test_packaging.py repeats its steps outside a container: build the wheels, install them
# into a fresh venv, start the CMD below with the ENV below, and pass the HEALTHCHECK command.

# -- build: the project and every dependency as wheels (no compiler or source reaches runtime) --
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# consent-core's C accelerator is compiled here (the image's Python headers, Debian's gcc); only
# the built wheel reaches runtime. Unpinned: Debian's point releases replace these versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consent_sidecar ./consent_sidecar
COPY core ./core
COPY clients/python ./clients/python
# The repository's three distributions (core, client with the consent.v1 stubs, server), then
# every third-party dependency, resolved with the local wheels first.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ./core ./clients/python . \
 && pip wheel --no-cache-dir --find-links /wheels --wheel-dir /wheels /wheels/consent_sidecar-*.whl

# -- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can verify it, volumes can be owned by it.
# Writable at run time: only the audit database's directory (a volume) and the socket directory
# (plus /tmp with --workers > 1 and metrics: mount a tmpfs there).
RUN groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sidecar \
 && mkdir -p /etc/consent-sidecar /var/lib/consent-sidecar /run/consent \
 && chown 10001:10001 /var/lib/consent-sidecar /run/consent

# Installed from the build stage's wheels only (--no-index): no network, nothing unpinned fetched here.
# The wheels are bind-mounted, not copied, so they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --disable-pip-version-check --find-links /wheels \
      /wheels/consent_sidecar-*.whl

# A default mapping so that `docker run` serves something; mount your own directory over
# /etc/consent-sidecar (read-only; a directory, so that replacing the file hot-reloads).
COPY examples/mappings.yaml /etc/consent-sidecar/mappings.yaml

# Defaults as CONSENT_SIDECAR_* variables rather than flags in CMD: `docker run -e ...` (or a
# pod's env) overrides any of them, and a flag given after the image name still beats its
# variable. CONSENT_SIDECAR_ADDRESS is where `consent-sidecar health` (the HEALTHCHECK) asks:
# change it together with CONSENT_SIDECAR_LISTEN. Enable the admin API with
# CONSENT_SIDECAR_ADMIN_LISTEN=0.0.0.0:50052 plus CONSENT_SIDECAR_PRINCIPALS, metrics with
# CONSENT_SIDECAR_METRICS_LISTEN=0.0.0.0:9464 (both off by default).
ENV CONSENT_SIDECAR_MAPPINGS=/etc/consent-sidecar/mappings.yaml \
    CONSENT_SIDECAR_LISTEN=127.0.0.1:50051 \
    CONSENT_SIDECAR_AUDIT_DB=/var/lib/consent-sidecar/audit.db \
    CONSENT_SIDECAR_LOG_FORMAT=json \
    CONSENT_SIDECAR_ADDRESS=127.0.0.1:50051 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The audit trail (SQLite with its -wal and -shm files): the one path written at run time.
VOLUME ["/var/lib/consent-sidecar"]

USER 10001:10001
# Decision API (gRPC), admin API (gRPC, when enabled), Prometheus metrics (HTTP, when enabled).
EXPOSE 50051 50052 9464
# SIGTERM: health turns NOT_SERVING, in-flight RPCs drain for --grace-period (5 s), exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["consent-sidecar", "health", "--timeout", "3"]
ENTRYPOINT ["consent-sidecar"]
CMD ["serve"]
