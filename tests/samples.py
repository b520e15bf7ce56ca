"""Sample documents shared by the tests (conftest fixtures and modules that need the text itself)."""

SAMPLE_MAPPING = """\
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
  - id: C0003
    name: Functional Cookies
    shadow: true
    destinations: [amplitude, hotjar]
destinations:
  aws-s3: {enforce: false}
  braze: {resolution: any}
"""
