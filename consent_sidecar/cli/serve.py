"""`consent-sidecar serve`: the flags of the sidecar process, turned into one ServeConfig and run.

Checks what only the whole command line can tell (an address given twice, or for two
listeners) as usage errors; everything else is the server's (consent_sidecar.process.server).
Must never import the server before the verb runs: every other verb works without gRPC loaded.
"""

from __future__ import annotations

import argparse
import sys

from consent_core.errors import SidecarError
from consent_core.limits import Limits, MappingLimits

from consent_sidecar.cli import values
from consent_sidecar.cli.flags import PROG, Verbs, verb
from consent_sidecar.cli.store import add_etcd_flags, etcd_settings
from consent_sidecar.config import ServeConfig

__all__ = ["add_mapping_limits", "mapping_limits", "register", "run_serve"]


def add_mapping_limits(p: argparse.ArgumentParser) -> None:
    """The mapping-size flags (`serve` and `check`); `mapping_limits` reads them back."""
    lim = MappingLimits()
    group = p.add_argument_group("mapping limits")
    group.add_argument("--max-mapping-categories", type=values.positive_int, default=lim.max_categories,
                       metavar="N", help="maximum categories in the mapping; beyond it the mapping is refused")
    group.add_argument("--max-mapping-destinations", type=values.positive_int, default=lim.max_destinations,
                       metavar="N", help="maximum distinct destination ids in the mapping; beyond it it is refused")


def mapping_limits(ns: argparse.Namespace) -> MappingLimits:
    return MappingLimits(max_categories=ns.max_mapping_categories, max_destinations=ns.max_mapping_destinations)


def register(verbs: Verbs) -> None:
    d = ServeConfig(mappings="")
    lim = Limits()
    p = verb(verbs, "serve", run_serve, "run the sidecar")
    p.add_argument("--mappings", metavar="FILE",
                   help="the mapping file (watched and hot-reloaded); with --etcd-endpoints: the optional last-good "
                        "cache, read at start only while etcd cannot be reached (required without etcd)")  # fmt: skip
    p.add_argument(
        "--listen", action="append", type=values.address, metavar="ADDR", default=list(d.listen),
        help="DecisionService address, host:port or unix:/path; repeat for several",
    )
    p.add_argument("--admin-listen", type=values.address, metavar="ADDR",
                   help="AdminService address (default: no admin API)")
    p.add_argument("--principals", metavar="FILE", help="admin identities (principals file) for --admin-listen")
    p.add_argument("--admin-tls-cert", metavar="FILE",
                   help="PEM certificate chain: serve --admin-listen over TLS (with --admin-tls-key)")
    p.add_argument("--admin-tls-key", metavar="FILE", help="PEM private key of --admin-tls-cert")
    p.add_argument("--admin-client-ca", metavar="FILE",
                   help="PEM CA bundle: --admin-listen requires client certificates it signed (mTLS)")
    p.add_argument("--audit-db", metavar="FILE", help="audit trail SQLite database (default: next to the mapping file)")
    p.add_argument("--max-mapping-bytes", type=values.positive_int, default=d.max_mapping_bytes, metavar="N",
                   help="largest mapping file accepted, in bytes; a larger one is a mapping error")
    p.add_argument("--metrics-listen", type=values.tcp_address, metavar="ADDR",
                   help="Prometheus metrics address, host:port (default: no metrics endpoint)")
    p.add_argument("--workers", type=values.workers, default=d.workers, metavar="N|auto",
                   help="decision processes sharing the TCP --listen ports; auto = one per available CPU")
    p.add_argument("--worker-timeout", type=values.positive_seconds, default=d.worker_timeout, metavar="SECONDS",
                   help="with --workers: a worker silent this long (stopped, wedged) is killed and replaced")
    p.add_argument("--decision-log", metavar="FILE|-",
                   help="write sampled decisions as JSON lines to FILE (appended) or - (stdout); default: none")
    p.add_argument("--decision-log-sample", type=values.fraction, default=d.decision_log_sample, metavar="FRACTION",
                   help="fraction of decisions considered for the decision log, 0-1")
    p.add_argument("--decision-log-rate", type=values.rate, default=d.decision_log_rate, metavar="N[/s|/m|/h]",
                   help="decision-log lines per second at most, all processes together; 0 = unlimited")
    p.add_argument("--decision-log-bytes-rate", type=values.byte_rate, default=d.decision_log_bytes_rate,
                   metavar="BYTES[/s]",
                   help="decision-log bytes per second at most, all processes together (e.g. 1MiB); lines beyond "
                        "it are dropped and counted; 0 = unlimited")
    p.add_argument("--memo-bytes", type=values.byte_size, default=d.memo_bytes, metavar="BYTES",
                   help="memoised decisions per policy snapshot, in estimated bytes (e.g. 32MiB); the server's "
                        "encoded answers take up to 3/4 of it more; 0 = no memo")
    p.add_argument("--audit-replay-rate", type=values.replay_rate, default=d.audit_replay_rate,
                   metavar="N[/s|/m|/h]",
                   help="audit events per second replayed from history to WatchAuditEvents streams catching up, "
                        "all streams together, each in turn; live events are never held; 0 = unlimited")
    p.add_argument("--grace-period", type=values.seconds, default=d.grace_period, metavar="SECONDS",
                   help="how long SIGTERM waits for in-flight RPCs (the process exits 2 s later at most, stuck or not)")
    p.add_argument("--max-connection-idle", type=values.positive_seconds, default=d.max_connection_idle,
                   metavar="SECONDS", help="close a gRPC connection (every listener) after this long without calls")
    p.add_argument("--max-concurrent-streams", type=values.positive_int, default=d.max_concurrent_streams,
                   metavar="N", help="concurrent calls (streams) per gRPC connection, every listener; "
                   "calls opened beyond it are refused unread (UNAVAILABLE)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default=d.log_format,
                   help="auto = console on a terminal, JSON otherwise")
    p.add_argument("--log-level", type=str.lower, choices=("debug", "info", "warning", "error", "critical"),
                   default=d.log_level, help="minimum level logged")
    add_etcd_flags(p, required=False)
    p.add_argument("--member-id", metavar="ID",
                   help="this sidecar's name in the fleet's member records (default: hostname-pid)")
    limits = p.add_argument_group("request limits")
    for flag, default, what in (
        ("--max-destinations", lim.max_destinations, "destinations per request"),
        ("--max-batch", lim.max_batch, "entries per DecideBatch"),
        ("--max-destination-id-bytes", lim.max_destination_id_bytes, "bytes per destination id"),
        ("--max-event-bytes", lim.max_event_bytes, "bytes per segment_event"),
        ("--max-event-depth", lim.max_event_depth, "JSON nesting of a segment_event (the event object is 1)"),
        ("--max-message-bytes", lim.max_message_bytes, "bytes per gRPC message"),
    ):
        limits.add_argument(flag, type=values.positive_int, default=default, metavar="N", help=f"maximum {what}")
    add_mapping_limits(p)


