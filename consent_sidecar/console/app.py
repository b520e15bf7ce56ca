"""The console's ASGI application: routes, templates, static files and the middleware order.

`create_app(config)` builds a Starlette app around one `AdminGateway` (opened on first use,
closed at shutdown) and one `SessionStore` (clock injectable for tests), and wraps it in
`SecurityHeaders` from the outside, so that every response carries them, including those
Starlette answers itself (413 for a body over the limit, 500). `RequestLog` logs each request
as method, path, status and milliseconds: no query string, headers, cookies or form fields,
so neither a token nor a session id can reach a log. The routes are those of
docs/console.md. Must never add a route that reaches the sidecar other than through the
gateway with a session's token.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_sidecar.console.admin import AdminGateway
from consent_sidecar.console.security import CategoryPaths, SecurityHeaders
from consent_sidecar.console.sessions import Clock, SessionStore
from consent_sidecar.console.settings import ConsoleConfig, admin_channel_credentials
from consent_sidecar.console.views import audit, auth, categories, status
from consent_sidecar.console.views.common import Console, category_url, error_page, session_of
from consent_sidecar.observe import logs

__all__ = ["MAX_BODY", "ConsoleApp", "RequestLog", "create_app", "templates"]

_HERE: Final = Path(__file__).parent
MAX_BODY: Final = 1024 * 1024  # bytes per request body; a category's form is far smaller

_log = logs.get_logger(__name__)


def templates() -> Jinja2Templates:
    """The console's templates: autoescaped, undefined names are errors, compiled once."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals["category_url"] = category_url
    return Jinja2Templates(env=env)


def _routes() -> list[Route | Mount]:
    c = categories
    return [
        Route("/", auth.root),
        Route("/login", auth.login_form, methods=["GET"]),
        Route("/login", auth.login_submit, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/categories", c.index, methods=["GET"]),
        Route("/categories", c.create, methods=["POST"]),
        Route("/categories/new", c.new_form, methods=["GET"]),
        Route("/categories/{category_id}/edit", c.edit_form, methods=["GET"]),
        Route("/categories/{category_id}/disable", c.confirm_form["disable"], methods=["GET"]),
        Route("/categories/{category_id}/disable", c.disable, methods=["POST"]),
        Route("/categories/{category_id}/delete", c.confirm_form["delete"], methods=["GET"]),
        Route("/categories/{category_id}/delete", c.delete, methods=["POST"]),
        Route("/categories/{category_id}/enable", c.enable, methods=["POST"]),
        Route("/categories/{category_id}", c.update, methods=["POST"]),
        Route("/audit", audit.audit, methods=["GET"]),
        Route("/status", status.status, methods=["GET"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, session_of(request), 404, "Not found", "There is no such page.")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return error_page(request, session_of(request), 405, "Not allowed", f"{request.method} is not used here.")


async def _too_large(request: Request, exc: Exception) -> Response:
    return error_page(request, session_of(request), 413, "Too large", "That form is larger than the console accepts.")


class RequestLog:
    """One log line per request: method, path (never the query), status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            _log.info(
                "console request", method=scope["method"], path=scope["path"], status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )


class ConsoleApp:
    """The console as one ASGI app: request log, then security headers, around the Starlette app.

    `console` is its state (configuration, gateway, sessions).
    """

    def __init__(self, starlette: Starlette, console: Console) -> None:
        self.starlette = starlette
        self.console = console
        self._app = RequestLog(SecurityHeaders(starlette))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def create_app(
    config: ConsoleConfig, *, gateway: AdminGateway | None = None, clock: Clock = time.monotonic
) -> ConsoleApp:
    """The console for `config`; `gateway` defaults to one for config.admin_address (closed at shutdown)."""
    if gateway is None:
        gateway = AdminGateway(
            config.admin_address, admin_channel_credentials(config), timeout=config.admin_timeout
        )
    console = Console(
        config=config,
        gateway=gateway,
        sessions=SessionStore(idle=config.session_idle, max_sessions=config.max_sessions, clock=clock),
        templates=templates(),
        secret=secrets.token_bytes(32),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await console.gateway.close()

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(CategoryPaths)],
        exception_handlers={404: _not_found, 405: _method_not_allowed, 413: _too_large},
        lifespan=lifespan,
        max_body_size=MAX_BODY,
    )
    app.state.console = console
    return ConsoleApp(app, console)
