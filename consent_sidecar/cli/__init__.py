"""The `consent-sidecar` command line (API.md §5): parses flags and CONSENT_SIDECAR_* variables, runs one verb.

A thin shell: every verb calls the core (mapping_file, index, event, cases) or the server and
only formats what comes back. Every `--flag` of every verb also reads `CONSENT_SIDECAR_<FLAG>`
through one generic mechanism driven by the argparse definitions themselves (see
`resolve_env` and `flag_reference`, which the configuration reference is generated from); a
flag on the command line beats its variable. Users never see a traceback: bad input is one
argparse-style line and exit 2, an unreadable or invalid file is its error lines and exit 1.

Adding a verb: write `_add_<verb>(verbs)` registering its flags with `_verb(...)` (nested
verbs like `audit verify` hang off `_group(...)`, as `token hash` does) and list it in
`build_parser`. Its flags get their variables, help and reference entries for free.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from consent_core.cases import CasesError, load_cases, reason_name, run_cases
from consent_core.errors import InvalidArgument, MappingError, SidecarError
from consent_core.event import decide_one
from consent_core.index import Decision, Index, compile
from consent_core.limits import Limits
from consent_core.mapping_file import load_mapping

from consent_sidecar import __version__
from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig

__all__ = [
    "ENV_PREFIX",
    "HEALTH_ADDRESS",
    "HEALTH_TIMEOUT",
    "PROG",
    "FlagInfo",
    "build_parser",
    "env_var",
    "flag_reference",
    "main",
    "run_cli",
]

PROG = "consent-sidecar"
ENV_PREFIX = "CONSENT_SIDECAR_"

HEALTH_ADDRESS = "127.0.0.1:50051"  # `health` asks here unless --address says otherwise
HEALTH_TIMEOUT = 3.0  # seconds `health` waits for an answer, connecting included

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

Handler = Callable[[argparse.Namespace], int]


# -- flags <-> environment variables ----------------------------------------------------------


def env_var(flag: str) -> str:
    """`--admin-listen` -> `CONSENT_SIDECAR_ADMIN_LISTEN`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class FlagInfo:
    """One flag of one verb, as the configuration reference documents it."""

    verb: str  # e.g. "serve", "token hash"
    flag: str  # e.g. "--listen"
    env: str  # e.g. "CONSENT_SIDECAR_LISTEN"
    help: str
    default: object  # the value used when neither the flag nor its variable is given
    required: bool  # must come from the flag or its variable
    repeated: bool  # may be given several times; the variable is comma-separated
    boolean: bool  # a switch; the variable reads 1/0, true/false, yes/no, on/off
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class _EnvFlag:
    action: argparse.Action
    info: FlagInfo


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that remembers which of its flags read environment variables."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_flags: list[_EnvFlag] = []


