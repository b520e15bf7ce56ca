"""The entry points: the installed `consent-sidecar` script and `python -m consent_sidecar`, as users run them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # sha256 of "test"


def script() -> str:
    found = Path(sys.executable).parent / "consent-sidecar"
    if found.exists():
        return str(found)
    which = shutil.which("consent-sidecar")
    if which is None:
        pytest.skip("consent-sidecar is not installed")
    return which


def test_installed_script_hashes_a_token_from_a_pipe() -> None:
    done = subprocess.run([script(), "token", "hash"], input=b"test", capture_output=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, TEST_SHA256.encode() + b"\n")


def test_installed_script_checks_files_and_exits_with_the_code(workdir: Path) -> None:
    ok = subprocess.run([script(), "check", "mappings.yaml"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0
    assert ok.stdout.startswith("mappings.yaml: ok (3 categories, 5 destinations, digest ")
    bad = subprocess.run([script(), "check", "broken.yaml"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert "broken.yaml:7:9: categories[1].id: must not start with a digit" in bad.stderr.splitlines()
    assert "Traceback" not in bad.stderr


def test_python_dash_m_sidecar_is_the_same_command_line(workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consent_sidecar", "decide", "--mappings", "mappings.yaml", "amplitude"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"allowed": ["amplitude"], "blocked": [], "decisions": []}
    usage = subprocess.run(
        [sys.executable, "-m", "consent_sidecar", "bogus"], capture_output=True, text=True, timeout=30
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: consent-sidecar")


@pytest.mark.skipif(
    not (ROOT / "examples" / "mappings.yaml").exists() or not (ROOT / "examples" / "cases.yaml").exists(),
    reason="examples/mappings.yaml and examples/cases.yaml are not there yet",
)
def test_the_examples_cases_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    done = subprocess.run(
        [script(), "test", "examples/mappings.yaml", "examples/cases.yaml"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith(" passed, 0 failed")
