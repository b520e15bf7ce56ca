"""The console's frozen configuration, and the TLS material it names, read once at start.

Built by `consent_sidecar.console.cli` from flags (and CONSENT_SIDECAR_* variables); passed
explicitly to the app and the server, never read from globals. `check()` refuses inconsistent
TLS flags naming the flag, before anything listens. Must never hold or log a bearer token:
tokens live only in sessions (consent_sidecar.console.sessions).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

import grpc

from consent_sidecar.process.addresses import AddressError, parse_address
from consent_sidecar.process.pem import CERTIFICATE, PRIVATE_KEY, read_pem

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_SESSION_IDLE",
    "ConsoleConfig",
    "ConsoleConfigError",
    "admin_channel_credentials",
    "is_loopback",
    "split_host_port",
]

DEFAULT_LISTEN: Final = "127.0.0.1:8080"
DEFAULT_SESSION_IDLE: Final = 30 * 60.0  # seconds without a request before a session ends


class ConsoleConfigError(Exception):
    """A flag combination or a file the console cannot use; the message names the flag."""


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Everything `consent-sidecar console` needs."""

    admin_address: str  # the sidecar's --admin-listen: host:port or unix:/path
    listen: str = DEFAULT_LISTEN  # where the console serves, host:port
    admin_tls_ca: str | None = None  # PEM CA bundle: speak TLS to the admin listener, trusting it
    admin_tls_cert: str | None = None  # PEM client certificate for an mTLS admin listener
    admin_tls_key: str | None = None  # its private key
    tls_cert: str | None = None  # PEM certificate chain: serve the console over HTTPS
    tls_key: str | None = None  # its private key
    session_idle: float = DEFAULT_SESSION_IDLE
    admin_timeout: float = 10.0  # seconds each AdminService call may take
    max_sessions: int = 10_000  # sessions kept in memory; the least recently used goes first
    log_format: str = "auto"
    log_level: str = "info"

    @property
    def https(self) -> bool:
        """True when the console itself serves TLS (cookies then carry `Secure`)."""
        return self.tls_cert is not None

    def check(self) -> None:
        """Raises ConsoleConfigError for a flag without its partner or an unreadable file."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConsoleConfigError("--tls-cert and --tls-key must be given together")
        if (self.admin_tls_cert is None) != (self.admin_tls_key is None):
            raise ConsoleConfigError("--admin-tls-cert and --admin-tls-key must be given together")
        if self.session_idle <= 0:
            raise ConsoleConfigError("--session-idle must be more than 0 seconds")
        split_host_port(self.listen)
        for flag, path, marker in (
            ("--tls-cert", self.tls_cert, CERTIFICATE),
            ("--tls-key", self.tls_key, PRIVATE_KEY),
        ):
            if path is not None:
                read_pem(flag, path, marker, ConsoleConfigError)
        admin_channel_credentials(self)


def admin_channel_credentials(config: ConsoleConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials for the admin channel (with a client certificate for mTLS), or None for plaintext.

    Any of the three --admin-tls-* flags means TLS; without --admin-tls-ca the system's roots are trusted.
    """
    ca, cert, key = config.admin_tls_ca, config.admin_tls_cert, config.admin_tls_key
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise ConsoleConfigError("--admin-tls-cert and --admin-tls-key must be given together")
    roots = read_pem("--admin-tls-ca", ca, CERTIFICATE, ConsoleConfigError) if ca is not None else None
    chain = read_pem("--admin-tls-cert", cert, CERTIFICATE, ConsoleConfigError) if cert is not None else None
    private = read_pem("--admin-tls-key", key, PRIVATE_KEY, ConsoleConfigError) if key is not None else None
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=private, certificate_chain=chain)


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) as (host, port), through the sidecar's one address parser;
    ConsoleConfigError naming --listen otherwise (the console serves TCP only)."""
    try:
        parsed = parse_address(address, unix=False)
    except AddressError as e:
        raise ConsoleConfigError(f"--listen {address!r}: {e.reason}") from None
    return parsed.host, parsed.port


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: only this machine can reach the console there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