def _long_option(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return max(longs or action.option_strings, key=len)


def _bind_env(parser: _Parser, verb: str) -> None:
    """Registers every flag of `parser` and its sub-verbs with its variable.

    argparse keeps None as the "not on the command line" marker (the real default moves to
    FlagInfo) and stops enforcing `required` itself, so that `resolve_env` can tell a flag
    that was given from one that was not, and accept a required flag set by its variable.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if isinstance(sub, _Parser):
                    _bind_env(sub, f"{verb} {name}".strip())
            continue
        if not action.option_strings or isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        boolean = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        repeated = isinstance(action, argparse._AppendAction)
        if not (boolean or repeated or type(action) is argparse._StoreAction) or action.nargs not in (None, 0):
            raise TypeError(f"{verb} {_long_option(action)}: unsupported flag kind for environment variables")
        flag = _long_option(action)
        default = action.default
        if repeated:
            default = tuple(default or ())
        info = FlagInfo(
            verb=verb,
            flag=flag,
            env=env_var(flag),
            help=action.help or "",
            default=default,
            required=action.required,
            repeated=repeated,
            boolean=boolean,
            metavar=action.metavar if isinstance(action.metavar, str) else None,
            choices=tuple(str(c) for c in action.choices) if action.choices is not None else None,
        )
        parser.env_flags.append(_EnvFlag(action, info))
        action.default = None
        action.required = False
        action.help = f"{info.help} [env {info.env}]{_default_note(info)}"


def _default_note(info: FlagInfo) -> str:
    if info.required:
        return " (required)"
    if info.boolean or info.default is None or info.default == ():
        return ""
    shown = ",".join(str(v) for v in info.default) if isinstance(info.default, tuple) else str(info.default)
    return f" (default: {shown})"


def _convert(action: argparse.Action, raw: str) -> object:
    """One string to the flag's value as argparse would convert it; ValueError carries argparse's wording."""
    convert = action.type
    if convert is None:
        value: object = raw
    else:
        if not callable(convert):
            raise TypeError(f"{_long_option(action)}: type must be callable")
        try:
            value = convert(raw)
        except argparse.ArgumentTypeError as e:
            raise ValueError(str(e)) from None
        except (TypeError, ValueError):
            name = getattr(convert, "__name__", repr(convert))
            raise ValueError(f"invalid {name} value: {raw!r}") from None
    if action.choices is not None and value not in action.choices:
        options = ", ".join(repr(c) for c in action.choices)
        raise ValueError(f"invalid choice: {value!r} (choose from {options})")
    return value


def _from_env(flag: _EnvFlag, raw: str) -> object:
    info = flag.info
    if info.boolean:
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            on = word in _TRUE
            return on if isinstance(flag.action, argparse._StoreTrueAction) else not on
        raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")
    if info.repeated:
        items = [item.strip() for item in raw.split(",")]
        if any(not item for item in items):
            raise ValueError(f"empty item in comma-separated list {raw!r}")
        return [_convert(flag.action, item) for item in items]
    return _convert(flag.action, raw)


def resolve_env(parser: argparse.ArgumentParser, namespace: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fills every flag of `parser` not given on the command line from its variable, else its default.

    A variable set to "" counts as unset. Errors go through `parser.error` (exit 2), naming
    the flag and, when the value came from there, the variable.
    """
    if not isinstance(parser, _Parser):
        return
    missing: list[str] = []
    for flag in parser.env_flags:
        dest = flag.action.dest
        if getattr(namespace, dest, None) is not None:
            continue  # given on the command line: it wins
        info = flag.info
        raw = environ.get(info.env, "")
        if raw:
            try:
                value = _from_env(flag, raw)
            except ValueError as e:
                parser.error(f"argument {info.flag} (from {info.env}): {e}")
        elif info.required:
            missing.append(f"{info.flag} (or {info.env})")
            continue
        else:
            value = list(info.default) if isinstance(info.default, tuple) else info.default
        setattr(namespace, dest, value)
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


def flag_reference(parser: argparse.ArgumentParser | None = None) -> list[FlagInfo]:
    """Every flag of every verb, in definition order: what the configuration reference documents."""
    root = parser if parser is not None else build_parser()
    out: list[FlagInfo] = []

    def walk(p: argparse.ArgumentParser) -> None:
        if isinstance(p, _Parser):
            out.extend(f.info for f in p.env_flags)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                    walk(sub)

    walk(root)
    return out


# -- value types (each raises ArgumentTypeError with a message naming what is expected) -------


def _address(value: str) -> str:
    """`host:port` or `unix:/path`."""
    if value.startswith("unix:"):
        if len(value) > len("unix:"):
            return value
        raise argparse.ArgumentTypeError(f"invalid address {value!r}: unix: needs a path, e.g. unix:/run/sidecar.sock")
    return _tcp_address(value)


def _tcp_address(value: str) -> str:
    """`host:port`; an IPv6 host in brackets (`[::1]:50051`)."""
    host, sep, port = value.rpartition(":")
    bad = argparse.ArgumentTypeError(f"invalid address {value!r}: expected host:port or unix:/path")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise bad
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise argparse.ArgumentTypeError(f"invalid address {value!r}: put an IPv6 host in brackets, e.g. [::1]:50051")
    return value


def _http_address(value: str) -> str:
    if value.startswith("unix:"):
        raise argparse.ArgumentTypeError(f"invalid address {value!r}: expected host:port")
    return _tcp_address(value)


def _workers(value: str) -> int:
    """A positive number of worker processes, or `auto` (one per CPU this process may use)."""
    if value.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    bad = argparse.ArgumentTypeError(f"invalid worker count {value!r}: expected a positive integer or auto")
    try:
        n = int(value)
    except ValueError:
        raise bad from None
    if n < 1:
        raise bad
    return n


def _fraction(value: str) -> float:
    bad = argparse.ArgumentTypeError(f"invalid fraction {value!r}: expected a number from 0 to 1, e.g. 0.01")
    try:
        f = float(value)
    except ValueError:
        raise bad from None
    if not 0.0 <= f <= 1.0:
        raise bad
    return f


def _rate(value: str) -> float | None:
    from consent_sidecar.observe.decision_log import parse_rate

    try:
        return parse_rate(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a positive integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a positive integer")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: expected seconds, e.g. 5 or 0.5") from None
    if not math.isfinite(s) or s < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: expected a non-negative number of seconds")
    return s


def _positive_seconds(value: str) -> float:
    s = _seconds(value)
    if s == 0:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: expected more than 0 seconds")
    return s


def _preferences(value: str) -> dict[str, bool]:
    """A categoryPreferences JSON object: `{"C0001": true, "C0004": false}`."""
    try:
        prefs = json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(prefs, dict):
        raise argparse.ArgumentTypeError(
            'must be a JSON object of category id to true/false, e.g. \'{"C0001": true}\''
        )
    for k, v in prefs.items():
        if not isinstance(v, bool):
            raise argparse.ArgumentTypeError(f"category {k!r} must be true or false, got {json.dumps(v)}")
    return prefs


# -- verbs -------------------------------------------------------------------------------------


def _verb(verbs: argparse._SubParsersAction[_Parser], name: str, handler: Handler, help: str) -> _Parser:
    p = verbs.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler, parser=p)
    return p


