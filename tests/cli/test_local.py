"""`check`, `test` and `decide`: the mapping file alone, through run_cli in-process; and the cases format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from consent_core.cases import CasesError, parse_cases, run_cases
from consent_core.index import Reason, compile
from consent_core.mapping_file import load_mapping
from consent_core.model import ConsentMapping

from consent_sidecar import cli

EMPTY_ENV: dict[str, str] = {}


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return cli.run_cli(argv, EMPTY_ENV if env is None else env)


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
        "FAIL wrong: google-ads expected allowed, got blocked (REASON_DENIED; missing: C0004); "
        "reasons.google-ads: expected REASON_GRANTED, got REASON_DENIED",
        "PASS right",
        "1 passed, 1 failed",
    ]


@pytest.mark.parametrize(
    ("expect", "why"),
    [
        ("{blocked: [google-ads]}",
         "google-ads expected blocked, got allowed (REASON_GRANTED)"),
        ("{allowed: [amplitude]}",
         "google-ads expected blocked, got allowed (REASON_GRANTED)"),
        ("{allowed: [amplitude, google-ads, mixpanel]}",
         "mixpanel expected allowed, got no decision (not in the case's destinations)"),
        ("{allowed: [google-ads]}",
         "amplitude expected blocked, got allowed (REASON_GRANTED; shadow missing: C0005)"),
    ],
)
def test_a_fail_line_names_each_wrong_destination_with_its_reason_and_missing_categories(
    workdir: Path, capsys: pytest.CaptureFixture[str], expect: str, why: str
) -> None:
    (workdir / "c.yaml").write_text(
        "cases:\n  - name: c\n    consent: {C0002: true, C0004: true}\n"
        f"    destinations: [amplitude, google-ads]\n    expect: {expect}\n"
    )
    assert run(["test", "mappings.yaml", "c.yaml"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"FAIL c: {why}"


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
    assert err.startswith("yaml.yaml:2:11: invalid YAML: this '[' is never closed"), err


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


def test_omitted_consent_means_no_consent_object_and_empty_consent_grants_nothing(cli_mapping: ConsentMapping) -> None:
    index = compile(cli_mapping)
    cases = parse_cases(
        "cases:\n"
        "  - {name: none, destinations: [google-ads], expect: {allowed: [google-ads]}}\n"
        "  - {name: empty, consent: {}, destinations: [google-ads], expect: {blocked: [google-ads]}}\n"
    )
    assert cases[0].consent is None
    assert cases[1].consent == {}
    assert [r.passed for r in run_cases(index, cases)] == [True, True]


def test_case_with_an_invalid_event_fails_with_the_field_named(cli_mapping: ConsentMapping) -> None:
    index = compile(cli_mapping)
    cases = parse_cases(
        "cases:\n"
        "  - name: bad prefs\n"
        "    segment_event: {context: {consent: {categoryPreferences: {C0002: 1}}}}\n"
        "    expect: {allowed: []}\n"
    )
    [result] = run_cases(index, cases)
    assert not result.passed
    assert result.why.startswith("invalid request: segment_event.context.consent.categoryPreferences.C0002:")


def test_reasons_accept_short_names_and_check_every_occurrence(cli_mapping: ConsentMapping) -> None:
    index = compile(cli_mapping)
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


@pytest.mark.parametrize(
    ("categories", "warnings"),
    [
        ("  - id: C0004\n    name: Ads\n    destinations: [a]\n  - id: c0004\n    name: More Ads\n"
         "    destinations: [b]\n",
         ["m.yaml:6:9: categories[1].id: warning: 'c0004' differs from categories[0].id 'C0004' only in case"]),
        ("  - id: C0001\n    name: Targeting\n    destinations: [a]\n  - id: C0002\n    name: TARGETING\n"
         "    destinations: [b]\n",
         ["m.yaml:7:11: categories[1].name: warning: 'TARGETING' differs from categories[0].name 'Targeting' "
          "only in case"]),
        ("  - id: C0001\n    name: A\n    destinations: [a]\n", []),
    ],
)
def test_check_warns_about_ids_or_names_differing_only_in_case_and_still_passes(
    workdir: Path, capsys: pytest.CaptureFixture[str], categories: str, warnings: list[str]
) -> None:
    (workdir / "m.yaml").write_text("version: 1\ncategories:\n" + categories)
    assert run(["check", "m.yaml"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("m.yaml: ok")
    assert [line.split(" (")[0] for line in err.splitlines()] == warnings
