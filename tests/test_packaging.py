"""The wheel works on its own, and so would the image: installed non-editable in a fresh venv, away from sources."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the three wheels; third-party dependencies come from the dev venv via a .pth line."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(base / "dist"), str(ROOT / "core"), str(ROOT / "clients" / "python"), str(ROOT)],
        check=True, timeout=300,
    )
    wheels = sorted(str(w) for w in (base / "dist").glob("consent_*.whl"))
    assert len(wheels) == 3, wheels
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # Dependencies (grpcio, protobuf, ...) only; a path added by .pth is not scanned for the
    # dev venv's editable-install hook, so the project itself can come only from the wheel.
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--quiet",
         "--no-deps", *wheels],
        check=True, timeout=300,
    )
    return env_dir


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(list(args), cwd=env_dir, env=env, capture_output=True, text=True, timeout=120)


def test_wheel_imports_generated_code_and_packages_from_site_packages(wheel_venv: Path) -> None:
    code = (
        "import consent.v1.admin_pb2_grpc, consent.v1.decision_pb2, consent_core.index, consent_client;"
        "print(consent_core.index.__file__); print(consent.v1.decision_pb2.__file__)"
    )
    out = _run(wheel_venv, str(wheel_venv / "bin" / "python"), "-c", code)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        assert str(wheel_venv) in line and str(ROOT) not in line


def test_wheel_ships_type_information(wheel_venv: Path) -> None:
    site = next((wheel_venv / "lib").glob("python3*/site-packages"))
    for package in ("consent_sidecar", "consent_core", "consent_client"):
        assert (site / package / "py.typed").is_file()
    assert (site / "consent" / "v1" / "decision_pb2.pyi").is_file()


# -- the image, without a container engine --------------------------------------------------------
#
# No container engine runs on our machines, so this repeats the Dockerfile's steps: the wheel in
# a fresh venv stands in for the runtime stage's `pip install`, a temporary directory for the
# image's filesystem (its COPY and VOLUME paths below it), the runtime stage's ENV, ENTRYPOINT
# and CMD start the sidecar, and its HEALTHCHECK command must pass. Paths and the port are
# remapped (absolute paths under that directory, 50051 to a free port); nothing else is changed.


@dataclass
class Stage:
    """One FROM ... AS name stage of the Dockerfile, instructions as (KEYWORD, arguments) in order."""

    image: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form"
                out[key] = value
        return out


def parse_dockerfile(path: Path) -> list[Stage]:
    """The Dockerfile's stages; continuation lines joined, comments and the syntax line dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            image, _, name = args.partition(" AS ")
            stages.append(Stage(image.strip(), name.strip()))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument: ENTRYPOINT, CMD, HEALTHCHECK ... CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def runtime_stage() -> Stage:
    return parse_dockerfile(ROOT / "Dockerfile")[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_dockerfile_builds_a_wheel_and_runs_it_as_a_non_root_user_on_slim_python() -> None:
    build, runtime = parse_dockerfile(ROOT / "Dockerfile")
    assert build.image == runtime.image == "python:3.11-slim"
    assert any("pip wheel" in run for run in build.all("RUN"))
    installs = [run for run in runtime.all("RUN") if "pip install" in run]
    assert len(installs) == 1 and "--no-index" in installs[0] and "from=build" in installs[0]
    user = runtime.one("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: runAsNonRoot can check it
    assert exec_form(runtime.one("ENTRYPOINT")) == ["consent-sidecar"]
    assert exec_form(runtime.one("CMD"))[0] == "serve"
    assert runtime.one("STOPSIGNAL") == "SIGTERM"
    healthcheck = runtime.one("HEALTHCHECK")
    assert exec_form(healthcheck[healthcheck.index("CMD ") + 4 :])[:2] == ["consent-sidecar", "health"]
    env = runtime.env()
    assert all(k.startswith("CONSENT_SIDECAR_") or k.startswith("PYTHON") for k in env)
    assert env["CONSENT_SIDECAR_AUDIT_DB"].startswith(exec_form(runtime.one("VOLUME"))[0] + "/")
    exposed = {int(p) for p in runtime.one("EXPOSE").split()}
    assert {50051, 50052, 9464} <= exposed
    assert int(env["CONSENT_SIDECAR_LISTEN"].rpartition(":")[2]) in exposed
    # Pod-local by default (the decision port has no authentication): `docker run -p` opts in with -e.
    assert env["CONSENT_SIDECAR_LISTEN"].startswith("127.0.0.1:")
    assert env["CONSENT_SIDECAR_ADDRESS"].rpartition(":")[2] == env["CONSENT_SIDECAR_LISTEN"].rpartition(":")[2]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins)."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    sources = []
    for stage in parse_dockerfile(ROOT / "Dockerfile"):
        for args in stage.all("COPY"):
            if not args.startswith("--from"):
                sources.extend(args.split()[:-1])
    assert sources
    for source in sources:
        files = [ROOT / source] if (ROOT / source).is_file() else list((ROOT / source).rglob("*.py"))
        assert files, f"COPY {source}: nothing there"
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not dockerignored(rel), f"{rel} is copied by the Dockerfile but excluded by .dockerignore"
    for secret in (".venv/bin/python", ".git/config", "tests/conftest.py", "examples/consent-sidecar-audit.db",
                   "consent_sidecar/audit.db", "principals.yaml", "deploy/kubernetes/secret-principals.yaml"):
        assert dockerignored(secret), f"{secret} would reach the build context"


def test_image_steps_serve_and_pass_the_healthcheck(wheel_venv: Path, tmp_path: Path) -> None:
    runtime = runtime_stage()
    image = tmp_path / "image"  # the image's filesystem
    for args in runtime.all("COPY"):
        *sources, target = args.split()
        assert not sources[0].startswith("--"), f"unexpected COPY flags: {args}"
        (dest,) = sources
        (image / target.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / dest, image / target.lstrip("/"))
    volumes = [image / v.lstrip("/") for v in exec_form(runtime.one("VOLUME"))]
    for v in volumes:
        v.mkdir(parents=True)
    before = {p for p in image.rglob("*")}

    port = str(free_port())
    env = {"PATH": f"{wheel_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for key, value in runtime.env().items():
        if value.startswith("/"):
            value = str(image) + value
        if key in ("CONSENT_SIDECAR_LISTEN", "CONSENT_SIDECAR_ADDRESS"):
            value = value.replace("0.0.0.0:", "127.0.0.1:").replace(":50051", f":{port}")
        env[key] = value
    entrypoint = exec_form(runtime.one("ENTRYPOINT"))
    command = [shutil.which(entrypoint[0], path=env["PATH"]) or "", *entrypoint[1:], *exec_form(runtime.one("CMD"))]
    assert command[0].startswith(str(wheel_venv)), command
    healthcheck = runtime.one("HEALTHCHECK")
    probe = exec_form(healthcheck[healthcheck.index("CMD ") + 4 :])

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=image, env=env, capture_output=True, text=True, timeout=30)

    # Nothing listens yet: the health check must fail, with its reason.
    down = run(probe)
    assert down.returncode == 1 and "cannot reach it" in down.stderr

    server = subprocess.Popen(command, cwd=image, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            check = run(probe)
            if check.returncode == 0:
                break
            assert server.poll() is None, f"serve exited {server.returncode}: {server.communicate()[1]}"
            assert time.monotonic() < deadline, f"never healthy: {check.stderr}"
            time.sleep(0.2)
        assert check.stdout == f"127.0.0.1:{port}: SERVING\n"

        # The installed client decides through it, as a pipeline in the next container would.
        code = (
            "from consent_client import ConsentClient\n"
            f"with ConsentClient('127.0.0.1:{port}') as c:\n"
            "    r = c.decide(['amplitude', 'google-ads'], {'C0002': True, 'C0004': False})\n"
            "print(list(r.allowed), list(r.blocked))\n"
        )
        decided = run([str(wheel_venv / "bin" / "python"), "-c", code])
        assert decided.stdout == "['amplitude'] ['google-ads']\n", decided.stderr
    finally:
        server.send_signal(getattr(signal, runtime.one("STOPSIGNAL")))
        out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    for line in out.splitlines():  # CONSENT_SIDECAR_LOG_FORMAT=json
        json.loads(line)

    # Read-only root filesystem in mind: everything written is under a VOLUME.
    written = {p for p in image.rglob("*") if p.is_file()} - before
    assert written and all(any(v in p.parents for v in volumes) for p in written), sorted(map(str, written))
    verify = run(["consent-sidecar", "audit", "verify", "--audit-db", env["CONSENT_SIDECAR_AUDIT_DB"]])
    assert verify.returncode == 0, verify.stderr
