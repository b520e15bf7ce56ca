"""Sample documents shared by the tests (conftest fixtures and modules that need the text itself).

Most tests serve `SAMPLE_MAPPING`. A test that needs another third category (a shadow one of
its own, a disabled one) builds its text with `mapping_text`, so the part every sample shares
is written once, here.
"""

_HEAD = """\
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
"""

_DESTINATIONS = """\
destinations:
  aws-s3: {enforce: false}
  braze: {resolution: any}
"""

FUNCTIONAL_SHADOW = """\
  - id: C0003
    name: Functional Cookies
    shadow: true
    destinations: [amplitude, hotjar]
"""


def mapping_text(*categories: str) -> str:
    """The sample: unknown destinations allowed, C0002 and C0004, then `categories` (YAML list
    items, indented as above), then aws-s3 exempt and braze resolved by any category."""
    return _HEAD + "".join(categories) + _DESTINATIONS


SAMPLE_MAPPING = mapping_text(FUNCTIONAL_SHADOW)

# The smallest sample: two categories, no settings, no destination entries. For the tests of
# the write path, which count the audit events each change makes.
TWO_CATEGORIES = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads]
"""
