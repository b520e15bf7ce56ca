"""Reading the mapping file on its two paths: the C composer (ruamel.yaml.clib) against the round-trip one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from consent_core.errors import MappingError
from consent_core.limits import MappingLimits
from consent_core.mapping_file import parse_mapping, prescan, reader
from consent_core.model import ConsentMapping
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .samples import COMMENTED, COMPACT_CRLF, DASH_ALONE, EXAMPLES, FLOW_STYLE, QUOTING, doc, problems
from .test_reader import RULE_CASES, SYNTAX_ERROR_CASES

# parse_mapping keeps libyaml's result only for a valid document and reads anything else again
# with the round-trip composer; these tests hold it to "same ConsentMapping, same problems, always".


def outcome(text: str, *, c_composer: bool) -> ConsentMapping | str:
    """parse_mapping's result on the C path (when `c_composer`) or the pure one: the ConsentMapping or the report."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reader, "_C_COMPOSER_AVAILABLE", c_composer)
        try:
            return parse_mapping(text, "m.yaml")
        except MappingError as e:
            return str(e)


def assert_both_paths_agree(text: str) -> ConsentMapping | str:
    pure = outcome(text, c_composer=False)
    assert outcome(text, c_composer=True) == pure
    # and where the C path is asked, libyaml never takes a document the round-trip composer rejects,
    # nor reads one differently (it may reject one the pure path accepts: that one is read again)
    if not prescan.pure_only(text) and prescan.prescan(text, MappingLimits())[0]:
        by_c = reader._valid_mapping_by_c_composer(text, "m.yaml", MappingLimits())
        assert by_c is None if isinstance(pure, str) else by_c in (None, pure)
    return pure


def test_the_c_composer_is_installed() -> None:
    """A declared dependency: without it every test below would compare the pure path with itself."""
    assert reader._C_COMPOSER_AVAILABLE


def test_the_examples_read_the_same_on_both_paths() -> None:
    assert isinstance(assert_both_paths_agree((EXAMPLES / "mappings.yaml").read_text()), ConsentMapping)
    assert isinstance(assert_both_paths_agree((EXAMPLES / "broken-mappings.yaml").read_text()), str)


@pytest.mark.parametrize(
    "text",
    [text for text, _ in RULE_CASES]
    + [text for text, _ in SYNTAX_ERROR_CASES]
    + [COMMENTED, FLOW_STYLE, COMPACT_CRLF, DASH_ALONE, QUOTING, "\ufeff" + FLOW_STYLE],
)
def test_every_table_document_reads_the_same_on_both_paths(text: str) -> None:
    assert_both_paths_agree(textwrap.dedent(text))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("0o1", 1),
        ("0x1", 1),
        ("+1", 1),
        ("01", 1),
        ("1_0", "m.yaml:1:10: version: unsupported version 10: must be 1"),
        ("010", "m.yaml:1:10: version: unsupported version 10: must be 1"),
        ("0o10", "m.yaml:1:10: version: unsupported version 8: must be 1"),
        ("1:20", "m.yaml:1:10: version: must be the integer 1, not a string"),
        (".inf", "m.yaml:1:10: version: must be the integer 1, not a number"),
        ("~", "m.yaml:1:10: version: must be the integer 1, not empty (null)"),
        ("null", "m.yaml:1:10: version: must be the integer 1, not empty (null)"),
        ("true", "m.yaml:1:10: version: must be the integer 1, not a boolean"),
        ("yes", "m.yaml:1:10: version: must be the integer 1, not a string"),
        ("!!int '1'", 1),
        ("!!str 1", "m.yaml:1:10: version: must be the integer 1, not a string"),
        ("2001-12-14", "m.yaml:1:10: version: must be the integer 1, not a date"),
    ],
)
def test_yaml_1_2_resolution_is_the_same_on_both_paths(value: str, expected: int | str) -> None:
    got = assert_both_paths_agree(f"version: {value}\ncategories: []\n")
    assert got == (ConsentMapping() if expected == 1 else expected)


@pytest.mark.parametrize(
    ("word", "enabled"),
    [("true", True), ("True", True), ("FALSE", False), ("yes", None), ("on", None), ("'true'", None)],
)
def test_booleans_resolve_the_same_on_both_paths(word: str, enabled: bool | None) -> None:
    got = assert_both_paths_agree(doc(f"  - id: C1\n    name: Ads\n    enabled: {word}\n    destinations: [a]\n"))
    if enabled is None:
        assert isinstance(got, str)
    else:
        assert isinstance(got, ConsentMapping) and got.categories[0].enabled is enabled


