"""The categories pages: list, create, edit, turn off / delete by typing the name, turn on.

Each write is one AdminService call with the session's token; a refusal the owner can fix
(INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION) re-renders the form with what was
typed and the API's message beside its field; a stale etag (ABORTED) re-renders with the
category's current values and never retries on its own. Successful writes redirect (303)
to /categories with a one-line confirmation. Must never send a write the owner did not
submit, nor drop the etag the page was rendered with.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from consent.v1 import admin_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from consent_sidecar.console.admin import AdminError, CategoryFields
from consent_sidecar.console.security import path_id
from consent_sidecar.console.sessions import Session
from consent_sidecar.console.views.common import (
    category_url,
    console_of,
    error_page,
    form_of,
    form_text,
    owners_only,
    page,
    redirect,
    render,
)

__all__ = [
    "confirm_form",
    "create",
    "delete",
    "disable",
    "edit_form",
    "enable",
    "index",
    "new_form",
    "update",
]

Code = grpc.StatusCode
_FORM_ERRORS: Final = frozenset({Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION})
_CONFIRM: Final = {"disable": "Disable", "delete": "Delete"}


def _fields(form: FormData) -> CategoryFields:
    lines = form_text(form, "destinations").splitlines()
    return CategoryFields(
        id=form_text(form, "id").strip(),
        name=form_text(form, "name").strip(),
        destinations=tuple(d for d in (line.strip() for line in lines) if d),
    )


def _values(c: admin_pb2.Category | CategoryFields) -> dict[str, str]:
    return {"id": c.id, "name": c.name, "destinations": "\n".join(c.destinations)}


def _category_id(request: Request) -> str:
    return path_id(str(request.path_params["category_id"]))


async def _listing(request: Request, session: Session, status: int = 200, **context: Any) -> Response:
    listing = await console_of(request).gateway.list_categories(session.token)
    return render(
        request, "categories.html", {"categories": listing.categories, "policy": listing.policy, **context},
        session=session, status=status,
    )


# -- the list ---------------------------------------------------------------------------------


@page
async def index(request: Request, session: Session) -> Response:
    return await _listing(request, session)


# -- create -----------------------------------------------------------------------------------


def _form(
    request: Request, session: Session, *, mode: str, values: dict[str, str], etag: str = "",
    category_id: str = "", error: AdminError | None = None, notice: str = "", yours: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    action = "/categories" if mode == "create" else category_url(category_id)
    return render(
        request, "category_form.html",
        {
            "mode": mode, "action": action, "values": values, "etag": etag, "category_id": category_id,
            "summary": error.message if error is not None else "",
            "errors": error.field_messages() if error is not None else {},
            "notice": notice, "yours": yours,
        },
        session=session, status=status,
    )


@page
async def new_form(request: Request, session: Session) -> Response:
    return owners_only(request, session) or _form(
        request, session, mode="create", values={"id": "", "name": "", "destinations": ""}
    )


@page
async def create(request: Request, session: Session) -> Response:
    fields = _fields(await form_of(request))
    try:
        created = await console_of(request).gateway.create_category(session.token, fields)
    except AdminError as e:
        if e.code not in _FORM_ERRORS:
            raise
        return _form(request, session, mode="create", values=_values(fields), error=e, status=e.http_status)
    n = len(created.destinations)
    session.flash = f"Created {created.name} ({created.id}) with {n} destination{'' if n == 1 else 's'}."
    return redirect("/categories")


# -- edit -------------------------------------------------------------------------------------


@page
async def edit_form(request: Request, session: Session) -> Response:
    refused = owners_only(request, session)
    if refused is not None:
        return refused
    category_id = _category_id(request)
    current = await console_of(request).gateway.get_category(session.token, category_id)
    return _form(request, session, mode="edit", values=_values(current), etag=current.etag, category_id=category_id)


@page
async def update(request: Request, session: Session) -> Response:
    gateway = console_of(request).gateway
    category_id = _category_id(request)
    form = await form_of(request)
    fields, etag = _fields(form), form_text(form, "etag")
    try:
        saved = await gateway.update_category(session.token, category_id, fields, etag)
    except AdminError as e:
        if e.code == Code.ABORTED:
            return await _conflict(request, session, category_id, fields, e)
        if e.code not in _FORM_ERRORS:
            raise
        return _form(
            request, session, mode="edit", values=_values(fields), etag=etag, category_id=category_id, error=e,
            status=e.http_status,
        )
    session.flash = f"Saved {saved.name} ({saved.id})."
    return redirect("/categories")


async def _conflict(
    request: Request, session: Session, category_id: str, fields: CategoryFields, error: AdminError
) -> Response:
    """409: the form again, with the category as it is now (and its etag); what was typed is only shown."""
    try:
        current = await console_of(request).gateway.get_category(session.token, category_id)
    except AdminError as e:
        if e.code != Code.NOT_FOUND:
            raise
        return error_page(
            request, session, 409, "Changed by someone else",
            f"{error.message}. It has since been renamed or deleted: nothing was saved.",
        )
    return _form(
        request, session, mode="edit", values=_values(current), etag=current.etag, category_id=category_id,
        notice="Someone changed this category after you opened it. Its current values are below; "
        "your changes were not saved.",
        yours=_values(fields), status=409,
    )


# -- turn off, delete (typed name), turn on -----------------------------------------------------


async def _confirm(
    request: Request, session: Session, action: str, category_id: str, *, typed: str = "", error: str = "",
    status: int = 200,
) -> Response:
    """The categories page with the "Disable {name}?" / "Delete {name}?" dialog over it."""
    listing = await console_of(request).gateway.list_categories(session.token)
    target = next((c for c in listing.categories if c.id == category_id), None)
    if target is None:
        return error_page(request, session, 404, "Not found", f"category_id: no category {category_id!r}")
    dialog = {"action": action, "verb": _CONFIRM[action], "category": target, "typed": typed, "error": error}
    return render(
        request, "categories.html",
        {"categories": listing.categories, "policy": listing.policy, "dialog": dialog, "modal": True},
        session=session, status=status,
    )


def _confirm_form(action: str) -> Any:
    @page
    async def endpoint(request: Request, session: Session) -> Response:
        return owners_only(request, session) or await _confirm(request, session, action, _category_id(request))

    endpoint.__name__ = f"{action}_form"
    return endpoint


confirm_form = {action: _confirm_form(action) for action in _CONFIRM}


async def _typed_write(request: Request, session: Session, action: str) -> Response:
    gateway = console_of(request).gateway
    category_id = _category_id(request)
    form = await form_of(request)
    typed, etag = form_text(form, "confirm_name"), form_text(form, "etag")
    try:
        if action == "disable":
            done = await gateway.disable_category(session.token, category_id, typed, etag)
            session.flash = f"Disabled {done.name} ({done.id}): it no longer gates its destinations."
        else:
            await gateway.delete_category(session.token, category_id, typed, etag)
            session.flash = f"Deleted {typed} ({category_id})."
    except AdminError as e:
        if e.code in _FORM_ERRORS:
            return await _confirm(request, session, action, category_id, typed=typed, error=e.message,
                                  status=e.http_status)
        if e.code == Code.ABORTED:
            return await _confirm(
                request, session, action, category_id, status=409,
                error=f"{e.message}. Check the category as it is now and confirm again.",
            )
        raise
    return redirect("/categories")


@page
async def disable(request: Request, session: Session) -> Response:
    return await _typed_write(request, session, "disable")


@page
async def delete(request: Request, session: Session) -> Response:
    return await _typed_write(request, session, "delete")


@page
async def enable(request: Request, session: Session) -> Response:
    category_id = _category_id(request)
    etag = form_text(await form_of(request), "etag")
    try:
        done = await console_of(request).gateway.enable_category(session.token, category_id, etag)
    except AdminError as e:
        if e.code != Code.ABORTED:
            raise
        return await _listing(request, session, status=409, error=f"{e.message}. Nothing was changed.")
    session.flash = f"Enabled {done.name} ({done.id})."
    return redirect("/categories")
