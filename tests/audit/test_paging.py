"""Paging the SQLite trail: page sizes, filters, opaque tokens bound to their filters, appends while paging."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest
from consent_core import errors

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord

from .support import WAIT, ev

A = AuditAction


@pytest.fixture
def mixed(log: AuditLog) -> list[AuditRecord]:
    """250 events over three categories and three actions."""
    events = []
    for i in range(250):
        action = (A.CATEGORY_UPDATED, A.MAPPING_CREATED, A.POLICY_RELOADED)[i % 3]
        events.append(ev(action, "alice", category_id=("C1", "C2", "C3", "")[i % 4]))
    return log.append(events)


def walk(log: AuditLog, page_size: int, **filters: Any) -> tuple[list[int], list[int]]:
    """Every page's sequences (flattened) and the page lengths."""
    seqs: list[int] = []
    sizes: list[int] = []
    records, token = log.page(page_size=page_size, **filters)
    while True:
        seqs.extend(r.sequence for r in records)
        sizes.append(len(records))
        if not token:
            return seqs, sizes
        records, token = log.page(page_size=page_size, page_token=token, **filters)


def test_page_size_zero_means_100(log: AuditLog, mixed: list[AuditRecord]) -> None:
    records, token = log.page()
    assert [r.sequence for r in records] == list(range(1, 101))
    assert token
    assert records == mixed[:100]


@pytest.mark.parametrize(("page_size", "sizes"), [(1000, [250]), (7, [7] * 35 + [5]), (50, [50] * 5), (1, [1] * 250)])
def test_walking_pages_yields_every_event_once(
    log: AuditLog, mixed: list[AuditRecord], page_size: int, sizes: list[int]
) -> None:
    seqs, got_sizes = walk(log, page_size)
    assert seqs == list(range(1, 251))
    assert got_sizes == sizes  # a full last page already ends with "": no empty page to fetch


def test_page_size_over_1000_names_page_size(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="page_size: must be at most 1000") as info:
        log.page(page_size=1001)
    assert info.value.field == "page_size"
    with pytest.raises(errors.InvalidArgument, match="page_size"):
        log.page(page_size=-1)


def test_filter_by_category(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 9, category_id="C2")
    assert seqs == [r.sequence for r in mixed if r.category_id == "C2"]
    assert len(seqs) == 63


def test_filter_by_action(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 10, action=A.MAPPING_CREATED)
    assert seqs == [r.sequence for r in mixed if r.action is A.MAPPING_CREATED]
    seqs_int, _ = walk(log, 10, action=6)  # the wire sends a plain int
    assert seqs_int == seqs


def test_filters_combine(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 4, category_id="C1", action=A.POLICY_RELOADED, after_sequence=100)
    assert seqs == [
        r.sequence for r in mixed if r.category_id == "C1" and r.action is A.POLICY_RELOADED and r.sequence > 100
    ]
    assert seqs


def test_after_sequence(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 30, after_sequence=200)
    assert seqs == list(range(201, 251))
    assert log.page(after_sequence=250) == ([], "")
    assert log.page(after_sequence=10_000) == ([], "")


def test_no_match_is_an_empty_last_page(log: AuditLog, mixed: list[AuditRecord]) -> None:
    assert log.page(category_id="C404") == ([], "")
    assert log.page(action=A.PERMISSION_DENIED) == ([], "")


def test_unknown_action_filter_names_action(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="action: unknown AuditAction value 99"):
        log.page(action=99)


def test_negative_after_sequence_is_invalid(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="after_sequence"):
        log.page(after_sequence=-1)


def test_page_token_is_opaque_urlsafe_text(log: AuditLog, mixed: list[AuditRecord]) -> None:
    _, token = log.page(page_size=10, category_id="C1")
    assert token and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "filters",
    [{"category_id": "C2"}, {"action": A.CATEGORY_UPDATED}, {"after_sequence": 5}, {"category_id": ""}],
)
def test_a_token_used_with_other_filters_names_page_token(
    log: AuditLog, mixed: list[AuditRecord], filters: dict[str, Any]
) -> None:
    _, token = log.page(page_size=10, category_id="C1")
    if filters == {"category_id": ""}:
        filters = {}
    with pytest.raises(errors.InvalidArgument, match="page_token: was issued for other filters") as info:
        log.page(page_size=10, page_token=token, **filters)
    assert info.value.field == "page_token"


def test_page_size_may_change_between_pages(log: AuditLog, mixed: list[AuditRecord]) -> None:
    first, token = log.page(page_size=10)
    second, _ = log.page(page_size=25, page_token=token)
    assert [r.sequence for r in first + second] == list(range(1, 36))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "abc",
        "====",
        _b64(b"not json"),
        _b64(b"\xff\xfe"),
        _b64(b"[1, 2]"),
        _b64(b'{"v": 2, "last": 3, "f": "x"}'),
        _b64(b'{"v": 1, "last": "3", "f": "x"}'),
        _b64(b'{"v": 1, "last": -3, "f": "x"}'),
        _b64(b'{"v": 1, "last": true, "f": "x"}'),
        _b64(b'{"v": 1, "last": 3}'),
    ],
)
def test_garbage_tokens_name_page_token(log: AuditLog, token: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="page_token") as info:
        log.page(page_token=token)
    assert info.value.field == "page_token"


def test_paging_neither_loses_nor_repeats_events_while_another_thread_appends(log: AuditLog) -> None:
    log.append([ev(category_id="C1") for _ in range(50)])
    total = 50 + 150 * 4
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(150):
                log.append([ev(category_id="C1") for _ in range(4)])
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    try:
        # Page with tokens; when a walk ends ("" token), resume with after_sequence = the last seen.
        deadline = time.monotonic() + WAIT
        while True:
            assert time.monotonic() < deadline, "writer did not finish in time"
            finished = done.is_set()  # read before the walk: if set, the walk sees every event
            after = seen[-1] if seen else 0
            records, token = log.page(page_size=7, category_id="C1", after_sequence=after)
            seen.extend(r.sequence for r in records)
            while token:
                records, token = log.page(page_size=7, page_token=token, category_id="C1", after_sequence=after)
                seen.extend(r.sequence for r in records)
            if finished:
                break
    finally:
        thread.join(WAIT)
    assert not failures
    assert seen == list(range(1, total + 1))
