"""Every console route over HTTP against a real sidecar: status codes, the forms' round trips, CSRF and members.

The console app runs in-process (httpx's ASGI transport); the sidecar is real, on loopback
gRPC, with alice (owner), bob (member) and carol (owner). "Nothing changed" means the mapping
file's bytes, the policy generation and the audit trail's length are what they were.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import pytest

from consent_sidecar.audit import AuditAction
from consent_sidecar.console.app import create_app
from consent_sidecar.console.settings import ConsoleConfig

if TYPE_CHECKING:
    from console.conftest import Stack, Tokens

ROW = re.compile(r'<tr data-category-id="([^"]+)">')


def rows(html: str) -> list[str]:
    return ROW.findall(html)


def field_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no field {name}"
    return found.group(1)


def textarea(html: str, name: str) -> str:
    found = re.search(rf'<textarea id="f-{name}" name="{name}"[^>]*>([^<]*)</textarea>', html)
    assert found is not None, f"no textarea {name}"
    return found.group(1)


# -- reading ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/categories", 200), ("/categories/new", 200), ("/categories/C0002/edit", 200),
        ("/categories/C0002/disable", 200), ("/categories/C0002/delete", 200), ("/audit", 200), ("/status", 200),
        ("/categories/NOPE/edit", 404), ("/categories/NOPE/disable", 404), ("/categories/NOPE/delete", 404),
        ("/nowhere", 404), ("/audit?action=EXPLODED", 400), ("/audit?after=-1", 400),
    ],
)  # fmt: skip
async def test_each_page_answers_an_owner_with_its_status(stack: Stack, path: str, status: int) -> None:
    owner = await stack.owner()
    r = await owner.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/", "/login"])
async def test_signed_in_entry_points_lead_to_the_categories(stack: Stack, path: str) -> None:
    owner = await stack.owner()
    r = await owner.get(path)
    assert (r.status_code, r.headers["location"]) == (303, "/categories")


@pytest.mark.parametrize(
    "path", ["/", "/categories", "/categories/new", "/categories/C0002/edit", "/categories/C0002/disable",
             "/categories/C0002/delete", "/audit", "/status"],
)  # fmt: skip
async def test_signed_out_pages_redirect_to_the_login(stack: Stack, path: str) -> None:
    r = await stack.client().get(path)
    assert (r.status_code, r.headers["location"]) == (303, "/login")


async def test_the_categories_page_has_one_row_per_category_with_its_fields(stack: Stack) -> None:
    html = (await (await stack.owner()).get("/categories")).text
    assert rows(html) == ["C0002", "C0003", "C0004", "C0006"]
    c0003 = html.split('data-category-id="C0003"')[1].split("</tr>")[0]
    assert "Functional Cookies" in c0003 and "<code>C0003</code>" in c0003
    assert "Dry run" in c0003 and "<li>hotjar</li>" in c0003
    c0006 = html.split('data-category-id="C0006"')[1].split("</tr>")[0]
    assert "Enable Legacy Cookies" in c0006 and 'action="/categories/C0006/enable"' in c0006


OWNER_CONTROLS = (
    'href="/categories/new"', 'href="/categories/C0002/edit"', 'href="/categories/C0002/disable"',
    'href="/categories/C0002/delete"', 'action="/categories/C0006/enable"',
)


async def test_owners_see_create_edit_disable_enable_and_delete(stack: Stack) -> None:
    html = (await (await stack.owner()).get("/categories")).text
    for control in OWNER_CONTROLS:
        assert control in html, control


@pytest.mark.parametrize("path", ["/categories", "/audit", "/status"])
async def test_members_see_the_pages_without_any_write_control(stack: Stack, path: str) -> None:
    r = await (await stack.member()).get(path)
    assert r.status_code == 200
    for control in (*OWNER_CONTROLS, "/enable", "/edit", "/disable", "/delete", 'class="switch'):
        assert control not in r.text, control
    assert re.findall(r'<form method="post" action="([^"]+)"', r.text) == ["/logout"]


@pytest.mark.parametrize(
    "path", ["/categories/new", "/categories/C0002/edit", "/categories/C0002/disable", "/categories/C0002/delete"]
)
async def test_members_opening_a_write_form_are_refused(stack: Stack, path: str) -> None:
    r = await (await stack.member()).get(path)
    assert r.status_code == 403
    assert "read-only" in r.text and "csrf_token" in r.text  # only the sign-out form


# -- create -----------------------------------------------------------------------------------------


async def test_create_redirects_with_a_confirmation_and_is_live_and_audited(stack: Stack) -> None:
    owner = await stack.owner()
    form = {"id": "C0005", "name": "Social Media Cookies", "destinations": "facebook\r\n\r\n  tiktok \r\n"}
    r = await owner.post("/categories", form, csrf_from="/categories/new")
    assert (r.status_code, r.headers["location"]) == (303, "/categories")
    page = (await owner.get("/categories")).text
    assert "Created Social Media Cookies (C0005) with 2 destinations." in page
    assert "Created Social Media" not in (await owner.get("/categories")).text, "the confirmation shows once"
    created = stack.sidecar.store.current.index.mapping.category("C0005")
    assert created is not None and created.destinations == ("facebook", "tiktok") and created.enabled
    events = [(e.action, e.actor, e.destination) for e in stack.sidecar.events() if e.category_id == "C0005"]
    assert events == [
        (AuditAction.CATEGORY_CREATED, "alice", ""), (AuditAction.MAPPING_CREATED, "alice", "facebook"),
        (AuditAction.MAPPING_CREATED, "alice", "tiktok"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("form", "status", "field", "message"),
    [
        ({"id": "5C", "name": "Social"}, 400, "id", "must not start with a digit"),
        ({"id": "C" * 35, "name": "Social"}, 400, "id", "must be at most 34 characters (got 35)"),
        ({"id": "C0002", "name": "Social"}, 409, "id", "a category with id &#39;C0002&#39; already exists"),
        ({"id": "C0005", "name": "Performance Cookies"}, 409, "name",
         "category &#39;C0002&#39; already has the name &#39;Performance Cookies&#39;"),
        ({"id": "C0005", "name": ""}, 400, "name", "must not be empty"),
        ({"id": "C0005", "name": "Social", "destinations": ""}, 400, "destinations",
         "must list at least one destination"),
        ({"id": "C0005", "name": "Social", "destinations": "ok\nnot ok"}, 400, "destinations",
         "destinations[1]: must not contain whitespace"),
    ],
)  # fmt: skip
async def test_create_errors_keep_what_was_typed_with_the_api_message_beside_the_field(
    stack: Stack, form: dict[str, str], status: int, field: str, message: str
) -> None:
    owner = await stack.owner()
    before = stack.sidecar.state()
    data = {"destinations": "facebook", **form}
    r = await owner.post("/categories", data, csrf_from="/categories/new")
    assert r.status_code == status
    error = re.search(rf'<p class="field-error" id="f-{field}-error">([^<]*)</p>', r.text)
    assert error is not None and error.group(1) == message, r.text
    assert f'id="f-{field}"' in r.text and 'aria-invalid="true"' in r.text
    assert field_value(r.text, "name") == data["name"].replace("'", "&#39;")
    assert textarea(r.text, "destinations") == data["destinations"]
    assert "The sidecar refused this: category." in r.text  # the API's whole message, too
    assert stack.sidecar.state() == before


# -- edit -------------------------------------------------------------------------------------------


async def test_edit_saves_with_the_etag_the_form_was_rendered_with(stack: Stack) -> None:
    owner = await stack.owner()
    form = (await owner.get("/categories/C0002/edit")).text
    etag = field_value(form, "etag")
    assert etag
    assert (field_value(form, "id"), field_value(form, "name")) == ("C0002", "Performance Cookies")
    assert textarea(form, "destinations") == "amplitude\nmixpanel"
    data = {"id": "C0002", "name": "Performance Cookies", "destinations": "amplitude\nmixpanel\nheap",
            "etag": etag, "csrf_token": field_value(form, "csrf_token")}
    r = await owner.post("/categories/C0002", data)
    assert (r.status_code, r.headers["location"]) == (303, "/categories")
    saved = stack.sidecar.store.current.index.mapping.category("C0002")
    assert saved is not None and saved.destinations == ("amplitude", "mixpanel", "heap")
    assert "Saved Performance Cookies (C0002)." in (await owner.get("/categories")).text


async def test_a_concurrent_change_answers_409_with_the_current_values_and_never_overwrites_them(
    stack: Stack, tokens: Tokens
) -> None:
    owner = await stack.owner()
    form = (await owner.get("/categories/C0002/edit")).text
    stale = field_value(form, "etag")
    carol = await stack.client_for(tokens.other_owner)
    carols = (await carol.get("/categories/C0002/edit")).text
    r = await carol.post("/categories/C0002", {
        "id": "C0002", "name": "Analytics Cookies", "destinations": "amplitude", "etag": field_value(carols, "etag"),
        "csrf_token": field_value(carols, "csrf_token"),
    })  # fmt: skip
    assert r.status_code == 303
    before = stack.sidecar.state()
    r = await owner.post("/categories/C0002", {
        "id": "C0002", "name": "Performance Cookies", "destinations": "amplitude\nmixpanel\nheap", "etag": stale,
        "csrf_token": field_value(form, "csrf_token"),
    })  # fmt: skip
    assert r.status_code == 409
    assert stack.sidecar.state() == before
    current = stack.sidecar.store.current.index.mapping.category("C0002")
    assert current is not None and (current.name, current.destinations) == ("Analytics Cookies", ("amplitude",))
    assert field_value(r.text, "name") == "Analytics Cookies" and textarea(r.text, "destinations") == "amplitude"
    assert field_value(r.text, "etag") not in ("", stale)
    assert "your changes were not saved" in r.text and "amplitude, mixpanel, heap" in r.text


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [({"id": "C0004"}, 409, "id"), ({"name": "Targeting Cookies"}, 409, "name"), ({"name": ""}, 400, "name"),
     ({"id": "9x"}, 400, "id")],
)  # fmt: skip
async def test_edit_errors_keep_what_was_typed(stack: Stack, change: dict[str, str], status: int, field: str) -> None:
    owner = await stack.owner()
    form = (await owner.get("/categories/C0002/edit")).text
    before = stack.sidecar.state()
    data = {"id": "C0002", "name": "Performance Cookies", "destinations": "amplitude", **change,
            "etag": field_value(form, "etag"), "csrf_token": field_value(form, "csrf_token")}
    r = await owner.post("/categories/C0002", data)
    assert r.status_code == status
    assert f'id="f-{field}-error"' in r.text
    assert field_value(r.text, "etag") == data["etag"], "the etag the form was rendered with is kept"
    assert stack.sidecar.state() == before


async def test_editing_a_category_that_is_gone_is_404(stack: Stack) -> None:
    owner = await stack.owner()
    r = await owner.post("/categories/NOPE", {"id": "NOPE", "name": "x", "destinations": "y"}, csrf_from="/categories")
    assert r.status_code == 404 and "no category &#39;NOPE&#39;" in r.text


# -- disable, enable, delete ------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "verb"), [("disable", "Disable"), ("delete", "Delete")])
async def test_the_dialog_asks_for_the_name_and_refuses_a_mismatch_changing_nothing(
    stack: Stack, action: str, verb: str
) -> None:
    owner = await stack.owner()
    dialog = (await owner.get(f"/categories/C0002/{action}")).text
    assert f"{verb} Performance Cookies?" in dialog
    assert 'data-confirm-name="Performance Cookies"' in dialog and 'name="confirm_name"' in dialog
    before = stack.sidecar.state()
    for typed in ("", "performance cookies", "Performance Cookies ", "Performance"):
        r = await owner.post(f"/categories/C0002/{action}", {
            "confirm_name": typed, "etag": field_value(dialog, "etag"), "csrf_token": field_value(dialog, "csrf_token"),
        })  # fmt: skip
        assert r.status_code == 400, typed
        assert "confirm_name must equal its name &#39;Performance Cookies&#39; exactly" in r.text
        assert f"{verb} Performance Cookies?" in r.text, "the dialog stays open"
    assert stack.sidecar.state() == before


async def test_disable_then_enable_round_trip(stack: Stack) -> None:
    owner = await stack.owner()
    dialog = (await owner.get("/categories/C0002/disable")).text
    r = await owner.post("/categories/C0002/disable", {
        "confirm_name": "Performance Cookies", "etag": field_value(dialog, "etag"),
        "csrf_token": field_value(dialog, "csrf_token"),
    })  # fmt: skip
    assert (r.status_code, r.headers["location"]) == (303, "/categories")
    page = (await owner.get("/categories")).text
    assert "Disabled Performance Cookies (C0002)" in page
    assert stack.sidecar.store.current.index.mapping.category("C0002").enabled is False  # type: ignore[union-attr]
    row = page.split('data-category-id="C0002"')[1].split("</tr>")[0]
    r = await owner.post("/categories/C0002/enable", {
        "etag": field_value(row, "etag"), "csrf_token": field_value(row, "csrf_token"),
    })  # fmt: skip
    assert r.status_code == 303
    assert "Enabled Performance Cookies (C0002)." in (await owner.get("/categories")).text
    assert stack.sidecar.store.current.index.mapping.category("C0002").enabled is True  # type: ignore[union-attr]
    actions = [e.action for e in stack.sidecar.events() if e.category_id == "C0002"]
    assert actions == [AuditAction.CATEGORY_DISABLED, AuditAction.CATEGORY_ENABLED]


async def carol_changes(stack: Stack, tokens: Tokens, category_id: str) -> None:
    """Another owner edits the category's destinations (through the console, as she would)."""
    carol = await stack.client_for(tokens.other_owner)
    form = (await carol.get(f"/categories/{category_id}/edit")).text
    r = await carol.post(f"/categories/{category_id}", {
        "id": category_id, "name": field_value(form, "name"), "destinations": "changed-by-carol",
        "etag": field_value(form, "etag"), "csrf_token": field_value(form, "csrf_token"),
    })  # fmt: skip
    assert r.status_code == 303


