"""`consent-sidecar token hash`: a bearer token read from stdin, printed as the sha256 the principals file holds.

Must never take the token from an argument or variable (it would show in `ps` and shell
history) and never echo it: from a terminal it is read without echo.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from consent_sidecar.auth.principals import hash_token
from consent_sidecar.cli.flags import PROG, Verbs, group, verb

__all__ = ["register", "run_token_hash"]


def register(verbs: Verbs) -> None:
    token = group(verbs, "token", "bearer-token helpers for the principals file")
    verb(token, "hash", run_token_hash, "read a token on stdin and print its sha256 for the principals file")


def _strip_one_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def run_token_hash(ns: argparse.Namespace) -> int:
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
        print(f"{PROG} token hash: warning: the token has leading or trailing whitespace, "
              "which clients strip from the authorization header", file=sys.stderr)
    print(hash_token(token))
    return 0
