"""HTTP-level protections applied to every console response, and the cookie attributes.

Two pure ASGI middlewares: `SecurityHeaders` adds the headers every page must carry (a
Content-Security-Policy that allows no inline script or style, framing denied, no referrer,
no MIME sniffing, `Cache-Control: no-store` on everything but static files); `CategoryPaths`
routes category ids holding `/` or `%` (legal in ids) by keeping their escapes through
routing. Must never relax the policy for a single page: a page that needs an exception is
the page to change.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "CategoryPaths",
    "SecurityHeaders",
    "path_id",
]

SESSION_COOKIE: Final = "console_session"
LOGIN_COOKIE: Final = "console_login"  # the login form's CSRF nonce, before there is a session

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

_ALWAYS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_STATIC_PREFIX: Final = "/static/"


class SecurityHeaders:
    """Adds the console's security headers to every HTTP response, errors and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(_STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                headers = [h for h in _ALWAYS if h[0] not in names]
                if b"cache-control" not in names:
                    # Pages show policy and the trail to whoever is signed in: never kept by a cache.
                    # Static files carry no data and revalidate by their ETag.
                    headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# %2F and %25 stay escaped while routing; every other escape is decoded as usual.
_KEEP_ESCAPED: Final = re.compile(rb"%(?!2[fF]|25)([0-9a-fA-F]{2})")


class CategoryPaths:
    """Routes `/categories/{id}/...` with ids containing `/` (sent as %2F) or `%` (sent as %25).

    ASGI servers decode the path before routing, which would split such an id. This rebuilds
    `path` from `raw_path` decoding every escape but those two; `path_id` undoes them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and isinstance(raw, bytes) and b"%" in raw:
            raw = raw.split(b"?", 1)[0]
            decoded = _KEEP_ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
            scope = {**scope, "path": decoded.decode("utf-8", "replace")}
        await self.app(scope, receive, send)


def path_id(value: str) -> str:
    """A category id from a path parameter (its %2F and %25 decoded; everything else already was)."""
    return unquote(value) if "%" in value else value
