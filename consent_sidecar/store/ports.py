"""What the services and the process see of the policy source: the write port and the store's status.

`PolicyWriterPort` is satisfied by `PolicyWriter` (a mapping file) and `FleetWriter` (etcd):
AdminService hands it pure `consent_core.edits` requests and gets back the edit's result and
the snapshot now serving. `StoreInfo` answers PolicyStatus' store fields and GetFleetStatus;
a file-backed sidecar has none. Pure declaration: must never do anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from consent_core.edits import Edit, EditResult

from consent_sidecar.store.policy import PolicyStore, Snapshot

if TYPE_CHECKING:
    from consent_sidecar.store.fleet import FleetView

__all__ = ["PolicyWriterPort", "StoreInfo", "StoreStatus"]


class PolicyWriterPort(Protocol):
    @property
    def store(self) -> PolicyStore: ...

    async def apply_edit(
        self, edit: Edit, actor: str, *, alive: Callable[[], bool] = ...
    ) -> tuple[EditResult, Snapshot]:
        """`alive()` is asked before the point of no return: False (the caller's deadline passed) changes nothing."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """PolicyStatus fields 10-13."""

    store: str  # "file" | "etcd"
    connected: bool
    revision: int
    disconnected_since: datetime | None


class StoreInfo(Protocol):
    def status(self) -> StoreStatus: ...

    async def view(self) -> FleetView: ...
