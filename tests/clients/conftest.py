"""Fixtures of the client tests: one real sidecar (TCP and a unix socket) serving support.MAPPING.

Named `shared_sidecar`, not `sidecar`, so the repository-wide `sidecar` fixture keeps its
meaning in this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from consent_client import ConsentClient

from .support import MAPPING, ServerThread, free_port, short_tempdir


@pytest.fixture(scope="package")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mapping") / "mappings.yaml"
    path.write_text(MAPPING)
    return path


class Sidecar:
    def __init__(self, tcp: str, unix: str, mapping: Path) -> None:
        self.tcp, self.unix, self.mapping = tcp, unix, mapping

    def target(self, transport: str) -> str:
        return self.tcp if transport == "tcp" else self.unix


@pytest.fixture(scope="package")
def shared_sidecar(mapping_file: Path) -> Iterator[Sidecar]:
    """One sidecar for the client tests, listening on TCP and on a unix socket."""
    with short_tempdir() as d:
        tcp, unix = f"127.0.0.1:{free_port()}", f"unix:{d / 'decide.sock'}"
        with ServerThread(mapping_file, [tcp, unix]):
            yield Sidecar(tcp, unix, mapping_file)


@pytest.fixture(params=["tcp", "unix"])
def target(request: pytest.FixtureRequest, shared_sidecar: Sidecar) -> str:
    return shared_sidecar.target(request.param)


@pytest.fixture
def client(target: str) -> Iterator[ConsentClient]:
    with ConsentClient(target, timeout=5.0, failure_policy="raise") as c:
        yield c
