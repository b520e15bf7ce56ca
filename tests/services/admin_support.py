"""What the AdminService write tests share: a sidecar with an authenticated admin listener, and its checks.

`admin_sidecar(directory)` serves MAPPING (a commented file) on loopback with the admin API
behind the Authenticator (alice owner, bob member), over a real audit log and writer; the
`admin` fixture (conftest.py) is one per test. `expect` awaits a call that must fail with a
given code; WRITES and READS are one request of each RPC.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2_grpc
from google.protobuf import field_mask_pb2

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord
from consent_sidecar.auth.gate import Authenticator, PrincipalsFile
from consent_sidecar.auth.principals import Principal, Principals, Role, hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import Sidecar
from consent_sidecar.store.policy import PolicyStore
from consent_sidecar.store.writer import PolicyWriter

WAIT = 30.0  # upper bound of every wait here, in seconds
A = AuditAction

MAPPING = """\
# Consent mapping for the shop (owned by the privacy team).
version: 1
settings:
  unknown_destinations: allow   # flip to deny once every destination is listed

categories:
  # Analytics: product metrics.
  - id: C0002
    name: Performance Cookies     # OneTrust's label
    destinations: [amplitude, mixpanel]

  # Advertising. Legal reviewed this list.
  - id: C0004
    name: Targeting Cookies
    destinations:
      - google-ads   # search ads
      - braze        # lifecycle messaging

  - id: C0003
    name: Functional Cookies
    shadow: true                  # dry run until the banner ships
    destinations: [amplitude, hotjar]

# Per-destination settings.
destinations:
  aws-s3: {enforce: false}   # the warehouse gets everything
  braze: {resolution: any}
"""

OWNER = (("authorization", "Bearer alice-token"),)
MEMBER = (("authorization", "Bearer bob-token"),)
PRINCIPALS = Principals(
    [Principal("alice", Role.OWNER, hash_token("alice-token")), Principal("bob", Role.MEMBER, hash_token("bob-token"))]
)

Code = grpc.StatusCode
Category = admin_pb2.Category


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


@dataclass
class Admin:
    """A sidecar with an authenticated admin listener, and what the tests look at."""

    sidecar: Sidecar
    store: PolicyStore
    audit: AuditLog
    writer: PolicyWriter
    path: Path
    channel: grpc.aio.Channel
    decision_channel: grpc.aio.Channel

    @property
    def stub(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    @property
    def decide(self) -> decision_pb2_grpc.DecisionServiceStub:
        return decision_pb2_grpc.DecisionServiceStub(self.decision_channel)

    def events(self, after: int = 0) -> list[AuditRecord]:
        records, _ = self.audit.page(page_size=1000, after_sequence=after)
        return records

    def last_sequence(self) -> int:
        records = self.events()
        return records[-1].sequence if records else 0

    async def call(self, rpc: str, request: Any, metadata: Any = OWNER) -> Any:
        return await getattr(self.stub, rpc)(request, metadata=metadata, timeout=10)

    async def get(self, category_id: str) -> Category:
        c: Category = await self.call("GetCategory", admin_pb2.GetCategoryRequest(category_id=category_id))
        return c


@contextlib.asynccontextmanager
async def admin_sidecar(
    directory: Path, mapping: str = MAPPING, *, credentials: dict[str, str] | None = None
) -> AsyncIterator[Admin]:
    """A sidecar on loopback with AdminService behind the Authenticator (alice owner, bob member)."""
    path = directory / "mappings.yaml"
    path.write_text(mapping, encoding="utf-8")
    cfg = ServeConfig(
        mappings=str(path), listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0", principals="unused",
        grace_period=1.0, **(credentials or {}),
    )  # fmt: skip
    store = PolicyStore()
    store.load_initial(cfg.mappings)
    audit = AuditLog.open(directory / "audit.db")
    writer = PolicyWriter(store, audit)
    await writer.start()
    gate = Authenticator(PrincipalsFile(str(directory / "principals.yaml"), PRINCIPALS), audit)
    sidecar = Sidecar(cfg, store, audit=audit, writer=writer, gate=gate)
    await sidecar.start()
    assert sidecar.admin_address is not None
    channel = grpc.aio.insecure_channel(sidecar.admin_address)
    decision_channel = grpc.aio.insecure_channel(sidecar.addresses[0])
    try:
        yield Admin(sidecar, store, audit, writer, path, channel, decision_channel)
    finally:
        await channel.close()
        await decision_channel.close()
        await sidecar.stop(None)
        await writer.aclose()
        audit.close()


async def expect(code: grpc.StatusCode, call: Any, match: str = "") -> str:
    """Awaits `call`, which must fail with `code` (and a message matching `match`); returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    assert details, "every error carries a message"
    assert re.search(match, details), details
    return details


WRITES: list[tuple[str, Any]] = [
    ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0009", name="New", destinations=["x"]))),
    ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(name="P"),
                                                      update_mask=mask("name"))),
    ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")),
    ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0002")),
    ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")),
]  # fmt: skip
READS: list[tuple[str, Any]] = [
    ("ListCategories", admin_pb2.ListCategoriesRequest()),
    ("GetCategory", admin_pb2.GetCategoryRequest(category_id="C0002")),
    ("GetPolicyStatus", admin_pb2.GetPolicyStatusRequest()),
    ("ListAuditEvents", admin_pb2.ListAuditEventsRequest()),
]
