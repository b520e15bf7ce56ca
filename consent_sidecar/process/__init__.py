"""Running the sidecar: gRPC servers and their listeners, the serve lifecycle, worker processes."""
