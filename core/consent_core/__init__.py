"""consent-core: the pure decision core shared by the sidecar and the embedded client (docs/architecture.md)."""

__version__ = "0.2.0"
