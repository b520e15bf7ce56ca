"""Listener and dial addresses: `host:port`, `[ipv6]:port` and `unix:/path`, parsed in one place.

Every address the sidecar reads (the CLI's flag and variable values, `--listen`,
`--admin-listen`, `--metrics-listen`, the workers' TCP ports, `health --address`) goes through
`parse_address`, so each form is accepted or refused the same way everywhere and the reason
reads the same. Pure: never opens a socket or resolves a name (a host name is checked when it
is bound or dialled, not here).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_PORT", "Address", "AddressError", "format_host_port", "parse_address"]

MAX_PORT: Final = 65535
UNIX_PREFIX: Final = "unix:"

_EXAMPLE_UNIX: Final = "unix:/run/sidecar.sock"
_EXAMPLE_IPV6: Final = "[::1]:50051"


class AddressError(ValueError):
    """A malformed address. `reason` says what is expected; the message is `invalid address 'RAW': REASON`.

    Callers that word it their own way (a listener's ListenError) reuse `raw` and `reason`.
    """

    def __init__(self, raw: str, reason: str) -> None:
        super().__init__(f"invalid address {raw!r}: {reason}")
        self.raw = raw
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address; `target` is what gRPC binds or dials."""

    raw: str  # as configured
    target: str  # "host:port", "[v6]:port" or "unix:path"
    unix_path: str | None = None  # the socket file, for unix: addresses
    host: str = ""  # TCP: the host without brackets ("::1", "127.0.0.1", "localhost")
    port: int = 0  # TCP: 0 means any free port

    @property
    def is_unix(self) -> bool:
        return self.unix_path is not None

    @property
    def family(self) -> socket.AddressFamily:
        """AF_UNIX, AF_INET6 for an IPv6 literal, else AF_INET (host names included)."""
        if self.unix_path is not None:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def bound(self, port: int) -> str:
        """The address with the real port (after binding port 0); a unix address is itself."""
        if self.unix_path is not None:
            return self.target
        return format_host_port(self.host, port)


def format_host_port(host: str, port: int) -> str:
    """`host:port`, the host bracketed when it is an IPv6 literal (`[::1]:50051`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(raw: str, *, unix: bool = True) -> Address:
    """Parses `host:port`, `[ipv6]:port` or (unless `unix` is False) `unix:/path`; raises AddressError.

    `unix:///abs/path` (the URI form) is `unix:/abs/path`; a relative `unix:name.sock` is kept
    relative. The port is 0-65535 (0: any free port, for listeners); an IPv6 host must be in
    brackets, its colons could not be told from the port's.
    """
    # The reasons read as the command line has always worded them (its flags are where users meet them).
    expected = "expected host:port or unix:/path" if unix else "expected host:port"
    if raw.startswith(UNIX_PREFIX):
        if not unix:
            raise AddressError(raw, expected)
        path = raw[len(UNIX_PREFIX) :]
        if path.startswith("//"):  # unix:///abs/path, the URI form
            path = path[2:]
        if not path:
            raise AddressError(raw, f"unix: needs a path, e.g. {_EXAMPLE_UNIX}")
        return Address(raw, f"{UNIX_PREFIX}{path}", path)
    host, sep, port = raw.rpartition(":")
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > MAX_PORT:
        raise AddressError(raw, expected)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise AddressError(raw, expected)
    elif ":" in host:
        raise AddressError(raw, f"put an IPv6 host in brackets, e.g. {_EXAMPLE_IPV6}")
    return Address(raw, raw, host=host, port=int(port))
