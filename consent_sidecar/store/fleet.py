"""Member records: which sidecar of a fleet serves which policy, on an etcd lease that dies with it.

Owns `<prefix>/members/<member id>`: one JSON record per live sidecar (member id, address =
its first --listen, policy generation and digest, document revision, connected, last error,
updated_at) put under a lease of MEMBER_TTL seconds that the sidecar keeps alive, so a killed
sidecar leaves the list by itself; and `fleet_status`, the read behind GetFleetStatus. The
record is rewritten whenever what it says changes (and re-created with a new lease after a
disconnection), and every few seconds while the sidecar is in sync, so that `updated_at` is the
last time it was confirmed serving the store's newest document: frozen while it lags, it tells
`fleet status --max-lag` how long a member has lagged. Must never block the event loop or decide policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consent_core.errors import MappingError
from consent_core.mapping_file import parse_mapping

from consent_sidecar.etcd.client import EtcdClient, EtcdUnavailable
from consent_sidecar.etcd.keys import Keys
from consent_sidecar.observe import logs
from consent_sidecar.store.etcd_source import EtcdSource
from consent_sidecar.store.ports import StoreStatus

__all__ = ["MEMBER_TTL", "Fleet", "FleetMember", "FleetView", "MemberRecord", "fleet_status"]

MEMBER_TTL: Final = 10  # seconds a member record outlives its sidecar's last keepalive
_KEEPALIVE: Final = 3.0  # seconds between keepalives (TTL / 3)
_COALESCE: Final = 0.2  # seconds a record update waits for more changes (every write changes every record)

_log = logs.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FleetMember:
    member_id: str
    address: str
    generation: int
    digest: str
    store_revision: int
    connected: bool
    last_error: str
    updated_at: datetime

    def encode(self) -> bytes:
        return json.dumps({
            "member_id": self.member_id, "address": self.address, "generation": self.generation,
            "digest": self.digest, "store_revision": self.store_revision, "connected": self.connected,
            "last_error": self.last_error, "updated_at": self.updated_at.isoformat(),
        }, sort_keys=True).encode()  # fmt: skip

    @classmethod
    def decode(cls, value: bytes) -> FleetMember | None:
        try:
            d = json.loads(value)
            return cls(str(d["member_id"]), str(d["address"]), int(d["generation"]), str(d["digest"]),
                       int(d["store_revision"]), bool(d["connected"]), str(d["last_error"]),
                       datetime.fromisoformat(d["updated_at"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class FleetView:
    """What GetFleetStatus answers: the document etcd holds now and every live member."""

    store_revision: int
    store_digest: str  # "" when etcd holds no document, or an invalid one
    members: list[FleetMember]


_digests: dict[bytes, str] = {}  # document bytes' sha -> canonical digest: parse each document once


async def fleet_status(client: EtcdClient, keys: Keys) -> FleetView:
    """The fleet as etcd sees it now (EtcdUnavailable when it cannot be read)."""
    result = await client.txn([], [client.read(keys.mapping), client.read(keys.members, keys.members_end)])
    docs, members = result.ranges
    revision, digest = 0, ""
    if docs:
        doc = docs[0]
        revision = doc.mod_revision
        sha = hashlib.sha256(doc.value).digest()
        digest = _digests.get(sha, "")
        if not digest:
            try:
                mapping = await asyncio.to_thread(parse_mapping, doc.value.decode("utf-8"), "mapping")
                digest = mapping.digest()
                if len(_digests) > 64:
                    _digests.clear()
                _digests[sha] = digest
            except (UnicodeDecodeError, MappingError):
                digest = ""
    out = [m for m in (FleetMember.decode(kv.value) for kv in members) if m is not None]
    return FleetView(revision, digest, sorted(out, key=lambda m: m.member_id))


class MemberRecord:
    """Keeps this sidecar's member record current while it runs; `run(stop)` until shutdown."""

    def __init__(self, source: EtcdSource, member_id: str, address: str) -> None:
        self._source = source
        self._client = source.client
        self._key = source.keys.member(member_id)
        self.member_id = member_id
        self.address = address
        self._lease = 0
        self._synced_at: datetime | None = None

    def in_sync(self) -> bool:
        """Serving the newest document revision this sidecar knows of, connected, no rejected document."""
        st = self._source.state
        return st.connected and st.latest <= st.revision and not self._source.store.last_error

    def current(self) -> FleetMember:
        """The record now. `updated_at` is the last time the member was confirmed in sync (refreshed every
        few seconds while it is), frozen while it lags: `now - updated_at` is how long it has lagged."""
        src = self._source
        st = src.state
        store = src.store
        snap = store.current if store.loaded else None
        if self.in_sync() or self._synced_at is None:
            self._synced_at = datetime.now(UTC)
        return FleetMember(
            self.member_id, self.address, snap.generation if snap else 0, snap.digest if snap else "",
            st.revision, st.connected, store.last_error or "", self._synced_at,
        )

    async def _put(self) -> None:
        if self._lease == 0:
            self._lease = await self._client.grant(MEMBER_TTL)
        await self._client.put_value(self._key, self.current().encode(), lease=self._lease)

    async def run(self, stop: asyncio.Event) -> None:
        changed = self._source.changed()
        last_keepalive = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                try:
                    if changed.is_set() or self._lease == 0:
                        await asyncio.sleep(_COALESCE)  # a burst of changes: one put for the latest
                        changed.clear()
                        await self._put()
                        last_keepalive = loop.time()
                    elif loop.time() - last_keepalive >= _KEEPALIVE:
                        if await self._client.keepalive(self._lease) == 0:
                            self._lease = 0  # expired while we were away: a new record on a new lease
                            continue
                        last_keepalive = loop.time()
                        if self.in_sync():
                            await self._put()  # confirms updated_at: readers judge lag from it
                except EtcdUnavailable as e:
                    _log.debug("member record not updated", error=str(e))
                    self._lease = 0 if "not found" in str(e).lower() else self._lease
                    changed.set()
                    await asyncio.sleep(0.5)
                    continue
                waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=_KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            await self._leave()

    async def _leave(self) -> None:
        """On shutdown: revoke the lease, so the record goes at once rather than after MEMBER_TTL."""
        if self._lease:
            with contextlib.suppress(EtcdUnavailable, Exception):
                await asyncio.wait_for(self._client.revoke(self._lease), timeout=1.0)


def describe(view: FleetView) -> dict[str, Any]:
    return {"store_revision": view.store_revision, "members": len(view.members)}


class Fleet:
    """An etcd-backed sidecar's store, as the services see it (`ports.StoreInfo`)."""

    def __init__(self, source: EtcdSource) -> None:
        self._source = source

    def status(self) -> StoreStatus:
        st = self._source.state
        return StoreStatus("etcd", st.connected, st.revision, st.disconnected_since)

    async def view(self) -> FleetView:
        return await fleet_status(self._source.client, self._source.keys)
