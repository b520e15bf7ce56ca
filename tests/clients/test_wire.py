"""consent_client._wire: what a request may be, how it is encoded, and DecideBatch chunks in request order."""

from __future__ import annotations

from consent_client import ConsentClient, Request

from .support import free_port


def test_a_batch_of_only_unencodable_entries_needs_no_sidecar() -> None:
    with ConsentClient(f"127.0.0.1:{free_port()}", failure_policy="raise") as c:
        results = c.decide_many([Request(("amplitude",), {"C0002": "x"})])  # type: ignore[dict-item]
    assert results[0].error is not None
