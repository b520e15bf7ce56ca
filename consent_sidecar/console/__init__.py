"""The owner console: a small web application in front of a running sidecar's AdminService.

`consent-sidecar console` (and `python -m consent_sidecar.console`) serves server-rendered pages
for workspace owners and members: categories, create, edit, turn off by typing the name, the
audit trail and policy status (docs/console.md). Every action is the AdminService call made
with the signed-in session's own token: the console holds no state beyond sessions and never
widens what a token may do.

This package's `cli` module is imported by the main command line to register the verb, so
nothing here imports the web stack (Starlette, Jinja2, uvicorn: the `console` extra) at import
time; `app` and `server` do, and are imported only when the console runs.
"""
