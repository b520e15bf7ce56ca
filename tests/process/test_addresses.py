"""One parser for every address: `host:port`, `[ipv6]:port`, `unix:/path`; the same forms and reasons everywhere."""

from __future__ import annotations

import socket

import pytest

from consent_sidecar.process.addresses import Address, AddressError, format_host_port, parse_address
from consent_sidecar.process.grpc_server import ListenError, listen_address

ANY = "expected host:port or unix:/path"
TCP_ONLY = "expected host:port"
BRACKETS = "put an IPv6 host in brackets, e.g. [::1]:50051"
EMPTY_UNIX = "unix: needs a path, e.g. unix:/run/sidecar.sock"


@pytest.mark.parametrize(
    ("raw", "target", "unix_path", "host", "port", "family"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051", None, "127.0.0.1", 50051, socket.AF_INET),
        ("0.0.0.0:0", "0.0.0.0:0", None, "0.0.0.0", 0, socket.AF_INET),
        ("localhost:9000", "localhost:9000", None, "localhost", 9000, socket.AF_INET),
        ("sidecar.internal:65535", "sidecar.internal:65535", None, "sidecar.internal", 65535, socket.AF_INET),
        ("[::1]:50051", "[::1]:50051", None, "::1", 50051, socket.AF_INET6),
        ("[::]:50051", "[::]:50051", None, "::", 50051, socket.AF_INET6),
        ("[fe80::1%eth0]:1", "[fe80::1%eth0]:1", None, "fe80::1%eth0", 1, socket.AF_INET6),
        ("unix:/run/consent.sock", "unix:/run/consent.sock", "/run/consent.sock", "", 0, socket.AF_UNIX),
        ("unix:///run/consent.sock", "unix:/run/consent.sock", "/run/consent.sock", "", 0, socket.AF_UNIX),
        ("unix:relative.sock", "unix:relative.sock", "relative.sock", "", 0, socket.AF_UNIX),
    ],
)
def test_listen_addresses_parse(
    raw: str, target: str, unix_path: str | None, host: str, port: int, family: socket.AddressFamily
) -> None:
    address = parse_address(raw)
    assert (address.target, address.unix_path) == (target, unix_path)
    assert (address.raw, address.host, address.port, address.family) == (raw, host, port, family)
    assert address.is_unix is (unix_path is not None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("50051", ANY),
        ("localhost", ANY),
        (":50051", ANY),
        ("host:port", ANY),
        ("host:", ANY),
        ("host:+1", ANY),
        ("host:-1", ANY),
        ("host:\u00b2", ANY),  # a digit to str.isdigit, not a port
        ("[]:80", ANY),
        ("[::1]", ANY),
        ("", ANY),
        ("host:70000", ANY),
        ("host:99999999999999999999", ANY),
        ("::1:50051", BRACKETS),
        ("[::1:50051", BRACKETS),
        ("fe80::1", BRACKETS),
        ("unix:", EMPTY_UNIX),
        ("unix://", EMPTY_UNIX),
    ],
)
def test_malformed_addresses_say_what_is_expected(raw: str, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(raw)
    assert str(info.value) == f"invalid address {raw!r}: {reason}"
    assert (info.value.raw, info.value.reason) == (raw, reason)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("unix:/run/metrics.sock", TCP_ONLY),
        ("unix:", TCP_ONLY),
        ("nohost", TCP_ONLY),
        ("host:70000", TCP_ONLY),
        ("::1:9464", BRACKETS),
    ],
)
def test_tcp_only_addresses_refuse_unix_sockets_and_malformed_forms(raw: str, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(raw, unix=False)
    assert info.value.reason == reason


def test_tcp_only_addresses_accept_both_families() -> None:
    assert parse_address("127.0.0.1:9464", unix=False).port == 9464
    assert parse_address("[::1]:9464", unix=False).host == "::1"


def test_an_address_error_is_a_value_error() -> None:
    # Converters (argparse types) and callers catching ValueError keep working.
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    ("raw", "port", "bound"),
    [
        ("127.0.0.1:0", 41000, "127.0.0.1:41000"),
        ("[::1]:0", 41000, "[::1]:41000"),
        ("localhost:0", 7, "localhost:7"),
        ("unix:///run/s.sock", 0, "unix:/run/s.sock"),
    ],
)
def test_bound_fills_in_the_real_port(raw: str, port: int, bound: str) -> None:
    assert parse_address(raw).bound(port) == bound


def test_format_host_port_brackets_ipv6_hosts_only() -> None:
    assert format_host_port("::1", 50051) == "[::1]:50051"
    assert format_host_port("127.0.0.1", 50051) == "127.0.0.1:50051"
    assert format_host_port("localhost", 0) == "localhost:0"


def test_a_listener_address_keeps_what_was_configured() -> None:
    assert listen_address("unix:///run/s.sock") == Address("unix:///run/s.sock", "unix:/run/s.sock", "/run/s.sock")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("50051", "expected host:port"),
        ("localhost", "expected host:port"),
        (":50051", "expected host:port"),
        ("host:port", "expected host:port"),
        ("host:70000", "expected host:port"),
        ("::1:50051", "put an IPv6 host in brackets"),
        ("unix:", "unix: needs a path"),
    ],
)
def test_bad_listen_addresses_are_rejected_clearly(raw: str, why: str) -> None:
    with pytest.raises(ListenError, match=why) as info:
        listen_address(raw)
    assert repr(raw) in str(info.value)
    assert str(info.value).startswith(f"listen address {raw!r}: ")
