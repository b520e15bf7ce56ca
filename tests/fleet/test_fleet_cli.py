"""`consent-sidecar fleet status` against real etcd-backed sidecars: every member listed, a lagging one exits 1."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from etcd_cluster import EtcdCluster

from consent_sidecar.cli import run_cli
from consent_sidecar.etcd.keys import Keys
from consent_sidecar.store.fleet import FleetMember

from .conftest import MEMBER_TOKEN, etcd_client, eventually, fleet, push, settings


def cli_json(out: str) -> dict[str, object]:
    """The verb's JSON document among the in-process sidecars' log lines (they share stdout here)."""
    start = out.index("{\n")  # output.dumps indents: the document opens a line of its own
    found, _ = json.JSONDecoder().raw_decode(out[start:])
    assert isinstance(found, dict)
    return found


async def fleet_status(address: str, *flags: str) -> int:
    """The verb in a thread (it blocks on its own channel), as an operator runs it with a member's token."""

    def run() -> int:
        argv = ["fleet", "status", "--address", address, *flags]
        return run_cli(argv, environ={"CONSENT_SIDECAR_TOKEN": MEMBER_TOKEN})

    return await asyncio.to_thread(run)


async def test_fleet_status_lists_every_member_and_exits_1_only_for_one_lagging_past_max_lag(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    etcd = settings(etcd_cluster, prefix)
    revision = await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        admin = sidecars[1].config.admin_listen
        assert admin is not None
        digest = await sidecars[0].digest()

        async def both_listed() -> dict[str, object] | None:
            code = await fleet_status(admin, "--output", "json")
            data: dict[str, object] = cli_json(capsys.readouterr().out)
            members = data["members"]
            assert isinstance(members, list)
            return data if code == 0 and len(members) == 2 else None

        data = await eventually(both_listed, "both sidecars in `fleet status`")
        assert (data["store_revision"], data["store_digest"], data["lagging"]) == (revision, digest, [])
        members = data["members"]
        assert isinstance(members, list)
        assert sorted(m["member_id"] for m in members) == ["s0", "s1"]
        assert all(m["policy"]["digest"] == digest and m["connected"] for m in members)

        # A member record serving another digest, unchanged for a minute (a sidecar stuck on an old policy).
        stuck = FleetMember("stuck", "10.0.0.9:50051", 3, "0" * 64, revision - 1, True, "",
                            datetime.now(UTC) - timedelta(seconds=60))  # fmt: skip
        async with etcd_client(etcd) as (client, _):
            await client.put_value(Keys(prefix).member("stuck"), stuck.encode())
        code = await fleet_status(admin)
        out = capsys.readouterr().out
        assert code == 1
        assert "lagging: stuck has served another digest than the store for" in out
        assert "000000000000 (differs)" in out and "s0" in out and "s1" in out
        code = await fleet_status(admin, "--max-lag", "120")  # younger than the allowed lag: not lagging
        assert code == 0
