"""The etcd v3 store of a fleet: connection settings, the typed client, the key layout (docs/fleet.md).

`settings` is how to reach it (pure, no gRPC: the CLI and the config import it alone);
`client` wraps the etcd3aio library (endpoint failover, TLS, user/password, one error type);
`keys` owns where the mapping document, the audit trail and the member records live under a
prefix. The policy source (`consent_sidecar.store.etcd_source`) and the audit trail
(`consent_sidecar.audit.etcd`) are built on these. Must never decide policy or audit.
Import the submodules: this package imports nothing, so loading the settings loads no gRPC.
"""
