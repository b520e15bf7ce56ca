"""The audit page: newest first, 100 per page, older pages, the API's filters, on trails of every length.

Events are appended to the sidecar's real audit log (the one ListAuditEvents reads); the
reader finds the head and pages backwards through the real AdminService.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from consent_sidecar.audit import AuditAction, NewEvent
from consent_sidecar.console.admin import AdminGateway
from consent_sidecar.console.trail import PAGE_SIZE, FilterError, TrailFilters, newest_first

if TYPE_CHECKING:
    from console.conftest import Stack, Tokens

SEQ = re.compile(r'<tr data-sequence="(\d+)">')
OLDER = re.compile(r'<a href="/audit\?([^"]*)">Older events</a>')


def append(stack: Stack, count: int) -> None:
    """`count` events after the start event: every third about C0004 and disabled, the others C0002 and updated."""
    events = [
        NewEvent(actor="alice", action=AuditAction.CATEGORY_DISABLED, category_id="C0004")
        if i % 3 == 0 else NewEvent(actor="carol", action=AuditAction.CATEGORY_UPDATED, category_id="C0002")
        for i in range(count)
    ]  # fmt: skip
    for start in range(0, count, 500):
        stack.sidecar.audit.append(events[start : start + 500])


def sequences(html: str) -> list[int]:
    return [int(s) for s in SEQ.findall(html)]


@pytest.mark.parametrize("extra", [0, 1, 98, 99, 100, 1023, 1024, 1500, 4200])
async def test_the_newest_page_is_the_last_100_events_newest_first(stack: Stack, tokens: Tokens, extra: int) -> None:
    append(stack, extra)
    head = 1 + extra
    gateway = AdminGateway(stack.sidecar.address)
    try:
        page = await newest_first(gateway, tokens.member, TrailFilters())
    finally:
        await gateway.close()
    assert [e.sequence for e in page.events] == list(range(head, max(0, head - PAGE_SIZE), -1))
    assert page.older == (head - PAGE_SIZE + 1 if head > PAGE_SIZE else None)


async def test_older_links_walk_the_whole_trail_once_in_order(stack: Stack) -> None:
    append(stack, 350)
    member = await stack.member()  # the start event and these 350: 351 events in all
    seen: list[int] = []
    path = "/audit"
    pages = 0
    while True:
        r = await member.get(path)
        assert r.status_code == 200
        seen += sequences(r.text)
        pages += 1
        older = OLDER.search(r.text)
        if older is None:
            break
        path = "/audit?" + older.group(1).replace("&amp;", "&")
    assert pages == 4 and seen == list(range(351, 0, -1))


async def test_filters_are_the_apis_category_action_and_after(stack: Stack) -> None:
    append(stack, 600)
    owner = await stack.owner()
    by_category = sequences((await owner.get("/audit?category=C0004")).text)
    disabled = [2 + i for i in range(600) if i % 3 == 0]  # sequences of the C0004 events
    assert by_category == disabled[::-1][:PAGE_SIZE]
    by_action = sequences((await owner.get("/audit?action=CATEGORY_UPDATED")).text)
    assert by_action == [2 + i for i in range(600) if i % 3][::-1][:PAGE_SIZE]
    assert sequences((await owner.get("/audit?action=AUDIT_ACTION_CATEGORY_UPDATED")).text) == by_action
    assert sequences((await owner.get("/audit?action=category_updated")).text) == by_action
    after = sequences((await owner.get("/audit?after=560")).text)
    assert after == list(range(601, 560, -1))
    both = sequences((await owner.get("/audit?category=C0004&action=CATEGORY_DISABLED&after=590")).text)
    assert both == [s for s in disabled if s > 590][::-1]
    assert sequences((await owner.get("/audit?category=C0004&action=CATEGORY_UPDATED")).text) == []
    assert "No events match these filters." in (await owner.get("/audit?category=NOPE")).text


async def test_an_older_page_keeps_the_filters(stack: Stack) -> None:
    append(stack, 900)
    owner = await stack.owner()
    first = (await owner.get("/audit?category=C0002")).text
    older = OLDER.search(first)
    assert older is not None
    query = older.group(1).replace("&amp;", "&")
    assert "category=C0002" in query and "before=" in query
    second = sequences((await owner.get("/audit?" + query)).text)
    assert len(second) == PAGE_SIZE and max(second) < min(sequences(first))


@pytest.mark.parametrize(
    ("query", "message"),
    [("action=EXPLODED", "action: unknown audit action &#39;EXPLODED&#39;"),
     ("after=-3", "after: expected a sequence number"), ("after=ten", "after: expected a sequence number"),
     ("before=1e3", "before: expected a sequence number")],
)  # fmt: skip
async def test_an_unusable_filter_is_400_with_its_message(stack: Stack, query: str, message: str) -> None:
    r = await (await stack.owner()).get(f"/audit?{query}")
    assert r.status_code == 400 and message in r.text


def test_filters_parse_as_the_api_names_them() -> None:
    f = TrailFilters.parse({"category": " C0002 ", "action": "audit_action_mapping_created", "after": "7"})
    assert (f.category, f.action, f.after, f.before) == ("C0002", "MAPPING_CREATED", 7, None)
    assert f.action_value == 6
    assert f.query(before=40) == {"category": "C0002", "action": "MAPPING_CREATED", "after": "7", "before": "40"}
    with pytest.raises(FilterError, match="after"):
        TrailFilters.parse({"after": str(1 << 64)})


async def test_the_audit_table_shows_actor_action_category_destination_and_time(stack: Stack) -> None:
    owner = await stack.owner()
    await owner.post("/categories", {"id": "C0005", "name": "Social", "destinations": "facebook"},
                     csrf_from="/categories")
    html = (await owner.get("/audit?category=C0005")).text
    row = html.split('data-sequence="3"')[1].split("</tr>")[0]  # MAPPING_CREATED facebook
    assert ">alice<" in row and ">MAPPING_CREATED<" in row and "<code>C0005</code>" in row and ">facebook<" in row
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>', row)
