"""consent_client.results: the typed values crossing the client API."""

from __future__ import annotations

import pytest
from consent_client import Request


def test_requests_reject_ambiguous_input() -> None:
    with pytest.raises(ValueError, match="either consent or event"):
        Request(("a",), consent={}, event={"type": "track"})
    with pytest.raises(TypeError, match="single str"):
        Request("amplitude")  # type: ignore[arg-type]
    assert Request(["a", "b"]).destinations == ("a", "b")  # type: ignore[arg-type]

