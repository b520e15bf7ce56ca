"""Each of the three wheels, alone in a fresh venv, does its job with only its declared dependencies.

`make dist` builds consent-core, consent-client and consent-sidecar from this repository. A
pipeline team installs only the client: its wheel, with the dependencies pip resolves for it,
must decide over gRPC against a running sidecar and pull in nothing of the server. The
`[embedded]` extra adds the core and decides in-process; the core alone compiles and decides, with
its C accelerator (a platform wheel).
Each venv is real (pip resolves every dependency from the configured index); the printed
dependency sets are the evidence the issue asks for.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import venv
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from samples import SAMPLE_MAPPING

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0
# What only the server needs: none of it may reach a pipeline that installs the client.
SERVER_ONLY = {"watchfiles", "prometheus-client", "structlog", "grpcio-health-checking", "grpcio-reflection"}


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three wheels, built as `make dist` builds them (stale build/ directories removed first)."""
    out = tmp_path_factory.mktemp("dist")
    # One build at a time in this source tree: pytest-xdist workers each build the wheels, and one
    # removing build/ while another compiles consent-core's C accelerator there broke a wheel.
    with open(Path(tempfile.gettempdir()) / f"consent-wheels-{zlib.crc32(str(ROOT).encode()):08x}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for project in (ROOT / "core", ROOT / "clients" / "python", ROOT):
            shutil.rmtree(project / "build", ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out), str(ROOT / "core"), str(ROOT / "clients" / "python"), str(ROOT)],
            check=True, timeout=300,
        )
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"consent_core", "consent_client", "consent_sidecar"}, sorted(found)
    return found


def _fresh_venv(path: Path, *requirements: str) -> Path:
    """A new venv with `requirements` installed and their dependencies resolved by pip; its python."""
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    return python


def _installed(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, cwd=python.parent)
    assert done.returncode == 0, done.stderr
    return {_normalise(k): v for k, v in json.loads(done.stdout).items() if _normalise(k) not in ("pip", "setuptools")}


def _show(capsys: pytest.CaptureFixture[str], what: str, installed: dict[str, str]) -> None:
    with capsys.disabled():
        print(f"\n{what}: " + ", ".join(f"{k}=={v}" for k, v in sorted(installed.items())))


def _run(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # cwd away from the repository: nothing may be imported from the sources.
    return subprocess.run([str(python), "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=python.parent, env=env)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[str]:
    """A sidecar from the development install, serving SAMPLE_MAPPING on a free loopback port."""
    mapping = tmp_path / "mappings.yaml"
    mapping.write_text(SAMPLE_MAPPING, encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent_sidecar", "serve", "--mappings", str(mapping), "--listen", address,
         "--audit-db", str(tmp_path / "audit.db"), "--grace-period", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(address) as ch:
            grpc.channel_ready_future(ch).result(timeout=WAIT)
        yield address
    finally:
        proc.terminate()
        proc.wait(WAIT)


def test_the_client_wheel_alone_decides_over_grpc_without_any_server_dependency(
    tmp_path: Path, wheels: dict[str, Path], sidecar: str, capsys: pytest.CaptureFixture[str]
) -> None:
    python = _fresh_venv(tmp_path / "client", str(wheels["consent_client"]))
    installed = _installed(python)
    _show(capsys, "consent-client installs", installed)
    # grpcio's own dependency (typing-extensions) may come along; nothing else.
    assert set(installed) - {"typing-extensions"} == {"consent-client", "grpcio", "protobuf"}, installed
    assert not SERVER_ONLY & set(installed)
    assert not {"consent-core", "consent-sidecar", "ruamel-yaml"} & set(installed)

    done = _run(python, f"""
        import sys
        from consent_client import ConsentClient
        with ConsentClient({sidecar!r}) as client:
            r = client.decide(["amplitude", "google-ads"], {{"C0002": True, "C0004": False}})
        print(list(r.allowed), list(r.blocked))
        assert not [m for m in sys.modules if m.startswith(("consent_core", "consent_sidecar", "ruamel"))]
        try:
            from consent_client import EmbeddedDecider
        except ModuleNotFoundError as e:
            print("embedded:", e)
    """)
    assert done.returncode == 0, done.stderr
    decided, embedded = done.stdout.splitlines()
    assert decided == "['amplitude'] ['google-ads']"
    assert "pip install 'consent-client[embedded]'" in embedded


def test_the_embedded_extra_decides_in_process_without_a_sidecar(
    tmp_path: Path, wheels: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The core wheel is named explicitly, so pip takes it rather than looking for consent-core elsewhere.
    python = _fresh_venv(tmp_path / "embedded", str(wheels["consent_core"]), f"{wheels['consent_client']}[embedded]")
    installed = _installed(python)
    _show(capsys, "consent-client[embedded] installs", installed)
    assert {"consent-client", "consent-core", "grpcio", "protobuf", "ruamel-yaml"} <= set(installed)
    assert not SERVER_ONLY & set(installed)
    assert "consent-sidecar" not in installed

    mapping = tmp_path / "mappings.yaml"
    mapping.write_text(SAMPLE_MAPPING, encoding="utf-8")
    done = _run(python, f"""
        from consent_client import EmbeddedDecider
        decider = EmbeddedDecider({str(mapping)!r})
        r = decider.decide(["amplitude", "google-ads"], {{"C0002": True, "C0004": False}})
        print(list(r.allowed), list(r.blocked))
        from consent_core.native import NATIVE
        assert NATIVE is not None, "the core wheel lost its C accelerator"
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['amplitude'] ['google-ads']\n"


def test_the_core_wheel_alone_compiles_and_decides(
    tmp_path: Path, wheels: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert not wheels["consent_core"].name.endswith("-none-any.whl")  # a platform wheel: the C accelerator
    python = _fresh_venv(tmp_path / "core", str(wheels["consent_core"]))
    installed = _installed(python)
    _show(capsys, "consent-core installs", installed)
    assert set(installed) <= {"consent-core", "ruamel-yaml", "ruamel-yaml-clib"}, installed

    mapping = tmp_path / "mappings.yaml"
    mapping.write_text(SAMPLE_MAPPING, encoding="utf-8")
    done = _run(python, f"""
        import sys
        from consent_core.index import compile
        from consent_core.mapping_file import load_mapping
        index = compile(load_mapping({str(mapping)!r}).mapping)
        outcome = index.decide({{"C0002": True, "C0004": False}}, ["amplitude", "google-ads"])
        print(list(outcome.allowed), list(outcome.blocked))
        assert "grpc" not in sys.modules
        from consent_core.native import NATIVE
        assert NATIVE is not None, "the core wheel lost its C accelerator"
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['amplitude'] ['google-ads']\n"
