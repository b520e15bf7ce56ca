"""Flag value types: each turns one string into a value or raises ArgumentTypeError saying what is expected.

Used as argparse `type=` by every verb group, and through it for the CONSENT_SIDECAR_*
variables too (flags.resolve_env converts a variable exactly as the flag). Addresses go
through the process's one parser (consent_sidecar.process.addresses). Must never read files,
the environment or the network.
"""

from __future__ import annotations

import argparse
import json
import math
import os

from consent_sidecar.process.addresses import AddressError, parse_address

__all__ = [
    "address",
    "byte_rate",
    "byte_size",
    "fraction",
    "positive_int",
    "positive_seconds",
    "preferences",
    "rate",
    "seconds",
    "sequence",
    "tcp_address",
    "workers",
]


def address(value: str) -> str:
    """`host:port`, `[ipv6]:port` or `unix:/path` (kept as given)."""
    try:
        parse_address(value)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def tcp_address(value: str) -> str:
    """`host:port` or `[ipv6]:port`, no unix socket (the metrics endpoint is HTTP over TCP)."""
    try:
        parse_address(value, unix=False)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def workers(value: str) -> int:
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


def fraction(value: str) -> float:
    bad = argparse.ArgumentTypeError(f"invalid fraction {value!r}: expected a number from 0 to 1, e.g. 0.01")
    try:
        f = float(value)
    except ValueError:
        raise bad from None
    if not 0.0 <= f <= 1.0:
        raise bad
    return f


def rate(value: str) -> float | None:
    """`N`, `N/s`, `N/m` or `N/h` decision-log lines; 0 = unlimited (None)."""
    from consent_sidecar.observe.decision_log import parse_rate

    try:
        return parse_rate(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def replay_rate(value: str) -> float:
    """`N`, `N/s`, `N/m` or `N/h` audit events per second; 0 = unlimited.

    0.0, not None, for unlimited: the flags machinery takes a None value for a flag not given
    and would put the default back.
    """
    from consent_sidecar.observe.decision_log import parse_rate

    try:
        return parse_rate(value) or 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid rate {value!r}: expected N, N/s, N/m or N/h (0 = unlimited)"
        ) from None


_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def byte_size(value: str) -> int:
    """A number of bytes, optionally with a binary unit: `33554432`, `32MiB`, `512KiB`, `1G`; 0 allowed."""
    t = value.strip().lower().replace(" ", "")
    digits = t.rstrip("kmgib")
    unit = t[len(digits):]
    if not digits.isdigit() or unit not in _BYTE_UNITS:
        raise argparse.ArgumentTypeError(
            f"invalid size {value!r}: expected a number of bytes, optionally with KiB, MiB or GiB (e.g. 32MiB)"
        )
    return int(digits) * _BYTE_UNITS[unit]


def byte_rate(value: str) -> int | None:
    """Bytes per second, `1MiB`, `1MiB/s` or `65536`; 0 or `unlimited` = no limit (None)."""
    t = value.strip().lower()
    if t in ("unlimited", "none"):
        return None
    if t.endswith("/s"):
        t = t[:-2]
    n = byte_size(t)
    return n or None


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a positive integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a positive integer")
    return n


def seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: expected seconds, e.g. 5 or 0.5") from None
    if not math.isfinite(s) or s < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: expected a non-negative number of seconds")
    return s


def positive_seconds(value: str) -> float:
    s = seconds(value)
    if s == 0:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: expected more than 0 seconds")
    return s


def preferences(value: str) -> dict[str, bool]:
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


def sequence(value: str) -> int:
    """An audit sequence number: a non-negative integer."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid sequence {value!r}: expected a non-negative integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid sequence {value!r}: expected a non-negative integer")
    return n
