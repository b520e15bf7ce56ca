"""Frozen configuration objects passed explicitly to the core and services; never read from globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from consent_core.limits import Limits, MappingLimits
from consent_core.mapping_file.reader import DEFAULT_MAX_MAPPING_BYTES
from consent_core.memo import DEFAULT_MEMO_BYTES

from consent_sidecar.etcd.settings import EtcdSettings

__all__ = ["DEFAULT_AUDIT_REPLAY_RATE", "DEFAULT_DECISION_LOG_BYTES_RATE", "Limits", "MappingLimits", "ServeConfig"]

# Decision-log bytes per second, all processes together: a hundred lines of ~10 KB (200
# destinations each) a second; one request naming 10,000 destinations makes a ~500 KB line.
DEFAULT_DECISION_LOG_BYTES_RATE: Final = 1 << 20
# Audit history events per second replayed to WatchAuditEvents streams catching up, all of them
# together. Measured on 2 shared cores with 200 streams from sequence 0 (bench/README.md, "Audit
# watchers beside decisions"): at 1,000 Decide's p99 stayed within ~1.5x of its figure without
# streams; at 2,000 it reached 2.3-2.6x; unpaced, the streams could take it to ~75x.
DEFAULT_AUDIT_REPLAY_RATE: Final = 1000.0


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
    decision_log_bytes_rate: int | None = DEFAULT_DECISION_LOG_BYTES_RATE  # bytes per second likewise; None = none
    audit_replay_rate: float | None = DEFAULT_AUDIT_REPLAY_RATE  # history events/s to watch streams; None = unpaced
    grace_period: float = 5.0  # seconds SIGTERM waits for in-flight RPCs
    max_connection_idle: float = 300.0  # seconds before an idle gRPC connection is closed
    max_concurrent_streams: int = 100  # concurrent streams (calls) per gRPC connection
    worker_timeout: float = 10.0  # seconds a --workers process may stay silent before it is replaced
    log_format: str = "auto"  # auto (console on a TTY, else JSON) | json | console
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    max_mapping_bytes: int = DEFAULT_MAX_MAPPING_BYTES  # the mapping file's size limit (larger: a mapping error)
    mapping_limits: MappingLimits = field(default_factory=MappingLimits)  # how large a mapping may be
    memo_bytes: int = DEFAULT_MEMO_BYTES  # each policy snapshot's memo budget (estimated bytes); 0 = no memo
    etcd: EtcdSettings | None = None  # the fleet store: the policy comes from etcd, `mappings` is its cache
    member_id: str | None = None  # this sidecar in the fleet's member records; None = hostname-pid
