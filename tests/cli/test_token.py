"""`token hash`: a token on stdin, one trailing newline stripped, its sha256 printed."""

from __future__ import annotations

import io
import sys

import pytest

from consent_sidecar import cli

EMPTY_ENV: dict[str, str] = {}


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return cli.run_cli(argv, EMPTY_ENV if env is None else env)


TEST_SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize("stdin", [b"test", b"test\n", b"test\r\n"])
def test_token_hash_strips_one_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: bytes
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert run(["token", "hash"]) == 0
    assert capsys.readouterr().out == TEST_SHA256 + "\n"


def test_token_hash_strips_only_one_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"test\n\n")))
    assert run(["token", "hash"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() != TEST_SHA256
    assert "whitespace" in err


@pytest.mark.parametrize("stdin", [b"", b"\n", b"\r\n"])
def test_token_hash_refuses_an_empty_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: bytes
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert run(["token", "hash"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "empty token" in err