@pytest.mark.parametrize("action", ["disable", "delete", "enable"])
async def test_a_stale_etag_is_409_and_changes_nothing(stack: Stack, tokens: Tokens, action: str) -> None:
    owner = await stack.owner()
    target = "C0006" if action == "enable" else "C0002"
    if action == "enable":  # the switch's form on the list
        page = (await owner.get("/categories")).text
        rendered = page.split(f'data-category-id="{target}"')[1].split("</tr>")[0]
    else:  # the dialog
        rendered = (await owner.get(f"/categories/{target}/{action}")).text
    name = stack.sidecar.store.current.index.mapping.category(target).name  # type: ignore[union-attr]
    await carol_changes(stack, tokens, target)
    before = stack.sidecar.state()
    r = await owner.post(f"/categories/{target}/{action}", {
        "confirm_name": name, "etag": field_value(rendered, "etag"), "csrf_token": field_value(rendered, "csrf_token"),
    })  # fmt: skip
    assert r.status_code == 409
    assert "stale etag" in r.text
    assert stack.sidecar.state() == before


async def test_delete_removes_the_category_and_its_mappings(stack: Stack) -> None:
    owner = await stack.owner()
    dialog = (await owner.get("/categories/C0004/delete")).text
    r = await owner.post("/categories/C0004/delete", {
        "confirm_name": "Targeting Cookies", "etag": field_value(dialog, "etag"),
        "csrf_token": field_value(dialog, "csrf_token"),
    })  # fmt: skip
    assert r.status_code == 303
    page = (await owner.get("/categories")).text
    assert "Deleted Targeting Cookies (C0004)." in page and "C0004" not in rows(page)
    actions = [(e.action, e.destination) for e in stack.sidecar.events() if e.category_id == "C0004"]
    assert actions == [(AuditAction.CATEGORY_DELETED, ""), (AuditAction.MAPPING_REMOVED, "google-ads"),
                       (AuditAction.MAPPING_REMOVED, "braze")]


