"""Every edit is live (or rejected) within 2 s, even when the watcher polls and mtime and size say nothing.

With `WATCHFILES_FORCE_POLLING=1` (what watchfiles does on WSL and network filesystems) changes
are found by comparing mtimes: an edit within the filesystem's mtime granularity at equal size,
or a file given an older mtime, leaves them equal. The content check behind the watcher reads
and hashes the file every second, for the mapping and the principals file alike.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2
from serving import BASE, serving, until

from consent_sidecar.auth.principals import hash_token

LIVE_WITHIN = 2.0  # seconds, from the edit to the first Decide that serves it


@pytest.fixture(autouse=True)
def polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")


def same_stat_write(path: Path, text: str) -> None:
    """Rewrites `path` in place with `text` (same size) and puts its mtime back: stat shows no change."""
    st = os.stat(path)
    assert len(text.encode()) == st.st_size
    with open(path, "r+", encoding="utf-8") as f:
        f.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


async def test_edits_with_equal_size_and_mtime_go_live_within_2_s(tmp_path: Path) -> None:
    async with serving(tmp_path, mapping=BASE.replace("mixpanel", "dest-00")) as sc:
        for i in range(1, 4):
            name = f"dest-{i:02d}"
            await asyncio.to_thread(same_stat_write, sc.mapping, BASE.replace("mixpanel", name))
            edited = time.monotonic()

            async def live(name: str = name) -> bool:
                return name in await sc.known()

            await until(f"{name} live", live)
            assert time.monotonic() - edited < LIVE_WITHIN


@pytest.mark.parametrize("how", ["in place", "by rename"])
async def test_a_file_copied_in_with_an_older_mtime_goes_live_within_2_s(tmp_path: Path, how: str) -> None:
    async with serving(tmp_path) as sc:
        old = sc.mapping.stat().st_mtime_ns - 2 * 86_400 * 10**9  # `cp -p` from a file two days older
        text = BASE.replace("mixpanel", "heap-xyz")
        if how == "in place":
            await asyncio.to_thread(sc.mapping.write_text, text)
            os.utime(sc.mapping, ns=(old, old))
        else:
            new = tmp_path / "incoming.yaml"
            new.write_text(text)
            os.utime(new, ns=(old, old))
            os.replace(new, sc.mapping)
        edited = time.monotonic()

        async def live() -> bool:
            return "heap-xyz" in await sc.known()

        await until("the older file live", live)
        assert time.monotonic() - edited < LIVE_WITHIN


async def test_a_rotated_token_stops_working_within_2_s(tmp_path: Path) -> None:
    def principals(token: str) -> str:
        return f"principals:\n  - {{id: alice, role: owner, token_sha256: {hash_token(token)}}}\n"

    async with serving(tmp_path, principals=principals("alice-token")) as sc:
        old, new = (("authorization", "Bearer alice-token"),), (("authorization", "Bearer alice-rotated"),)
        await sc.admin.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=old, timeout=5)
        # The new hash in, the old one out, in the same second: same size, same mtime.
        await asyncio.to_thread(same_stat_write, sc.principals, principals("alice-rotated"))
        edited = time.monotonic()

        async def old_refused() -> bool:
            try:
                await sc.admin.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=old, timeout=5)
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                return True
            return False

        await until("the old token refused", old_refused)
        assert time.monotonic() - edited < LIVE_WITHIN
        await sc.admin.ListCategories(admin_pb2.ListCategoriesRequest(), metadata=new, timeout=5)