def _group(verbs: argparse._SubParsersAction[_Parser], name: str, help: str) -> argparse._SubParsersAction[_Parser]:
    """A verb made of sub-verbs (`token hash`, later `audit verify`)."""
    p = verbs.add_parser(name, help=help, description=help)
    sub = p.add_subparsers(title="verbs", dest=f"{name}_verb", metavar="VERB", required=True)
    return sub


def _add_serve(verbs: argparse._SubParsersAction[_Parser]) -> None:
    d = ServeConfig(mappings="")
    lim = Limits()
    p = _verb(verbs, "serve", _serve, "run the sidecar")
    p.add_argument("--mappings", required=True, metavar="FILE", help="the mapping file (watched and hot-reloaded)")
    p.add_argument(
        "--listen", action="append", type=_address, metavar="ADDR", default=list(d.listen),
        help="DecisionService address, host:port or unix:/path; repeat for several",
    )
    p.add_argument("--admin-listen", type=_address, metavar="ADDR", help="AdminService address (default: no admin API)")
    p.add_argument("--principals", metavar="FILE", help="admin identities (principals file) for --admin-listen")
    p.add_argument("--admin-tls-cert", metavar="FILE",
                   help="PEM certificate chain: serve --admin-listen over TLS (with --admin-tls-key)")
    p.add_argument("--admin-tls-key", metavar="FILE", help="PEM private key of --admin-tls-cert")
    p.add_argument("--admin-client-ca", metavar="FILE",
                   help="PEM CA bundle: --admin-listen requires client certificates it signed (mTLS)")
    p.add_argument("--audit-db", metavar="FILE", help="audit trail SQLite database (default: next to the mapping file)")
    p.add_argument("--metrics-listen", type=_http_address, metavar="ADDR",
                   help="Prometheus metrics address, host:port (default: no metrics endpoint)")
    p.add_argument("--workers", type=_workers, default=d.workers, metavar="N|auto",
                   help="decision processes sharing the TCP --listen ports; auto = one per available CPU")
    p.add_argument("--decision-log", metavar="FILE|-",
                   help="write sampled decisions as JSON lines to FILE (appended) or - (stdout); default: none")
    p.add_argument("--decision-log-sample", type=_fraction, default=d.decision_log_sample, metavar="FRACTION",
                   help="fraction of decisions considered for the decision log, 0-1")
    p.add_argument("--decision-log-rate", type=_rate, default=d.decision_log_rate, metavar="N[/s|/m|/h]",
                   help="decision-log lines per second at most, all processes together; 0 = unlimited")
    p.add_argument("--grace-period", type=_seconds, default=d.grace_period, metavar="SECONDS",
                   help="how long SIGTERM waits for in-flight RPCs")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default=d.log_format,
                   help="auto = console on a terminal, JSON otherwise")
    p.add_argument("--log-level", type=str.lower, choices=("debug", "info", "warning", "error", "critical"),
                   default=d.log_level, help="minimum level logged")
    limits = p.add_argument_group("request limits")
    for flag, default, what in (
        ("--max-destinations", lim.max_destinations, "destinations per request"),
        ("--max-batch", lim.max_batch, "entries per DecideBatch"),
        ("--max-destination-id-bytes", lim.max_destination_id_bytes, "bytes per destination id"),
        ("--max-event-bytes", lim.max_event_bytes, "bytes per segment_event"),
        ("--max-event-depth", lim.max_event_depth, "JSON nesting of a segment_event (the event object is 1)"),
        ("--max-message-bytes", lim.max_message_bytes, "bytes per gRPC message"),
    ):
        limits.add_argument(flag, type=_positive_int, default=default, metavar="N", help=f"maximum {what}")


