"""The core's exception hierarchy; translated to gRPC status codes only in consent_sidecar.services.status.

Every message is printable, valid UTF-8 text: what came from outside (a consent key, a YAML
scalar) is shown with its unprintable characters escaped (`printable`), so a lone surrogate
or an escape sequence can neither make a message unencodable nor rewrite a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

_SHORT_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(c: str) -> str:
    if c in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[c]
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def printable(text: str) -> str:
    """`text` with each character `str.isprintable` refuses written as an escape: a control
    character as `\\x1b`, a lone surrogate or a zero-width space as `\\ud800` / `\\u200b`.

    The result is valid UTF-8 and shows on one line. Printable text is returned as it is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a hand-edited document (mapping, cases, principals), located where possible."""

    path: str  # e.g. "categories[1].id"; "" for the document itself
    message: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def format(self, source: str | None = None) -> str:
        """`file:line:column: path: message`, dropping the parts that are unknown; always printable."""
        where = []
        if source:
            where.append(source)
        if self.line is not None:
            where.append(str(self.line))
            if self.column is not None:
                where.append(str(self.column))
        head = ":".join(where)
        body = f"{self.path}: {self.message}" if self.path else self.message
        return printable(f"{head}: {body}" if head else body)


class SidecarError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidArgument(SidecarError):
    """Malformed input; the message names the offending field.

    `key`: a key the request itself chose (a consent category id, an `integrations` key),
    appended to `field` as `field.key`, escaped. `redacted` is the message with that key
    replaced by `*`: what a log line may carry (request content never goes to the logs).
    """

    def __init__(self, field: str, message: str, *, key: str | None = None) -> None:
        shown = field if key is None else f"{field}.{key}"
        super().__init__(printable(f"{shown}: {message}"))
        self.field = printable(shown)
        self.redacted = str(self) if key is None else printable(f"{field}.*: {message}")


class DocumentError(SidecarError):
    """A hand-edited document broke one or more rules; carries every problem found, not just the first.

    Each document has its own subclass, so a caller catches exactly the document it read.
    """

    def __init__(self, problems: Iterable[Problem], source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(p.format(self.source) for p in self.problems)


class MappingError(DocumentError):
    """A mapping document (file, or an admin edit of one) broke one or more rules."""


class CasesError(DocumentError):
    """A malformed cases file (`consent-sidecar test`)."""


class PrincipalsError(DocumentError):
    """A malformed principals file (admin identities)."""


class NotFound(SidecarError):
    """The named category (or other object) does not exist."""


class AlreadyExists(SidecarError):
    """An id or name is already taken."""


class Aborted(SidecarError):
    """A stale etag, or the file changed on disk since it was loaded: re-read and retry."""


class FailedPrecondition(SidecarError):
    """The request is well-formed but the state does not allow it (e.g. wrong confirm_name)."""


class Unauthenticated(SidecarError):
    """No valid bearer token."""


class PermissionDenied(SidecarError):
    """The principal's role does not allow this call."""


class Unavailable(SidecarError):
    """A write could not be persisted; nothing changed."""


class ResourceExhausted(SidecarError):
    """A limit was exceeded (message size, slow watcher buffer)."""


class StartupError(SidecarError):
    """The sidecar could not start: a listener, TLS file, metrics endpoint or worker failed."""
