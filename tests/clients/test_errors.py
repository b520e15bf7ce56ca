"""consent_client.errors: every gRPC status becomes its own client error, translated once."""

from __future__ import annotations

import grpc
import pytest
from consent_client import ClientError, ConsentError, DeadlineExceeded, InvalidArgument, ServerError, Unavailable
from consent_client import errors as client_errors

from .support import FakeRpcError


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_status_code_maps_to_its_own_error_class(code: grpc.StatusCode) -> None:
    err = client_errors.from_rpc_error(FakeRpcError(code, "why"), attempts=3)
    assert type(err) is not ConsentError
    assert err.code is code
    assert err.message == "why"
    assert err.attempts == 3
    assert str(err) == f"{code.name}: why"
    assert isinstance(err.__cause__, grpc.RpcError)
    assert isinstance(err, ClientError | ServerError)


def test_error_hierarchy_separates_caller_mistakes_from_sidecar_trouble() -> None:
    assert issubclass(InvalidArgument, ClientError)
    assert issubclass(client_errors.ResourceExhausted, ClientError)
    assert issubclass(Unavailable, ServerError)
    assert issubclass(DeadlineExceeded, ServerError)
    assert not issubclass(ConsentError, grpc.RpcError)
