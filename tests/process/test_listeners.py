"""What each listener serves: DecisionService on --listen only, AdminService on --admin-listen only; all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.errors import StartupError

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.grpc_server import ListenError
from consent_sidecar.process.listeners import Sidecar
from consent_sidecar.store.policy import PolicyStore

if TYPE_CHECKING:
    from conftest import StartSidecar


async def test_decision_service_is_served_only_on_the_listen_addresses(start_sidecar: StartSidecar) -> None:
    async with start_sidecar(admin=True) as sc:
        assert sc.admin is not None
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await decision_pb2_grpc.DecisionServiceStub(sc.admin).Decide(decision_pb2.DecideRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_malformed_address_builds_no_listener(mapping_path: Path) -> None:
    store = PolicyStore()
    store.load_initial(str(mapping_path))
    sidecar = Sidecar(ServeConfig(mappings=str(mapping_path), listen=("127.0.0.1:0", "nohost")), store)
    with pytest.raises(ListenError, match=r"^listen address 'nohost': expected host:port") as info:
        await sidecar.start()
    assert isinstance(info.value, StartupError)
    assert sidecar.addresses == ()


async def test_no_listen_address_is_refused(mapping_path: Path) -> None:
    store = PolicyStore()
    store.load_initial(str(mapping_path))
    with pytest.raises(ListenError, match="no --listen address given"):
        await Sidecar(ServeConfig(mappings=str(mapping_path), listen=()), store).start()
