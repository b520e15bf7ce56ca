"""Refused admin writes in the audit trail, bounded: the first at once, a burst as one counted event.

Owns the PERMISSION_DENIED events of members' refused writes. The first refusal per
(principal, RPC) is appended before the RPC answers, with the RPC name as its detail, and
opens a window of `WINDOW` seconds; refusals of the same pair within it are only counted,
and when the window closes (or at shutdown, `aclose`) one more PERMISSION_DENIED says how
many there were. So a member hammering a write adds at most two events per RPC per window
to the trail, however fast it calls; memory is one counter per (principal, RPC) pair, both
bounded (principals come from the principals file, RPCs from the service). If the trail
refuses an append the call is still refused (the safe answer) and the failure is logged.
Must never block the event loop (appends run in worker threads) or log a token.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

from consent_core.errors import SidecarError

from consent_sidecar.audit import AuditAction, NewEvent
from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.observe import logs

__all__ = ["WINDOW", "DenialRecorder"]

WINDOW: Final = 10.0  # seconds after a recorded refusal during which further ones are only counted

_log = logs.get_logger(__name__)


@dataclass(eq=False, slots=True)
class _Window:
    count: int  # refusals after the first one
    timer: asyncio.TimerHandle | None = None


class DenialRecorder:
    """Writes PERMISSION_DENIED events to `audit`, one burst at a time (module docstring). Use from one loop."""

    def __init__(self, audit: AuditTrail, *, window: float = WINDOW) -> None:
        self._audit = audit
        self._window = window
        self._open: dict[tuple[str, str], _Window] = {}
        self._appends: set[asyncio.Task[None]] = set()

    async def refused(self, principal: str, rpc: str) -> None:
        """Records one refusal of `rpc` to `principal`: appended now if it opens a window, else counted."""
        key = (principal, rpc)
        window = self._open.get(key)
        if window is not None:
            window.count += 1
            return
        window = self._open[key] = _Window(0)
        window.timer = asyncio.get_running_loop().call_later(self._window, self._close, key)
        await self._append(NewEvent(actor=principal, action=AuditAction.PERMISSION_DENIED, detail=rpc))

    def _close(self, key: tuple[str, str]) -> None:
        """The window of `key` ended: its count, if any, becomes one event (appended in the background)."""
        window = self._open.pop(key, None)
        if window is None or window.count == 0:
            return
        task = asyncio.ensure_future(self._append(self._summary(key, window.count)))
        self._appends.add(task)
        task.add_done_callback(self._appends.discard)

    def _summary(self, key: tuple[str, str], count: int) -> NewEvent:
        principal, rpc = key
        detail = f"{rpc}: refused {count} more times within {self._window:g} s of the first refusal"
        return NewEvent(actor=principal, action=AuditAction.PERMISSION_DENIED, detail=detail)

    async def _append(self, event: NewEvent) -> None:
        try:
            await asyncio.to_thread(self._audit.append, [event])
        except (SidecarError, ValueError) as e:
            _log.error("cannot audit a denied admin call", rpc=event.detail, principal=event.actor, error=str(e))

    async def aclose(self) -> None:
        """Shutdown: every open window's count is written now, and every append finishes. Idempotent."""
        for key, window in list(self._open.items()):
            if window.timer is not None:
                window.timer.cancel()
            self._close(key)
        if self._appends:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._appends, return_exceptions=True)
