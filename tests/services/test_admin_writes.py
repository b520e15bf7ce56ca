"""AdminService writes over real gRPC: every status code, read-your-writes, comments kept, audit exactly once,
persistence failures changing nothing, and arbitrary input never breaking the server."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from consent_core import errors
from consent_core.mapping_file import load_mapping, saver
from google.protobuf import field_mask_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord, verify
from consent_sidecar.auth.gate import Authenticator, PrincipalsFile
from consent_sidecar.auth.principals import Principal, Principals, Role, hash_token
from consent_sidecar.cli import run_cli
from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import Sidecar
from consent_sidecar.store.policy import PolicyStore, ReloadResult
from consent_sidecar.store.watch import MappingWatcher
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


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with admin_sidecar(tmp_path) as running:
        yield running


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


# -- UNAUTHENTICATED / PERMISSION_DENIED ----------------------------------------------------


@pytest.mark.parametrize(("rpc", "request_"), READS + WRITES + [("WatchAuditEvents", None)])
@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing bearer token"),
        ((("authorization", "Bearer not-a-known-token"),), "invalid bearer token"),
        ((("authorization", "Basic YWxpY2U6cHc="),), "missing bearer token"),
        ((("authorization", "alice-token"),), "missing bearer token"),
    ],
)
async def test_calls_without_a_valid_token_are_unauthenticated(
    admin: Admin, rpc: str, request_: Any, metadata: Any, message: str
) -> None:
    before = admin.path.read_bytes()
    if rpc == "WatchAuditEvents":
        stream = admin.stub.WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), metadata=metadata, timeout=10)
        call: Any = stream.read()
    else:
        call = admin.call(rpc, request_, metadata)
    await expect(Code.UNAUTHENTICATED, call, message)
    assert admin.path.read_bytes() == before
    assert [e.action for e in admin.events()] == [A.POLICY_RELOADED]  # only the start event


@pytest.mark.parametrize(("rpc", "request_"), READS)
async def test_members_and_owners_read(admin: Admin, rpc: str, request_: Any) -> None:
    await admin.call(rpc, request_, MEMBER)
    await admin.call(rpc, request_, OWNER)


async def test_get_caller_names_the_principal_and_its_role_and_records_nothing(admin: Admin) -> None:
    owner = await admin.call("GetCaller", admin_pb2.GetCallerRequest(), OWNER)
    member = await admin.call("GetCaller", admin_pb2.GetCallerRequest(), MEMBER)
    assert (owner.principal_id, owner.role) == ("alice", admin_pb2.ROLE_OWNER)
    assert (member.principal_id, member.role) == ("bob", admin_pb2.ROLE_MEMBER)
    await expect(Code.UNAUTHENTICATED, admin.call("GetCaller", admin_pb2.GetCallerRequest(), ()))
    assert [e.action for e in admin.events()] == [A.POLICY_RELOADED]  # only the start event


async def test_a_member_may_watch_the_audit_trail(admin: Admin) -> None:
    stream = admin.stub.WatchAuditEvents(admin_pb2.WatchAuditEventsRequest(), metadata=MEMBER, timeout=10)
    first = await stream.read()
    assert first.action == admin_pb2.AUDIT_ACTION_POLICY_RELOADED
    stream.cancel()


@pytest.mark.parametrize(("rpc", "request_"), WRITES)
async def test_a_member_write_is_permission_denied_and_audited(admin: Admin, rpc: str, request_: Any) -> None:
    before = admin.path.read_bytes()
    generation = admin.store.current.generation
    await expect(Code.PERMISSION_DENIED, admin.call(rpc, request_, MEMBER), f"{rpc} requires role owner; .*'bob'")
    assert admin.path.read_bytes() == before
    assert admin.store.current.generation == generation
    [denied] = admin.events(after=1)
    assert (denied.action, denied.actor, denied.detail) == (A.PERMISSION_DENIED, "bob", rpc)
    assert (denied.category_id, denied.before_json, denied.after_json) == ("", "", "")


# -- writes and read-your-writes ------------------------------------------------------------


async def test_create_is_live_when_it_returns(admin: Admin) -> None:
    facebook = decision_pb2.DecideRequest(
        consent=decision_pb2.Consent(category_preferences={"C0005": False}), destinations=["facebook"]
    )
    assert list((await admin.decide.Decide(facebook, timeout=5)).allowed) == ["facebook"]  # unknown: allowed
    created = await admin.call(
        "CreateCategory",
        admin_pb2.CreateCategoryRequest(category=Category(id="C0005", name="Social Media", destinations=["facebook"])),
    )
    assert (created.id, created.name, list(created.destinations)) == ("C0005", "Social Media", ["facebook"])
    assert created.HasField("enabled") and created.enabled and not created.shadow
    assert created.etag == (await admin.get("C0005")).etag
    r = await admin.decide.Decide(facebook, timeout=5)  # right after the write: no waiting
    assert list(r.blocked) == ["facebook"]
    assert r.policy.generation == 2
    assert load_mapping(admin.path).mapping.category("C0005") is not None


async def test_create_keeps_an_explicit_enabled_false_and_ignores_the_etag(admin: Admin) -> None:
    created = await admin.call(
        "CreateCategory",
        admin_pb2.CreateCategoryRequest(
            category=Category(id="C0005", name="Social", destinations=["fb"], enabled=False, etag="whatever")
        ),
    )
    assert created.HasField("enabled") and not created.enabled
    assert created.etag != "whatever"


async def test_create_audits_the_category_and_each_mapping_as_the_principal(admin: Admin) -> None:
    await admin.call(
        "CreateCategory",
        admin_pb2.CreateCategoryRequest(category=Category(id="C0005", name="Social", destinations=["fb", "tiktok"])),
    )
    events = admin.events(after=1)
    assert [(e.action, e.category_id, e.destination) for e in events] == [
        (A.CATEGORY_CREATED, "C0005", ""),
        (A.MAPPING_CREATED, "C0005", "fb"),
        (A.MAPPING_CREATED, "C0005", "tiktok"),
        (A.POLICY_RELOADED, "", ""),
    ]
    assert {e.actor for e in events} == {"alice"}
    assert events[0].before_json == "" and '"tiktok"' in events[0].after_json


async def test_update_renames_an_id_and_audits_one_update(admin: Admin) -> None:
    updated = await admin.call(
        "UpdateCategory",
        admin_pb2.UpdateCategoryRequest(category_id="C0004", category=Category(id="C0040"), update_mask=mask("id")),
    )
    assert (updated.id, updated.name) == ("C0040", "Targeting Cookies")
    await expect(Code.NOT_FOUND, admin.get("C0004"))
    assert [(e.action, e.category_id) for e in admin.events(after=1)] == [
        (A.CATEGORY_UPDATED, "C0040"), (A.POLICY_RELOADED, ""),
    ]  # fmt: skip
    r = await admin.decide.Decide(
        decision_pb2.DecideRequest(
            consent=decision_pb2.Consent(category_preferences={"C0040": True}), destinations=["google-ads"]
        ),
        timeout=5,
    )
    assert list(r.allowed) == ["google-ads"]
    text = admin.path.read_text()
    assert "  - id: C0040\n    name: Targeting Cookies\n    destinations:\n      - google-ads   # search ads\n" in text


async def test_update_with_an_empty_mask_replaces_id_name_destinations_and_shadow(admin: Admin) -> None:
    updated = await admin.call(
        "UpdateCategory",
        admin_pb2.UpdateCategoryRequest(
            category_id="C0003",
            category=Category(id="C0003", name="Functional", destinations=["hotjar"], shadow=False, enabled=False),
        ),
    )
    assert (updated.name, list(updated.destinations), updated.shadow, updated.enabled) == (
        "Functional", ["hotjar"], False, True,  # `enabled` is not an update path: Disable/Enable own it
    )  # fmt: skip
    actions = [(e.action, e.destination) for e in admin.events(after=1)]
    assert actions == [(A.CATEGORY_UPDATED, ""), (A.MAPPING_REMOVED, "amplitude"), (A.POLICY_RELOADED, "")]


async def test_disable_then_enable(admin: Admin) -> None:
    etag = (await admin.get("C0004")).etag
    off = await admin.call(
        "DisableCategory",
        admin_pb2.DisableCategoryRequest(category_id="C0004", confirm_name="Targeting Cookies", etag=etag),
    )
    assert not off.enabled and off.etag != etag
    ads = decision_pb2.DecideRequest(consent=decision_pb2.Consent(), destinations=["google-ads"])
    assert list((await admin.decide.Decide(ads, timeout=5)).allowed) == ["google-ads"]  # disabled: unmapped
    assert "    enabled: false\n" in admin.path.read_text()
    on = await admin.call("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0004", etag=off.etag))
    assert on.enabled and on.etag == etag
    assert list((await admin.decide.Decide(ads, timeout=5)).blocked) == ["google-ads"]
    assert [e.action for e in admin.events(after=1)] == [
        A.CATEGORY_DISABLED, A.POLICY_RELOADED, A.CATEGORY_ENABLED, A.POLICY_RELOADED,
    ]  # fmt: skip


async def test_enabling_an_enabled_category_writes_and_audits_nothing(admin: Admin) -> None:
    before = admin.path.read_bytes()
    on = await admin.call("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0002"))
    assert on.enabled
    assert admin.path.read_bytes() == before
    assert admin.store.current.generation == 1
    assert admin.last_sequence() == 1


async def test_delete_returns_the_new_policy_version(admin: Admin) -> None:
    r = await admin.call(
        "DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0003", confirm_name="Functional Cookies")
    )
    assert (r.policy.generation, r.policy.digest) == (2, admin.store.current.digest)
    await expect(Code.NOT_FOUND, admin.get("C0003"), "C0003")
    assert [(e.action, e.destination) for e in admin.events(after=1)] == [
        (A.CATEGORY_DELETED, ""), (A.MAPPING_REMOVED, "amplitude"), (A.MAPPING_REMOVED, "hotjar"),
        (A.POLICY_RELOADED, ""),
    ]  # fmt: skip
    text = admin.path.read_text()
    assert "C0003" not in text and "dry run until the banner ships" not in text
    assert "# Advertising. Legal reviewed this list." in text and "# Per-destination settings." in text


# -- NOT_FOUND, ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION, INVALID_ARGUMENT ----------------


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0099", category=Category(name="x"),
                                                          update_mask=mask("name"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0099", confirm_name="x")),
        ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0099")),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0099", confirm_name="x")),
    ],
)  # fmt: skip
async def test_writes_to_a_missing_category_are_not_found(admin: Admin, rpc: str, request_: Any) -> None:
    await expect(Code.NOT_FOUND, admin.call(rpc, request_), r"^category_id: no category 'C0099'$")
    assert admin.last_sequence() == 1


@pytest.mark.parametrize(
    ("rpc", "request_", "message"),
    [
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0004", name="X", destinations=["a"])),
         r"^category\.id: a category with id 'C0004' already exists$"),
        ("CreateCategory",
         admin_pb2.CreateCategoryRequest(category=Category(id="C0009", name="Targeting Cookies", destinations=["a"])),
         r"^category\.name: category 'C0004' already has the name 'Targeting Cookies'$"),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(id="C0004"),
                                                          update_mask=mask("id")), r"^category\.id: "),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002",
                                                          category=Category(name="Functional Cookies"),
                                                          update_mask=mask("name")), r"^category\.name: "),
    ],
)  # fmt: skip
async def test_a_taken_id_or_name_already_exists(admin: Admin, rpc: str, request_: Any, message: str) -> None:
    before = admin.path.read_bytes()
    await expect(Code.ALREADY_EXISTS, admin.call(rpc, request_), message)
    assert admin.path.read_bytes() == before


async def test_a_stale_etag_is_aborted_for_every_write(admin: Admin) -> None:
    stale = (await admin.get("C0004")).etag
    await admin.call(
        "UpdateCategory",
        admin_pb2.UpdateCategoryRequest(category_id="C0004", category=Category(name="Ads"), update_mask=mask("name")),
    )
    for rpc, request_ in [
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004", category=Category(name="X"),
                                                          update_mask=mask("name"), etag=stale)),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0004", confirm_name="Ads", etag=stale)),
        ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0004", etag=stale)),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0004", confirm_name="Ads", etag=stale)),
    ]:  # fmt: skip
        await expect(Code.ABORTED, admin.call(rpc, request_), r"^etag: category 'C0004' changed since it was read")
    assert (await admin.get("C0004")).name == "Ads"


async def test_a_mapping_file_changed_on_disk_since_it_was_loaded_is_never_overwritten(admin: Admin) -> None:
    hand_edit = MAPPING.replace("[amplitude, mixpanel]", "[amplitude, mixpanel, heap]")
    admin.path.write_text(hand_edit)  # not yet published: this sidecar runs no watcher
    await expect(
        Code.ABORTED,
        admin.call("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0004")),
        r"^the mapping file changed on disk since it was loaded; retry$",
    )
    await expect(
        Code.ABORTED,
        admin.call("DisableCategory",
                   admin_pb2.DisableCategoryRequest(category_id="C0004", confirm_name="Targeting Cookies")),
        "changed on disk",
    )  # fmt: skip
    assert admin.path.read_text() == hand_edit
    admin.path.write_text("version: 1\ncategories: [oops\n")  # broken: never replaced by a write either
    message = await expect(
        Code.ABORTED,
        admin.call("DisableCategory",
                   admin_pb2.DisableCategoryRequest(category_id="C0004", confirm_name="Targeting Cookies")),
        "does not load now; fix it, then retry",
    )  # fmt: skip
    assert f"{admin.path}:" in message  # names where it broke
    assert admin.path.read_text() == "version: 1\ncategories: [oops\n"
    assert admin.last_sequence() == 1


async def test_a_comment_only_hand_edit_is_kept_by_the_next_write(admin: Admin) -> None:
    admin.path.write_text(MAPPING.replace("# Per-destination settings.", "# Per-destination settings (see wiki)."))
    await admin.call(
        "DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")
    )
    text = admin.path.read_text()
    assert "# Per-destination settings (see wiki)." in text and "    enabled: false\n" in text


@pytest.mark.parametrize("rpc", ["DisableCategory", "DeleteCategory"])
@pytest.mark.parametrize("confirm", ["", "targeting cookies", "Targeting Cookies ", "Targeting", "C0004"])
async def test_a_wrong_confirm_name_fails_the_precondition(admin: Admin, rpc: str, confirm: str) -> None:
    request_type = getattr(admin_pb2, f"{rpc}Request")
    await expect(
        Code.FAILED_PRECONDITION,
        admin.call(rpc, request_type(category_id="C0004", confirm_name=confirm)),
        r"^confirm_name: to (disable|delete) category 'C0004', confirm_name must equal its name 'Targeting Cookies'",
    )
    assert (await admin.get("C0004")).enabled
    assert admin.last_sequence() == 1


@pytest.mark.parametrize(
    ("rpc", "request_", "message"),
    [
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="1abc", name="X", destinations=["a"])),
         r"^category\.id: must not start with a digit$"),
        ("CreateCategory", admin_pb2.CreateCategoryRequest(), r"^category\.id: must not be empty; category\.name: "),
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C9", name="X", destinations=[]))
         , r"^category\.destinations: must list at least one destination$"),
        ("CreateCategory",
         admin_pb2.CreateCategoryRequest(category=Category(id="C9", name="X", destinations=["ok", "ga/eu"])),
         r"^category\.destinations\[1\]: must not contain '/'"),
        ("CreateCategory",
         admin_pb2.CreateCategoryRequest(category=Category(id="C" * 35, name="X", destinations=["a"])),
         r"^category\.id: must be at most 34 characters"),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(name=" "),
                                                          update_mask=mask("name")), r"^category\.name: must not be"),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(name="x"),
                                                          update_mask=mask("name", "enabled")),
         r"^update_mask: unknown path 'enabled' \(allowed: id, name, destinations, shadow\)$"),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category=Category(name="x")),
         r"^category_id: must not be empty$"),
        ("GetCategory", admin_pb2.GetCategoryRequest(), r"^category_id: must not be empty$"),
    ],
)  # fmt: skip
async def test_malformed_fields_are_invalid_arguments_naming_the_field(
    admin: Admin, rpc: str, request_: Any, message: str
) -> None:
    await expect(Code.INVALID_ARGUMENT, admin.call(rpc, request_), message)
    assert admin.last_sequence() == 1


# -- persistence failures change nothing -----------------------------------------------------


def _refuse(error: int) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(error, "injected: " + errno.errorcode[error])

    return refuse


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        # The directory refuses the temp file (a read-only volume; root ignores chmod, so injected).
        ("mkstemp", errno.EROFS, "injected: EROFS"),
        # The disk fails the fsync of the new content.
        ("fsync", errno.EIO, "injected: EIO"),
        # The rename fails (e.g. the file became a mount point).
        ("replace", errno.EBUSY, "injected: EBUSY"),
    ],
)
async def test_a_write_that_cannot_be_persisted_is_unavailable_and_changes_nothing(
    admin: Admin, monkeypatch: pytest.MonkeyPatch, target: str, error: int, message: str
) -> None:
    before = admin.path.read_bytes()
    snap = admin.store.current
    if target == "mkstemp":
        monkeypatch.setattr(saver.tempfile, "mkstemp", _refuse(error))
    else:
        real = getattr(saver.os, target)

        def fail_on_mapping(*args: Any, **kwargs: Any) -> Any:  # SQLite's own fsyncs do not come through here
            if target == "replace" or _is_temp_of(args[0], admin.path):
                raise OSError(error, "injected: " + errno.errorcode[error])
            return real(*args, **kwargs)

        monkeypatch.setattr(saver.os, target, fail_on_mapping)
    await expect(
        Code.UNAVAILABLE,
        admin.call("DisableCategory",
                   admin_pb2.DisableCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")),
        rf"^cannot write the mapping file .*mappings\.yaml: ({message}); nothing changed$",
    )  # fmt: skip
    monkeypatch.undo()
    assert admin.path.read_bytes() == before
    assert sorted(p.name for p in admin.path.parent.iterdir() if p.name.startswith(".mappings")) == []
    assert admin.store.current is snap
    assert admin.last_sequence() == 1
    assert (await admin.get("C0002")).enabled
    # and the next write goes through
    off = await admin.call(
        "DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")
    )
    assert not off.enabled


def _is_temp_of(fd: Any, path: Path) -> bool:
    """True for a file descriptor of atomic_write's temp file next to `path`."""
    try:
        target = Path(f"/proc/self/fd/{fd}").resolve()
    except (OSError, TypeError):
        return False
    return target.parent == path.parent.resolve() and target.name.startswith(f".{path.name}.")


