"""What `import consent_client` costs, and what the base install (no `[embedded]` extra) can do.

Importing the package or constructing a client loads neither the server, nor consent-core,
nor the embedded mode (each check runs in a fresh interpreter). `EmbeddedDecider` is loaded
on first use. Without consent-core (simulated by blocking its import), fail_closed still
answers, and everything that needs the core fails at once with an error naming the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import consent_client
import consent_client.embedded
import pytest

from .support import MAPPING, WAIT, free_port

HEAVY = ("consent_core", "consent_sidecar", "consent_client.embedded", "watchfiles", "structlog",
         "prometheus_client", "ruamel")


def run_python(code: str, cwd: Path) -> Any:
    """Runs `code` in a fresh interpreter (outside the repository) and returns the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_the_client_loads_neither_the_server_nor_the_core(tmp_path: Path) -> None:
    loaded = run_python(f"""
        import json, sys
        import consent_client, consent_client.adapters
        from consent_client import AsyncConsentClient, ConsentClient
        ConsentClient("127.0.0.1:1").close()
        AsyncConsentClient("127.0.0.1:1", failure_policy="fail_open")
        print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))
    """, tmp_path)
    assert loaded == []


def test_embedded_decider_is_imported_on_first_use_and_decides(tmp_path: Path) -> None:
    mapping = tmp_path / "mappings.yaml"
    mapping.write_text(MAPPING)
    got = run_python(f"""
        import json, sys
        import consent_client
        before = "consent_client.embedded" in sys.modules
        from consent_client import EmbeddedDecider
        r = EmbeddedDecider({str(mapping)!r}).decide(["amplitude", "google-ads"], {{"C0002": True}})
        print(json.dumps([before, list(r.allowed), list(r.blocked)]))
    """, tmp_path)
    assert got == [False, ["amplitude"], ["google-ads"]]


def test_embedded_decider_is_a_listed_attribute_of_the_package() -> None:
    assert consent_client.EmbeddedDecider is consent_client.embedded.EmbeddedDecider
    assert "EmbeddedDecider" in consent_client.__all__ and "EmbeddedDecider" in dir(consent_client)
    with pytest.raises(AttributeError, match="no attribute 'Embedded'"):
        consent_client.Embedded  # type: ignore[attr-defined]  # noqa: B018


def test_without_consent_core_fail_closed_answers_and_the_rest_names_the_fix(tmp_path: Path) -> None:
    mapping = tmp_path / "mappings.yaml"
    mapping.write_text(MAPPING)
    got = run_python(f"""
        import json, sys
        sys.modules["consent_core"] = None  # as if consent-core were not installed
        from consent_client import AsyncConsentClient, ConsentClient, Request, RetryPolicy

        def refusal(make):
            try:
                make()
            except ModuleNotFoundError as e:
                return str(e)
            return None

        def embedded_decider():
            from consent_client import EmbeddedDecider

        out = {{
            "EmbeddedDecider": refusal(embedded_decider),
            "mappings_path": refusal(lambda: ConsentClient("127.0.0.1:1", mappings_path={str(mapping)!r})),
            "embedded": refusal(lambda: AsyncConsentClient(
                "127.0.0.1:1", failure_policy="embedded", mappings_path={str(mapping)!r})),
            "fail_open": refusal(lambda: ConsentClient("127.0.0.1:1", failure_policy="fail_open")),
        }}
        with ConsentClient("127.0.0.1:{free_port()}", timeout={WAIT}, retry=RetryPolicy(max_attempts=1)) as c:
            r = c.decide(["amplitude", ""], {{"C0002": True}}, explain=True)
            many = c.decide_many([Request(("a",), {{}}), Request(("b",), {{"C0002": "x"}})])
        out["fail_closed"] = [r.degraded, list(r.allowed), list(r.blocked), [d.reason.value for d in r.decisions]]
        out["fail_closed_many"] = [[m.degraded, list(m.blocked), m.error is not None] for m in many]
        print(json.dumps(out))
    """, tmp_path)
    missing = "needs consent-core, which is not installed: pip install 'consent-client[embedded]'"
    assert got.pop("EmbeddedDecider") == f"EmbeddedDecider {missing}"
    assert got.pop("fail_closed") == [True, [], ["amplitude", ""], ["REASON_UNSPECIFIED"] * 2]  # not validated
    assert got.pop("fail_closed_many") == [[True, ["a"], False], [False, [], True]]
    needs_mapping = f"mappings_path (a local mapping for the failure policy) {missing}"
    assert got == {
        "mappings_path": needs_mapping,
        "embedded": needs_mapping,  # the policy's mapping is what needs the core
        "fail_open": f"failure_policy 'fail_open' (it honours events' integrations) {missing}",
    }
