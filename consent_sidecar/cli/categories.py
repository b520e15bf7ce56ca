"""`consent-sidecar categories list|get|create|update|disable|enable|delete`: the owner's category edits.

Each verb is one or two AdminService calls through `consent_sidecar.cli.connection` (its
flags, token, TLS and `CODE: message` refusals). `update` without `--etag` reads the category
first and sends the etag it read, so a concurrent change is refused (ABORTED), never
overwritten. `disable` and `delete` without `--confirm-name` ask a person at a terminal to
type the name, as the product's UI does, and send what was typed (the sidecar compares it);
without a terminal they are a usage error and nothing is sent. Must never compare the typed
name itself (the sidecar is the one judge), nor send a write it was not asked for.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

from consent_sidecar.cli import connection, output
from consent_sidecar.cli.connection import AdminConnection
from consent_sidecar.cli.flags import PROG, Verbs, group, verb

__all__ = ["PROMPT", "register"]

PROMPT: Final = "Type the category name to confirm: "
_HEADERS = ("ID", "NAME", "ENABLED", "SHADOW", "DESTINATIONS")


def register(verbs: Verbs) -> None:
    cats = group(verbs, "categories", "list, read and change consent categories on a running sidecar (AdminService)")

    p = verb(cats, "list", run_list, "list every category")
    connection.add_flags(p)

    p = verb(cats, "get", run_get, "show one category, its etag included")
    p.add_argument("id", metavar="ID", help="the category id, e.g. C0004")
    connection.add_flags(p)

    p = verb(cats, "create", run_create, "create a category (enabled unless --disabled)")
    p.add_argument("--id", required=True, metavar="ID", help="the CMP's category id, e.g. C0005")
    p.add_argument("--name", required=True, metavar="NAME", help="the category's unique name")
    p.add_argument("--destination", action="append", required=True, metavar="D",
                   help="a destination it gates; repeat for several")
    p.add_argument("--disabled", action="store_true", help="create it turned off")
    p.add_argument("--shadow", action="store_true", help="create it in dry run: evaluated, never blocks")
    connection.add_flags(p)

    p = verb(cats, "update", run_update,
             "change a category's id, name, destinations or shadow; a concurrent change is refused (ABORTED)")
    p.add_argument("id", metavar="ID", help="the category to change")
    p.add_argument("--new-id", metavar="ID", help="rename its id")
    p.add_argument("--name", metavar="NAME", help="rename it")
    p.add_argument("--destination", action="append", metavar="D",
                   help="replace its destinations with these; repeat for several")
    p.add_argument("--add-destination", action="append", metavar="D", help="add a destination; repeatable")
    p.add_argument("--remove-destination", action="append", metavar="D", help="remove a destination; repeatable")
    p.add_argument("--shadow", dest="shadow", action="store_true", default=None, help="put it in dry run")
    p.add_argument("--no-shadow", dest="shadow", action="store_false", default=None, help="make it enforce")
    p.add_argument("--etag", metavar="E", help="the etag you read (default: read it now, then send it)")
    connection.add_flags(p)

    for name, runner, what in (("disable", run_disable, "turn a category off (it stops being enforced)"),
                               ("delete", run_delete, "delete a category")):
        p = verb(cats, name, runner, f"{what}; confirms by its exact name, typed at a terminal or --confirm-name")
        p.add_argument("id", metavar="ID", help="the category")
        p.add_argument("--confirm-name", metavar="NAME",
                       help="the category's exact name (default: typed at the terminal; required without one)")
        p.add_argument("--etag", metavar="E", help="refuse (ABORTED) if the category changed since this etag")
        connection.add_flags(p)

    p = verb(cats, "enable", run_enable, "turn a category back on")
    p.add_argument("id", metavar="ID", help="the category")
    p.add_argument("--etag", metavar="E", help="refuse (ABORTED) if the category changed since this etag")
    connection.add_flags(p)


# ------------------------------------------------------------------------------ printing


def _show(ns: argparse.Namespace, categories: list[Any], *, one: bool = False) -> None:
    if ns.output == "json":
        data = [output.category_json(c) for c in categories]
        print(output.dumps(data[0] if one else data))
        return
    rows = [(c.id, c.name, c.enabled if c.HasField("enabled") else True, c.shadow, list(c.destinations))
            for c in categories]
    print(output.table(_HEADERS, rows))


def _done(ns: argparse.Namespace, what: str, category: Any) -> int:
    if ns.output == "json":
        print(output.dumps(output.category_json(category)))
    else:
        print(f"{what} {category.id} ({category.name!r}); etag {category.etag}")
    return connection.EXIT_OK


# ------------------------------------------------------------------------------ reads


def run_list(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def body(conn: AdminConnection) -> int:
        _show(ns, list(conn.call("ListCategories", admin_pb2.ListCategoriesRequest()).categories))
        return connection.EXIT_OK

    return connection.run(ns, body)


def run_get(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def body(conn: AdminConnection) -> int:
        _show(ns, [conn.call("GetCategory", admin_pb2.GetCategoryRequest(category_id=ns.id))], one=True)
        return connection.EXIT_OK

    return connection.run(ns, body)


# ------------------------------------------------------------------------------ writes


def run_create(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    category = admin_pb2.Category(
        id=ns.id, name=ns.name, destinations=ns.destination, enabled=not ns.disabled, shadow=ns.shadow
    )

    def body(conn: AdminConnection) -> int:
        return _done(ns, "created", conn.call("CreateCategory", admin_pb2.CreateCategoryRequest(category=category)))

    return connection.run(ns, body)


def run_update(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2
    from google.protobuf.field_mask_pb2 import FieldMask

    parser: argparse.ArgumentParser = ns.parser
    editing_list = bool(ns.add_destination or ns.remove_destination)
    if ns.destination and editing_list:
        parser.error("give --destination (the whole list) or --add-/--remove-destination, not both")
    paths = [path for path, given in (
        ("id", ns.new_id is not None), ("name", ns.name is not None),
        ("destinations", bool(ns.destination) or editing_list), ("shadow", ns.shadow is not None),
    ) if given]
    if not paths:
        parser.error("nothing to change: give --new-id, --name, --destination, --add-destination, "
                     "--remove-destination, --shadow or --no-shadow")

    def body(conn: AdminConnection) -> int:
        etag = ns.etag
        destinations = list(ns.destination or ())
        if etag is None or editing_list:
            # Read first: the etag sent is the one read, so a change made since is refused, never overwritten.
            current = conn.call("GetCategory", admin_pb2.GetCategoryRequest(category_id=ns.id))
            etag = current.etag if etag is None else etag
            if editing_list:
                edited = _edited(ns, list(current.destinations))
                if edited is None:
                    return connection.EXIT_REFUSED
                destinations = edited
        category = admin_pb2.Category(
            id=ns.new_id or "", name=ns.name or "", destinations=destinations, shadow=bool(ns.shadow)
        )
        request = admin_pb2.UpdateCategoryRequest(
            category_id=ns.id, category=category, update_mask=FieldMask(paths=paths), etag=etag
        )
        return _done(ns, "updated", conn.call("UpdateCategory", request))

    return connection.run(ns, body)


def _edited(ns: argparse.Namespace, destinations: list[str]) -> list[str] | None:
    """The destination list after --add-/--remove-destination; None (after saying why) for a bad removal."""
    for d in ns.remove_destination or ():
        if d not in destinations:
            print(f"{PROG} categories update: {ns.id} has no destination {d!r} (it has: "
                  f"{', '.join(destinations)}); nothing sent", file=sys.stderr)
            return None
        destinations = [x for x in destinations if x != d]
    for d in ns.add_destination or ():
        if d not in destinations:
            destinations.append(d)
    return destinations


def run_enable(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def body(conn: AdminConnection) -> int:
        request = admin_pb2.EnableCategoryRequest(category_id=ns.id, etag=ns.etag or "")
        return _done(ns, "enabled", conn.call("EnableCategory", request))

    return connection.run(ns, body)


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirmation(ns: argparse.Namespace, verb_name: str) -> None:
    """Without --confirm-name and without a terminal: a usage error, before anything is sent."""
    if ns.confirm_name is None and not _interactive():
        parser: argparse.ArgumentParser = ns.parser
        parser.error(f"{verb_name} needs the category's name: give --confirm-name NAME "
                     "(or run it at a terminal to type it)")


def _ask(conn: AdminConnection, ns: argparse.Namespace, verb_name: str) -> tuple[str, str] | None:
    """(name typed, etag read) from the person at the terminal, or None if they gave up (EOF, Ctrl-C)."""
    from consent.v1 import admin_pb2

    # Read it to show what is about to change; its etag then guards against a change made meanwhile.
    current = conn.call("GetCategory", admin_pb2.GetCategoryRequest(category_id=ns.id))
    print(f"{verb_name.capitalize()} {current.id} ({current.name!r}, {len(current.destinations)} destinations)?",
          file=sys.stderr)
    sys.stderr.write(PROMPT)
    sys.stderr.flush()
    try:
        typed = sys.stdin.readline()
    except KeyboardInterrupt:
        typed = ""
    if not typed:
        print(f"\n{PROG} categories {verb_name}: nothing typed; nothing sent", file=sys.stderr)
        return None
    return typed.rstrip("\r\n"), current.etag


def _confirmed_write(ns: argparse.Namespace, verb_name: str, send: Any) -> int:
    _confirmation(ns, verb_name)

    def body(conn: AdminConnection) -> int:
        name, etag = ns.confirm_name, ns.etag or ""
        if name is None:
            asked = _ask(conn, ns, verb_name)
            if asked is None:
                return connection.EXIT_REFUSED
            name, read_etag = asked
            etag = etag or read_etag
        result: int = send(conn, name, etag)
        return result

    return connection.run(ns, body)


def run_disable(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def send(conn: AdminConnection, name: str, etag: str) -> int:
        request = admin_pb2.DisableCategoryRequest(category_id=ns.id, confirm_name=name, etag=etag)
        return _done(ns, "disabled", conn.call("DisableCategory", request))

    return _confirmed_write(ns, "disable", send)


def run_delete(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def send(conn: AdminConnection, name: str, etag: str) -> int:
        request = admin_pb2.DeleteCategoryRequest(category_id=ns.id, confirm_name=name, etag=etag)
        gone = conn.call("DeleteCategory", request)
        if ns.output == "json":
            print(output.dumps({"deleted": ns.id, "policy": output.version_json(gone.policy)}))
        else:
            print(f"deleted {ns.id}; policy generation {gone.policy.generation}")
        return connection.EXIT_OK

    return _confirmed_write(ns, "delete", send)
