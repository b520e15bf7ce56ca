"""structlog setup: JSON lines in production, a console renderer for humans; stdlib records (grpc's) joined in.

Owns the processor chain, the level filter and the redaction of sensitive keys. It must never
let a bearer token or a consent payload reach the output: `_redact` drops them at every level,
whatever a caller passes. Logging is configured explicitly (`configure`), never at import time.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LEVELS", "configure", "get_logger", "request_id"]

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS: Final = ("auto", "json", "console")

# Keys whose values are secrets or personal consent data: replaced, never rendered.
_SENSITIVE: Final = frozenset(
    {
        "authorization",
        "token",
        "bearer",
        "consent",
        "category_preferences",
        "categoryPreferences",
        "preferences",
        "segment_event",
        "event_json",
    }
)
_REDACTED: Final = "[redacted]"
_HANDLER_NAME: Final = "consent-sidecar"


def _redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for key in _SENSITIVE.intersection(event_dict):
        event_dict[key] = _REDACTED
    return event_dict


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configures structlog and the stdlib root logger to write one format to `stream` (stderr).

    fmt: "json" (one object per line), "console", or "auto" = console when the stream is a TTY.
    Raises ValueError for an unknown level or format.
    """
    levelno = LEVELS.get(level.lower())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        tail: list[Processor] = [renderer]  # renders exceptions itself
    else:
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info, renderer]

    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: module-level loggers must follow a reconfiguration (tests, run() called twice).
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if console else [structlog.processors.format_exc_info]),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # idempotent: one handler however often configure runs
    root.addHandler(handler)
    root.setLevel(levelno)


def get_logger(name: str, **context: Any) -> Any:
    """A structlog logger for `name` with `context` bound (e.g. policy_generation).

    Lazy: safe at import time, it renders with whatever `configure` set up when it is used.
    """
    return structlog.get_logger(name, logger_name=name, **context)


def request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The caller's `x-request-id` header, for binding to log lines about its request."""
    for key, value in metadata or ():
        if key == "x-request-id":
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None

