"""Frozen configuration objects passed explicitly to the core and services; never read from globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from consent_core.limits import Limits
from consent_core.mapping_file.reader import DEFAULT_MAX_MAPPING_BYTES

from consent_sidecar.etcd.settings import EtcdSettings

__all__ = ["Limits", "ServeConfig"]


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything `consent-sidecar serve` needs; built by the CLI from flags and CONSENT_SIDECAR_* variables."""

    mappings: str  # path as given on the command line (verbatim in errors); with etcd: the cache, "" = none
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
    limits: Limits = field(default_factory=Limits)
    max_mapping_bytes: int = DEFAULT_MAX_MAPPING_BYTES  # the mapping file's size limit (larger: a mapping error)
    etcd: EtcdSettings | None = None  # the fleet store: the policy comes from etcd, `mappings` is its cache
    member_id: str | None = None  # this sidecar in the fleet's member records; None = hostname-pid
