"""The one connection every admin verb uses: flags, channel, credentials, token, and refusals as `CODE: message`.

`add_flags` gives a verb the common flags of the operator commands (`--address`, `--token-file`,
`--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-server-name`, `--output`, `--timeout`); `AdminConnection.open` turns
them into a channel to the AdminService with the bearer token as call metadata; `run` calls a
verb's body with it and turns a refusal (`grpc.RpcError`) into one `CODE: message` line on
stderr and exit 1. Usage problems (no token, an unreadable token or certificate file, a key
without its certificate) are argparse errors, exit 2, before anything is sent.

The token comes from `--token-file` (or its variable) else `CONSENT_SIDECAR_TOKEN`; never from
a flag value (it would show in `ps` and shell history). Must never print, log or echo a
token, nor retry a write.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from consent_sidecar.cli import values
from consent_sidecar.cli.flags import ENV_PREFIX, Parser

if TYPE_CHECKING:
    import grpc

__all__ = [
    "ADMIN_ADDRESS",
    "ADMIN_TIMEOUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "TOKEN_ENV",
    "AdminConnection",
    "add_flags",
    "add_output_flag",
    "refusal",
    "run",
]

ADMIN_ADDRESS: Final = "127.0.0.1:50052"  # the admin listener the operator commands ask by default
ADMIN_TIMEOUT: Final = 10.0  # seconds one admin call may take, connecting included
TOKEN_ENV: Final = ENV_PREFIX + "TOKEN"

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1  # the sidecar refused, or could not be reached
EXIT_USAGE: Final = 2  # argparse's code: nothing was sent


def add_output_flag(p: Parser) -> None:
    p.add_argument("--output", choices=("table", "json"), default="table",
                   help="table for people, json for scripts")


def add_flags(p: Parser) -> None:
    """The common flags of every verb that calls a running sidecar's AdminService."""
    p.add_argument("--address", type=values.address, default=ADMIN_ADDRESS, metavar="ADDR",
                   help="the sidecar's admin listener (--admin-listen), host:port or unix:/path")
    p.add_argument("--token-file", metavar="FILE",
                   help=f"a file holding the bearer token (default: the token in {TOKEN_ENV})")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="PEM CA bundle to verify the admin listener's certificate: speak TLS (default: plaintext)")
    p.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate chain for mTLS (with --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument("--tls-server-name", metavar="NAME",
                   help="the name the admin listener's certificate must carry (default: the host of --address)")
    add_output_flag(p)
    p.add_argument("--timeout", type=values.positive_seconds, default=ADMIN_TIMEOUT, metavar="SECONDS",
                   help="give up (exit 1) when a call gets no answer within this many seconds, connecting included")


def refusal(e: grpc.RpcError) -> str:
    """`CODE: message`, e.g. `ABORTED: etag ...`, for a failed call."""
    import grpc

    code = e.code() if isinstance(e, grpc.Call) else None
    details = (e.details() if isinstance(e, grpc.Call) else None) or str(e)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"


def _read(parser: argparse.ArgumentParser, flag: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        parser.error(f"argument {flag}: cannot read {path}: {e.strerror or e}")


def _token(ns: argparse.Namespace, environ: Mapping[str, str]) -> str:
    parser: argparse.ArgumentParser = ns.parser
    if ns.token_file:
        raw = _read(parser, "--token-file", ns.token_file)
        try:
            token = raw.decode().strip()
        except UnicodeDecodeError:
            parser.error(f"argument --token-file: {ns.token_file} is not UTF-8 text")
        if not token:
            parser.error(f"argument --token-file: {ns.token_file} is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        parser.error(f"no token: set {TOKEN_ENV} or give --token-file FILE")
    return token


@dataclass
class AdminConnection:
    """A channel to one AdminService and the metadata every call carries; close it (or use `with`)."""

    channel: grpc.Channel
    stub: Any  # consent.v1.admin_pb2_grpc.AdminServiceStub
    metadata: tuple[tuple[str, str], ...]
    timeout: float
    address: str

    @classmethod
    def open(cls, ns: argparse.Namespace) -> AdminConnection:
        """From the common flags; a usage problem ends the command (exit 2) before any connection."""
        import grpc
        from consent.v1 import admin_pb2_grpc

        parser: argparse.ArgumentParser = ns.parser
        environ: Mapping[str, str] = getattr(ns, "environ", None) or {}
        token = _token(ns, environ)
        if (ns.tls_cert is None) != (ns.tls_key is None):
            parser.error("--tls-cert and --tls-key must be given together")
        if ns.tls_ca or ns.tls_cert:
            roots = _read(parser, "--tls-ca", ns.tls_ca) if ns.tls_ca else None
            chain = _read(parser, "--tls-cert", ns.tls_cert) if ns.tls_cert else None
            key = _read(parser, "--tls-key", ns.tls_key) if ns.tls_key else None
            creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
            options = [("grpc.ssl_target_name_override", ns.tls_server_name)] if ns.tls_server_name else []
            channel = grpc.secure_channel(ns.address, creds, options=options)
        else:
            channel = grpc.insecure_channel(ns.address)
        stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        return cls(channel, stub, (("authorization", f"Bearer {token}"),), ns.timeout, ns.address)

    def call(self, method: str, request: Any) -> Any:
        """One unary call by method name; a refusal raises grpc.RpcError (see `run`)."""
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AdminConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(ns: argparse.Namespace, body: Callable[[AdminConnection], int]) -> int:
    """Opens the connection, runs `body`, and turns a refusal into `CODE: message` on stderr, exit 1."""
    import grpc

    with AdminConnection.open(ns) as conn:
        try:
            return body(conn)
        except grpc.RpcError as e:
            print(refusal(e), file=sys.stderr)
            return EXIT_REFUSED

