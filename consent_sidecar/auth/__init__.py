"""Who may call the admin API: principals (token hashes at rest), the per-RPC gate, TLS credentials."""
