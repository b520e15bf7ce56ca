"""consent-sidecar: a consent-enforcement decision point served over gRPC."""

__version__ = "0.1.0"
