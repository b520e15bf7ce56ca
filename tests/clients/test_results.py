"""consent_client.results: the typed values crossing the client API."""

from __future__ import annotations

import pytest
from consent.v1 import decision_pb2
from consent_client import Reason, Request
from consent_client.results import reason_from_number


def test_requests_reject_ambiguous_input() -> None:
    with pytest.raises(ValueError, match="either consent or event"):
        Request(("a",), consent={}, event={"type": "track"})
    with pytest.raises(TypeError, match="single str"):
        Request("amplitude")  # type: ignore[arg-type]
    assert Request(["a", "b"]).destinations == ("a", "b")  # type: ignore[arg-type]


def test_reasons_are_the_wire_enum_by_name_and_number() -> None:
    wire = list(decision_pb2.Reason.keys())
    assert [r.value for r in Reason] == wire  # same names, same order
    assert [r.name for r in Reason] == [n.removeprefix("REASON_") for n in wire]
    for reason in Reason:
        assert reason_from_number(decision_pb2.Reason.Value(reason.value)) is reason
    assert reason_from_number(max(decision_pb2.Reason.values()) + 1) is Reason.UNSPECIFIED  # a newer sidecar's


def test_reasons_mirror_the_core() -> None:
    from consent_core.index import Reason as CoreReason

    assert [(r.name, int(r)) for r in CoreReason] == [(r.name, decision_pb2.Reason.Value(r.value)) for r in Reason]
