"""Dry-run (`shadow: true`) categories through the gRPC API: explain fields and would-block metrics, as a table.

A shadow category never blocks and never grants. Explain lists it in `shadow_missing_categories`
when enforcing it alongside the real ones would have blocked the destination; the metric
`consent_sidecar_shadow_would_block_total{category,destination}` counts the decisions where the
destination was *allowed* and the shadow category would have blocked it (what enforcing it would
newly block), with instances counted under their destination.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from serving import decision_server

from consent_sidecar.observe.metrics import Recorder

R = decision_pb2.Reason

MAPPING = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel, either]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads, either]
  - id: C0003
    name: Functional Cookies (dry run)
    shadow: true
    destinations: [amplitude, hotjar, either, google-ads, aws-s3]
  - id: C0007
    name: Disabled dry run
    shadow: true
    enabled: false
    destinations: [mixpanel]
destinations:
  either: {resolution: any}
  aws-s3: {enforce: false}
"""


@dataclass(frozen=True)
class Case:
    name: str
    consent: dict[str, bool] | None  # None = no consent object
    destination: str
    allowed: bool
    reason: int
    shadow_missing: tuple[str, ...] = ()
    would_block: dict[tuple[str, str], int] = field(default_factory=dict)
    integrations: dict[str, object] | None = None


CASES = [
    Case("shadow missing, required granted: would block", {"C0002": True}, "amplitude", True, R.REASON_GRANTED,
         ("C0003",), {("C0003", "amplitude"): 1}),
    Case("shadow granted: nothing to report", {"C0002": True, "C0003": True}, "amplitude", True, R.REASON_GRANTED),
    Case("already blocked: listed, not counted", {}, "amplitude", False, R.REASON_DENIED, ("C0003",)),
    Case("only shadow-mapped: unmapped, would block", {"C0002": True}, "hotjar", True, R.REASON_UNMAPPED,
         ("C0003",), {("C0003", "hotjar"): 1}),
    Case("only shadow-mapped, granted", {"C0003": True}, "hotjar", True, R.REASON_UNMAPPED),
    Case("any: another category grants, shadow would not block", {"C0002": True}, "either", True,
         R.REASON_GRANTED),
    Case("any: nothing granted, listed, not counted", {}, "either", False, R.REASON_DENIED, ("C0003",)),
    Case("any: a shadow category never grants", {"C0003": True}, "either", False, R.REASON_DENIED),
    Case("no consent object: shadow not evaluated", None, "amplitude", True, R.REASON_NO_CONSENT),
    Case("exempt: shadow not evaluated", {}, "aws-s3", True, R.REASON_EXEMPT),
    Case("a disabled shadow category is ignored", {"C0002": True}, "mixpanel", True, R.REASON_GRANTED),
    Case("an instance counts under its destination", {"C0002": True}, "amplitude/eu", True, R.REASON_GRANTED,
         ("C0003",), {("C0003", "amplitude"): 1}),
    Case("blocked by integrations: listed, not counted", {"C0004": True}, "google-ads", False,
         R.REASON_DISABLED_BY_EVENT, ("C0003",), integrations={"google-ads": False}),
    Case("granted by integrations' object value: counted", {"C0004": True}, "google-ads", True, R.REASON_GRANTED,
         ("C0003",), {("C0003", "google-ads"): 1}, integrations={"All": False, "google-ads": {"opt": 1}}),
]


@dataclass
class Served:
    channel: grpc.aio.Channel
    recorder: Recorder

    def would_block(self) -> dict[tuple[str, str], float]:
        self.recorder.flush()
        text = generate_latest(self.recorder.metrics.registry).decode()
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "consent_sidecar_shadow_would_block_total":
                    out[s.labels["category"], s.labels["destination"]] = s.value
        return out


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with decision_server(tmp_path, MAPPING) as server:
        yield Served(server.channel, server.recorder)


def request(case: Case, explain: bool) -> decision_pb2.DecideRequest:
    if case.integrations is not None:
        event: dict[str, object] = {"type": "track", "event": "X", "integrations": case.integrations}
        if case.consent is not None:
            event["context"] = {"consent": {"categoryPreferences": case.consent}}
        return decision_pb2.DecideRequest(
            segment_event=json.dumps(event).encode(), destinations=[case.destination], explain=explain
        )
    r = decision_pb2.DecideRequest(destinations=[case.destination], explain=explain)
    if case.consent is not None:
        r.consent.category_preferences.update(case.consent)
        r.consent.SetInParent()
    return r


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_shadow_semantics(served: Served, case: Case) -> None:
    stub = served.channel.unary_unary(
        "/consent.v1.DecisionService/Decide",
        request_serializer=decision_pb2.DecideRequest.SerializeToString,
        response_deserializer=decision_pb2.DecideResponse.FromString,
    )
    r = await stub(request(case, explain=True), timeout=5)
    [d] = r.decisions
    assert (d.destination, d.allowed, d.reason) == (case.destination, case.allowed, case.reason)
    assert tuple(d.shadow_missing_categories) == case.shadow_missing
    assert (list(r.allowed), list(r.blocked)) == (
        ([case.destination], []) if case.allowed else ([], [case.destination])
    )
    assert served.would_block() == {k: float(v) for k, v in case.would_block.items()}
    # The same decision without explain (another memo entry) counts the same again.
    plain = await stub(request(case, explain=False), timeout=5)
    assert len(plain.decisions) == 0
    assert served.would_block() == {k: 2.0 * v for k, v in case.would_block.items()}


async def test_shadow_never_changes_allowed_or_blocked(served: Served) -> None:
    """Granting or denying a shadow category changes no outcome, only the report."""
    stub = served.channel.unary_unary(
        "/consent.v1.DecisionService/Decide",
        request_serializer=decision_pb2.DecideRequest.SerializeToString,
        response_deserializer=decision_pb2.DecideResponse.FromString,
    )
    dests = ["amplitude", "mixpanel", "either", "google-ads", "hotjar", "aws-s3"]
    for base in ({}, {"C0002": True}, {"C0004": True}, {"C0002": True, "C0004": True}):
        outcomes = set()
        for shadow in (None, True, False):
            prefs = dict(base) if shadow is None else {**base, "C0003": shadow}
            r = await stub(decision_pb2.DecideRequest(
                consent=decision_pb2.Consent(category_preferences=prefs), destinations=dests), timeout=5)
            outcomes.add((tuple(r.allowed), tuple(r.blocked)))
        assert len(outcomes) == 1, base
