"""The Segment Consent Preference Updated builder: shape, identity rules, and how the decider treats it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from consent_client import PREFERENCE_UPDATED_EVENT, EmbeddedDecider, Reason, preference_updated_event

MAPPING = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads]
"""


def test_builds_the_segment_track_event_with_context_consent() -> None:
    ts = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    event = preference_updated_event(
        {"C0002": True, "C0004": False}, user_id="u-1", timestamp=ts, message_id="m-1"
    )
    assert event == {
        "type": "track",
        "event": "Segment Consent Preference Updated",
        "userId": "u-1",
        "messageId": "m-1",
        "timestamp": "2024-05-06T07:08:09.123Z",
        "properties": {},
        "context": {"consent": {"categoryPreferences": {"C0002": True, "C0004": False}}},
    }
    assert PREFERENCE_UPDATED_EVENT == "Segment Consent Preference Updated"
    json.dumps(event)  # plain JSON data


def test_anonymous_id_alone_is_enough_and_both_ids_are_kept() -> None:
    anon = preference_updated_event({"C0002": False}, anonymous_id="a-1")
    assert anon["anonymousId"] == "a-1"
    assert "userId" not in anon
    both = preference_updated_event({}, user_id="u", anonymous_id="a")
    assert (both["userId"], both["anonymousId"]) == ("u", "a")


def test_defaults_are_a_fresh_uuid_and_the_current_utc_time() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    a = preference_updated_event({"C0002": True}, user_id="u")
    b = preference_updated_event({"C0002": True}, user_id="u")
    assert a["messageId"] != b["messageId"]
    uuid.UUID(a["messageId"])
    ts = datetime.strptime(a["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= ts <= datetime.now(UTC) + timedelta(seconds=1)


def test_aware_timestamps_are_converted_to_utc_and_strings_pass_through() -> None:
    cet = timezone(timedelta(hours=1))
    event = preference_updated_event({}, user_id="u", timestamp=datetime(2024, 1, 1, 1, 0, tzinfo=cet))
    assert event["timestamp"] == "2024-01-01T00:00:00.000Z"
    assert preference_updated_event({}, user_id="u", timestamp="2024-01-01T00:00:00Z")["timestamp"] == (
        "2024-01-01T00:00:00Z"
    )


def test_preferences_are_copied_not_shared() -> None:
    prefs = {"C0002": True}
    event = preference_updated_event(prefs, user_id="u")
    prefs["C0002"] = False
    assert event["context"]["consent"]["categoryPreferences"] == {"C0002": True}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),  # no identity
        ({"user_id": ""}, ValueError),
        ({"anonymous_id": ""}, ValueError),
        ({"user_id": "u", "timestamp": datetime(2024, 1, 1)}, ValueError),  # naive
        ({"user_id": "u", "timestamp": ""}, ValueError),
    ],
)
def test_rejects_missing_identity_and_ambiguous_timestamps(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        preference_updated_event({"C0002": True}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefs", [{"C0002": "yes"}, {"C0002": 1}, {"C0002": None}])
def test_rejects_non_boolean_preferences(prefs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="C0002"):
        preference_updated_event(prefs, user_id="u")  # type: ignore[arg-type]


def test_rejects_empty_category_ids() -> None:
    with pytest.raises(ValueError, match="category id"):
        preference_updated_event({"": True}, user_id="u")


def test_the_decider_delivers_it_everywhere_whatever_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(MAPPING)
    decider = EmbeddedDecider(path)
    event = preference_updated_event({"C0002": False, "C0004": False}, anonymous_id="a")
    result = decider.decide_event(event, ["amplitude", "google-ads"], explain=True)
    assert result.allowed == ("amplitude", "google-ads")
    assert [d.reason for d in result.decisions] == [Reason.PREFERENCE_EVENT, Reason.PREFERENCE_EVENT]
    # An ordinary event with the same consent is enforced.
    ordinary = dict(event, event="Order Completed")
    assert decider.decide_event(ordinary, ["amplitude", "google-ads"]).blocked == ("amplitude", "google-ads")
