"""`serve`: every flag and variable reaches ServeConfig; bad values are usage errors; server errors one line."""

from __future__ import annotations

import pytest
from consent_core.limits import Limits, MappingLimits

from consent_sidecar import cli
from consent_sidecar.config import DEFAULT_AUDIT_REPLAY_RATE, ServeConfig

EMPTY_ENV: dict[str, str] = {}


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return cli.run_cli(argv, EMPTY_ENV if env is None else env)


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


def test_serve_passes_the_mapping_limits_and_the_byte_budgets(served: list[ServeConfig]) -> None:
    argv = ["serve", "--mappings", "m.yaml", "--max-mapping-categories", "50", "--memo-bytes", "4MiB",
            "--decision-log-bytes-rate", "256KiB/s"]  # fmt: skip
    assert run(argv, {"CONSENT_SIDECAR_MAX_MAPPING_DESTINATIONS": "900"}) == 0
    [config] = served
    assert config.mapping_limits == MappingLimits(max_categories=50, max_destinations=900)
    assert (config.memo_bytes, config.decision_log_bytes_rate) == (4 << 20, 256 << 10)


@pytest.mark.parametrize(
    ("argv", "env", "rate"),
    [
        ([], {}, DEFAULT_AUDIT_REPLAY_RATE),
        (["--audit-replay-rate", "500"], {}, 500.0),
        (["--audit-replay-rate", "6000/m"], {}, 100.0),
        (["--audit-replay-rate", "0"], {}, None),  # unpaced
        ([], {"CONSENT_SIDECAR_AUDIT_REPLAY_RATE": "250/s"}, 250.0),
    ],
)
def test_serve_passes_the_audit_replay_rate(
    served: list[ServeConfig], argv: list[str], env: dict[str, str], rate: float | None
) -> None:
    assert run(["serve", "--mappings", "m.yaml", *argv], env) == 0
    assert [c.audit_replay_rate for c in served] == [rate]


def test_a_bad_audit_replay_rate_is_a_usage_error(
    served: list[ServeConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["serve", "--mappings", "m.yaml", "--audit-replay-rate", "fast"]) == 2
    assert "argument --audit-replay-rate: invalid rate 'fast'" in capsys.readouterr().err
    assert served == []
