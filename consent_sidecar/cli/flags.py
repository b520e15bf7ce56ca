"""Flags and their CONSENT_SIDECAR_<FLAG> variables: one generic mechanism for every verb.

Every `--flag` of every verb also reads `CONSENT_SIDECAR_<FLAG>`, driven by the argparse
definitions themselves: `bind_env` registers each flag of a built parser with its variable
(and keeps its real default and `required` for later), `resolve_env` fills what the command
line did not give, and `flag_reference` lists every flag for the configuration reference. A
flag on the command line beats its variable; a bad value is an argparse usage error naming
the flag and, when it came from there, the variable.

Also the registration helpers every verb group uses: `verb` (a verb and its handler) and
`group` (a verb made of sub-verbs, like `token hash`). Must never know any particular verb.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "ENV_PREFIX",
    "PROG",
    "FlagInfo",
    "Handler",
    "Parser",
    "Verbs",
    "bind_env",
    "env_var",
    "flag_reference",
    "group",
    "resolve_env",
    "verb",
]

PROG: Final = "consent-sidecar"
ENV_PREFIX: Final = "CONSENT_SIDECAR_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# A verb's handler: the parsed namespace (with `parser` set to the verb's parser) -> exit code.
Handler: TypeAlias = Callable[[argparse.Namespace], int]


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


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that remembers which of its flags read environment variables."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_flags: list[_EnvFlag] = []


# What a verb group registers its verbs on (the `add_subparsers` of the root or of a group).
Verbs: TypeAlias = "argparse._SubParsersAction[Parser]"


def verb(verbs: Verbs, name: str, handler: Handler, help: str) -> Parser:
    """Adds verb `name`, run by `handler`; its flags are added to the returned parser."""
    p = verbs.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler, parser=p)
    return p


def group(verbs: Verbs, name: str, help: str) -> Verbs:
    """A verb made of sub-verbs (`token hash`, `audit verify`): add them with `verb` on the result."""
    p = verbs.add_parser(name, help=help, description=help)
    sub = p.add_subparsers(title="verbs", dest=f"{name}_verb", metavar="VERB", required=True)
    return sub


def _long_option(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return max(longs or action.option_strings, key=len)


def bind_env(parser: Parser, verb: str) -> None:
    """Registers every flag of `parser` and its sub-verbs with its variable.

    argparse keeps None as the "not on the command line" marker (the real default moves to
    FlagInfo) and stops enforcing `required` itself, so that `resolve_env` can tell a flag
    that was given from one that was not, and accept a required flag set by its variable.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if isinstance(sub, Parser):
                    bind_env(sub, f"{verb} {name}".strip())
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
    the flag and, when the value came from there, the variable. `namespace.from_env` is left
    holding the dests whose value came from a variable (a verb whose flags exclude each other
    lets the command line win).
    """
    if not isinstance(parser, Parser):
        return
    from_env: set[str] = set()
    namespace.from_env = from_env
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
            from_env.add(dest)
        elif info.required:
            missing.append(f"{info.flag} (or {info.env})")
            continue
        else:
            value = list(info.default) if isinstance(info.default, tuple) else info.default
        setattr(namespace, dest, value)
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


def flag_reference(parser: argparse.ArgumentParser | None = None) -> list[FlagInfo]:
    """Every flag of every verb, in definition order: what the configuration reference documents.

    Without `parser`, the whole `consent-sidecar` command line.
    """
    if parser is None:
        # Imported here: the package imports this module to build the parser.
        from consent_sidecar.cli import build_parser

        parser = build_parser()
    out: list[FlagInfo] = []

    def walk(p: argparse.ArgumentParser) -> None:
        if isinstance(p, Parser):
            out.extend(f.info for f in p.env_flags)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                    walk(sub)

    walk(parser)
    return out
