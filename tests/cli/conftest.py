"""Fixtures of the CLI tests: a working directory with sample files, and `serve` without a server.

Test modules import nothing from here: they take the fixtures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from consent_core.mapping_file import parse_mapping
from consent_core.model import ConsentMapping

from consent_sidecar.config import ServeConfig

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



@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding mappings.yaml, broken.yaml and cases.yaml, made the working directory."""
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "cases.yaml").write_text(CASES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli_mapping() -> ConsentMapping:
    """The mappings.yaml of `workdir`, parsed."""
    return parse_mapping(MAPPINGS, "mappings.yaml")


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

