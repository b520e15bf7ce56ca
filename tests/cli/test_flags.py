"""The flag <-> CONSENT_SIDECAR_<FLAG> mechanism, the flag reference, help and the verb groups."""

from __future__ import annotations

import argparse
import types

import pytest

from consent_sidecar import cli
from consent_sidecar.cli import flags
from consent_sidecar.config import ServeConfig

EMPTY_ENV: dict[str, str] = {}


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return cli.run_cli(argv, EMPTY_ENV if env is None else env)


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


def test_the_generic_mechanism_on_any_parser() -> None:
    parser = flags.Parser(prog="fake")
    parser.add_argument("--name", required=True)
    parser.add_argument("--tag", action="append", default=["a"])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-color", dest="color", action="store_false")
    flags.bind_env(parser, "fake")

    def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
        ns = parser.parse_args(argv)
        flags.resolve_env(parser, ns, env)
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
    assert not ref[("serve", "--mappings")].required  # with --etcd-endpoints it is the optional cache
    assert ref[("serve", "--etcd-prefix")].default == "/consent-sidecar/default"
    assert ref[("serve", "--admin-listen")].env == "CONSENT_SIDECAR_ADMIN_LISTEN"
    assert ref[("serve", "--grace-period")].default == 5.0
    assert ref[("serve", "--max-event-depth")].default == 64
    assert ref[("serve", "--log-format")].choices == ("auto", "json", "console")
    assert ref[("decide", "--explain")].boolean
    assert ref[("decide", "--consent")].help
    expected = {
        "--mappings", "--listen", "--admin-listen", "--principals", "--admin-tls-cert", "--admin-tls-key",
        "--admin-client-ca", "--audit-db", "--metrics-listen", "--workers",
        "--decision-log", "--decision-log-sample", "--decision-log-rate", "--decision-log-bytes-rate", "--memo-bytes",
        "--max-mapping-categories", "--max-mapping-destinations",
        "--grace-period", "--log-format", "--log-level", "--max-destinations", "--max-batch",
        "--max-destination-id-bytes", "--max-event-bytes", "--max-event-depth", "--max-message-bytes",
        "--max-connection-idle", "--max-concurrent-streams", "--worker-timeout", "--max-mapping-bytes",
        "--audit-replay-rate",
        "--etcd-endpoints", "--etcd-prefix", "--etcd-ca", "--etcd-cert", "--etcd-key", "--etcd-user", "--member-id",
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


def test_the_verb_groups_register_every_verb_in_reference_order() -> None:
    parser = cli.build_parser()
    [verbs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(verbs.choices) == [
        "serve", "check", "test", "decide", "token", "audit", "store", "health", "categories", "status", "fleet",
        "principals", "inspect", "console",
    ]
    assert all(callable(group.register) for group in cli.VERB_GROUPS)


def test_a_new_verb_group_gets_its_variables_help_and_reference_for_free(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def hello(ns: argparse.Namespace) -> int:
        print(f"hello {ns.name}")
        return 0

    def register(verbs: flags.Verbs) -> None:
        p = flags.verb(verbs, "hello", hello, "say hello")
        p.add_argument("--name", default="world", metavar="NAME", help="whom to greet")

    monkeypatch.setattr(cli, "VERB_GROUPS", (*cli.VERB_GROUPS, types.SimpleNamespace(register=register)))
    assert run(["hello"], {"CONSENT_SIDECAR_NAME": "operator"}) == 0
    assert capsys.readouterr().out == "hello operator\n"
    [info] = [f for f in cli.flag_reference() if f.verb == "hello"]
    assert (info.flag, info.env, info.default) == ("--name", "CONSENT_SIDECAR_NAME", "world")
    assert info.help == "whom to greet"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--mappings", "m.yaml", "--listen", "unix:"],
         "argument --listen: invalid address 'unix:': unix: needs a path, e.g. unix:/run/sidecar.sock"),
        (["serve", "--mappings", "m.yaml", "--listen", "unix://"],
         "argument --listen: invalid address 'unix://': unix: needs a path, e.g. unix:/run/sidecar.sock"),
        (["serve", "--mappings", "m.yaml", "--admin-listen", "[::1]"],
         "argument --admin-listen: invalid address '[::1]': expected host:port or unix:/path"),
        (["serve", "--mappings", "m.yaml", "--metrics-listen", "unix:/tmp/m"],
         "argument --metrics-listen: invalid address 'unix:/tmp/m': expected host:port"),
        (["serve", "--mappings", "m.yaml", "--listen", "h:70000"],
         "argument --listen: invalid address 'h:70000': expected host:port or unix:/path"),
        (["health", "--address", "::1:50051"],
         "argument --address: invalid address '::1:50051': put an IPv6 host in brackets, e.g. [::1]:50051"),
    ],
)
def test_every_address_flag_reads_addresses_with_the_one_parser(
    served: list[ServeConfig], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(argv) == 2
    assert message in capsys.readouterr().err
    assert served == []
