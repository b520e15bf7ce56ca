"""Hostile input on the unauthenticated decision port, over real gRPC: nothing hangs, nothing fails a neighbour.

Every call answers within its deadline with a documented code (OK, INVALID_ARGUMENT, or
RESOURCE_EXHAUSTED for an oversized message); in DecideBatch and DecideStream only the hostile
entry carries an `error`, and valid entries before and after it are decided as usual. Error
messages are printable UTF-8 whatever the request held, and no log line (at debug level)
carries a consent key, a requested destination id or event content.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
import structlog
from consent.v1 import admin_pb2, decision_pb2, decision_pb2_grpc
from consent_core import errors
from consent_core.limits import MappingLimits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import SAMPLE_MAPPING

from consent_sidecar.observe import logs
from consent_sidecar.services import decision, status

from .admin_support import OWNER, admin_sidecar

if TYPE_CHECKING:
    from conftest import RunningSidecar, StartSidecar

Req = decision_pb2.DecideRequest
Code = grpc.StatusCode
DEADLINE = 5.0
DOCUMENTED = (Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED)

SURROGATE_EVENT = b'{"context":{"consent":{"categoryPreferences":{"\\ud800":1}}}}'
# A valid request and what it gets: it goes before and after every hostile entry.
SENTINEL = Req(
    consent=decision_pb2.Consent(category_preferences={"C0002": True}), destinations=["amplitude", "google-ads"]
)
SENTINEL_ANSWER = (["amplitude"], ["google-ads"])


def stub(channel: grpc.aio.Channel) -> decision_pb2_grpc.DecisionServiceStub:
    return decision_pb2_grpc.DecisionServiceStub(channel)


def answer(r: decision_pb2.DecideResponse) -> tuple[list[str], list[str]]:
    return list(r.allowed), list(r.blocked)


async def decide(channel: grpc.aio.Channel, request: Req) -> tuple[Code, str, decision_pb2.DecideResponse | None]:
    try:
        r = await stub(channel).Decide(request, timeout=DEADLINE)
        return Code.OK, "", r
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or "", None


async def batch(channel: grpc.aio.Channel, requests: list[Req]) -> list[decision_pb2.DecideResponse]:
    r = await stub(channel).DecideBatch(decision_pb2.DecideBatchRequest(requests=requests), timeout=DEADLINE)
    return list(r.responses)


async def stream(channel: grpc.aio.Channel, requests: list[Req]) -> list[decision_pb2.DecideResponse]:
    async def each() -> AsyncIterator[Req]:
        for r in requests:
            yield r

    return [r async for r in stub(channel).DecideStream(each(), timeout=DEADLINE)]


async def assert_each_rpc(channel: grpc.aio.Channel, hostile: Req, error: str | None) -> None:
    """Decide answers INVALID_ARGUMENT with `error` (or OK when None); batch and stream decide the sentinels
    around the hostile entry, which alone carries the error (prefixed with its position in a batch)."""
    code, details, _ = await decide(channel, hostile)
    assert (code, details) == ((Code.OK, "") if error is None else (Code.INVALID_ARGUMENT, error))
    for rpc, prefix in ((batch, "requests[1]."), (stream, "")):
        got = await rpc(channel, [SENTINEL, hostile, SENTINEL])
        assert [answer(got[0]), answer(got[2])] == [SENTINEL_ANSWER, SENTINEL_ANSWER]
        assert got[1].error == ("" if error is None else prefix + error)


# -- (1) one event must not hang or fail a whole request -------------------------------------------------


async def test_a_lone_surrogate_in_an_event_is_invalid_argument_naming_its_path_on_every_rpc(
    channel: grpc.aio.Channel,
) -> None:
    await assert_each_rpc(
        channel, Req(segment_event=SURROGATE_EVENT, destinations=["amplitude"]),
        "segment_event.context.consent.categoryPreferences.\\ud800: holds a lone surrogate "
        "(an unpaired \\ud800-\\udfff escape)",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (b'{"type":"\\udbff","event":"x"}', "segment_event.type: holds a lone surrogate"),
        (b'{"event":"\\udc00"}', "segment_event.event: holds a lone surrogate"),
        (b'{"integrations":{"\\ud800":false}}', "segment_event.integrations.\\ud800: holds a lone surrogate"),
        (b'{"integrations":{"braze":"\\ud800"}}', "segment_event.integrations.braze: holds a lone surrogate"),
        (b'{"context":{"consent":{"categoryPreferences":{"C0002":true,"C0002":false}}}}',
         "segment_event.context.consent.categoryPreferences.C0002: duplicate key"),
        (b'{"integrations":{"amplitude":false, "amplitude" : true}}',
         "segment_event.integrations.amplitude: duplicate"),
        (b'{"context":{"consent":{"categoryPreferences":{"C0004\\u200b":true}}}}',
         "segment_event.context.consent.categoryPreferences.C0004\\u200b: category id must not contain an invisible"),
    ],
)  # fmt: skip
async def test_hostile_events_fail_only_their_own_entry(channel: grpc.aio.Channel, event: bytes, error: str) -> None:
    code, details, _ = await decide(channel, Req(segment_event=event, destinations=["amplitude"]))
    assert code == Code.INVALID_ARGUMENT and details.startswith(error)
    for rpc in (batch, stream):
        got = await rpc(channel, [SENTINEL, Req(segment_event=event), SENTINEL])
        assert [answer(got[0]), answer(got[2])] == [SENTINEL_ANSWER, SENTINEL_ANSWER]
        assert error in got[1].error


async def test_three_hundred_hostile_calls_are_all_answered_within_their_deadline(sidecar: RunningSidecar) -> None:
    """On main each of these stayed open until its deadline: the status details could not be encoded."""
    room = asyncio.Semaphore(50)  # within --max-concurrent-streams (100): beyond it grpcio's calls are refused unread

    async def one() -> tuple[Code, str, decision_pb2.DecideResponse | None]:
        async with room:
            return await decide(sidecar.tcp, Req(segment_event=SURROGATE_EVENT))

    got = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(300))), DEADLINE * 2)
    assert {code for code, _, _ in got} == {Code.INVALID_ARGUMENT}
    assert answer(await stub(sidecar.tcp).Decide(SENTINEL, timeout=DEADLINE)) == SENTINEL_ANSWER


# -- (9) look-alikes and control characters in requests --------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "shown", "what"),
    [
        ("google-ads\x00", "google-ads\\x00", "a control character (U+0000"),
        ("google-ads\x1b[31m", "google-ads\\x1b[31m", "a control character (U+001B"),
        ("google-ads\n", "google-ads\\n", "a control character (U+000A"),
        ("google\u200b-ads", "google\\u200b-ads", "an invisible format character (U+200B"),
        ("\u202egoogle-ads", "\\u202egoogle-ads", "an invisible format character (U+202E"),
        ("google-ads\u2028", "google-ads\\u2028", "a line separator (U+2028"),
    ],
)
async def test_destination_ids_with_invisible_characters_are_invalid_argument(
    channel: grpc.aio.Channel, destination: str, shown: str, what: str
) -> None:
    for request in (
        Req(destinations=["amplitude", destination]),
        Req(consent=decision_pb2.Consent(), destinations=["amplitude", destination], explain=True),
        Req(segment_event=b'{"type":"track"}', destinations=["amplitude", destination]),
    ):
        code, details, _ = await decide(channel, request)
        assert code == Code.INVALID_ARGUMENT
        assert details.startswith(f"destinations[1]: destination id must not contain {what}")
        assert shown not in details or details.isprintable()
    await assert_each_rpc(
        channel, Req(destinations=[destination]),
        f"destinations[0]: destination id must not contain {what} at position "
        f"{next(i for i, c in enumerate(destination) if not c.isprintable()) + 1})",
    )  # fmt: skip


async def test_a_consent_key_that_can_never_match_a_category_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    """`C0004\\u200b` reads as `C0004`: granting it would silently grant nothing. Named, escaped, refused."""
    hostile = Req(consent=decision_pb2.Consent(category_preferences={"C0004\u200b": True}), destinations=["google-ads"])
    error = ("consent.category_preferences.C0004\\u200b: category id must not contain an invisible format character "
             "(U+200B at position 6)")  # fmt: skip
    for _ in range(2):  # the second time past the consent memo
        await assert_each_rpc(channel, hostile, error)
    printable_but_unknown = Req(consent=decision_pb2.Consent(category_preferences={"c0004": True}), destinations=[])
    assert (await decide(channel, printable_but_unknown))[0] == Code.OK


async def test_admin_writes_refuse_invisible_characters_and_nfc_duplicate_names(tmp_path: Path) -> None:
    async with admin_sidecar(tmp_path) as sc:
        admin = sc.stub
        for field, category in (
            ("category.id", admin_pb2.Category(id="C0004\u200b", name="Ads 2", destinations=["x"])),
            ("category.name", admin_pb2.Category(id="C0009", name="Ads\x1b[2J", destinations=["x"])),
            ("category.destinations[0]", admin_pb2.Category(id="C0009", name="Nine", destinations=["x\x00"])),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await admin.CreateCategory(
                    admin_pb2.CreateCategoryRequest(category=category), metadata=OWNER, timeout=DEADLINE
                )
            assert info.value.code() == Code.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith(f"{field}: must not contain")
        await admin.CreateCategory(admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(
            id="C0010", name="Caf\u00e9", destinations=["x"])), metadata=OWNER, timeout=DEADLINE)  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the same name, decomposed
            await admin.CreateCategory(admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(
                id="C0011", name="Cafe\u0301", destinations=["x"])), metadata=OWNER, timeout=DEADLINE)  # fmt: skip
        assert info.value.code() == Code.ALREADY_EXISTS


# -- (8) a mapping over its size limits ------------------------------------------------------------------


async def test_a_mapping_over_its_limits_is_refused_and_the_last_good_policy_keeps_serving(
    start_sidecar: StartSidecar,
) -> None:
    async with start_sidecar(mapping_limits=MappingLimits(max_categories=3)) as sc:
        before = sc.store.current
        sc.mapping_path.write_text(SAMPLE_MAPPING.replace(
            "categories:\n", "categories:\n  - {id: C0009, name: Nine, destinations: [x]}\n", 1))  # fmt: skip
        result = await sc.store.reload_async()
        assert not result.ok
        assert result.error == (
            f"{sc.mapping_path}:12:5: categories[3]: too many categories: at most 3 (--max-mapping-categories)"
        )
        r = await stub(sc.tcp).Decide(SENTINEL, timeout=DEADLINE)
        assert (answer(r), r.policy.generation, r.policy.digest) == (SENTINEL_ANSWER, 1, before.digest)
        assert sc.store.last_error == result.error


# -- the status layer's last resort -----------------------------------------------------------------------


def test_every_status_message_is_printable_utf8() -> None:
    class Odd(errors.SidecarError):
        pass

    code, message = status.status_of(Odd("C0004\ud800 \x1b[2J done"))
    assert (code, message) == (Code.INTERNAL, "C0004\\ud800 \\x1b[2J done")
    message.encode("utf-8")
    assert status.status_of(errors.InvalidArgument("f", "x", key="\udfff"))[1] == "f.\\udfff: x"


async def test_an_unexpected_exception_ends_the_call_with_internal_never_unanswered(
    sidecar: RunningSidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot encode \ud800 \x1b[2J")  # a message that is itself hostile

    monkeypatch.setattr(decision, "parse_segment_event", explode)
    hostile = Req(segment_event=b'{"type":"track"}', destinations=["amplitude"])
    for call in (lambda: stub(sidecar.tcp).Decide(hostile, timeout=DEADLINE),
                 lambda: batch(sidecar.tcp, [SENTINEL, hostile]),
                 lambda: stream(sidecar.tcp, [SENTINEL, hostile])):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call()
        assert (info.value.code(), info.value.details()) == (Code.INTERNAL, status.INTERNAL_MESSAGE)
    assert answer(await stub(sidecar.tcp).Decide(SENTINEL, timeout=DEADLINE)) == SENTINEL_ANSWER


# -- hypothesis: any JSON at all as a segment_event -------------------------------------------------------

_ESCAPES = ["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\ud83d", "\\u0000", "\\u001b", "\\u200b", "\\u2028", "\\n",
            "\\\"", "\\\\", "\\/", "é", "a", "C0002", ":", "}", "{"]  # fmt: skip
_STRING = st.lists(st.sampled_from(_ESCAPES), max_size=4).map(lambda parts: '"' + "".join(parts) + '"')
_KEY = st.one_of(
    st.sampled_from(['"C0002"', '"C0004"', '"amplitude"', '"All"', '"type"', '"event"', '"context"', '"consent"',
                     '"categoryPreferences"', '"integrations"']),
    _STRING,
)  # fmt: skip
_NUMBER = st.sampled_from(["0", "-1", "1.5", "1e999999", "-1e999999", "9" * 5000, "0." + "0" * 3000 + "1", "NaN"])
_SCALAR = st.one_of(st.sampled_from(["true", "false", "null"]), _NUMBER, _STRING)


def _object(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.lists(st.tuples(_KEY, st.sampled_from([":", " : ", ":\n"]), values), max_size=5)  # keys may repeat
    return pairs.map(lambda kv: "{" + ",".join(f"{k}{sep}{v}" for k, sep, v in kv) + "}")


_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(_object(inner), st.lists(inner, max_size=4).map(
    lambda xs: "[" + ",".join(xs) + "]")), max_leaves=12)  # fmt: skip
_EVENT = st.one_of(
    st.builds(
        lambda t, e, prefs, integ, extra: (
            f'{{"type":{t},"event":{e},"context":{{"consent":{{"categoryPreferences":{prefs}}}}},'
            f'"integrations":{integ},"properties":{extra}}}'
        ),
        st.one_of(st.just('"track"'), _STRING), st.one_of(st.just('"Segment Consent Preference Updated"'), _STRING),
        _object(_SCALAR), _object(_VALUE), _VALUE,
    ),
    _VALUE,
    st.integers(1, 300).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.integers(1, 300).map(lambda d: '{"a":' + "[" * d + "]" * d + "}"),
).map(lambda text: text.encode("utf-8"))
_RAW = st.one_of(_EVENT, st.binary(max_size=64))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_RAW, destinations=st.lists(st.sampled_from(["amplitude", "braze", "google-ads", "aws-s3", "x\x1b"]),
                                       max_size=3))  # fmt: skip
async def test_any_segment_event_is_answered_and_never_costs_a_neighbour(
    sidecar: RunningSidecar, raw: bytes, destinations: list[str]
) -> None:
    hostile = Req(segment_event=raw, destinations=destinations)
    code, details, _ = await decide(sidecar.unix, hostile)
    assert code in DOCUMENTED, details
    details.encode("utf-8")
    for rpc in (batch, stream):
        got = await rpc(sidecar.unix, [SENTINEL, hostile, SENTINEL])
        assert len(got) == 3
        assert [answer(got[0]), answer(got[2])] == [SENTINEL_ANSWER, SENTINEL_ANSWER]
        assert bool(got[1].error) == (code != Code.OK)


# -- (10) logs never carry request content -----------------------------------------------------------------


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    logs.configure("debug", "json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        for handler in [h for h in root.handlers if h.get_name() == "consent-sidecar"]:
            root.removeHandler(handler)
        root.setLevel(level)


async def test_debug_logs_carry_no_consent_key_destination_id_or_event_content(
    debug_log: io.StringIO, sidecar: RunningSidecar
) -> None:
    key, dest, content = "SeCrEtKeY-7f3a", "SeCrEtDeSt-9b2c", "SeCrEtCoNtEnT-1d4e"
    event = {"type": "track", "properties": {"note": content},
             "context": {"consent": {"categoryPreferences": {key: True, "C0002": True}}}}  # fmt: skip
    requests = [
        Req(consent=decision_pb2.Consent(category_preferences={key: True}), destinations=[dest]),
        Req(consent=decision_pb2.Consent(category_preferences={key + "\u200b": True}), destinations=[dest]),
        Req(segment_event=json.dumps(event).encode(), destinations=[dest, "amplitude"]),
        Req(segment_event=json.dumps({**event, "context": {"consent": {"categoryPreferences": {key: 1}}}}).encode()),
        Req(segment_event=f'{{"context":{{"consent":{{"categoryPreferences":{{"{key}":true,"{key}":true}}}}}}}}'
            .encode()),
        Req(segment_event=f'{{"integrations":{{"{dest}\\u001b":false}},"x":"{content}\\ud800"}}'.encode()),
        Req(segment_event=b'{"properties":{"' + content.encode() + b'":"\\ud800"}}'),
        Req(destinations=[dest + "\x1b"]),
        Req(destinations=[dest, "/" + dest]),
    ]  # fmt: skip
    for request in requests:
        await decide(sidecar.tcp, request)
    await batch(sidecar.tcp, requests)
    await stream(sidecar.tcp, requests)
    written = debug_log.getvalue()
    assert '"invalid request"' in written, "invalid requests are logged at debug level"
    for secret in (key, dest, content):
        assert secret not in written
