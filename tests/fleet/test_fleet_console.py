"""The owner console's status page over an etcd-backed sidecar: every fleet member and what it serves."""

from __future__ import annotations

from pathlib import Path

import httpx
from console.support import sign_in
from etcd_cluster import EtcdCluster

from consent_sidecar.console.app import create_app
from consent_sidecar.console.settings import ConsoleConfig

from .conftest import MEMBER_TOKEN, eventually, fleet, push, settings


async def test_the_status_page_lists_every_member_of_the_fleet_and_what_it_serves(
    tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str
) -> None:
    etcd = settings(etcd_cluster, prefix)
    revision = await push(etcd)
    async with fleet(tmp_path, etcd, 2) as sidecars:
        admin = sidecars[0].config.admin_listen
        assert admin is not None
        app = create_app(ConsoleConfig(admin_address=admin))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as http:
            await sign_in(http, MEMBER_TOKEN)  # a member reads the fleet too

            async def page() -> str | None:
                html = (await http.get("/status")).text
                return html if 'data-member="s1"' in html and 'data-field="behind">0<' in html else None

            html = await eventually(page, "both members on the status page")
            digest = await sidecars[0].digest()
            assert 'data-member="s0"' in html
            assert f'data-field="store_revision">{revision}<' in html
            assert f'data-field="store_digest">{digest}<' in html
            for s in sidecars:
                assert s.address in html
            assert "(behind)" not in html
        await app.console.gateway.close()

