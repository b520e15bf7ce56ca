"""What operators see: structured logs, Prometheus metrics, sampled decision logs."""
