"""A mapping file that is not a regular file, or too large: a mapping error at once, from every reader.

`check`, `serve` and the watcher each meet a FIFO (which would block `open()` until a writer
comes), a device, or a file over `--max-mapping-bytes`; none of them blocks or reads past the
limit, the last good policy keeps serving, and hot reload goes on afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2
from serving import BASE, OWNER, WAIT, serving, start, until

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import EXIT_MAPPING

CLI = [sys.executable, "-c", "import sys; from consent_sidecar.cli import main; sys.exit(main())"]


def test_check_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    # Without a writer on the FIFO a plain open() never returns: the timeout is the test.
    done = subprocess.run([*CLI, "check", str(fifo)], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 1
    assert done.stderr.strip() == f"{fifo}: cannot read the mapping file: it is a FIFO (named pipe), not a regular file"


def test_check_refuses_a_file_over_max_mapping_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(BASE)
    done = subprocess.run([*CLI, "check", "--max-mapping-bytes", "64", str(path)], capture_output=True, text=True,
                          timeout=WAIT)  # fmt: skip
    assert done.returncode == 1
    assert f"is {len(BASE):,} bytes: over the limit of 64 bytes (--max-mapping-bytes)" in done.stderr
    ok = subprocess.run([*CLI, "check", str(path)], capture_output=True, text=True, timeout=WAIT)
    assert ok.returncode == 0, ok.stderr


async def test_serve_refuses_a_fifo_mapping_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "mappings.yaml"
    os.mkfifo(fifo)
    task, stop, err = await start(ServeConfig(mappings=str(fifo), listen=(f"unix:{tmp_path}/d.sock",)))
    try:
        assert task.done(), "serve blocked on the FIFO"
        assert task.result() == EXIT_MAPPING
        assert "cannot read the mapping file: it is a FIFO (named pipe), not a regular file" in err.getvalue()
    finally:
        stop.set()
        if not task.done():
            task.cancel()


async def test_a_mapping_replaced_by_a_fifo_is_a_reload_error_and_nothing_blocks(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        sc.mapping.unlink()
        os.mkfifo(sc.mapping)

        async def fifo_reported() -> admin_pb2.PolicyStatus | None:
            s = await sc.status()
            return s if "FIFO" in s.last_error else None

        status = await until("the FIFO reported", fifo_reported)
        assert status.last_error == (
            f"{sc.mapping}: cannot read the mapping file: it is a FIFO (named pipe), not a regular file"
        )
        assert status.policy.generation == 1
        create = admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C9", name="New", destinations=["x"]))
        with pytest.raises(grpc.aio.AioRpcError) as info:  # answered, not stuck behind a blocked open()
            await sc.admin.CreateCategory(create, metadata=OWNER, timeout=10)
        assert info.value.code() == grpc.StatusCode.ABORTED, info.value.details()
        assert sorted(await sc.known()) == ["amplitude", "mixpanel"]  # the last good policy serves on
        sc.mapping.unlink()
        sc.mapping.write_text(BASE.replace("mixpanel", "heap"))

        async def live() -> bool:
            return "heap" in await sc.known()

        await until("the good file live again", live)
    # leaving `serving` asserts a clean stop within the wait: SIGTERM's drain never hangs on the file


async def test_an_oversized_hand_edit_is_rejected_naming_the_limit_and_hot_reload_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        big = tmp_path / "big.tmp"
        with open(big, "wb") as f:
            f.truncate(50 << 20)  # 50 MB, sparse: what once stopped hot reload for good
        os.replace(big, sc.mapping)

        async def rejected() -> admin_pb2.PolicyStatus | None:
            s = await sc.status()
            return s if s.last_error else None

        status = await until("the oversized file rejected", rejected)
        assert status.last_error == (
            f"{sc.mapping}: the mapping file is 52,428,800 bytes: over the limit of 16,777,216 bytes "
            "(--max-mapping-bytes)"
        )
        assert sorted(await sc.known()) == ["amplitude", "mixpanel"]
        sc.mapping.write_text(BASE.replace("mixpanel", "heap"))

        async def live() -> bool:
            return "heap" in await sc.known()

        await until("the next good edit live: the watcher survived", live)
        assert (await sc.status()).last_error == ""


async def test_max_mapping_bytes_applies_to_reloads(tmp_path: Path) -> None:
    async with serving(tmp_path, max_mapping_bytes=len(BASE) + 10) as sc:
        await asyncio.to_thread(sc.mapping.write_text, BASE.replace("mixpanel", "a-much-longer-destination-id"))

        async def rejected() -> admin_pb2.PolicyStatus | None:
            s = await sc.status()
            return s if s.last_error else None

        status = await until("the edit over the limit rejected", rejected)
        assert f"over the limit of {len(BASE) + 10:,} bytes (--max-mapping-bytes)" in status.last_error