async def test_an_audit_failure_after_the_write_restores_the_file_and_publishes_nothing(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = admin.path.read_bytes()
    snap = admin.store.current

    def refuse(entries: Any) -> Any:
        raise errors.Unavailable("audit log: injected: database is locked")

    monkeypatch.setattr(admin.audit, "append", refuse)
    await expect(
        Code.UNAVAILABLE,
        admin.call("DeleteCategory",
                   admin_pb2.DeleteCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")),
        r"^cannot record the edit in the audit log \(audit log: injected: database is locked\); it was not "
        r"applied: the mapping file and the serving policy are as before$",
    )  # fmt: skip
    monkeypatch.undo()
    assert admin.path.read_bytes() == before
    assert admin.store.current is snap  # never published, not even for a moment: the generation did not move
    assert admin.last_sequence() == 1
    assert (await admin.get("C0002")).name == "Performance Cookies"
    await admin.call(
        "DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")
    )
    assert admin.events(after=1)[0].action == A.CATEGORY_DELETED
    assert verify(admin.audit.path).ok


async def test_a_write_whose_caller_has_gone_is_not_applied_after_its_deadline(admin: Admin) -> None:
    before = admin.path.read_bytes()
    request = admin_pb2.CreateCategoryRequest(category=Category(id="C0009", name="Late", destinations=["late"]))
    async with admin.writer._lock:  # the write path is busy (a slow reload, a stuck disk): the call queues
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin.stub.CreateCategory(request, metadata=OWNER, timeout=0.5)
        assert info.value.code() == Code.DEADLINE_EXCEEDED
    await asyncio.wait_for(admin.writer.aclose(), WAIT)  # the queued write got the lock and gave up
    assert admin.path.read_bytes() == before
    assert admin.store.current.generation == 1
    assert admin.store.current.index.mapping.category("C0009") is None
    assert admin.last_sequence() == 1


# -- the watcher and the sidecar's own writes -----------------------------------------------


async def test_own_writes_are_neither_published_nor_audited_again_by_the_watcher(admin: Admin) -> None:
    results: list[ReloadResult] = []
    changed = asyncio.Condition()

    def on_result(result: ReloadResult) -> None:
        results.append(result)

        async def notify() -> None:
            async with changed:
                changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    watcher = MappingWatcher(admin.writer, str(admin.path), debounce_ms=20, step_ms=5, settle_ms=5, retry_ms=20,
                             on_result=on_result)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(watcher.watching.wait(), WAIT)
        writes = 6
        for i in range(writes):
            await admin.call(
                "UpdateCategory",
                admin_pb2.UpdateCategoryRequest(
                    category_id="C0002", category=Category(destinations=["amplitude", f"d{i}"]),
                    update_mask=mask("destinations"),
                ),
            )  # fmt: skip
            await asyncio.sleep(0.05)  # let the watcher see some writes one by one (not a synchronisation)
        assert admin.store.current.generation == 1 + writes
        # A hand edit after them: once it is live, the watcher has handled every event before it.
        text = admin.path.read_text()
        admin.path.write_text(text.replace("name: Targeting Cookies", "name: Ads"))
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: any(r.changed for r in results)), WAIT)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
    assert admin.store.current.generation == 1 + writes + 1  # each write published once, the hand edit once
    events = admin.events(after=1)
    by_actor: dict[str, list[AuditAction]] = {}
    for e in events:
        by_actor.setdefault(e.actor, []).append(e.action)
    # each admin write: MAPPING_CREATED d_i, MAPPING_REMOVED d_{i-1} (or mixpanel), POLICY_RELOADED -- once
    assert by_actor["alice"].count(A.POLICY_RELOADED) == writes
    assert by_actor["alice"].count(A.CATEGORY_UPDATED) == writes
    assert by_actor["file:mappings.yaml"] == [A.CATEGORY_UPDATED, A.POLICY_RELOADED]
    assert [r.changed for r in results].count(True) == 1


