"""The trail's head is exported: what a monitor keeps to notice the trail being cut later.

`serve --metrics-listen` scrapes show `consent_sidecar_audit_head_sequence` and
`consent_sidecar_audit_head_info{sequence, hash}` of the newest event, as the trail grows.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

from consent.v1 import admin_pb2
from serving import OWNER, serving, until


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    return text


def head_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("consent_sidecar_audit_head")]


async def test_the_audit_head_is_a_gauge_and_an_info_metric_that_follow_every_append(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a free port for the metrics endpoint (it takes host:port only)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    async with serving(tmp_path, metrics_listen=address) as sc:
        first = (await sc.events())[-1]
        lines = head_lines(await asyncio.to_thread(scrape, address))
        assert "consent_sidecar_audit_head_sequence 1.0" in lines
        assert f'consent_sidecar_audit_head_info{{hash="{first.hash}",sequence="1"}} 1.0' in lines
        await sc.admin.CreateCategory(
            admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C9", name="N", destinations=["n"])),
            metadata=OWNER, timeout=10,
        )  # fmt: skip
        last = (await sc.events())[-1]

        async def moved() -> list[str] | None:
            now = head_lines(await asyncio.to_thread(scrape, address))
            return now if f"consent_sidecar_audit_head_sequence {float(last.sequence)}" in now else None

        lines = await until("the head metric at the new event", moved)
        info = [line for line in lines if line.startswith("consent_sidecar_audit_head_info{")]
        assert info == [f'consent_sidecar_audit_head_info{{hash="{last.hash}",sequence="{last.sequence}"}} 1.0']
        assert re.fullmatch(r"[0-9a-f]{64}", last.hash)
