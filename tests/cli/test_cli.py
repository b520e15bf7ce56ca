"""The `consent-sidecar` command line: verbs in-process via run_cli (fast), a few through the installed script."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from consent_core.cases import CasesError, parse_cases, run_cases
from consent_core.index import Reason, compile
from consent_core.limits import Limits
from consent_core.mapping_file import load_mapping

from consent_sidecar import cli
from consent_sidecar.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]

MAPPINGS = """\
version: 1
settings:
  unknown_destinations: allow
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads, braze]
  - id: C0005
    name: Experiments
    shadow: true
    destinations: [amplitude]
destinations:
  aws-s3: {enforce: false}
  braze: {resolution: any}
"""

# categories[1].id sits at line 7, column 9: the example of API.md §3.
BROKEN = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude]
  - name: Targeting Cookies
    id: 4C
    destinations: [google-ads]
"""

CASES = """\
cases:
  - name: ads need targeting consent
    consent: {C0002: true, C0004: false}
    destinations: [google-ads, amplitude]
    expect: {allowed: [amplitude], blocked: [google-ads]}
  - name: no consent object allows everything
    destinations: [google-ads, amplitude]
    expect:
      allowed: [google-ads, amplitude]
      blocked: []
      reasons: {google-ads: REASON_NO_CONSENT}
  - name: segment event consent and integrations
    segment_event:
      type: track
      event: Order Completed
      context: {consent: {categoryPreferences: {C0002: true, C0004: true}}}
      integrations: {mixpanel: false}
    destinations: [mixpanel, google-ads, aws-s3]
    expect:
      allowed: [google-ads, aws-s3]
      reasons: {mixpanel: DISABLED_BY_EVENT, aws-s3: REASON_EXEMPT}
"""

