"""AdminService writes over real gRPC: who may write, read-your-writes, and every status code a write can end with."""

from __future__ import annotations

from typing import Any

import pytest
from consent.v1 import admin_pb2, decision_pb2
from consent_core.mapping_file import load_mapping

from .admin_support import MAPPING, MEMBER, OWNER, READS, WRITES, A, Admin, Category, Code, expect, mask

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