def _add_check(verbs: argparse._SubParsersAction[_Parser]) -> None:
    p = _verb(verbs, "check", _check, "validate a mapping file")
    p.add_argument("file", metavar="F", help="the mapping file")


def _add_test(verbs: argparse._SubParsersAction[_Parser]) -> None:
    p = _verb(verbs, "test", _test, "run decision cases against a mapping file")
    p.add_argument("file", metavar="F", help="the mapping file")
    p.add_argument("cases", metavar="CASES", help="the cases file (YAML)")


def _add_decide(verbs: argparse._SubParsersAction[_Parser]) -> None:
    p = _verb(verbs, "decide", _decide, "make one decision locally and print it as JSON")
    p.add_argument("--mappings", required=True, metavar="FILE", help="the mapping file")
    p.add_argument("--consent", type=_preferences, metavar="JSON",
                   help="the categoryPreferences object, e.g. '{\"C0001\": true}' (default: no consent object)")
    p.add_argument("--explain", action="store_true", help="list each destination's decision")
    p.add_argument("destinations", nargs="*", metavar="DEST", help="destinations to decide (default: every known one)")


def _add_token(verbs: argparse._SubParsersAction[_Parser]) -> None:
    token = _group(verbs, "token", "bearer-token helpers for the principals file")
    _verb(token, "hash", _token_hash, "read a token on stdin and print its sha256 for the principals file")


def _add_audit(verbs: argparse._SubParsersAction[_Parser]) -> None:
    audit = _group(verbs, "audit", "audit trail tools")
    p = _verb(audit, "verify", _audit_verify,
              "verify the audit trail's hash chain; exit 0 when intact, 1 naming the first broken sequence")
    p.add_argument("--audit-db", required=True, metavar="FILE", help="the audit trail SQLite database")