# -- comment preservation ----------------------------------------------------------------------


def comments(text: str) -> list[str]:
    return [line[line.index("#"):].strip() for line in text.splitlines() if "#" in line]


async def test_a_commented_file_survives_20_mixed_edits_with_every_comment_intact(admin: Admin) -> None:
    original = comments(MAPPING)  # no edit below removes a commented item, so every comment must stay
    steps: list[tuple[str, Any]] = [
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0005", name="Social",
                                                                            destinations=["facebook"]))),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(name="Performance"),
                                                          update_mask=mask("name"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0004", confirm_name="Targeting Cookies")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004",
                                                          category=Category(destinations=["google-ads", "braze",
                                                                                          "criteo"]),
                                                          update_mask=mask("destinations"))),
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0006", name="Email",
                                                                            destinations=["braze", "sendgrid"],
                                                                            shadow=True))),
        ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0004")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0003", category=Category(shadow=False),
                                                          update_mask=mask("shadow"))),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0005", category=Category(id="C0050"),
                                                          update_mask=mask("id"))),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0006", confirm_name="Email")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002",
                                                          category=Category(destinations=["mixpanel", "amplitude"]),
                                                          update_mask=mask("destinations"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0003", confirm_name="Functional Cookies")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004",
                                                          category=Category(destinations=["google-ads", "braze"]),
                                                          update_mask=mask("destinations"))),
        ("CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id="C0007", name="Chat: 'support'",
                                                                            destinations=["intercom"]))),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0002", category=Category(
            id="C0002", name="Performance Cookies", destinations=["amplitude", "mixpanel"]))),
        ("EnableCategory", admin_pb2.EnableCategoryRequest(category_id="C0003")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0007", category=Category(shadow=True),
                                                          update_mask=mask("shadow"))),
        ("DeleteCategory", admin_pb2.DeleteCategoryRequest(category_id="C0050", confirm_name="Social")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0004",
                                                          category=Category(destinations=["google-ads", "braze",
                                                                                          "taboola"]),
                                                          update_mask=mask("destinations"))),
        ("DisableCategory", admin_pb2.DisableCategoryRequest(category_id="C0007", confirm_name="Chat: 'support'")),
        ("UpdateCategory", admin_pb2.UpdateCategoryRequest(category_id="C0003", category=Category(shadow=True),
                                                          update_mask=mask("shadow"))),
    ]  # fmt: skip
    assert len(steps) == 20
    for rpc, request_ in steps:
        await admin.call(rpc, request_)
        text = admin.path.read_text()
        assert [c for c in original if c in comments(text)] == original, f"a comment was lost by {rpc}"
    assert admin.store.current.generation == 21
    assert run_cli(["check", str(admin.path)]) == 0
    final = load_mapping(admin.path).mapping
    assert [c.id for c in final.categories] == ["C0002", "C0004", "C0003", "C0007"]
    assert admin.path.read_text().startswith(MAPPING.split("  # Advertising")[0])  # C0002 reverted: byte for byte
    assert verify(admin.audit.path).ok


