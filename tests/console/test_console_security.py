"""The console's security over HTTP: headers on every response, no inline script, sessions, cookies, CSRF at sign-in.

Sessions expire by the stack's FakeClock, advanced by hand: nothing here sleeps.
"""

from __future__ import annotations

import io
import json
import re
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from consent_sidecar.console.security import CONTENT_SECURITY_POLICY
from consent_sidecar.observe import logs

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from console.conftest import ConsoleClient, Stack, Tokens

IDLE = 30 * 60


def cookie(response: httpx.Response, name: str) -> SimpleCookie:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            jar = SimpleCookie()
            jar.load(header)
            return jar
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found is not None
    return found.group(1)


# -- headers and pages ------------------------------------------------------------------------------

PAGES = ["/login", "/categories", "/categories/new", "/categories/C0002/edit", "/categories/C0002/disable",
         "/categories/C0002/delete", "/audit", "/status", "/nowhere", "/audit?action=nope"]


async def responses_of_every_kind(stack: Stack) -> list[httpx.Response]:
    """A response of every route and outcome: pages, static files, redirects, refusals, errors, 405, 413."""
    owner = await stack.owner()
    out = [await owner.get(p) for p in PAGES]
    out += [await owner.get("/static/console.css"), await owner.get("/static/console.js")]
    anonymous = stack.client()
    out += [await anonymous.get("/categories"), await anonymous.post("/categories", {"id": "x"})]
    out += [await owner.post("/categories/C0002/disable", {"confirm_name": "no"}, csrf_from="/categories")]
    out += [await owner.post("/categories", {"id": "C0002", "name": "x", "destinations": "y"}, csrf_from="/categories")]
    out += [await owner.post("/categories", {"csrf_token": "wrong"}), await owner.http.put("/categories")]
    out += [await owner.post("/categories", {"destinations": "x" * (2 << 20)}, csrf_from="/categories")]
    out += [await owner.post("/logout", {}, csrf_from="/categories")]
    statuses = {r.status_code for r in out}
    assert {200, 303, 400, 403, 404, 405, 409, 413} <= statuses, statuses
    return out


async def test_every_response_carries_the_security_headers(stack: Stack) -> None:
    for r in await responses_of_every_kind(stack):
        where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, where
        assert r.headers["x-frame-options"] == "DENY", where
        assert r.headers["referrer-policy"] == "no-referrer", where
        assert r.headers["x-content-type-options"] == "nosniff", where
        static = r.request.url.path.startswith("/static/")
        assert r.headers["cache-control"] == ("no-cache" if static else "no-store"), where


def test_the_content_security_policy_allows_no_inline_script_or_style_and_no_framing() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["form-action"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_pages_hold_no_inline_script_style_or_handler(stack: Stack) -> None:
    for r in await responses_of_every_kind(stack):
        if not r.headers.get("content-type", "").startswith("text/html"):
            continue
        html = r.text
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], r.request.url
        assert "<style" not in html and " style=" not in html, r.request.url
        assert re.findall(r"\son[a-z]+=", html) == [], r.request.url
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not src.startswith(("http:", "https:", "//", "javascript:")), src


async def test_every_form_field_has_a_label(stack: Stack) -> None:
    owner = await stack.owner()
    pages = [(await owner.get(p)).text for p in PAGES[1:8]] + [(await stack.client().get("/login")).text]
    for html in pages:
        labels = set(re.findall(r'<label for="([^"]+)"', html))
        for tag in re.findall(r"<(?:input|textarea|select)\b[^>]*>", html):
            if 'type="hidden"' in tag:
                continue
            found = re.search(r'\bid="([^"]+)"', tag)
            assert found is not None and found.group(1) in labels, tag


# -- signing in -------------------------------------------------------------------------------------


async def test_the_login_form_sets_a_strict_httponly_nonce_and_carries_its_csrf_token(stack: Stack) -> None:
    r = await stack.client().get("/login")
    assert r.status_code == 200 and 'name="token"' in r.text and 'type="password"' in r.text
    nonce = cookie(r, "console_login")["console_login"]
    assert nonce["httponly"] and nonce["samesite"].lower() == "strict" and nonce["path"] == "/login"
    assert not nonce["secure"], "plain HTTP: a Secure cookie would never come back"
    assert csrf_of(r.text) and csrf_of(r.text) != nonce.value


