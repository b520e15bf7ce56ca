"""The `console` verb: its flags (defined once, in `add_flags`), its registration and its handler.

`register(verbs)` adds `console` to the main command line's sub-parsers (which bind each flag
to its CONSENT_SIDECAR_<FLAG> variable); `python -m consent_sidecar.console` runs that same
verb through the main command line. `run(namespace)`
serves until SIGTERM (exit 0) or SIGINT (130). Importing this module imports no web stack, so
the main CLI works without the `console` extra; `run` says how to install it when it is missing.
Must never take a token as a flag or variable: tokens are typed into the sign-in page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from consent_sidecar.cli.flags import Verbs, resolve_env, verb
from consent_sidecar.cli.values import address, tcp_address
from consent_sidecar.console.settings import (
    DEFAULT_LISTEN,
    DEFAULT_SESSION_IDLE,
    ConsoleConfig,
    ConsoleConfigError,
)

__all__ = ["DESCRIPTION", "add_flags", "config_from", "main", "parse", "register", "run"]

DESCRIPTION: Final = "serve the owner console (web) in front of a running sidecar's AdminService"
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}
_INSTALL: Final = "pip install 'consent-sidecar[console]'"


def _duration(value: str) -> float:
    """Seconds, or a number with s, m or h: `1800`, `30m`, `1h`."""
    raw = value.strip().lower()
    scale = _UNITS.get(raw[-1:], None)
    number = raw[:-1] if scale is not None else raw
    bad = argparse.ArgumentTypeError(
        f"invalid duration {value!r}: expected seconds or a number with s, m or h, e.g. 30m"
    )
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise bad from None
    if not seconds > 0 or seconds == float("inf"):
        raise bad
    return seconds


def add_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of `console`; the one definition both entry points use."""
    p.add_argument("--admin-address", required=True, type=address, metavar="ADDR",
                   help="the sidecar's AdminService (its --admin-listen), host:port or unix:/path")
    p.add_argument("--listen", type=tcp_address, default=DEFAULT_LISTEN, metavar="ADDR",
                   help="where the console serves, host:port (keep it on loopback unless it serves HTTPS)")
    p.add_argument("--admin-tls-ca", metavar="FILE",
                   help="PEM CA bundle that signed the admin listener's certificate: talk to it over TLS")
    p.add_argument("--admin-tls-cert", metavar="FILE",
                   help="PEM client certificate for an admin listener that requires mTLS (with --admin-tls-key)")
    p.add_argument("--admin-tls-key", metavar="FILE", help="PEM private key of --admin-tls-cert")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="PEM certificate chain: serve the console over HTTPS (with --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument("--session-idle", type=_duration, default=int(DEFAULT_SESSION_IDLE), metavar="DURATION",
                   help="sign a session out after this long without a request: seconds, or e.g. 30m, 1h")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="auto = console on a terminal, JSON otherwise")
    p.add_argument("--log-level", type=str.lower, choices=("debug", "info", "warning", "error", "critical"),
                   default="info", help="minimum level logged")


def register(verbs: Verbs) -> None:
    """Adds the `console` verb to the main command line (which binds each flag to its variable)."""
    add_flags(verb(verbs, "console", run, DESCRIPTION))


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """`consent-sidecar console ARGV` parsed as the main command line parses it, variables included."""
    from consent_sidecar.cli import build_parser  # the package imports this module: not at import time

    ns = build_parser().parse_args(["console", *argv])
    resolve_env(ns.parser, ns, os.environ if environ is None else environ)
    return ns


def config_from(ns: argparse.Namespace) -> ConsoleConfig:
    return ConsoleConfig(
        admin_address=ns.admin_address,
        listen=ns.listen,
        admin_tls_ca=ns.admin_tls_ca,
        admin_tls_cert=ns.admin_tls_cert,
        admin_tls_key=ns.admin_tls_key,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        session_idle=float(ns.session_idle),
        log_format=ns.log_format,
        log_level=ns.log_level,
    )


def _err(line: str) -> None:
    print(f"consent-sidecar console: {line}", file=sys.stderr)


def run(ns: argparse.Namespace) -> int:
    """The verb's handler: serve until SIGTERM (0) or SIGINT (130); 1 with a message if it cannot start."""
    config = config_from(ns)
    try:
        config.check()
    except ConsoleConfigError as e:
        _err(str(e))
        return 2
    try:
        from consent_sidecar.console import server
    except ImportError as e:
        _err(f"the console needs its extra ({e.name} is missing): {_INSTALL}")
        return 1
    from consent_sidecar.observe import logs

    try:
        sock = server.bind(config.listen)
    except OSError as e:
        _err(f"--listen {config.listen}: cannot listen: {e.strerror or e}")
        return 1
    logs.configure(config.log_level, config.log_format)
    # uvicorn drains on SIGTERM, then re-raises it to whatever handler was there before: make
    # that one harmless, so a drained shutdown exits 0 (SIGINT still ends in KeyboardInterrupt).
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        asyncio.run(server.serve(config, sock))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m consent_sidecar.console [flags]`: `consent-sidecar console [flags]`; returns the exit code."""
    from consent_sidecar.cli import run_cli

    return run_cli(["console", *(sys.argv[1:] if argv is None else argv)])