async def test_ids_holding_slash_percent_and_hash_round_trip_through_the_pages(stack: Stack) -> None:
    owner = await stack.owner()
    for odd in ("ads/retargeting", "pct%41", "a#b?c"):
        r = await owner.post("/categories", {"id": odd, "name": f"Odd {odd}", "destinations": "x"},
                             csrf_from="/categories/new")
        assert r.status_code == 303, r.text
        listing = (await owner.get("/categories")).text
        quoted = {"ads/retargeting": "ads%2Fretargeting", "pct%41": "pct%2541", "a#b?c": "a%23b%3Fc"}[odd]
        assert f'href="/categories/{quoted}/edit"' in listing
        form = (await owner.get(f"/categories/{quoted}/edit")).text
        assert field_value(form, "id") == odd
        r = await owner.post(f"/categories/{quoted}", {
            "id": odd, "name": f"Renamed {odd}", "destinations": "x", "etag": field_value(form, "etag"),
            "csrf_token": field_value(form, "csrf_token"),
        })  # fmt: skip
        assert r.status_code == 303
        assert stack.sidecar.store.current.index.mapping.category(odd).name == f"Renamed {odd}"  # type: ignore[union-attr]


# -- CSRF and members -------------------------------------------------------------------------------

WRITES: list[tuple[str, dict[str, str]]] = [
    ("/categories", {"id": "C0009", "name": "New", "destinations": "x"}),
    ("/categories/C0002", {"id": "C0002", "name": "Renamed", "destinations": "amplitude"}),
    ("/categories/C0002/disable", {"confirm_name": "Performance Cookies"}),
    ("/categories/C0006/enable", {}),
    ("/categories/C0002/delete", {"confirm_name": "Performance Cookies"}),
]


