"""The `consent-sidecar` command line: builds the parser from the verb groups and runs one verb.

A thin shell: every verb calls the core or the server and only formats what comes back. Every
`--flag` of every verb also reads `CONSENT_SIDECAR_<FLAG>` through one generic mechanism
(`flags`); a flag on the command line beats its variable. Users never see a traceback: bad
input is one argparse-style line and exit 2, an unreadable or invalid file is its error
lines and exit 1.

Adding a verb group: a module here with `register(verbs)` (its verbs via `flags.verb`, nested
ones under `flags.group`) and its handlers, then one entry in VERB_GROUPS. Its flags get
their variables, help and configuration-reference entries for free.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final, NoReturn, Protocol

from consent_sidecar import __version__
from consent_sidecar.cli import audit, categories, health, inspect, local, principals, serve, status, store, token
from consent_sidecar.cli.flags import (
    ENV_PREFIX,
    PROG,
    FlagInfo,
    Handler,
    Parser,
    Verbs,
    bind_env,
    env_var,
    flag_reference,
    resolve_env,
)
from consent_sidecar.console import cli as console

__all__ = [
    "ENV_PREFIX",
    "PROG",
    "VERB_GROUPS",
    "FlagInfo",
    "build_parser",
    "env_var",
    "flag_reference",
    "main",
    "run_cli",
]


class VerbGroup(Protocol):
    """A module of this package that adds its verbs to the command line."""

    def register(self, verbs: Verbs) -> None: ...


# In --help and configuration-reference order.
VERB_GROUPS: Final[tuple[VerbGroup, ...]] = (
    serve,
    local,  # check, test, decide
    token,  # token hash
    audit,  # audit verify, list, watch
    store,  # store push, store pull
    health,
    categories,  # categories list, get, create, update, disable, enable, delete
    status,  # status, fleet status
    principals,  # principals add, remove
    inspect,
    console,  # console (the web app itself loads only when the verb runs: the [console] extra)
)


def build_parser() -> Parser:
    """The whole command line; each flag's variable, default and help are bound once here."""
    parser = Parser(
        prog=PROG,
        description="Consent-enforcement decision point: which destinations may receive an event.",
        epilog=(
            f"Every --flag also reads {ENV_PREFIX}<FLAG> (upper case, dashes as underscores; repeated "
            "flags comma-separated); a flag on the command line beats its variable."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(title="verbs", dest="verb", metavar="VERB", required=True)
    for group in VERB_GROUPS:
        group.register(verbs)
    bind_env(parser, "")
    return parser


def run_cli(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Runs one command line and returns its exit code (never raises SystemExit)."""
    env = os.environ if environ is None else environ
    try:
        parser = build_parser()
        ns = parser.parse_args(argv)
        resolve_env(ns.parser, ns, env)
        ns.environ = env  # what is read from the environment only: CONSENT_SIDECAR_TOKEN, _ETCD_PASSWORD
        handler: Handler = ns.handler
        return handler(ns)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(str(e.code), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: exits with the verb's code."""
    try:
        code = run_cli(argv)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `consent-sidecar decide ... | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    raise SystemExit(code)
