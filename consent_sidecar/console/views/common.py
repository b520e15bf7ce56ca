"""What every console page shares: the session gate, the CSRF check, rendering, redirects, API failures.

`page(handler)` wraps an endpoint that needs a signed-in session: no session sends a GET to
/login (303) and refuses a POST (403); every POST must carry the session's `csrf_token`
(missing or wrong: 403, and the handler never runs, so nothing changes); an `AdminError`
escaping the handler becomes the page for its status (`admin_failure`). Must never put a token
or a session id into a page, a URL or a log line.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from consent_sidecar.console.admin import AdminError, AdminGateway, Role
from consent_sidecar.console.security import LOGIN_COOKIE, SESSION_COOKIE
from consent_sidecar.console.sessions import Session, SessionStore, login_csrf
from consent_sidecar.console.settings import ConsoleConfig

__all__ = [
    "Console",
    "admin_failure",
    "category_url",
    "console_of",
    "error_page",
    "form_of",
    "form_text",
    "login_page",
    "owners_only",
    "page",
    "redirect",
    "render",
    "session_of",
]

_MAX_FIELDS: Final = 50  # a console form has a handful of fields


@dataclass(frozen=True, slots=True)
class Console:
    """The app's state: configuration, the gateway to the AdminService, sessions, templates."""

    config: ConsoleConfig
    gateway: AdminGateway
    sessions: SessionStore
    templates: Jinja2Templates
    secret: bytes  # keys the login form's CSRF token; random per process


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session | None:
    return console_of(request).sessions.get(request.cookies.get(SESSION_COOKIE))


def category_url(category_id: str, action: str = "") -> str:
    """`/categories/{id}[/action]`, the id escaped whole (ids may hold `/`, `?`, `#`, `%`)."""
    base = f"/categories/{quote(category_id, safe='')}"
    return f"{base}/{action}" if action else base


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def render(
    request: Request, template: str, context: dict[str, Any], *, session: Session | None, status: int = 200
) -> HTMLResponse:
    """The page `template` with the shared context (session, its CSRF token, the flash message)."""
    base: dict[str, Any] = {
        "session": session,
        "owner": session is not None and session.may_write,
        "csrf": session.csrf if session is not None else "",
        "flash": session.pop_flash() if session is not None else None,
        "path": request.url.path,
        "modal": False,  # True: a dialog is open and the page behind it is inert
    }
    base.update(context)
    response: HTMLResponse = console_of(request).templates.TemplateResponse(request, template, base, status_code=status)
    return response


def login_page(request: Request, *, error: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form with a fresh CSRF pair: the nonce in a cookie, its HMAC in the form."""
    console = console_of(request)
    nonce = secrets.token_urlsafe(32)
    response = render(
        request, "login.html", {"error": error, "login_csrf": login_csrf(console.secret, nonce)},
        session=None, status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, path="/login", secure=console.config.https, httponly=True,
        samesite="strict",
    )
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/", secure=console.config.https, httponly=True, samesite="strict")
    return response


def error_page(request: Request, session: Session | None, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", {"title": title, "message": message}, session=session, status=status)


async def form_of(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=_MAX_FIELDS)


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


_TITLES: Final[dict[int, str]] = {
    400: "That was not accepted", 401: "Sign in again", 403: "Not allowed", 404: "Not found",
    409: "Changed by someone else", 429: "Too many requests", 503: "The sidecar is not answering",
    504: "The sidecar did not answer in time",
}


def admin_failure(request: Request, session: Session, error: AdminError) -> Response:
    """The page for an AdminService refusal no form handled: the API's message, at its HTTP status."""
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        # The token was revoked (or the principals file changed): this session is over.
        console_of(request).sessions.end(request.cookies.get(SESSION_COOKIE))
        return login_page(request, error=f"Your token is no longer accepted: {error.message}", status=401)
    if error.code == grpc.StatusCode.PERMISSION_DENIED:
        session.role = Role.MEMBER  # demoted since sign-in: stop offering what the API refuses
    status = error.http_status
    return error_page(request, session, status, _TITLES.get(status, "The sidecar refused"), error.message)


Handler = Callable[[Request, Session], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for signed-in sessions; POSTs must carry the session's CSRF token."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        session = session_of(request)
        if request.method == "POST":
            form = await form_of(request)
            if session is None:
                return error_page(
                    request, None, 403, "Your session has ended", "Sign in again; nothing was changed."
                )
            if not session.csrf_matches(form_text(form, "csrf_token") or None):
                return error_page(
                    request, session, 403, "Form expired",
                    "This form was not issued to your session (missing or wrong CSRF token); nothing was changed. "
                    "Reload the page and try again.",
                )
        elif session is None:
            return redirect("/login")
        try:
            return await handler(request, session)
        except AdminError as e:
            return admin_failure(request, session, e)

    return endpoint


def owners_only(request: Request, session: Session) -> Response | None:
    """The refusal for a member opening a write form (the API would refuse the write itself), else None."""
    if session.may_write:
        return None
    return error_page(
        request, session, 403, "Read-only",
        "Your token is a member's (read-only): only owners change categories.",
    )