@pytest.mark.parametrize("token", ["not-a-token", "owner-secret-token-4d1f9a-", "tab\ttoken", "caf\u00e9", ""])
async def test_a_wrong_token_re_renders_the_form_with_401_and_no_session(stack: Stack, token: str) -> None:
    client = stack.client()
    r = await client.post("/login", {"token": token}, csrf_from="/login")
    assert r.status_code == 401
    assert 'name="token"' in r.text and 'role="alert"' in r.text
    assert not [h for h in r.headers.get_list("set-cookie") if h.startswith("console_session=")]
    if token:
        assert token not in r.text, "the token is never echoed back"
    assert (await client.get("/categories")).status_code == 303


async def test_the_api_says_why_a_token_is_refused(stack: Stack) -> None:
    r = await stack.client().post("/login", {"token": "not-a-token"}, csrf_from="/login")
    assert "The sidecar did not accept this token: invalid bearer token" in r.text


@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
async def test_a_sign_in_without_the_forms_csrf_token_is_403(stack: Stack, tokens: Tokens, csrf: str | None) -> None:
    client = stack.client()
    await client.get("/login")
    form = {"token": tokens.owner} if csrf is None else {"token": tokens.owner, "csrf_token": csrf}
    r = await client.post("/login", form)
    assert r.status_code == 403
    assert (await client.get("/categories")).status_code == 303


async def test_a_sign_in_form_from_another_browser_is_403(stack: Stack, tokens: Tokens) -> None:
    elsewhere = csrf_of((await stack.client().get("/login")).text)
    client = stack.client()
    await client.get("/login")
    r = await client.post("/login", {"token": tokens.owner, "csrf_token": elsewhere})
    assert r.status_code == 403


async def test_a_session_cookie_is_random_httponly_strict_and_not_the_token(stack: Stack, tokens: Tokens) -> None:
    client = stack.client()
    r = await client.post("/login", {"token": tokens.owner}, csrf_from="/login")
    assert (r.status_code, r.headers["location"]) == (303, "/categories")
    session = cookie(r, "console_session")["console_session"]
    assert session["httponly"] and session["samesite"].lower() == "strict" and session["path"] == "/"
    assert not session["secure"] and not session["max-age"], "a session cookie, ended by the server"
    assert len(session.value) >= 40 and tokens.owner not in session.value
    assert cookie(r, "console_login")["console_login"]["max-age"] == "0", "the sign-in nonce is spent"


async def test_signing_in_issues_a_new_session_id(stack: Stack, tokens: Tokens) -> None:
    client = stack.client()
    client.http.cookies.set("console_session", "chosen-by-an-attacker", domain="console.test")
    r = await client.post("/login", {"token": tokens.owner}, csrf_from="/login")
    issued = cookie(r, "console_session")["console_session"].value
    assert issued != "chosen-by-an-attacker"
    planted = stack.client()
    planted.http.cookies.set("console_session", "chosen-by-an-attacker", domain="console.test")
    assert (await planted.get("/categories")).status_code == 303


# -- expiry and sign-out ----------------------------------------------------------------------------


async def test_a_session_ends_after_30_idle_minutes_and_each_request_restarts_the_clock(stack: Stack) -> None:
    owner = await stack.owner()
    for _ in range(3):
        stack.clock.advance(IDLE - 1)
        assert (await owner.get("/categories")).status_code == 200
    stack.clock.advance(IDLE + 1)
    r = await owner.get("/categories")
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    stack.clock.advance(-IDLE)  # even back within the window: the expired session is gone for good
    assert (await owner.get("/categories")).status_code == 303


async def test_a_post_after_expiry_is_refused_and_changes_nothing(stack: Stack) -> None:
    owner = await stack.owner()
    csrf = await owner.csrf()
    before = stack.sidecar.state()
    stack.clock.advance(IDLE + 1)
    r = await owner.post("/categories", {"id": "C0009", "name": "n", "destinations": "x", "csrf_token": csrf})
    assert r.status_code == 403 and "Your session has ended" in r.text
    assert stack.sidecar.state() == before


async def test_session_idle_is_configurable(
    start_stack: Callable[..., AbstractAsyncContextManager[Stack]],
) -> None:
    async with start_stack(session_idle=60.0) as stack:
        owner = await stack.owner()
        stack.clock.advance(59)
        assert (await owner.get("/status")).status_code == 200
        stack.clock.advance(61)
        assert (await owner.get("/status")).status_code == 303


