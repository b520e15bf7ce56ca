"""Benchmarks of the consent sidecar: `python -m bench [index|grpc]` (see bench/README.md); not run by `make test`."""