@pytest.mark.parametrize(("path", "form"), WRITES)
@pytest.mark.parametrize("csrf", ["missing", "wrong", "another session's", "the login form's"])
async def test_a_post_without_its_sessions_csrf_token_is_403_and_changes_nothing(
    stack: Stack, path: str, form: dict[str, str], csrf: str
) -> None:
    owner = await stack.owner()
    before = stack.sidecar.state()
    data = dict(form)
    if csrf == "wrong":
        data["csrf_token"] = "x" * 43
    elif csrf == "another session's":
        data["csrf_token"] = await (await stack.owner()).csrf()
    elif csrf == "the login form's":
        data["csrf_token"] = field_value((await stack.client().get("/login")).text, "csrf_token")
    r = await owner.post(path, data)
    assert r.status_code == 403
    assert "nothing was changed" in r.text
    assert stack.sidecar.state() == before


@pytest.mark.parametrize(("path", "form"), WRITES)
async def test_signed_out_posts_are_403_and_change_nothing(stack: Stack, path: str, form: dict[str, str]) -> None:
    before = stack.sidecar.state()
    r = await stack.client().post(path, {**form, "csrf_token": "whatever"})
    assert r.status_code == 403 and "nothing was changed" in r.text
    assert stack.sidecar.state() == before


@pytest.mark.parametrize(("path", "form"), WRITES)
async def test_a_members_forged_write_is_refused_with_the_apis_message(
    stack: Stack, path: str, form: dict[str, str]
) -> None:
    member = await stack.member()
    mapping, generation, _ = stack.sidecar.state()
    r = await member.post(path, form, csrf_from="/categories")
    assert r.status_code == 403
    assert re.search(r"\w+Category requires role owner; principal &#39;bob&#39; is member", r.text), r.text
    assert stack.sidecar.state()[:2] == (mapping, generation)
    assert stack.sidecar.events()[-1].action == AuditAction.PERMISSION_DENIED  # the sidecar records the attempt