async def test_logout_ends_the_session(stack: Stack) -> None:
    owner = await stack.owner()
    old = owner.http.cookies.get("console_session")
    r = await owner.post("/logout", {}, csrf_from="/categories")
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert cookie(r, "console_session")["console_session"]["max-age"] == "0"
    replay = stack.client()
    replay.http.cookies.set("console_session", str(old), domain="console.test")
    assert (await replay.get("/categories")).status_code == 303, "the old id is dead server-side too"


async def test_logout_without_its_csrf_token_is_403_and_keeps_the_session(stack: Stack) -> None:
    owner = await stack.owner()
    assert (await owner.post("/logout", {})).status_code == 403
    assert (await owner.get("/categories")).status_code == 200


async def test_the_least_recently_used_session_goes_first_beyond_the_bound(
    start_stack: Callable[..., AbstractAsyncContextManager[Stack]],
) -> None:
    async with start_stack(max_sessions=2) as stack:
        first, second = await stack.owner(), await stack.owner()
        stack.clock.advance(1)
        assert (await first.get("/status")).status_code == 200  # first is now the most recent
        third = await stack.owner()
        assert (await first.get("/status")).status_code == 200
        assert (await third.get("/status")).status_code == 200
        assert (await second.get("/status")).status_code == 303


def remove_principal(path: Path, principal: str) -> None:
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if principal not in line]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


async def test_a_revoked_token_ends_the_session_at_its_next_request(stack: Stack, tokens: Tokens) -> None:
    owner = await stack.owner()
    principals = stack.sidecar.principals
    remove_principal(Path(principals.path), "alice")
    assert principals.reload()
    r = await owner.get("/categories")
    assert r.status_code == 401
    assert "Your token is no longer accepted: invalid bearer token" in r.text
    assert (await owner.get("/categories")).status_code == 303


# -- tokens never leak ------------------------------------------------------------------------------


async def test_tokens_never_appear_in_pages_urls_headers_or_logs(stack: Stack, tokens: Tokens) -> None:
    stream = io.StringIO()
    logs.configure("debug", "json", stream=stream)
    try:
        clients: list[ConsoleClient] = [await stack.owner(), await stack.member()]
        owner, member = clients
        for c in clients:
            for path in PAGES:
                await c.get(path)
        await owner.post("/categories", {"id": "C0009", "name": "Nine", "destinations": "x"}, csrf_from="/categories")
        await member.post("/categories", {"id": "C0010", "name": "Ten", "destinations": "x"}, csrf_from="/categories")
        bad = stack.client()
        await bad.post("/login", {"token": "a-wrong-token-123"}, csrf_from="/login")
        clients.append(bad)
    finally:
        logs.configure("info", "console")
    secrets = (tokens.owner, tokens.member, "a-wrong-token-123")
    for c in clients:
        for r in c.pages:
            for secret in secrets:
                assert secret not in r.text, r.request.url
                assert secret not in str(r.url) and secret not in r.headers.get("location", "")
                assert all(secret not in v for v in r.headers.get_list("set-cookie"))
    written = stream.getvalue()
    assert "console request" in written, "requests are logged"
    for line in written.splitlines():
        json.loads(line)
        for secret in secrets:
            assert secret not in line


async def test_signing_in_asks_the_api_what_the_token_may_do_and_records_nothing(stack: Stack) -> None:
    # GetCaller is a read: neither an owner's nor a member's sign-in changes the policy or the trail.
    state = stack.sidecar.state()
    await stack.owner()
    assert stack.sidecar.state() == state, "an owner's sign-in leaves no trace"
    await stack.member()
    assert stack.sidecar.state() == state, "a member's sign-in leaves no trace"


def demote(path: Path, principal: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(ln.replace("role: owner", "role: member") if principal in ln else ln
                              for ln in lines) + "\n", encoding="utf-8")


async def test_an_owner_demoted_meanwhile_is_refused_by_the_api_and_loses_the_write_controls(stack: Stack) -> None:
    owner = await stack.owner()
    csrf = await owner.csrf()
    demote(Path(stack.sidecar.principals.path), "alice")
    assert stack.sidecar.principals.reload()
    before = stack.sidecar.state()[:2]
    r = await owner.post("/categories", {"id": "C0009", "name": "n", "destinations": "x", "csrf_token": csrf})
    assert r.status_code == 403 and "CreateCategory requires role owner; principal &#39;alice&#39; is member" in r.text
    assert stack.sidecar.state()[:2] == before
    page = (await owner.get("/categories")).text
    assert 'href="/categories/new"' not in page and "/disable" not in page