EMPTY_ENV: dict[str, str] = {}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding mappings.yaml, broken.yaml and cases.yaml, made the working directory."""
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "cases.yaml").write_text(CASES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return cli.run_cli(argv, EMPTY_ENV if env is None else env)


def script() -> str:
    found = Path(sys.executable).parent / "consent-sidecar"
    if found.exists():
        return str(found)
    which = shutil.which("consent-sidecar")
    if which is None:
        pytest.skip("consent-sidecar is not installed")
    return which


# -- check -------------------------------------------------------------------------------------


def test_check_prints_counts_and_digest_of_a_valid_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "mappings.yaml"]) == 0
    out, err = capsys.readouterr()
    digest = load_mapping("mappings.yaml").mapping.digest()[:12]
    assert out == f"mappings.yaml: ok (3 categories, 5 destinations, digest {digest})\n"
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert err == ""


def test_check_reports_the_offending_node_and_fails(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "broken.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "broken.yaml:7:9: categories[1].id: must not start with a digit" in err.splitlines()


def test_check_of_a_missing_file_is_one_line_without_traceback(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["check", "nope.yaml"]) == 1
    _, err = capsys.readouterr()
    assert err == "nope.yaml: cannot read the mapping file: no such file\n"


def test_check_without_a_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check"]) == 2
    assert "required: F" in capsys.readouterr().err


# -- test --------------------------------------------------------------------------------------


def test_test_verb_passes_every_case(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["test", "mappings.yaml", "cases.yaml"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "PASS ads need targeting consent",
        "PASS no consent object allows everything",
        "PASS segment event consent and integrations",
        "3 passed, 0 failed",
    ]


def test_test_verb_names_expected_and_got_for_a_failing_case(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "bad-cases.yaml").write_text(
        "cases:\n"
        "  - name: wrong\n"
        "    consent: {C0002: true}\n"
        "    destinations: [google-ads, amplitude]\n"
        "    expect: {allowed: [google-ads, amplitude], reasons: {google-ads: REASON_GRANTED}}\n"
        "  - name: right\n"
        "    consent: {}\n"
        "    destinations: [amplitude]\n"
        "    expect: {blocked: [amplitude]}\n"
    )
    assert run(["test", "mappings.yaml", "bad-cases.yaml"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        'FAIL wrong: allowed: expected ["google-ads", "amplitude"], got ["amplitude"]; '
        "reasons.google-ads: expected REASON_GRANTED, got REASON_DENIED",
        "PASS right",
        "1 passed, 1 failed",
    ]


def test_test_verb_compares_lists_in_request_order(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "order.yaml").write_text(
        "cases:\n  - name: order\n    destinations: [mixpanel, amplitude]\n"
        "    expect: {allowed: [amplitude, mixpanel]}\n"
    )
    assert run(["test", "mappings.yaml", "order.yaml"]) == 1
    assert 'FAIL order: allowed: expected ["amplitude", "mixpanel"], got ["mixpanel", "amplitude"]' in (
        capsys.readouterr().out
    )


def test_test_verb_reports_a_malformed_cases_file_with_positions(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "malformed.yaml").write_text(
        "cases:\n"
        "  - name: one\n"
        "    consent: {C0002: yes please}\n"
        "    expect: {allowed: []}\n"
        "  - name: two\n"
        "    expect: {allowd: []}\n"
    )
    assert run(["test", "mappings.yaml", "malformed.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "malformed.yaml:3:22: cases[0].consent.C0002: must be true or false, got a string",
        "malformed.yaml:6:14: cases[1].expect.allowd: unknown key (expected one of: allowed, blocked, reasons)",
        "malformed.yaml:6:13: cases[1].expect: must give at least one of: allowed, blocked, reasons",
    ]


def test_test_verb_reports_invalid_yaml_with_its_position(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "yaml.yaml").write_text("cases:\n  - name: [one\n")
    assert run(["test", "mappings.yaml", "yaml.yaml"]) == 1
    err = capsys.readouterr().err
    assert re.match(r"yaml\.yaml:3:1: invalid YAML: ", err), err


def test_test_verb_with_a_broken_mapping_prints_its_errors(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["test", "broken.yaml", "cases.yaml"]) == 1
    assert "broken.yaml:7:9: categories[1].id: must not start with a digit" in capsys.readouterr().err


def test_test_verb_with_a_missing_cases_file_is_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["test", "mappings.yaml", "missing.yaml"]) == 1
    err = capsys.readouterr().err
    assert err == "missing.yaml: cannot read the cases file: no such file\n"
    assert len(err.splitlines()) == 1


# -- cases module ------------------------------------------------------------------------------


def _problems(text: str) -> list[str]:
    with pytest.raises(CasesError) as e:
        parse_cases(text, "c.yaml")
    return str(e.value).splitlines()


def test_cases_file_must_have_a_nonempty_cases_list() -> None:
    assert _problems("cases: []\n") == ["c.yaml:1:8: cases: must list at least one case"]
    assert _problems("- a\n") == ["c.yaml:1:1: must be a mapping with a 'cases' list, got a list"]
    assert _problems("other: 1\ncases:\n  - {name: x, expect: {allowed: []}}\n") == [
        "c.yaml:1:1: other: unknown key (expected: cases)"
    ]


def test_case_names_are_unique_and_consent_excludes_segment_event() -> None:
    assert _problems(
        "cases:\n"
        "  - {name: x, expect: {allowed: []}}\n"
        "  - {name: x, consent: {}, segment_event: {}, expect: {allowed: []}}\n"
    ) == [
        "c.yaml:3:12: cases[1].name: duplicate case name 'x' (first at cases[0])",
        "c.yaml:3:28: cases[1]: give consent or segment_event, not both",
    ]


def test_case_rejects_unknown_reason_and_non_string_destinations() -> None:
    problems = _problems(
        "cases:\n"
        "  - name: x\n"
        "    destinations: [amplitude, 3]\n"
        "    expect: {reasons: {amplitude: OK}}\n"
    )
    assert problems[0] == "c.yaml:3:31: cases[0].destinations[1]: must be a non-empty string, got an integer"
    assert problems[1].startswith("c.yaml:4:35: cases[0].expect.reasons.amplitude: unknown reason 'OK'")


def test_segment_event_must_be_plain_json_data() -> None:
    assert _problems(
        "cases:\n  - name: x\n    segment_event: {sentAt: 2024-01-01}\n    expect: {allowed: []}\n"
    ) == ["c.yaml:3:29: cases[0].segment_event.sentAt: a date is not a JSON value (quote it to make it a string)"]


def test_omitted_consent_means_no_consent_object_and_empty_consent_grants_nothing() -> None:
    index = compile(load_mapping_text())
    cases = parse_cases(
        "cases:\n"
        "  - {name: none, destinations: [google-ads], expect: {allowed: [google-ads]}}\n"
        "  - {name: empty, consent: {}, destinations: [google-ads], expect: {blocked: [google-ads]}}\n"
    )
    assert cases[0].consent is None
    assert cases[1].consent == {}
    assert [r.passed for r in run_cases(index, cases)] == [True, True]


def test_case_with_an_invalid_event_fails_with_the_field_named() -> None:
    index = compile(load_mapping_text())
    cases = parse_cases(
        "cases:\n"
        "  - name: bad prefs\n"
        "    segment_event: {context: {consent: {categoryPreferences: {C0002: 1}}}}\n"
        "    expect: {allowed: []}\n"
    )
    [result] = run_cases(index, cases)
    assert not result.passed
    assert result.why.startswith("invalid request: segment_event.context.consent.categoryPreferences.C0002:")


def test_reasons_accept_short_names_and_check_every_occurrence() -> None:
    index = compile(load_mapping_text())
    cases = parse_cases(
        "cases:\n"
        "  - name: dup\n"
        "    consent: {C0002: true}\n"
        "    destinations: [amplitude, amplitude/eu, ghost]\n"
        "    expect: {reasons: {amplitude: GRANTED, amplitude/eu: REASON_GRANTED, ghost: UNMAPPED, nope: DENIED}}\n"
    )
    [result] = run_cases(index, cases)
    assert result.why == "reasons.nope: expected REASON_DENIED, got no decision for 'nope'"
    assert cases[0].reasons is not None and cases[0].reasons["ghost"] is Reason.UNMAPPED


def load_mapping_text() -> Any:
    from consent_core.mapping_file import parse_mapping

    return parse_mapping(MAPPINGS, "mappings.yaml")


# -- decide ------------------------------------------------------------------------------------


def decide(argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None) -> Any:
    assert run(["decide", *argv], env) == 0
    return json.loads(capsys.readouterr().out)


def test_decide_without_consent_allows_every_destination(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert decide(["--mappings", "mappings.yaml", "google-ads", "amplitude"], capsys) == {
        "allowed": ["google-ads", "amplitude"],
        "blocked": [],
        "decisions": [],
    }


def test_decide_with_consent_splits_in_request_order(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = decide(
        ["--mappings", "mappings.yaml", "--consent", '{"C0002": true, "C0004": false}', "google-ads", "amplitude"],
        capsys,
    )
    assert out == {"allowed": ["amplitude"], "blocked": ["google-ads"], "decisions": []}


def test_decide_explain_lists_decision_fields_with_reason_names(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = decide(
        ["--mappings", "mappings.yaml", "--consent", '{"C0002": true}', "--explain", "google-ads", "amplitude/eu"],
        capsys,
    )
    assert out["decisions"] == [
        {
            "destination": "google-ads",
            "allowed": False,
            "reason": "REASON_DENIED",
            "required_categories": ["C0004"],
            "missing_categories": ["C0004"],
            "shadow_missing_categories": [],
        },
        {
            "destination": "amplitude/eu",
            "allowed": True,
            "reason": "REASON_GRANTED",
            "required_categories": ["C0002"],
            "missing_categories": [],
            "shadow_missing_categories": ["C0005"],
        },
    ]


def test_decide_without_destinations_decides_every_known_one_sorted(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = decide(["--mappings", "mappings.yaml", "--consent", "{}", "--explain"], capsys)
    assert [d["destination"] for d in out["decisions"]] == ["amplitude", "aws-s3", "braze", "google-ads", "mixpanel"]
    assert out["allowed"] == ["aws-s3"]
    assert [d["reason"] for d in out["decisions"]][:2] == ["REASON_DENIED", "REASON_EXEMPT"]


@pytest.mark.parametrize(
    ("consent", "message"),
    [
        ("{nope", "argument --consent: not valid JSON"),
        ("[true]", "argument --consent: must be a JSON object"),
        ('{"C0002": "yes"}', "argument --consent: category 'C0002' must be true or false"),
    ],
)
def test_decide_rejects_a_bad_consent_naming_the_flag(
    workdir: Path, capsys: pytest.CaptureFixture[str], consent: str, message: str
) -> None:
    assert run(["decide", "--mappings", "mappings.yaml", "--consent", consent, "amplitude"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_decide_rejects_a_bad_consent_variable_naming_it(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"CONSENT_SIDECAR_CONSENT": '{"C0002": 1}'}
    assert run(["decide", "--mappings", "mappings.yaml", "amplitude"], env) == 2
    assert "argument --consent (from CONSENT_SIDECAR_CONSENT): category 'C0002'" in capsys.readouterr().err


def test_decide_rejects_an_invalid_destination(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["decide", "--mappings", "mappings.yaml", "amplitude", ""]) == 2
    assert "destinations[1]: destination id must not be empty" in capsys.readouterr().err


def test_decide_reads_mappings_consent_and_explain_from_variables(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "CONSENT_SIDECAR_MAPPINGS": "mappings.yaml",
        "CONSENT_SIDECAR_CONSENT": '{"C0004": true}',
        "CONSENT_SIDECAR_EXPLAIN": "true",
    }
    out = decide(["google-ads"], capsys, env)
    assert out["allowed"] == ["google-ads"]
    assert out["decisions"][0]["reason"] == "REASON_GRANTED"


def test_decide_with_a_missing_mapping_file_fails_cleanly(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["decide", "--mappings", "gone.yaml"]) == 1
    assert capsys.readouterr().err == "gone.yaml: cannot read the mapping file: no such file\n"


# -- serve and the flag <-> variable mechanism -----------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
    """Replaces consent_sidecar.process.server.run; collects the ServeConfig each `serve` builds."""
    import consent_sidecar.process.server

    seen: list[ServeConfig] = []

    def fake_run(config: ServeConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(consent_sidecar.process.server, "run", fake_run)
    return seen


def test_serve_defaults(served: list[ServeConfig]) -> None:
    assert run(["serve", "--mappings", "m.yaml"]) == 0
    assert served == [ServeConfig(mappings="m.yaml")]


def test_serve_passes_every_flag(served: list[ServeConfig]) -> None:
    argv = [
        "serve", "--mappings", "m.yaml", "--listen", "0.0.0.0:1", "--listen", "unix:/tmp/s",
        "--admin-listen", "127.0.0.1:2", "--principals", "p.yaml", "--audit-db", "a.db",
        "--admin-tls-cert", "c.pem", "--admin-tls-key", "k.pem", "--admin-client-ca", "ca.pem",
        "--metrics-listen", "127.0.0.1:9464", "--workers", "3", "--grace-period", "0.5",
        "--log-format", "json", "--log-level", "DEBUG", "--max-destinations", "5", "--max-batch", "6",
        "--max-destination-id-bytes", "7", "--max-event-bytes", "8", "--max-event-depth", "9",
        "--max-message-bytes", "10",
    ]  # fmt: skip
    assert run(argv) == 0
    assert served == [
        ServeConfig(
            mappings="m.yaml", listen=("0.0.0.0:1", "unix:/tmp/s"), admin_listen="127.0.0.1:2",
            principals="p.yaml", audit_db="a.db", metrics_listen="127.0.0.1:9464", workers=3,
            admin_tls_cert="c.pem", admin_tls_key="k.pem", admin_client_ca="ca.pem",
            grace_period=0.5, log_format="json", log_level="debug",
            limits=Limits(
                max_destinations=5, max_batch=6, max_destination_id_bytes=7, max_event_bytes=8,
                max_event_depth=9, max_message_bytes=10,
            ),
        )
    ]  # fmt: skip


def test_serve_reads_every_flag_from_variables(served: list[ServeConfig]) -> None:
    env = {
        "CONSENT_SIDECAR_MAPPINGS": "m.yaml",
        "CONSENT_SIDECAR_LISTEN": "127.0.0.1:1, unix:/tmp/s",
        "CONSENT_SIDECAR_ADMIN_LISTEN": "127.0.0.1:2",
        "CONSENT_SIDECAR_WORKERS": "auto",
        "CONSENT_SIDECAR_GRACE_PERIOD": "2",
        "CONSENT_SIDECAR_LOG_FORMAT": "console",
        "CONSENT_SIDECAR_MAX_BATCH": "42",
    }
    assert run(["serve"], env) == 0
    [config] = served
    assert config.mappings == "m.yaml"
    assert config.listen == ("127.0.0.1:1", "unix:/tmp/s")
    assert config.admin_listen == "127.0.0.1:2"
    assert config.workers >= 1
    assert config.grace_period == 2.0
    assert config.log_format == "console"
    assert config.limits.max_batch == 42


def test_a_flag_on_the_command_line_beats_its_variable(served: list[ServeConfig]) -> None:
    env = {
        "CONSENT_SIDECAR_MAPPINGS": "env.yaml",
        "CONSENT_SIDECAR_LISTEN": "127.0.0.1:1,127.0.0.1:2",
        "CONSENT_SIDECAR_WORKERS": "not a number",  # never read: the flag wins
    }
    assert run(["serve", "--mappings", "cli.yaml", "--listen", "127.0.0.1:3", "--workers", "2"], env) == 0
    [config] = served
    assert (config.mappings, config.listen, config.workers) == ("cli.yaml", ("127.0.0.1:3",), 2)


def test_an_empty_variable_counts_as_unset(served: list[ServeConfig]) -> None:
    assert run(["serve"], {"CONSENT_SIDECAR_MAPPINGS": "m.yaml", "CONSENT_SIDECAR_ADMIN_LISTEN": ""}) == 0
    assert served[0].admin_listen is None


def test_a_missing_required_flag_names_its_variable(
    served: list[ServeConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["serve"]) == 2
    assert "the following arguments are required: --mappings (or CONSENT_SIDECAR_MAPPINGS)" in capsys.readouterr().err
    assert served == []


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "0"], {}, "argument --workers: invalid worker count '0'"),
        ([], {"CONSENT_SIDECAR_WORKERS": "many"}, "argument --workers (from CONSENT_SIDECAR_WORKERS): invalid worker"),
        ([], {"CONSENT_SIDECAR_LISTEN": "127.0.0.1:1,,x:2"}, "argument --listen (from CONSENT_SIDECAR_LISTEN): empty"),
        ([], {"CONSENT_SIDECAR_LISTEN": "nohost"}, "(from CONSENT_SIDECAR_LISTEN): invalid address 'nohost'"),
        (["--listen", "::1:80"], {}, "argument --listen: invalid address '::1:80': put an IPv6 host in brackets"),
        (["--log-format", "xml"], {}, "argument --log-format: invalid choice: 'xml'"),
        ([], {"CONSENT_SIDECAR_LOG_LEVEL": "loud"}, "(from CONSENT_SIDECAR_LOG_LEVEL): invalid choice: 'loud'"),
        ([], {"CONSENT_SIDECAR_GRACE_PERIOD": "-1"}, "(from CONSENT_SIDECAR_GRACE_PERIOD): invalid duration '-1'"),
        (["--max-batch", "0"], {}, "argument --max-batch: invalid value '0': expected a positive integer"),
        (["--metrics-listen", "unix:/tmp/m"], {}, "argument --metrics-listen: invalid address"),
        (["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:1"], {}, "argument --listen: 127.0.0.1:1 given twice"),
        (["--admin-listen", "127.0.0.1:50051"], {}, "argument --admin-listen: 127.0.0.1:50051 is also a --listen"),
    ],
)
def test_bad_serve_values_are_usage_errors_naming_the_flag(
    served: list[ServeConfig],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    assert run(["serve", "--mappings", "m.yaml", *argv], env) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: consent-sidecar serve")
    assert message in err
    assert served == []


def test_serve_reports_a_server_error_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import consent_sidecar.process.server

    def failing(config: ServeConfig) -> int:
        raise PermissionError(13, "Permission denied", config.mappings)

    monkeypatch.setattr(consent_sidecar.process.server, "run", failing)
    assert run(["serve", "--mappings", "m.yaml"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "consent-sidecar serve: error: [Errno 13] Permission denied: 'm.yaml'"
    ]


def test_the_generic_mechanism_on_any_parser() -> None:
    parser = cli._Parser(prog="fake")
    parser.add_argument("--name", required=True)
    parser.add_argument("--tag", action="append", default=["a"])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-color", dest="color", action="store_false")
    cli._bind_env(parser, "fake")

    def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
        ns = parser.parse_args(argv)
        cli.resolve_env(parser, ns, env)
        return ns

    ns = parse(["--name", "x"], {})
    assert (ns.name, ns.tag, ns.count, ns.verbose, ns.color) == ("x", ["a"], 1, False, True)
    env = {
        "CONSENT_SIDECAR_NAME": "y",
        "CONSENT_SIDECAR_TAG": "b,c",
        "CONSENT_SIDECAR_COUNT": "7",
        "CONSENT_SIDECAR_VERBOSE": "yes",
        "CONSENT_SIDECAR_NO_COLOR": "1",
    }
    ns = parse([], env)
    assert (ns.name, ns.tag, ns.count, ns.verbose, ns.color) == ("y", ["b", "c"], 7, True, False)
    ns = parse(["--name", "z", "--tag", "d", "--count", "2"], env)
    assert (ns.name, ns.tag, ns.count) == ("z", ["d"], 2)  # command line wins, lists are replaced not merged
    with pytest.raises(SystemExit):
        parse(["--name", "x"], {"CONSENT_SIDECAR_COUNT": "seven"})
    with pytest.raises(SystemExit):
        parse(["--name", "x"], {"CONSENT_SIDECAR_VERBOSE": "maybe"})


def test_flag_reference_lists_every_flag_with_variable_and_default() -> None:
    ref = {(f.verb, f.flag): f for f in cli.flag_reference()}
    listen = ref[("serve", "--listen")]
    assert (listen.env, listen.default, listen.repeated, listen.required) == (
        "CONSENT_SIDECAR_LISTEN", ("127.0.0.1:50051",), True, False,
    )  # fmt: skip
    assert ref[("serve", "--mappings")].required
    assert ref[("serve", "--admin-listen")].env == "CONSENT_SIDECAR_ADMIN_LISTEN"
    assert ref[("serve", "--grace-period")].default == 5.0
    assert ref[("serve", "--max-event-depth")].default == 64
    assert ref[("serve", "--log-format")].choices == ("auto", "json", "console")
    assert ref[("decide", "--explain")].boolean
    assert ref[("decide", "--consent")].help
    expected = {
        "--mappings", "--listen", "--admin-listen", "--principals", "--admin-tls-cert", "--admin-tls-key",
        "--admin-client-ca", "--audit-db", "--metrics-listen", "--workers",
        "--decision-log", "--decision-log-sample", "--decision-log-rate",
        "--grace-period", "--log-format", "--log-level", "--max-destinations", "--max-batch",
        "--max-destination-id-bytes", "--max-event-bytes", "--max-event-depth", "--max-message-bytes",
    }  # fmt: skip
    assert {flag for verb, flag in ref if verb == "serve"} == expected
    assert all(f.env == cli.env_var(f.flag) and f.help for f in ref.values())


def test_help_shows_each_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "CONSENT_SIDECAR_ADMIN_LISTEN" in out
    assert "(default: 127.0.0.1:50051)" in out


def test_no_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 2
    assert "usage: consent-sidecar" in capsys.readouterr().err


# -- token hash --------------------------------------------------------------------------------

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


# -- the installed script ----------------------------------------------------------------------


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