def test_a_yaml_1_1_directive_is_read_by_the_round_trip_composer() -> None:
    """libyaml's path ignores `%YAML 1.1` (`yes` would stay a string): such a file never takes it."""
    text = "%YAML 1.1\n---\n" + doc("  - id: C1\n    name: Ads\n    enabled: no\n    destinations: [a]\n")
    assert prescan.pure_only(text)  # what the guard is for
    assert reader._valid_mapping_by_c_composer(text, "m.yaml", MappingLimits()) is None
    got = assert_both_paths_agree(text)
    assert isinstance(got, ConsentMapping) and got.categories[0].enabled is False


def test_valid_documents_are_composed_by_libyaml_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pure(text: str, source: str) -> None:
        raise AssertionError("the round-trip composer ran")

    monkeypatch.setattr(reader, "_compose", no_pure)
    assert parse_mapping((EXAMPLES / "mappings.yaml").read_text(), "m.yaml").categories[0].id == "C0001"


def test_without_ruamel_yaml_clib_everything_takes_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "_ruamel_yaml", None)  # `import _ruamel_yaml` now raises ImportError
    assert not reader._c_composer_available()
    monkeypatch.setattr(reader, "_C_COMPOSER_AVAILABLE", reader._c_composer_available())

    def no_c(text: str) -> None:
        raise AssertionError("the C composer ran")

    monkeypatch.setattr(reader, "_compose_c", no_c)
    assert parse_mapping((EXAMPLES / "mappings.yaml").read_text(), "m.yaml").categories[0].id == "C0001"
    assert problems(doc("  - id: 4C\n    name: Ads\n    destinations: [a]\n")) == [
        "m.yaml:3:9: categories[0].id: must not start with a digit"
    ]


def _flow_nest(depth: int, pad: int = 0) -> str:
    """A document `depth` + 1 collections deep (the top mapping and `depth` flow lists), after `pad` flow maps."""
    return "version: 1\ncategories: []\n" + "".join(f"k{i}: {{}}\n" for i in range(pad)) + (
        "x: " + "[" * depth + "]" * depth + "\n"
    )