def _add_health(verbs: argparse._SubParsersAction[_Parser]) -> None:
    p = _verb(verbs, "health", _health,
              "ask a running sidecar's grpc.health.v1 Check; exit 0 only when it answers SERVING")
    p.add_argument("--address", type=_address, default=HEALTH_ADDRESS, metavar="ADDR",
                   help="the sidecar's address, host:port or unix:/path (plaintext: a --listen address)")
    p.add_argument("--timeout", type=_positive_seconds, default=HEALTH_TIMEOUT, metavar="SECONDS",
                   help="give up (exit 1) when no answer comes within this many seconds, connecting included")


_VERBS: tuple[Callable[[argparse._SubParsersAction[_Parser]], None], ...] = (
    _add_serve, _add_check, _add_test, _add_decide, _add_token, _add_audit, _add_health,
)


def build_parser() -> _Parser:
    """The whole command line; each flag's variable, default and help are bound once here."""
    parser = _Parser(
        prog=PROG,
        description="Consent-enforcement decision point: which destinations may receive an event.",
        epilog=(
            f"Every --flag also reads {ENV_PREFIX}<FLAG> (upper case, dashes as underscores; repeated "
            "flags comma-separated); a flag on the command line beats its variable."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(title="verbs", dest="verb", metavar="VERB", required=True)
    for add in _VERBS:
        add(verbs)
    _bind_env(parser, "")
    return parser


# -- handlers ----------------------------------------------------------------------------------


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def _load(path: str) -> Index | None:
    """The compiled mapping, or None after printing why it could not be loaded."""
    try:
        return compile(load_mapping(path).mapping)
    except MappingError as e:  # reading problems included
        _err(str(e))
    except OSError as e:  # not expected from load_mapping; still never a traceback
        _err(f"{path}: cannot read the mapping file: {e.strerror or e}")
    return None


def _serve(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    listen = tuple(ns.listen)
    for i, addr in enumerate(listen):
        if addr in listen[:i]:
            parser.error(f"argument --listen: {addr} given twice")
    if ns.admin_listen is not None and ns.admin_listen in listen:
        parser.error(f"argument --admin-listen: {ns.admin_listen} is also a --listen address")
    if ns.metrics_listen is not None and ns.metrics_listen in (*listen, ns.admin_listen):
        parser.error(f"argument --metrics-listen: {ns.metrics_listen} is also a gRPC address")
    config = ServeConfig(
        mappings=ns.mappings,
        listen=listen,
        admin_listen=ns.admin_listen,
        principals=ns.principals,
        admin_tls_cert=ns.admin_tls_cert,
        admin_tls_key=ns.admin_tls_key,
        admin_client_ca=ns.admin_client_ca,
        audit_db=ns.audit_db,
        metrics_listen=ns.metrics_listen,
        workers=ns.workers,
        decision_log=ns.decision_log,
        decision_log_sample=ns.decision_log_sample,
        decision_log_rate=ns.decision_log_rate,
        grace_period=ns.grace_period,
        log_format=ns.log_format,
        log_level=ns.log_level,
        limits=Limits(
            max_destination_id_bytes=ns.max_destination_id_bytes,
            max_destinations=ns.max_destinations,
            max_batch=ns.max_batch,
            max_event_bytes=ns.max_event_bytes,
            max_event_depth=ns.max_event_depth,
            max_message_bytes=ns.max_message_bytes,
        ),
    )
    # Imported here so that every other verb works without the server's dependencies loaded.
    from consent_sidecar.process.server import run

    try:
        return run(config)
    except (OSError, SidecarError) as e:
        _err(f"{PROG} serve: error: {e}")
        return 1


def _check(ns: argparse.Namespace) -> int:
    index = _load(ns.file)
    if index is None:
        return 1
    categories = len(index.mapping.categories)
    print(f"{ns.file}: ok ({categories} categories, {len(index.known_destinations)} destinations, "
          f"digest {index.digest[:12]})")
    return 0


def _test(ns: argparse.Namespace) -> int:
    index = _load(ns.file)
    if index is None:
        return 1
    try:
        cases = load_cases(ns.cases)
    except CasesError as e:  # reading problems included
        _err(str(e))
        return 1
    results = run_cases(index, cases)
    for r in results:
        print(f"PASS {r.case.name}" if r.passed else f"FAIL {r.case.name}: {r.why}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def _decision_json(d: Decision) -> dict[str, object]:
    return {
        "destination": d.destination,
        "allowed": d.allowed,
        "reason": reason_name(d.reason),
        "required_categories": list(d.required_categories),
        "missing_categories": list(d.missing_categories),
        "shadow_missing_categories": list(d.shadow_missing_categories),
    }


def _decide(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    index = _load(ns.mappings)
    if index is None:
        return 1
    try:
        outcome = decide_one(index, Limits(), ns.destinations, preferences=ns.consent, explain=ns.explain)
    except InvalidArgument as e:
        parser.error(str(e))
    out = {
        "allowed": list(outcome.allowed),
        "blocked": list(outcome.blocked),
        "decisions": [_decision_json(d) for d in outcome.decisions or ()] if ns.explain else [],
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _strip_one_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def _token_hash(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    stdin = sys.stdin
    if stdin is None:
        parser.error("no stdin to read the token from")
    if stdin.isatty():  # typed by a person: do not echo it
        token = getpass.getpass("token: ")
    else:
        buffer = getattr(stdin, "buffer", None)
        raw = buffer.read() if buffer is not None else stdin.read().encode()
        try:
            token = _strip_one_newline(raw).decode()
        except UnicodeDecodeError:
            parser.error("the token on stdin is not UTF-8 text")
    if not token:
        parser.error("empty token on stdin")
    if token != token.strip():
        _err(f"{PROG} token hash: warning: the token has leading or trailing whitespace, "
             "which clients strip from the authorization header")
    print(hash_token(token))
    return 0


def _audit_verify(ns: argparse.Namespace) -> int:
    # Imported here: only this verb needs the audit store.
    from consent_sidecar.audit import AuditError, verify

    path: str = ns.audit_db
    try:
        result = verify(path)  # opened read-only: safe while a sidecar appends to it
    except AuditError as e:  # missing, not an audit database, unreadable
        _err(f"{PROG} audit verify: error: {e}")
        return 1
    if not result.ok:
        _err(f"{path}: {result}")
        return 1
    print(f"{path}: {result}")
    return 0


def _health(ns: argparse.Namespace) -> int:
    # Imported here: only this verb and serve need gRPC.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address: str = ns.address
    timeout: float = ns.timeout
    status_names = health_pb2.HealthCheckResponse.ServingStatus
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            details = (e.details() if isinstance(e, grpc.Call) else None) or str(e)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                why = f"no answer within {timeout:g}s (--timeout)"
            elif code == grpc.StatusCode.UNAVAILABLE:
                why = f"cannot reach it: {details}"
            elif code == grpc.StatusCode.UNIMPLEMENTED:
                why = "it does not serve grpc.health.v1.Health (not a consent sidecar address?)"
            else:
                why = f"{code.name if code is not None else 'error'}: {details}"
            _err(f"{PROG} health: {address}: {why}")
            return 1
    name = status_names.Name(answer.status) if answer.status in status_names.values() else str(answer.status)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        _err(f"{PROG} health: {address}: {name} (starting, draining or unhealthy)")
        return 1
    print(f"{address}: {name}")
    return 0


# -- entry points ------------------------------------------------------------------------------


def run_cli(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Runs one command line and returns its exit code (never raises SystemExit)."""
    env = os.environ if environ is None else environ
    try:
        parser = build_parser()
        ns = parser.parse_args(argv)
        resolve_env(ns.parser, ns, env)
        handler: Handler = ns.handler
        return handler(ns)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        _err(str(e.code))
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
