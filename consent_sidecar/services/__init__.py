"""gRPC servicers: thin shells that translate consent.v1 messages to the core and core errors to status codes.

Must never hold policy state of their own (they read `PolicyStore.current`) nor pick status
codes anywhere but `consent_sidecar.services.status`.
"""