def run_serve(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    listen = tuple(ns.listen)
    for i, addr in enumerate(listen):
        if addr in listen[:i]:
            parser.error(f"argument --listen: {addr} given twice")
    if ns.admin_listen is not None and ns.admin_listen in listen:
        parser.error(f"argument --admin-listen: {ns.admin_listen} is also a --listen address")
    if ns.metrics_listen is not None and ns.metrics_listen in (*listen, ns.admin_listen):
        parser.error(f"argument --metrics-listen: {ns.metrics_listen} is also a gRPC address")
    etcd = etcd_settings(ns)
    if etcd is None and not ns.mappings:
        parser.error("the following arguments are required: --mappings (or CONSENT_SIDECAR_MAPPINGS), "
                     "unless the policy comes from etcd (--etcd-endpoints)")  # fmt: skip
    if etcd is not None and ns.audit_db:
        parser.error("argument --audit-db: not with --etcd-endpoints: the audit trail lives in etcd, one per "
                     "--etcd-prefix (consent-sidecar audit verify --etcd-endpoints ...)")  # fmt: skip
    if etcd is None and ns.member_id:
        parser.error("argument --member-id: only with --etcd-endpoints (a fleet's member records)")
    config = ServeConfig(
        mappings=ns.mappings or "",
        etcd=etcd,
        member_id=ns.member_id,
        listen=listen,
        admin_listen=ns.admin_listen,
        principals=ns.principals,
        admin_tls_cert=ns.admin_tls_cert,
        admin_tls_key=ns.admin_tls_key,
        admin_client_ca=ns.admin_client_ca,
        audit_db=ns.audit_db,
        metrics_listen=ns.metrics_listen,
        workers=ns.workers,
        worker_timeout=ns.worker_timeout,
        decision_log=ns.decision_log,
        decision_log_sample=ns.decision_log_sample,
        decision_log_rate=ns.decision_log_rate,
        decision_log_bytes_rate=ns.decision_log_bytes_rate,
        memo_bytes=ns.memo_bytes,
        mapping_limits=mapping_limits(ns),
        audit_replay_rate=ns.audit_replay_rate or None,  # 0 = unpaced
        grace_period=ns.grace_period,
        max_connection_idle=ns.max_connection_idle,
        max_concurrent_streams=ns.max_concurrent_streams,
        log_format=ns.log_format,
        log_level=ns.log_level,
        max_mapping_bytes=ns.max_mapping_bytes,
        limits=Limits(
            max_destination_id_bytes=ns.max_destination_id_bytes,
            max_destinations=ns.max_destinations,
            max_batch=ns.max_batch,
            max_event_bytes=ns.max_event_bytes,
            max_event_depth=ns.max_event_depth,
            max_message_bytes=ns.max_message_bytes,
        ),
    )
    # Imported here so that every other verb works without the server's dependencies loaded.
    from consent_sidecar.process.server import run

    try:
        return run(config)
    except (OSError, SidecarError) as e:  # StartupErrors are reported by run() itself, with exit 1
        print(f"{PROG} serve: error: {e}", file=sys.stderr)
        return 1
