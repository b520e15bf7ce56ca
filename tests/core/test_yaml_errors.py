"""A YAML syntax error points at the mistake in plain words: an unclosed bracket or quote where it was opened."""

from __future__ import annotations

import pytest
from consent_core.errors import MappingError
from consent_core.mapping_file import parse_mapping

HEAD = "version: 1\ncategories:\n  - id: C0002\n    name: Performance Cookies\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (HEAD + "    destinations: [amplitude, mixpanel\n  - id: C0004\n    name: Ads\n    destinations: [x]\n",
         "m.yaml:5:19: invalid YAML: this '[' is never closed (no ']' before line 6, where the parser gave up)"),
        ("version: 1\nsettings: {unknown_destinations: allow\ncategories:\n  - id: C1\n    name: x\n"
         "    destinations: [a]\n",
         "m.yaml:2:11: invalid YAML: this '{' is never closed (no '}' before line 3, where the parser gave up)"),
        (HEAD.replace("name: Performance Cookies", 'name: "Performance Cookies') + "    destinations: [a]\n",
         "m.yaml:4:11: invalid YAML: this '\"' is never closed (no '\"' before the end of the file, "
         "where the parser gave up)"),
        # Given up on the bracket's own line: the parser's words are as good as any.
        (HEAD + "    destinations: [a, {b: c} d]\n",
         "m.yaml:5:"),
    ],
)
def test_an_unclosed_bracket_or_quote_is_reported_where_it_opens(text: str, problem: str) -> None:
    with pytest.raises(MappingError) as info:
        parse_mapping(text, "m.yaml")
    [line] = info.value.format().splitlines()
    assert line.startswith(problem), line
    if "never closed" not in problem:
        assert "never closed" not in line
