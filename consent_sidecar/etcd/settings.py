"""How to reach a fleet's etcd (the `--etcd-*` flags), checked without loading gRPC.

Owns `EtcdSettings`, the default prefix and the endpoint URL rules; the CLI and `ServeConfig`
import this module alone, so verbs that never talk to etcd never load the client. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "EtcdSettings", "parse_endpoint"]

DEFAULT_PREFIX: Final = "/consent-sidecar/default"
DEFAULT_TIMEOUT: Final = 2.0  # seconds per call attempt: long enough for a leader election, short for a stall


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where the fleet store is and how to reach it (the `--etcd-*` flags)."""

    endpoints: tuple[str, ...]  # URLs as given: http://host:port, https://host:port (or bare host:port)
    prefix: str = DEFAULT_PREFIX
    ca: str | None = None  # PEM CA bundle: TLS to etcd
    cert: str | None = None  # PEM client certificate (with key): mTLS to etcd
    key: str | None = None
    user: str | None = None  # etcd user; its password comes from CONSENT_SIDECAR_ETCD_PASSWORD
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT

    def problems(self) -> list[str]:
        """Why these settings cannot work, worded for the command line (empty when fine)."""
        out: list[str] = []
        if not self.endpoints:
            out.append("--etcd-endpoints: at least one URL is needed")
        for url in self.endpoints:
            try:
                parse_endpoint(url)
            except ValueError as e:
                out.append(f"--etcd-endpoints: {e}")
        if not self.prefix.startswith("/") or self.prefix.endswith("/") or "//" in self.prefix:
            out.append(f"--etcd-prefix: {self.prefix!r} must start with '/', not end with '/', and have no empty part")
        if (self.cert is None) != (self.key is None):
            out.append("--etcd-cert and --etcd-key go together")
        if self.user is not None and not self.password:
            out.append("--etcd-user needs its password in CONSENT_SIDECAR_ETCD_PASSWORD")
        return out


def parse_endpoint(url: str) -> tuple[str, bool]:
    """`http://h:p` -> ("h:p", False); `https://h:p` -> ("h:p", True); a bare `h:p` is http."""
    raw = url.strip()
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{url!r} is not an etcd client URL (http://host:port or https://host:port)")
    try:
        port = parts.port or 2379
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https"


