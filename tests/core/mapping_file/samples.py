"""What the mapping-file tests share: the examples directory, the problem helper and sample documents."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from consent_core.errors import MappingError
from consent_core.mapping_file import parse_mapping

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def problems(text: str, source: str = "m.yaml") -> list[str]:
    """The formatted problem lines of an invalid document (fails the test if it is valid)."""
    with pytest.raises(MappingError) as info:
        parse_mapping(textwrap.dedent(text), source)
    assert info.value.source == source
    return str(info.value).splitlines()


def doc(body: str) -> str:
    """A valid minimal document around `body` (a category list), for rule tests."""
    return "version: 1\ncategories:\n" + body


# Documents in the styles the editor must keep; the reader tests read each of them on both composers.

COMMENTED = """\
# [h1] Consent mapping, owned by the privacy team.
# [h2] Reviewed every quarter.
version: 1  # [v] always 1

settings:
  # [s1] unknown destinations flow until someone maps them
  unknown_destinations: allow  # [s2]

# [c0] Categories come from OneTrust.
categories:
  # [a1] Strictly necessary: the warehouse.
  - id: C0001  # [a2]
    name: "Strictly Necessary"  # [a3]
    destinations: [snowflake, bigquery]  # [a4]

  # [b1] Performance
  - id: C0002
    # [b2] inside the category
    name: 'Performance Cookies'
    enabled: true  # [b3]
    destinations:
      # [b4] analytics
      - amplitude  # [b5]
      - mixpanel
      - heap  # [b6]

  # [x1] Functional, written in flow style
  - {id: C0003, name: Functional Cookies, destinations: [intercom, zendesk]}  # [x2]

  # [t1] Targeting
  - id: C0004
    name: Targeting Cookies
    destinations:
    - google-ads  # [t2]
    - braze
    # [t3] after the last category

# [d0] per-destination settings
destinations:
  # [e1] exempt: the raw archive
  aws-s3: {enforce: false}  # [e2]
  braze:
    resolution: any  # [e3]
# [z] end of file
"""

QUOTING = """\
version: 1
categories:
  - id: C1
    name: plain name
    destinations: [plain]
  - id: 'C2'
    name: 'single quoted'
    destinations: ['single']
  - id: "C3"
    name: "double quoted"
    destinations: ["double"]
"""

FLOW_STYLE = (
    "version: 1\ncategories: [{id: C0001, name: One, destinations: [a]},"
    " {id: C0002, name: Two, destinations: [b, c]}]\n"
    "destinations: {aws-s3: {enforce: false}}\n"
)
COMPACT_CRLF = (
    "version: 1\r\ncategories:\r\n- id: C0001\r\n  name: One\r\n  destinations:\r\n  - a\r\n"
    "- id: C0002\r\n  name: Two\r\n  destinations: [b]\r\n"
)
DASH_ALONE = (
    "version: 1\ncategories:\n  -\n      id: C0001\n      name: One\n      enabled: true\n"
    "      destinations:\n        - a\ndestinations:\n"
)