# -- status and failures ----------------------------------------------------------------------------


async def test_status_shows_generation_digest_source_and_the_last_reload_error(stack: Stack) -> None:
    member = await stack.member()
    snap = stack.sidecar.store.current
    page = (await member.get("/status")).text
    assert f'data-field="generation">{snap.generation}<' in page and snap.digest in page
    assert "mappings.yaml" in page and 'data-field="last_error">None<' in page
    assert "Fleet members" not in page  # a file store: GetFleetStatus is FAILED_PRECONDITION, no fleet to show
    stack.sidecar.path.write_text("version: 1\ncategories:\n  - id: 9bad\n", encoding="utf-8")
    await stack.sidecar.writer.reload("file:mappings.yaml")
    page = (await member.get("/status")).text
    assert "Last reload rejected" in page and "categories[0].id: must not start with a digit" in page
    assert f'data-field="generation">{snap.generation}<' in page, "the last good policy still serves"


async def test_an_unreachable_sidecar_is_503_with_a_message(stack: Stack) -> None:
    app = create_app(ConsoleConfig(admin_address="127.0.0.1:1", admin_timeout=5.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as http:
        form = (await http.get("/login")).text
        r = await http.post("/login", data={"token": "anything", "csrf_token": field_value(form, "csrf_token")})
        await app.console.gateway.close()
    assert r.status_code == 503
    assert "the sidecar&#39;s admin API at 127.0.0.1:1 did not answer (UNAVAILABLE" in r.text
    assert "console_session" not in r.headers.get("set-cookie", "")


async def test_an_oversized_form_is_413(stack: Stack) -> None:
    owner = await stack.owner()
    r = await owner.post("/categories", {"id": "C0009", "name": "n", "destinations": "x" * (2 * 1024 * 1024)},
                         csrf_from="/categories")
    assert r.status_code == 413


async def test_an_unknown_method_is_405(stack: Stack) -> None:
    owner = await stack.owner()
    r = await owner.http.put("/categories")
    assert r.status_code == 405
