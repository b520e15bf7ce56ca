"""The wire contract's own checks can fail: buf breaking catches a change that would break a 0.1 client.

`make lint-proto` runs buf lint and buf breaking on proto/; these tests prove the baseline image
is the 0.1 contract and that the check rejects what it must (a removed field, a renumbered one),
so a green `make test` means something.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = Path(sys.executable).parent / "buf"
BASELINE = ROOT / "proto" / "baseline" / "consent-v0.1.binpb"


def _breaking(tmp_path: Path, edit: tuple[str, str] | None) -> subprocess.CompletedProcess[str]:
    shutil.copytree(ROOT / "proto" / "consent", tmp_path / "proto" / "consent")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    if edit is not None:
        path = tmp_path / "proto" / "consent" / "v1" / "decision.proto"
        text = path.read_text()
        assert edit[0] in text
        path.write_text(text.replace(edit[0], edit[1]))
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(BASELINE)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_todays_protos_do_not_break_a_0_1_client(tmp_path: Path) -> None:
    done = _breaking(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("bool explain = 4;", "", 'Previously present field "4" with name "explain"'),
        ("bool explain = 4;", "bool explain = 6;", 'Previously present field "4" with name "explain"'),
    ],
    ids=["removed-field", "renumbered-field"],
)
def test_a_breaking_change_is_refused(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    done = _breaking(tmp_path, (old, new))
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr
