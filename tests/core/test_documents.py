"""The one reader of every hand-edited document: each document's own error type, every failure located.

Mapping, cases and principals files are read, decoded and composed by consent_core.documents;
the same broken YAML gives the same `file:line:column: message` whichever document it is,
raised as that document's own error type.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from consent_core.cases import load_cases, parse_cases
from consent_core.errors import CasesError, DocumentError, MappingError, PrincipalsError
from consent_core.mapping_file import load_mapping, parse_mapping

from consent_sidecar.auth.principals import load_principals, parse_principals

Parse = Callable[[str, str], object]
Load = Callable[[str], object]

DOCUMENTS = [
    pytest.param(parse_mapping, load_mapping, MappingError, "the mapping file", id="mapping"),
    pytest.param(parse_cases, load_cases, CasesError, "the cases file", id="cases"),
    pytest.param(parse_principals, load_principals, PrincipalsError, "the principals file", id="principals"),
]
LOADED = DOCUMENTS[1:]  # cases and principals are loaded into data; the mapping reader judges nodes itself

# YAML that no document can be: one located problem, the same whichever document it is read as.
SYNTAX_ERRORS = [
    ("a: [one\n",  # reported where the '[' opens, not where the parser gave up
     "d.yaml:1:4: invalid YAML: this '[' is never closed (no ']' before the end of the file, "
     "where the parser gave up)"),
    ("a: b: c\n", "d.yaml:1:5: invalid YAML: mapping values are not allowed here"),
    ("a: b\x01\n", "d.yaml:1:5: invalid YAML: character U+0001 is not allowed"),
    ("a: b\n---\nc: d\n",
     "d.yaml:2:1: invalid YAML: but found another document (expected a single document in the stream)"),
    ("a: *nope\n", "d.yaml:1:4: invalid YAML: found undefined alias 'nope'"),
]  # fmt: skip


def test_each_document_has_its_own_error_type() -> None:
    kinds = [MappingError, CasesError, PrincipalsError]
    for kind in kinds:
        assert issubclass(kind, DocumentError)
        assert [other for other in kinds if issubclass(kind, other)] == [kind]


@pytest.mark.parametrize(("parse", "load", "error", "what"), DOCUMENTS)
@pytest.mark.parametrize(("text", "expected"), SYNTAX_ERRORS)
def test_a_yaml_syntax_error_is_located_the_same_in_every_document(
    parse: Parse, load: Load, error: type[DocumentError], what: str, text: str, expected: str
) -> None:
    with pytest.raises(DocumentError) as info:
        parse(text, "d.yaml")
    assert type(info.value) is error
    assert str(info.value) == expected
    assert len(info.value.problems) == 1 and info.value.source == "d.yaml"


@pytest.mark.parametrize(("parse", "load", "error", "what"), DOCUMENTS)
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "cannot read {what}: no such file"),
        (lambda p: p.mkdir(), "cannot read {what}: it is a directory"),
        (lambda p: p.write_bytes(b"a: caf\xe9\n"), "{what} is not valid UTF-8 (byte offset 6)"),
    ],
)
def test_a_file_that_cannot_be_read_is_one_problem_of_its_own_type(
    tmp_path: Path, parse: Parse, load: Load, error: type[DocumentError], what: str,
    make: Callable[[Path], Any], reason: str,
) -> None:  # fmt: skip
    path = tmp_path / "d.yaml"
    make(path)
    with pytest.raises(DocumentError) as info:
        load(str(path))
    assert type(info.value) is error
    assert str(info.value) == f"{path}: {reason.format(what=what)}"


@pytest.mark.parametrize(("parse", "load", "error", "what"), LOADED)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x: !!int abc\n", "d.yaml:1:4: invalid YAML: cannot read 'abc' as !!int ("),
        ("x: 2023-13-45\n", "d.yaml:1:4: invalid YAML: cannot read '2023-13-45' as !!timestamp ("),
        ("x: !!bool maybe\n", "d.yaml:1:4: invalid YAML: cannot read 'maybe' as !!bool ("),
        ("x: !!binary 'a@b'\n", "d.yaml:1:4: invalid YAML: failed to decode base64 data"),
        ("x: 1\nx: 2\n", 'd.yaml:2:1: invalid YAML: found duplicate key "x" with value "2" (original value: "1")'),
    ],
)
def test_a_value_its_yaml_tag_cannot_hold_is_a_located_error_not_a_crash(
    parse: Parse, load: Load, error: type[DocumentError], what: str, text: str, expected: str
) -> None:
    with pytest.raises(DocumentError) as info:
        parse(text, "d.yaml")
    assert type(info.value) is error
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize(("parse", "load", "error", "what"), DOCUMENTS)
def test_nesting_deeper_than_the_reader_recurses_is_an_error_of_its_own_type(
    parse: Parse, load: Load, error: type[DocumentError], what: str
) -> None:
    with pytest.raises(DocumentError) as info:
        parse("x: " + "[" * 700 + "]" * 700 + "\n", "d.yaml")  # the round-trip composer gives up near 500
    assert type(info.value) is error
    assert str(info.value) == "d.yaml: invalid YAML: nested too deeply"


# -- hostile files: never block, never read more than the limit ---------------------------------


def _in_thread(call: Callable[[], object], timeout: float = 10.0) -> BaseException | None:
    """Runs `call` in a daemon thread; the exception it raised, failing if it is still blocked after `timeout`."""
    import threading

    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # handed back to the test
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "reading blocked"
    return raised[0] if raised else None


NOT_REGULAR = [
    pytest.param(lambda p: os.mkfifo(p), "it is a FIFO (named pipe), not a regular file", id="fifo"),
    pytest.param(lambda p: p.symlink_to("/dev/zero"), "it is a character device, not a regular file", id="device"),
    pytest.param(lambda p: p.mkdir(), "it is a directory", id="directory"),
]


@pytest.mark.parametrize(("make", "why"), NOT_REGULAR)
@pytest.mark.parametrize(("parse", "load", "error", "what"), DOCUMENTS)
def test_a_file_that_is_not_regular_is_refused_at_once(
    tmp_path: Path, make: Callable[[Path], object], why: str, parse: Parse, load: Load, error: type[DocumentError],
    what: str,
) -> None:
    path = tmp_path / "d.yaml"
    make(path)
    raised = _in_thread(lambda: load(str(path)))  # a FIFO with no writer would block open() for ever
    assert isinstance(raised, error), raised
    assert str(raised) == f"{path}: cannot read {what}: {why}"


def test_a_mapping_file_over_the_limit_is_refused_naming_it_and_read_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_core.documents as documents

    path = tmp_path / "m.yaml"
    path.write_text("version: 1\ncategories: []\n" + "# padding\n" * 500)
    read = 0
    real_read = documents.os.read

    def counting(fd: int, n: int) -> bytes:
        nonlocal read
        data = real_read(fd, n)
        read += len(data)
        return data

    monkeypatch.setattr(documents.os, "read", counting)
    with pytest.raises(MappingError) as info:
        load_mapping(path, max_bytes=1000)
    size = path.stat().st_size
    assert str(info.value) == (
        f"{path}: the mapping file is {size:,} bytes: over the limit of 1,000 bytes (--max-mapping-bytes)"
    )
    assert read == 0  # refused from its size alone
    assert load_mapping(path, max_bytes=path.stat().st_size).mapping.categories == ()


def test_the_default_mapping_limit_is_16_mib(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    with open(path, "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse: costs no disk
    with pytest.raises(MappingError, match=r"is 16,777,217 bytes: over the limit of 16,777,216 bytes"):
        load_mapping(path)


def test_a_file_growing_past_the_limit_while_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import consent_core.documents as documents

    path = tmp_path / "m.yaml"
    path.write_text("version: 1\ncategories: []\n")
    real_fstat = documents.os.fstat

    def stale(fd: int) -> os.stat_result:  # the size as it was just before an append landed
        st = real_fstat(fd)
        with open(path, "a") as f:
            f.write("#" * 2000)
        return st

    monkeypatch.setattr(documents.os, "fstat", stale)
    with pytest.raises(MappingError, match=r"grew past 1,000 bytes while it was read: over the limit"):
        load_mapping(path, max_bytes=1000)
