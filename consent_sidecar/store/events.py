"""What the trail records for each thing the writer does: the audit events of a change, a start, a reload.

Owns the composition of audit events from policies (never their storage): the `diff(old,
new)` events of a change followed by one POLICY_RELOADED naming the generation and digest
the change *will* get (the events are written before it is published), the start event and
the changes found at start, a rejected reload's POLICY_RELOAD_FAILED, and the policy a
POLICY_RELOADED carries for the next start to diff against. The actors: `system` for
starts, `file:<basename>` for hand edits, the principal id for admin writes. Pure apart
from serialising mappings (call `with_policy` off the event loop); must never write,
publish, or log mapping content.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

from consent_core.diff import diff
from consent_core.model import ConsentMapping

from consent_sidecar.audit import AuditAction, NewEvent, PublishedPolicy, changes_to_events

__all__ = [
    "SYSTEM_ACTOR",
    "change_events",
    "cleared_event",
    "failed_event",
    "file_actor",
    "found_at_start",
    "start_event",
    "version",
    "with_policy",
]

SYSTEM_ACTOR: Final = "system"


def file_actor(path: str) -> str:
    """The audit actor of hand edits of the mapping file at `path`: `file:<basename>`."""
    return f"file:{os.path.basename(path)}"


def version(generation: int, digest: str) -> str:
    """How every POLICY_RELOADED names the policy it is about (the trail's stored policies key on it)."""
    return f"generation {generation} digest {digest}"


def change_events(
    old: ConsentMapping,
    new: ConsentMapping,
    *,
    old_generation: int,
    generation: int,
    digest: str,
    actor: str,
    renamed: Mapping[str, str] | None = None,
) -> list[NewEvent]:
    """The events of one change: one per category/mapping change, then POLICY_RELOADED naming
    `generation` and `digest`, the version the change is published as once they are durable."""
    changes = diff(old, new, renamed=renamed)
    events = changes_to_events(changes, actor)
    events.append(
        NewEvent(
            actor,
            AuditAction.POLICY_RELOADED,
            detail=f"{version(generation, digest)} (was generation {old_generation}; {len(changes)} category changes)",
        )
    )
    return events


def failed_event(actor: str, error: str) -> NewEvent:
    """A rejected reload: the error text (`file:line:column: path: message` lines) is the detail."""
    return NewEvent(actor, AuditAction.POLICY_RELOAD_FAILED, detail=error or "reload failed")


def cleared_event(actor: str, generation: int, digest: str) -> NewEvent:
    """A good load of the serving content after a recorded failure: the trail shows the failure ended."""
    return NewEvent(actor, AuditAction.POLICY_RELOADED,
                    detail=f"{version(generation, digest)} unchanged; clears the reload failure")  # fmt: skip


def start_event(generation: int, digest: str, source: str, note: str) -> NewEvent:
    """The POLICY_RELOADED by `system` every start opens with."""
    return NewEvent(
        actor=SYSTEM_ACTOR,
        action=AuditAction.POLICY_RELOADED,
        detail=f"{version(generation, digest)}; start, from {os.path.basename(source)}{note}",
    )


def found_at_start(
    last: PublishedPolicy | None, current: ConsentMapping, digest: str, actor: str
) -> tuple[list[NewEvent], str, str]:
    """(events, note for the start event, problem) for the changes from the last published policy to the file's.

    Nothing when the trail stores no last policy, or it is the file's. A stored policy that
    does not rebuild to its digest is not diffed: `problem` says why (for the caller to log).
    """
    if last is None or last.digest == digest:
        return [], "", ""
    previous: ConsentMapping | None = None
    try:
        previous = ConsentMapping.from_json_dict(json.loads(last.canonical))
    except ValueError as e:
        problem = str(e)
    else:
        problem = "" if previous.digest() == last.digest else "it does not rebuild to its digest"
    if previous is None or problem:
        return [], (
            f"; differs from the last published policy (digest {last.digest}, event {last.sequence}), "
            f"which could not be read back ({problem}): changes since then are not itemised"
        ), problem
    changes = diff(previous, current)
    detail = (
        f"found at start: the mapping file differs from the last published policy (digest {last.digest}, "
        f"event {last.sequence}); changed while the sidecar was not running, or written just before it stopped"
    )
    events = [replace(e, detail=detail) for e in changes_to_events(changes, actor)]
    return events, (
        f"; the file changed since the last published policy (digest {last.digest}, event {last.sequence}): "
        f"{len(changes)} category changes found at start"
    ), ""


def with_policy(events: Sequence[NewEvent], digest: str, mapping: ConsentMapping) -> list[NewEvent]:
    """`events` with `mapping` (whose digest is `digest`) on the last POLICY_RELOADED: the policy it publishes.

    Blocking (serialises the mapping): call it in a worker thread.
    """
    out = list(events)
    for i in range(len(out) - 1, -1, -1):
        if out[i].action is AuditAction.POLICY_RELOADED:
            out[i] = replace(out[i], policy=(digest, mapping.canonical_bytes().decode("utf-8")))
            break
    return out
