"""What console tests elsewhere share at run time: the CSRF token of a page, and signing in over HTTP."""

from __future__ import annotations

import re

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no csrf_token field"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """POST /login with `token` and the login form's CSRF pair, as a browser does; asserts the redirect."""
    form = await http.get("/login")
    r = await http.post("/login", data={"token": token, "csrf_token": csrf_of(form.text)})
    assert r.status_code == 303, r.text
    return r
