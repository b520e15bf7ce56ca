"""The policy source and the one write path: snapshots, the file watcher, the writer (docs/architecture.md)."""
