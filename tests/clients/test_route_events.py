"""clients/examples/route_events.py end to end: a real sidecar, a small events file, per-destination outputs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .support import MAPPING, WAIT, ServerThread, free_port

SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "examples" / "route_events.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("route_events", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("route_events", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True, text=True, timeout=WAIT * 3,
    )


def event(consent: dict[str, bool] | None, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "track", "event": "Order Completed", "userId": "u", **extra}
    if consent is not None:
        ev["context"] = {"consent": {"categoryPreferences": consent}}
    return ev


EVENTS = [
    event({"C0001": True, "C0002": True, "C0004": False}),  # analytics yes, ads no
    event(None),  # no consent object: everything
    event({"C0004": True, "C0005": True}, integrations={"google-ads": False}),  # ads, but not google-ads
    event({}),  # a consent object granting nothing
]
DESTS = ["amplitude", "google-ads", "twitter-ads", "aws-s3"]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("route") / "mappings.yaml"
    path.write_text(MAPPING)
    target = f"127.0.0.1:{free_port()}"
    with ServerThread(path, [target]):
        yield target


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    lines = [json.dumps(e) for e in EVENTS[:2]]
    lines += ["", "{not json", "[1, 2]"]  # a blank line is skipped; the other two are errors
    lines += [json.dumps(event({"C0002": "yes"}))]  # rejected by the sidecar (not a boolean)
    lines += [json.dumps(e) for e in EVENTS[2:]]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_help_runs() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert "--out" in done.stdout and "--destinations" in done.stdout and "Exit status" in done.stdout


def test_routes_a_file_to_the_allowed_destinations(sidecar: str, events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "routed"
    done = run(str(events_file), "--out", str(out), "--target", sidecar, "--destinations", ",".join(DESTS),
               "--batch-size", "2", "--json")
    assert done.returncode == 1, done.stderr  # some lines could not be routed
    summary = json.loads(done.stdout)
    assert summary["events"] == 5 and summary["routed"] == 4 and summary["degraded"] == 0
    assert summary["errors"] == 3
    assert [e.split(":")[0] for e in summary["error_lines"]] == ["line 4", "line 5", "line 6"]
    assert "categoryPreferences" in summary["error_lines"][2]
    assert summary["delivered"] == {"amplitude": 2, "aws-s3": 4, "google-ads": 1, "twitter-ads": 2}
    assert summary["blocked"] == {"amplitude": 2, "google-ads": 3, "twitter-ads": 2}
    assert sorted(p.name for p in out.iterdir()) == ["amplitude.jsonl", "aws-s3.jsonl", "google-ads.jsonl",
                                                     "twitter-ads.jsonl"]
    assert read_jsonl(out / "aws-s3.jsonl") == EVENTS  # exempt: every event, in input order
    assert read_jsonl(out / "amplitude.jsonl") == [EVENTS[0], EVENTS[1]]
    assert read_jsonl(out / "google-ads.jsonl") == [EVENTS[1]]
    assert read_jsonl(out / "twitter-ads.jsonl") == [EVENTS[1], EVENTS[2]]


def test_reads_stdin_and_defaults_to_every_known_destination(sidecar: str, tmp_path: Path) -> None:
    out = tmp_path / "routed"
    stdin = json.dumps(EVENTS[1]) + "\n" + json.dumps(event({"C0002": True}, integrations={"All": False}))
    done = run("--out", str(out), "--target", sidecar)
    assert done.returncode == 0  # empty stdin: nothing to do
    done = run("--out", str(out), "--target", sidecar, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "events: 2 read, 2 routed" in done.stdout and "errors: 0" in done.stdout
    names = {p.name for p in out.iterdir()}
    assert {"snowflake.jsonl", "old-pixel.jsonl", "hotjar.jsonl", "google-ads.jsonl"} <= names
    assert read_jsonl(out / "amplitude.jsonl") == [EVENTS[1]]  # the second event disables everything


def test_an_unreachable_sidecar_fails_closed_or_stops(events_file: Path, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    done = run(str(events_file), "--out", str(tmp_path / "a"), "--target", dead, "--timeout", "0.5",
               "--destinations", "amplitude,aws-s3", "--json")
    summary = json.loads(done.stdout)
    assert summary["degraded"] == summary["routed"] == 4  # the bad event is still rejected, locally
    assert summary["errors"] == 3
    assert summary["delivered"] == {} and summary["blocked"] == {"amplitude": 4, "aws-s3": 4}
    done = run(str(events_file), "--out", str(tmp_path / "b"), "--target", dead, "--timeout", "0.5",
               "--failure-policy", "raise")
    assert done.returncode == 2 and "UNAVAILABLE" in done.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("--out", str(tmp_path), "--failure-policy", "embedded").returncode == 2
    assert run("--out", str(tmp_path), "--batch-size", "0").returncode == 2
    assert run("--out", str(tmp_path), "--destinations", ",").returncode == 2


def test_output_names_stay_inside_the_directory() -> None:
    module = load_script()
    assert module.output_name("google-analytics-4/eu") == "google-analytics-4__eu.jsonl"
    assert module.output_name("../../etc/passwd") == "_..__..__etc__passwd.jsonl"
    assert module.output_name("a b:c") == "a_b_c.jsonl"
