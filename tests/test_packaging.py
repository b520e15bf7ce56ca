"""The built wheel works on its own: installed non-editable into a fresh venv, away from the sources."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from the dev venv via a .pth line."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(base / "dist"), str(ROOT)],
        check=True, timeout=300,
    )
    (wheel,) = (base / "dist").glob("consent_sidecar-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # Dependencies (grpcio, protobuf, ...) only; a path added by .pth is not scanned for the
    # dev venv's editable-install hook, so the project itself can come only from the wheel.
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--quiet",
         "--no-deps", str(wheel)],
        check=True, timeout=300,
    )
    return env_dir


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(list(args), cwd=env_dir, env=env, capture_output=True, text=True, timeout=120)


def test_wheel_imports_generated_code_and_packages_from_site_packages(wheel_venv: Path) -> None:
    code = (
        "import consent.v1.admin_pb2_grpc, consent.v1.decision_pb2, sidecar.index, consent_client;"
        "print(sidecar.index.__file__); print(consent.v1.decision_pb2.__file__)"
    )
    out = _run(wheel_venv, str(wheel_venv / "bin" / "python"), "-c", code)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        assert str(wheel_venv) in line and str(ROOT) not in line


def test_wheel_ships_type_information(wheel_venv: Path) -> None:
    site = next((wheel_venv / "lib").glob("python3*/site-packages"))
    assert (site / "sidecar" / "py.typed").is_file()
    assert (site / "consent" / "v1" / "decision_pb2.pyi").is_file()
