"""PEM files named by TLS flags: read once at start, refused with a message naming the flag.

The admin listener's TLS (`consent_sidecar.auth.gate`) and the console's HTTPS and admin
channel (`consent_sidecar.console.settings`) read their certificates and keys here, so an
unreadable or wrong file reads the same whichever flag named it; each caller raises its own
startup error type. Never logs or keeps what it read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["CERTIFICATE", "PRIVATE_KEY", "read_pem"]

CERTIFICATE: Final = b"CERTIFICATE"  # markers: what the file's BEGIN line must name
PRIVATE_KEY: Final = b"PRIVATE KEY"


def read_pem(flag: str, path: str, marker: bytes, error: Callable[[str], Exception]) -> bytes:
    """The PEM file's bytes; raises `error(message)` naming `flag` if unreadable or not holding `marker`."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"{flag} {path}: cannot read: {e.strerror or e}") from None
    if b"-----BEGIN " not in data or marker not in data:
        what = "a PEM private key" if marker == PRIVATE_KEY else "PEM certificates"
        raise error(f"{flag} {path}: does not hold {what}")
    return data
