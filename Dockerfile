# syntax=docker/dockerfile:1
# Build a wheel, then install it alone into a slim runtime: no compilers or sources at run time.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY gen ./gen
COPY clients/python ./clients/python
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/consent_sidecar-*.whl

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar \
 && mkdir -p /etc/consent-sidecar /var/lib/consent-sidecar \
 && chown sidecar /var/lib/consent-sidecar
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels consent-sidecar && rm -rf /wheels
COPY examples/mappings.yaml /etc/consent-sidecar/mappings.yaml
# Only the audit database is written; the root filesystem can be mounted read-only.
ENV CONSENT_SIDECAR_MAPPINGS=/etc/consent-sidecar/mappings.yaml \
    CONSENT_SIDECAR_LISTEN=0.0.0.0:50051 \
    CONSENT_SIDECAR_AUDIT_DB=/var/lib/consent-sidecar/audit.db \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 50051 50052 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["consent-sidecar"]
CMD ["serve"]