@pytest.mark.parametrize(
    ("text", "shallow"),
    [
        ((EXAMPLES / "mappings.yaml").read_text(), True),
        (_flow_nest(62), True),  # always measured by libyaml's parser (which keeps its own stack)
        (_flow_nest(63), True),
        (_flow_nest(64), False),
        (_flow_nest(63, pad=600), True),
        ("version: 1\ncategories: []\nx:\n" + "  " + "- " * 600 + "y\n", False),  # a long line, no brackets
        ("version: 1\ncategories: [" + ", ".join(f"{{id: C{i}, name: N{i}, destinations: [d]}}" for i in range(300))
         + "]\n", True),
    ],
)  # fmt: skip
def test_only_shallow_text_reaches_libyamls_composer(text: str, shallow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    assert prescan.prescan(text, MappingLimits())[0] is shallow
    if not shallow:
        def no_c(text: str) -> None:
            raise AssertionError("the C composer ran")

        monkeypatch.setattr(reader, "_compose_c", no_c)
        with pytest.raises(MappingError):  # none of these is a valid mapping: the round-trip composer says why
            parse_mapping(text, "m.yaml")


def test_a_large_valid_file_still_takes_the_c_composer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of flow maps and a long destinations line: shallow, so no round-trip composer."""
    def no_pure(text: str, source: str) -> None:
        raise AssertionError("the round-trip composer ran")

    dests = [f"dest-{i}" for i in range(400)]
    text = doc(f"  - id: C1\n    name: Ads\n    destinations: [{', '.join(dests)}]\n") + "destinations:\n" + "".join(
        f"  {d}: {{enforce: false}}\n" for d in dests
    )
    monkeypatch.setattr(reader, "_compose", no_pure)
    assert len(parse_mapping(text, "m.yaml").destinations) == 400


@pytest.mark.parametrize(
    "value",
    # (`[[[...` crashes libyaml the same way, but the round-trip scanner takes ~5 s to refuse it.)
    ["\n  " + "- " * 100_000 + "x", "{a: " * 100_000 + "b" + "}" * 100_000],
    ids=["compact block lists", "flow maps"],
)
def test_nesting_deep_enough_to_overflow_libyaml_is_an_error_not_a_crash(value: str) -> None:
    """libyaml's composer recurses on the C stack (SIGSEGV near 20,000 levels): a child process shows a crash."""
    script = (
        "import sys\n"
        "from consent_core.errors import MappingError\n"
        "from consent_core.mapping_file import parse_mapping\n"
        "try:\n"
        "    parse_mapping(sys.stdin.read(), 'm.yaml')\n"
        "except MappingError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=f"version: 1\ncategories: []\nx: {value}\n",
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "m.yaml: invalid YAML: nested too deeply\n", "")


# Documents built from YAML tokens that resolve differently, in block and flow style, with
# comments, duplicate and unknown keys, implicit nulls and aliases; then maybe a little broken.
# fmt: off
_TOKENS = st.sampled_from(
    [
        "C0001", "C0002", "Ads", "It's", "yes", "no", "on", "true", "False", "1", "010", "0o10", "0x1F", "1_000",
        "1:20", ".inf", "-.inf", ".nan", "~", "null", "", "1.0", "2001-12-14", "'q'", '"d q"', "'it''s'", '"a\\tb"',
        "a b", "ga4/eu", "ünï", "all", "any", "allow", "deny", "most", "!!str 1", "!!int '1'", "&x a", "*x", "<<",
        "[]", "{}", "[a, b]", "{enforce: false}", "|\n      lit", ">-\n      folded", "x # trailing",
    ]
)
_KEYS = st.sampled_from(["id", "name", "enabled", "shadow", "destinations", "owner", "1", "'id'"])
_JUNK = st.sampled_from(
    [
        "", " ", "\t", ":", "-", "- ", "#", "'", '"', "[", "]", "{", "}", ",", "&", "*",
        "!", "%", "|", ">", "?", "@", "`", "\n", "\n  ", "\x01", "\ufeff", "\u2028",
        "\x7f", "\x9f", "\xa0", "\ufffe", "\U0001f600", "\r",
    ]
)
# fmt: on
_BOOLEAN_WORDS = st.sampled_from(["true", "false", "True", "FALSE", "'true'", "yes", "~"])
_GOOD_DEST_IDS = st.sampled_from(["amplitude", "braze", "aws-s3", "'true'", "ünï", '"q q"'])
_DEST_IDS = st.sampled_from(["amplitude", "braze", "aws-s3", "123", "'true'", "ga4/eu", "ünï"])


@st.composite
def _documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    wild = draw(st.integers(0, 2)) == 0  # else mostly valid
    if wild or draw(st.integers(0, 9)) > 0:
        lines.append(f"version: {draw(_TOKENS) if wild else 1}")
    if draw(st.booleans()):
        choice = draw(_TOKENS) if wild else draw(st.sampled_from(["allow", "deny"]))
        lines.append(f"settings: {{unknown_destinations: {choice}}}")
    if draw(st.booleans()):
        lines.append("# a comment")
    lines.append("categories:")
    flow_items = draw(st.booleans())
    for n in range(draw(st.integers(0, 3))):
        fields = [("id", f"C000{n}"), ("name", f"Name {n}")]
        for _ in range(draw(st.integers(0, 2))):
            if wild and draw(st.booleans()):
                fields.append((draw(_KEYS), draw(_TOKENS)))
            else:
                fields.append((draw(st.sampled_from(["enabled", "shadow"])), draw(_BOOLEAN_WORDS)))
        dests = draw(
            st.lists(_DEST_IDS if wild else _GOOD_DEST_IDS, min_size=0 if wild else 1, max_size=3, unique=not wild)
        )
        block_dests = draw(st.booleans()) and not flow_items and dests
        fields.append(("destinations", "" if block_dests else "[" + ", ".join(dests) + "]"))
        fields = draw(st.permutations(fields))
        if flow_items:
            lines.append("  - {" + ", ".join(f"{k}: {v}" for k, v in fields) + "}")
            continue
        for i, (k, v) in enumerate(fields):
            lines.append(f"{'  - ' if i == 0 else '    '}{k}:{' ' + v if v else ''}")
            if k == "destinations" and not v:
                lines.extend(f"      - {d}" for d in dests)
    if draw(st.booleans()):
        lines.append("destinations:")
        for d in draw(st.lists(_DEST_IDS, max_size=3)):
            lines.append(f"  {d}: {draw(st.sampled_from(['', '{}', '{enforce: false}', '{resolution: any}']))}")
            if wild and draw(st.booleans()):
                lines.append(f"  {d}: {draw(_TOKENS)}")
    text = "\n".join(lines) + "\n"
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # slightly broken
        i = draw(st.integers(0, len(text)))
        junk = draw(_JUNK)
        text = text[:i] + junk + text[i + draw(st.integers(0, 2)) :]
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\n", "\r\n")
    if draw(st.integers(0, 9)) == 0:
        text = "\ufeff" + text
    return text


@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_documents())
def test_any_document_reads_the_same_on_both_paths(text: str) -> None:
    assert_both_paths_agree(text)
