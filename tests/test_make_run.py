"""`make run` keeps its audit trail out of examples/: in var/, which git ignores."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_make_run_writes_its_audit_trail_into_an_ignored_var_directory() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    [serve] = [shlex.split(line) for line in done.stdout.splitlines() if " serve " in line]
    audit_db = serve[serve.index("--audit-db") + 1]
    assert Path(audit_db).parent == Path("var")
    ignored = subprocess.run(["git", "check-ignore", "-q", audit_db], cwd=ROOT, timeout=60)
    assert ignored.returncode == 0, f"{audit_db} is not ignored by git"
