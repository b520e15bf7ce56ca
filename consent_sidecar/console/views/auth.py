"""Signing in and out: a bearer token becomes a server-side session, and ends with it.

POST /login checks the form's CSRF pair, then asks the AdminService whether the token is
valid (GetPolicyStatus, a read every principal may make) and what it may do
(`AdminGateway.role`); only then is a session created, under a new id (no fixation). A wrong
token re-renders the form with the API's message, 401. Must never echo the token back into
the page, a URL or a log line.
"""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import Response

from consent_sidecar.console.admin import AdminError, valid_token
from consent_sidecar.console.security import LOGIN_COOKIE, SESSION_COOKIE
from consent_sidecar.console.sessions import login_csrf_matches
from consent_sidecar.console.views.common import (
    console_of,
    error_page,
    form_of,
    form_text,
    login_page,
    redirect,
    session_of,
)

__all__ = ["login_form", "login_submit", "logout", "root"]


async def root(request: Request) -> Response:
    return redirect("/categories" if session_of(request) is not None else "/login")


async def login_form(request: Request) -> Response:
    if session_of(request) is not None:
        return redirect("/categories")
    return login_page(request)


async def login_submit(request: Request) -> Response:
    console = console_of(request)
    form = await form_of(request)
    if not login_csrf_matches(console.secret, request.cookies.get(LOGIN_COOKIE), form_text(form, "csrf_token")):
        return error_page(
            request, None, 403, "Form expired",
            "This sign-in form was not issued to this browser (missing or wrong CSRF token). Open the sign-in page "
            "again.",
        )
    token = form_text(form, "token").strip()
    if not valid_token(token):
        return login_page(request, error="Enter the bearer token you were given (printable characters, no spaces).",
                          status=401)
    try:
        role = await console.gateway.role(token)  # also the token's check: UNAUTHENTICATED when unknown
    except AdminError as e:
        if e.code == grpc.StatusCode.UNAUTHENTICATED:
            return login_page(request, error=f"The sidecar did not accept this token: {e.message}", status=401)
        return login_page(request, error=e.message, status=e.http_status)
    console.sessions.end(request.cookies.get(SESSION_COOKIE))
    session_id, session = console.sessions.create(token, role)
    session.flash = f"Signed in as {role.value}" + ("" if session.may_write else " (read-only)") + "."
    response = redirect("/categories")
    https = console.config.https
    response.set_cookie(SESSION_COOKIE, session_id, path="/", secure=https, httponly=True, samesite="strict")
    response.delete_cookie(LOGIN_COOKIE, path="/login", secure=https, httponly=True, samesite="strict")
    return response


async def logout(request: Request) -> Response:
    console = console_of(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = console.sessions.get(session_id)
    form = await form_of(request)
    if session is not None and not session.csrf_matches(form_text(form, "csrf_token") or None):
        return error_page(request, session, 403, "Form expired",
                          "This form was not issued to your session; you are still signed in.")
    console.sessions.end(session_id)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=console.config.https, httponly=True, samesite="strict")
    return response
