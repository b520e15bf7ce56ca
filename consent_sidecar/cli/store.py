"""`consent-sidecar store push|pull`, and the `--etcd-*` flags every etcd-aware verb shares.

`store push F` validates F like `check`, then writes it to `<prefix>/mapping` with its audit
events in one etcd transaction and prints the new revision (with `--expect-revision N`, a
document no longer at N exits 1 and nothing is written); `store pull` prints the document
byte for byte (or writes it to `-o F`), its revision on stderr. `add_etcd_flags` and
`etcd_settings` give `serve` and `audit verify` the same flags. Must never load gRPC or the
etcd client before a verb runs, nor print a password.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Mapping
from typing import Final

from consent_sidecar.cli.flags import ENV_PREFIX, PROG, Verbs, group, verb
from consent_sidecar.etcd.settings import DEFAULT_PREFIX, EtcdSettings

__all__ = ["PASSWORD_ENV", "add_etcd_flags", "etcd_settings", "register"]

PASSWORD_ENV: Final = f"{ENV_PREFIX}ETCD_PASSWORD"  # never a flag: a flag value shows in every process listing


def _endpoints(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected URL[,URL...], e.g. http://127.0.0.1:2379")
    return items


def add_etcd_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    """The fleet store's connection flags; `required` makes --etcd-endpoints mandatory."""
    g = p.add_argument_group("fleet store (etcd)")
    g.add_argument("--etcd-endpoints", type=_endpoints, required=required, metavar="URL,...",
                   help="etcd client URLs, comma-separated (http://host:port or https://host:port); "
                        "for serve: the policy comes from etcd instead of the mapping file")  # fmt: skip
    g.add_argument("--etcd-prefix", default=DEFAULT_PREFIX, metavar="PREFIX",
                   help="the fleet's key prefix in etcd: <prefix>/mapping holds the document")
    g.add_argument("--etcd-ca", metavar="FILE", help="PEM CA bundle: connect to etcd over TLS")
    g.add_argument("--etcd-cert", metavar="FILE", help="PEM client certificate for etcd (with --etcd-key)")
    g.add_argument("--etcd-key", metavar="FILE", help="PEM private key of --etcd-cert")
    g.add_argument("--etcd-user", metavar="USER", help=f"etcd user; the password is read from {PASSWORD_ENV}")


def etcd_settings(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> EtcdSettings | None:
    """The settings the flags name, None without --etcd-endpoints; a usage error (exit 2) if they cannot work."""
    if not ns.etcd_endpoints:
        return None
    env: Mapping[str, str] = environ if environ is not None else getattr(ns, "environ", os.environ)
    settings = EtcdSettings(
        endpoints=tuple(ns.etcd_endpoints), prefix=ns.etcd_prefix, ca=ns.etcd_ca, cert=ns.etcd_cert,
        key=ns.etcd_key, user=ns.etcd_user, password=env.get(PASSWORD_ENV) or None,
    )
    problems = settings.problems()
    if problems:
        ns.parser.error("; ".join(problems))
    return settings


def register(verbs: Verbs) -> None:
    store = group(verbs, "store", "the fleet store in etcd: push and pull the mapping document")
    p = verb(store, "push", run_push,
             "validate a mapping file like `check`, write it to etcd with its audit events; prints the new revision")
    p.add_argument("file", metavar="FILE", help="the mapping file to push")
    p.add_argument("--expect-revision", type=int, metavar="N",
                   help="write only if the document is still at revision N (else exit 1, nothing written)")
    p.add_argument("--actor", metavar="NAME", help="the audit actor (default: cli:<login name>)")
    add_etcd_flags(p, required=True)
    p = verb(store, "pull", run_pull, "print the mapping document byte for byte (its revision on stderr)")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of stdout")
    add_etcd_flags(p, required=True)


class _Quiet:
    """The trail's per-event log lines have no place on a command's stdout."""

    def info(self, event: str, **kw: object) -> None:
        return None


def _actor(ns: argparse.Namespace) -> str:
    if ns.actor:
        return str(ns.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def run_push(ns: argparse.Namespace) -> int:
    settings = etcd_settings(ns)
    assert settings is not None
    path: str = ns.file
    from consent_core.errors import MappingError, SidecarError
    from consent_core.mapping_file import load_mapping

    try:
        text = load_mapping(path).text  # exactly as `check` reads and validates it (size, encoding, file kind)
    except MappingError as e:
        print(str(e), file=sys.stderr)
        return 1

    async def push() -> int:
        from consent_sidecar.audit.etcd import EtcdTrail
        from consent_sidecar.etcd.client import EtcdClient
        from consent_sidecar.etcd.keys import Keys
        from consent_sidecar.store.etcd_writer import push_document

        client = EtcdClient(settings)
        try:
            trail = EtcdTrail(client, Keys(settings.prefix), logger=_Quiet())  # stdout is the revision only
            result = await push_document(client, trail, text, _actor(ns), expect_revision=ns.expect_revision,
                                         source=path)  # fmt: skip
        finally:
            await client.close()
        print(result.revision)
        if not result.changed:
            print(f"{PROG} store push: the document at revision {result.revision} is already this file",
                  file=sys.stderr)  # fmt: skip
        return 0

    try:
        return asyncio.run(push())
    except MappingError as e:  # validated above: only a change of the core's rules since would get here
        print(str(e), file=sys.stderr)
        return 1
    except (SidecarError, OSError) as e:
        print(f"{PROG} store push: error: {e}", file=sys.stderr)
        return 1


def run_pull(ns: argparse.Namespace) -> int:
    settings = etcd_settings(ns)
    assert settings is not None
    from consent_core.errors import SidecarError

    async def pull() -> tuple[bytes | None, int]:
        from consent_sidecar.etcd.client import EtcdClient
        from consent_sidecar.etcd.keys import Keys

        client = EtcdClient(settings)
        try:
            kv, _ = await client.get(Keys(settings.prefix).mapping)
        finally:
            await client.close()
        return (None, 0) if kv is None else (kv.value, kv.mod_revision)

    try:
        data, revision = asyncio.run(pull())
    except (SidecarError, OSError) as e:
        print(f"{PROG} store pull: error: {e}", file=sys.stderr)
        return 1
    if data is None:
        print(f"{PROG} store pull: no mapping document at {settings.prefix}/mapping", file=sys.stderr)
        return 1
    if ns.output:
        try:
            with open(ns.output, "wb") as f:
                f.write(data)
        except OSError as e:
            print(f"{PROG} store pull: cannot write {ns.output}: {e.strerror or e}", file=sys.stderr)
            return 1
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    print(f"revision {revision}", file=sys.stderr)
    return 0
