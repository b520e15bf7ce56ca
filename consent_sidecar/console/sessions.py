"""Signed-in sessions, in memory: the only place the console keeps a bearer token.

A session is created when a token has been accepted by the AdminService; the browser holds a
random id in an HttpOnly, SameSite=Strict cookie, and the store keeps only the sha256 of
that id, so a lookup compares digests rather than the secret itself. Each session has its
own CSRF token (compared in constant time), a one-line flash message, and ends after
`idle` seconds without a request, by the injected clock (tests advance it; nothing sleeps).
The store is bounded: beyond `max_sessions` the least recently used session ends. Must never
log, render or put into a URL a token or a session id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from consent_sidecar.console.admin import Role

__all__ = ["Clock", "Session", "SessionStore", "login_csrf", "login_csrf_matches"]

Clock = Callable[[], float]  # seconds, monotonic


@dataclass(eq=False, slots=True)
class Session:
    """One signed-in browser: its token (server-side only), what the API said it may do, its CSRF token."""

    token: str = field(repr=False)
    role: Role
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    last_seen: float = 0.0
    flash: str | None = None

    @property
    def may_write(self) -> bool:
        return self.role is Role.OWNER

    def csrf_matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())

    def pop_flash(self) -> str | None:
        message, self.flash = self.flash, None
        return message


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions by (hashed) id with idle expiry and a size bound; single event loop, no locking needed."""

    def __init__(self, *, idle: float, max_sessions: int = 10_000, clock: Clock = time.monotonic) -> None:
        if idle <= 0 or max_sessions < 1:
            raise ValueError("idle must be positive and max_sessions at least 1")
        self.idle = idle
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, token: str, role: Role) -> tuple[str, Session]:
        """A new session for `token`; returns the id for the cookie (never stored) and the session."""
        now = self._clock()
        self._expire(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        session = Session(token=token, role=role, last_seen=now)
        self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, its idle timer restarted; None if unknown or expired (then ended)."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle:
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_key(session_id), None)

    def _expire(self, now: float) -> None:
        # Least recently seen first: stop at the first one still live.
        while self._sessions:
            key, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_seen <= self.idle:
                return
            del self._sessions[key]


# -- the login form's CSRF token (before there is a session) -------------------------------------
#
# GET /login sets a random nonce in a SameSite=Strict cookie and puts HMAC(secret, nonce) in the
# form; POST /login needs both to agree. Nothing is stored per visitor, so anonymous requests
# cannot fill memory, and a nonce planted by another site cannot be paired with a valid field.


def login_csrf(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def login_csrf_matches(secret: bytes, nonce: str | None, offered: str | None) -> bool:
    if not nonce or not offered:
        return False
    return hmac.compare_digest(login_csrf(secret, nonce).encode(), offered.encode())
