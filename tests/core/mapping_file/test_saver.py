"""Saving the mapping file: atomic, durable, mode-keeping replaces that change nothing when they fail."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from consent_core.mapping_file import atomic_write


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    atomic_write(path, "new: ü\n")
    assert path.read_bytes() == "new: ü\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert leftovers(tmp_path) == []


def test_atomic_write_creates_a_missing_file(tmp_path: Path) -> None:
    atomic_write(str(tmp_path / "new.yaml"), "x\r\n")
    assert (tmp_path / "new.yaml").read_bytes() == b"x\r\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [None, 0o644])
def test_a_mode_given_holds_from_the_first_byte_new_file_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: int | None
) -> None:
    """A private file (the fleet's cache) is never readable by others, not even between rename and chmod."""
    path = tmp_path / "cache.yaml"
    if existing is not None:
        path.write_text("old\n")
        path.chmod(existing)
    seen: list[int] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))  # the temp file, as it is renamed into place
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write(path, "secret: 1\n", mode=0o600)
    assert seen == [0o600]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_write_refuses_a_symlink_and_leaves_both_ends_alone(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("real\n")
    link = tmp_path / "mappings.yaml"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symlink"):
        atomic_write(link, "new\n")
    assert link.is_symlink() and target.read_text() == "real\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write(tmp_path, "x")


@pytest.mark.parametrize("failing", ["replace", "fsync", "write", "fchmod"])
def test_a_failed_atomic_write_changes_nothing_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text("original\n")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "original\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_into_a_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "nowhere" / "m.yaml", "x")


def test_unencodable_text_is_an_oserror_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("original\n")
    with pytest.raises(OSError, match="UTF-8"):
        atomic_write(path, "bad \udc80\n")
    assert path.read_text() == "original\n" and leftovers(tmp_path) == []
