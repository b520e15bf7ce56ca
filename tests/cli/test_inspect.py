"""`consent-sidecar inspect`: the report's counts, its inputs (files, .gz, stdin), `--against`, the server's decisions.

The decisive test sends a sample of the same events, one by one, to a real sidecar over gRPC and
checks that inspect counted exactly what the sidecar decided (and refused).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.errors import InvalidArgument
from consent_core.event import parse_segment_event
from consent_core.index import compile
from consent_core.limits import Limits

from bench.bench_inspect import event as realistic_event
from consent_sidecar import cli
from consent_sidecar.inspection import Inspector

if TYPE_CHECKING:
    from conftest import SidecarProcess

PREF = "Segment Consent Preference Updated"


def line(context: Any = None, **fields: Any) -> str:
    ev: dict[str, Any] = {"type": "track", "event": "Order Completed", **fields}
    if context is not None:
        ev["context"] = context
    return json.dumps(ev)


def consent(prefs: Any) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": prefs}}


# The workdir's mappings.yaml: C0002 -> amplitude, mixpanel; C0004 -> google-ads, braze (any);
# C0005 (shadow) -> amplitude; aws-s3 exempt.
LINES = [
    line(consent({"C0002": True, "C0004": False})),  # 1: amplitude, mixpanel allowed; google-ads blocked
    line(consent({"C0002": True, "c0004": True})),  # 2: a misspelt id
    line(),  # 3: no context at all
    line({"consent": {}}),  # 4: a consent object without categoryPreferences
    line({"consent": {"categoryPreference": {"C0002": True}}}),  # 5: a misspelt key
    "not json",  # 6
    "[1, 2]",  # 7: JSON, not an object
    line(consent({"C0002": "yes"})),  # 8: the server refuses it
    line(consent({}), event=PREF),  # 9: a preference event: everything allowed
    line(consent({"C0002": True, "C0004": True}), integrations={"mixpanel": False}),  # 10
    "",  # 11: an empty line
    line({"consent": None}),  # 12: consent null: no consent object
]


@pytest.fixture
def inspect_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(lines: list[str], *flags: str) -> dict[str, Any]:
        path = workdir / "events.jsonl"
        path.write_text("\n".join(lines) + "\n")
        code = cli.run_cli(["inspect", "--mappings", "mappings.yaml", "--output", "json", *flags, str(path)], {})
        out, err = capsys.readouterr()
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        return data

    return run


def test_the_report_counts_every_kind_of_event(inspect_json: Any) -> None:
    r = inspect_json(LINES)
    assert {k: r[k] for k in ("events", "invalid", "invalid_lines", "with_consent", "without_consent",
                              "consent_without_preferences", "preference_updated")} == {
        "events": 12, "invalid": 4, "invalid_lines": [6, 7, 8, 11], "with_consent": 4, "without_consent": 4,
        "consent_without_preferences": 2, "preference_updated": 1,
    }  # fmt: skip
    assert r["with_consent"] + r["without_consent"] == r["events"] - r["invalid"]
    assert r["unknown_categories"] == {"c0004": {"events": 1, "did_you_mean": "C0004"}}
    assert r["unused_categories"] == ["C0005"]  # enabled, never named by an event (shadow included)
    assert "changes" not in r
    d = r["destinations"]
    assert list(d) == ["amplitude", "aws-s3", "braze", "google-ads", "mixpanel"]
    # allowed: 4 without consent + the preference event + what consent allows in lines 1, 2 and 10
    assert d["aws-s3"] == {"allowed": 8, "blocked": 0}
    assert d["amplitude"] == {"allowed": 8, "blocked": 0}
    assert d["google-ads"] == {"allowed": 6, "blocked": 2}
    assert d["mixpanel"] == {"allowed": 7, "blocked": 1}  # line 10's integrations turn it off


def test_unknown_ids_without_a_case_insensitive_match_have_no_suggestion(inspect_json: Any) -> None:
    r = inspect_json([line(consent({"C0099": True, "c0002": False}))] * 3)
    assert r["unknown_categories"] == {
        "C0099": {"events": 3, "did_you_mean": None}, "c0002": {"events": 3, "did_you_mean": "C0002"},
    }
    assert r["unused_categories"] == ["C0002", "C0004", "C0005"]


def test_only_the_first_ten_invalid_lines_are_listed(inspect_json: Any) -> None:
    r = inspect_json(["{", line()] * 12)
    assert (r["events"], r["invalid"], r["invalid_lines"]) == (24, 12, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19])


def test_destinations_limits_and_orders_the_report(inspect_json: Any) -> None:
    r = inspect_json(LINES[:2], "--destinations", "google-ads,unknown-tool,google-ads")
    assert r["destinations"] == {
        "google-ads": {"allowed": 0, "blocked": 2}, "unknown-tool": {"allowed": 2, "blocked": 0}}


def test_against_counts_what_a_second_mapping_would_change(workdir: Path, inspect_json: Any) -> None:
    text = (workdir / "mappings.yaml").read_text()
    (workdir / "next.yaml").write_text(text.replace("braze: {resolution: any}", "braze: {resolution: all}")
                                       .replace("destinations: [amplitude, mixpanel]", "destinations: [mixpanel]"))
    lines = [line(consent({"C0002": False, "C0004": True}))] * 2 + [line(consent({"C0002": True}))]
    r = inspect_json(lines, "--against", "next.yaml")
    assert r["changes"]["amplitude"] == {"allowed_to_blocked": 0, "blocked_to_allowed": 2}
    assert all(v == {"allowed_to_blocked": 0, "blocked_to_allowed": 0} for k, v in r["changes"].items()
               if k != "amplitude")


def test_gzip_files_and_stdin_read_as_the_plain_file(workdir: Path, inspect_json: Any) -> None:
    expected = inspect_json(LINES)
    data = ("\n".join(LINES) + "\n").encode()
    (workdir / "events.jsonl.gz").write_bytes(gzip.compress(data))
    cmd = [str(Path(sys.executable).parent / "consent-sidecar"), "inspect", "--mappings", "mappings.yaml",
           "--output", "json"]
    for args, stdin in ((["events.jsonl.gz"], None), (["-"], data)):
        done = subprocess.run([*cmd, *args], input=stdin, capture_output=True, timeout=60, cwd=workdir)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == expected
        assert done.stderr == b""  # no progress bar when stderr is no terminal
    done = subprocess.run([*cmd, "events.jsonl", "events.jsonl.gz"], capture_output=True, timeout=60, cwd=workdir)
    assert json.loads(done.stdout)["events"] == 2 * len(LINES)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--mappings", "mappings.yaml", "missing.jsonl"], 1, "missing.jsonl: cannot read"),
        (["--mappings", "broken.yaml", "cases.yaml"], 1, "broken.yaml:7:9: categories[1].id"),
        (["--mappings", "mappings.yaml", "--destinations", "a,,b", "cases.yaml"], 2, "empty item"),
        (["--mappings", "mappings.yaml", "-", "-"], 2, "stdin (-) can be read only once"),
        (["--mappings", "mappings.yaml", "cases.yaml.gz"], 1, "cases.yaml.gz: cannot read"),
    ],
)
def test_unreadable_inputs_and_bad_flags_are_clear_errors(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    (workdir / "cases.yaml.gz").write_bytes(b"not gzip")
    assert cli.run_cli(["inspect", *argv], {}) == code
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_the_table_summarises_for_people(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "events.jsonl").write_text("\n".join(LINES) + "\n")
    assert cli.run_cli(["inspect", "--mappings", "mappings.yaml", "events.jsonl"], {}) == 0
    out = capsys.readouterr().out
    rows = [" ".join(line.split()) for line in out.splitlines()]
    assert "invalid 4 (lines 6, 7, 8, 11)" in rows
    assert "unknown category c0004 (1 events; did you mean C0004?)" in rows
    assert rows[rows.index("DESTINATION ALLOWED BLOCKED") + 1:] == [
        "amplitude 8 0", "aws-s3 8 0", "braze 6 2", "google-ads 6 2", "mixpanel 7 1"]


def test_a_progress_bar_goes_to_stderr_on_a_terminal(workdir: Path) -> None:
    import pty

    (workdir / "events.jsonl").write_text("\n".join(LINES * 20_000) + "\n")
    main, tty = pty.openpty()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "consent-sidecar"), "inspect", "--mappings",
                             "mappings.yaml", "events.jsonl"], stdout=subprocess.PIPE, stderr=tty, cwd=workdir)
    os.close(tty)
    seen = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None or not seen:
        try:
            seen += os.read(main, 4096)
        except OSError:
            break
        assert time.monotonic() < deadline
    os.close(main)
    out, _ = proc.communicate(timeout=60)
    assert b"inspect:" in seen and b"B/s" in seen  # tqdm's bar, by bytes read
    assert out.startswith(b"events")


# -- the same decisions as the server -----------------------------------------------------------------

EDGE_LINES = [
    '{"a": NaN}', '{"a": 1e999}', '{"a": "\\ud800"}', '{"context": 1, "context": {}}', '{"context": {}, "context": 1}',
    '{"a": 1} x', '{"a": 01}', ' {"a": 1} ', '{"type": "track", "type": "identify"}', '{"a": "\x01"}',
    '{"context": {"consent": {"categoryPreferences": {"C0002": true, "C0002": false}}}}',
    '{"context": {"consent": {"categoryPreferences": null}}}', '{"context": {"consent": []}}',
    '{"integrations": []}', '{"integrations": {"All": false, "braze": {"x": 1}}}', '{"context": null}',
    '{"é": "ü", "context": {"consent": {"categoryPreferences": {"C0002": true}}}}',
    '{"p": ' + "[" * 70 + "]" * 70 + "}", '{"p": ' + "[" * 10 + "]" * 10 + ', "q": "' + "{" * 80 + '"}',
    '{"type": "track", "event": "Segment Consent Preference Updated", "integrations": {"amplitude": false}}',
]


@pytest.mark.parametrize("text", EDGE_LINES)
def test_the_fast_reader_agrees_with_the_servers_validation(text: str, cli_mapping: Any) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    try:
        parse_segment_event(raw.strip(), Limits())
        valid = True
    except InvalidArgument:
        valid = False
    inspector = Inspector(compile(cli_mapping))
    inspector.feed(io.BytesIO(raw + b"\n"))
    assert inspector.report()["invalid"] == (0 if valid else 1)


def sample_lines() -> list[bytes]:
    import random

    rng = random.Random(7)
    lines = [json.dumps(realistic_event(rng, i)).encode() for i in range(300)]
    for i, ev in enumerate(lines[:40]):
        data = json.loads(ev)
        data.setdefault("context", {})["consent"] = {"categoryPreferences": {
            "C0002": i % 2 == 0, "C0004": i % 3 == 0, "C0005": i % 5 == 0}}
        if i % 4 == 0:
            data["integrations"] = {"All": False, "amplitude": True, "braze": {"opt": 1}}
        lines[i] = json.dumps(data).encode()
    return [*lines, *(e.encode("utf-8", "surrogatepass") for e in EDGE_LINES)]


def test_counts_equal_the_sidecars_own_decisions_on_a_sample(
    served_sidecar: SidecarProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample_lines()
    path = tmp_path / "sample.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    code = cli.run_cli(["inspect", "--mappings", str(served_sidecar.mappings), "--output", "json", str(path)], {})
    out, err = capsys.readouterr()
    assert code == 0, err
    inspected = json.loads(out)
    destinations = list(inspected["destinations"])
    counts = {d: {"allowed": 0, "blocked": 0} for d in destinations}
    invalid = []
    with grpc.insecure_channel(served_sidecar.decision) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        for n, raw in enumerate(lines, 1):
            request = decision_pb2.DecideRequest(segment_event=raw.strip(), destinations=destinations)
            try:
                answer = stub.Decide(request, timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                invalid.append(n)
                continue
            for d in answer.allowed:
                counts[d]["allowed"] += 1
            for d in answer.blocked:
                counts[d]["blocked"] += 1
    assert inspected["events"] == len(lines)
    assert inspected["invalid"] == len(invalid) and inspected["invalid_lines"] == invalid[:10]
    assert inspected["destinations"] == counts
    assert sum(c["blocked"] for c in counts.values()) > 0 and len(invalid) > 3  # the sample exercises both
