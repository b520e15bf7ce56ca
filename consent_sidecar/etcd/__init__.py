"""The etcd v3 store of a fleet: connection settings, the typed client, the key layout (docs/fleet.md).

`client` wraps the etcd3aio library (endpoint failover, TLS, user/password, one error type);
`keys` owns where the mapping document, the audit trail and the member records live under a
prefix. The policy source (`consent_sidecar.store.etcd_source`) and the audit trail
(`consent_sidecar.audit.etcd`) are built on these two. Must never decide policy or audit.
"""

from consent_sidecar.etcd.client import (
    DEFAULT_PREFIX,
    Compacted,
    EtcdClient,
    EtcdSettings,
    EtcdUnavailable,
    KeyValue,
    TxnResult,
    WatchBatch,
)
from consent_sidecar.etcd.keys import Keys

__all__ = [
    "DEFAULT_PREFIX",
    "Compacted",
    "EtcdClient",
    "EtcdSettings",
    "EtcdUnavailable",
    "KeyValue",
    "Keys",
    "TxnResult",
    "WatchBatch",
]
