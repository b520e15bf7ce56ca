"""Frozen configuration objects passed explicitly to the core and services; never read from globals."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits of the decision API (API.md §2 defaults); each is configurable."""

    max_destination_id_bytes: int = 256
    max_destinations: int = 10_000  # per request
    max_batch: int = 10_000  # entries per DecideBatch
    max_event_bytes: int = 1 << 20  # segment_event
    max_event_depth: int = 64  # the event object is depth 1
    max_message_bytes: int = 4 << 20  # gRPC receive/send limit


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything `consent-sidecar serve` needs; built by the CLI from flags and CONSENT_SIDECAR_* variables."""

    mappings: str  # path as given on the command line (used verbatim in error messages)
    listen: tuple[str, ...] = ("127.0.0.1:50051",)  # "host:port" or "unix:/path"; DecisionService only
    admin_listen: str | None = None  # AdminService only; None = no admin API
    principals: str | None = None  # required with admin_listen
    admin_tls_cert: str | None = None  # PEM certificate chain: serve --admin-listen over TLS
    admin_tls_key: str | None = None  # PEM private key of admin_tls_cert
    admin_client_ca: str | None = None  # PEM CA bundle: require client certificates it signed (mTLS)
    audit_db: str | None = None  # None = next to the mapping file
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint (in the parent with workers)
    workers: int = 1  # decision processes; >1 = workers sharing the TCP --listen ports (SO_REUSEPORT)
    decision_log: str | None = None  # JSON lines of sampled decisions: a file (appended) or "-" (stdout)
    decision_log_sample: float = 1.0  # fraction of decisions considered for the decision log
    decision_log_rate: float | None = 100.0  # lines per second, all processes together; None = no limit
    grace_period: float = 5.0  # seconds SIGTERM waits for in-flight RPCs
    log_format: str = "auto"  # auto (console on a TTY, else JSON) | json | console
    log_level: str = "info"
    limits: Limits = Limits()