# -- arbitrary input ---------------------------------------------------------------------------

DOCUMENTED = {
    Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.ABORTED, Code.FAILED_PRECONDITION,
}  # fmt: skip  # (an owner's write on a healthy disk; UNAVAILABLE/INTERNAL only when persisting fails)


class Background:
    """An admin sidecar on its own event loop thread, for synchronous clients (hypothesis drives them)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ready = threading.Event()
        self.admin: Admin | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by the fixture
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with admin_sidecar(self.directory) as admin:
            self.admin = admin
            self.ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=WAIT)


@pytest.fixture(scope="module")
def background() -> Iterator[Background]:
    with tempfile.TemporaryDirectory(prefix="cs-hyp-") as d:
        bg = Background(Path(d))
        bg.thread.start()
        assert bg.ready.wait(WAIT)
        if bg.error is not None:
            raise bg.error
        yield bg
        bg.stop()


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_ids = st.one_of(st.sampled_from(["C0002", "C0004", "C0003", "C0099", "", "X1"]), _text)
_names = st.one_of(st.sampled_from(["Performance Cookies", "Targeting Cookies", "Functional Cookies", "N"]), _text)
_dests = st.lists(st.one_of(st.sampled_from(["amplitude", "braze", "x", "a/b", ""]), _text), max_size=6)
_category = st.builds(
    lambda i, n, d, e, s, t: Category(id=i, name=n, destinations=d, shadow=s, etag=t, **({} if e is None else
                                                                                      {"enabled": e})),
    _ids, _names, _dests, st.one_of(st.none(), st.booleans()), st.booleans(), _text,
)  # fmt: skip
_etag = st.one_of(st.just(""), _text)
_paths = st.lists(st.one_of(st.sampled_from(["id", "name", "destinations", "shadow", "enabled", ""]), _text),
                  max_size=4)  # fmt: skip
_writes = st.one_of(
    st.tuples(st.just("CreateCategory"), st.builds(lambda c: admin_pb2.CreateCategoryRequest(category=c), _category)),
    st.tuples(st.just("UpdateCategory"), st.builds(
        lambda i, c, p, t: admin_pb2.UpdateCategoryRequest(category_id=i, category=c, update_mask=mask(*p), etag=t),
        _ids, _category, _paths, _etag)),
    st.tuples(st.just("DisableCategory"), st.builds(
        lambda i, n, t: admin_pb2.DisableCategoryRequest(category_id=i, confirm_name=n, etag=t), _ids, _names, _etag)),
    st.tuples(st.just("EnableCategory"), st.builds(
        lambda i, t: admin_pb2.EnableCategoryRequest(category_id=i, etag=t), _ids, _etag)),
    st.tuples(st.just("DeleteCategory"), st.builds(
        lambda i, n, t: admin_pb2.DeleteCategoryRequest(category_id=i, confirm_name=n, etag=t), _ids, _names, _etag)),
)  # fmt: skip


@settings(max_examples=250, deadline=None)
@given(write=_writes)
def test_arbitrary_writes_get_documented_codes_and_the_server_keeps_serving(
    background: Background, write: tuple[str, Any]
) -> None:
    admin = background.admin
    assert admin is not None and admin.sidecar.admin_address is not None
    rpc, request_ = write
    before, generation = admin.path.read_bytes(), admin.store.current.generation
    with grpc.insecure_channel(admin.sidecar.admin_address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            getattr(stub, rpc)(request_, metadata=OWNER, timeout=10)
        except grpc.RpcError as e:
            assert e.details(), "every error carries a message"
            assert e.code() in DOCUMENTED, f"{rpc}: {e.code()} {e.details()}"
            assert (admin.path.read_bytes(), admin.store.current.generation) == (before, generation)
        listed = stub.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=OWNER, timeout=10)
    assert len(listed.categories) == len(admin.store.current.index.mapping.categories)
    assert load_mapping(admin.path).mapping == admin.store.current.index.mapping


@pytest.mark.parametrize(
    ("cid", "name"),
    [
        ("C0009", "a\x7fb"),
        ("C0009", "x\ufffe"),
        ("C0009", "tab\there, \"quotes\" and 'single'"),
        ("C0009", "- dash: colon # hash"),
        ("C-09", "yes"),
        (":", "Colon"),
        ("C0009", "next\x85line"),
    ],
)
async def test_an_owner_can_create_any_valid_id_and_name(admin: Admin, cid: str, name: str) -> None:
    created = await admin.call(
        "CreateCategory", admin_pb2.CreateCategoryRequest(category=Category(id=cid, name=name, destinations=["a"]))
    )
    assert (created.id, created.name) == (cid, name)


def test_after_arbitrary_writes_the_file_checks_and_the_trail_verifies(background: Background) -> None:
    admin = background.admin
    assert admin is not None
    assert run_cli(["check", str(admin.path)]) == 0
    assert verify(admin.audit.path).ok


# The README's owner session (now the `consent-sidecar categories` verbs) and the Python admin example
# (docs/pipeline-integration.md) are run by tests/test_docs.py.
