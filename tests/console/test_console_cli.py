"""The console verb: its flags and variables, `python -m consent_sidecar.console` end to end, HTTPS and admin TLS.

The sidecar runs in this test's event loop; the console either as a real subprocess (the
entry point, SIGTERM included) or served by uvicorn on a real socket in the same loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from consent_sidecar.console.cli import add_flags, config_from, main, parse, register
from consent_sidecar.console.settings import ConsoleConfig, ConsoleConfigError, is_loopback

if TYPE_CHECKING:

    from console.conftest import Tokens

StartAdmin = "Callable[..., AbstractAsyncContextManager[RunningAdmin]]"
ServeConsole = "Callable[[ConsoleConfig], AbstractAsyncContextManager[str]]"
WAIT = 30.0


# -- flags ------------------------------------------------------------------------------------------


def test_register_adds_the_console_verb_with_its_defaults() -> None:
    parser = argparse.ArgumentParser(prog="consent-sidecar")
    register(parser.add_subparsers(dest="verb"))
    ns = parser.parse_args(["console", "--admin-address", "127.0.0.1:50052"])
    assert ns.verb == "console" and callable(ns.handler)
    config = config_from(ns)
    assert config == ConsoleConfig(admin_address="127.0.0.1:50052")
    assert (config.listen, config.session_idle) == ("127.0.0.1:8080", 1800.0)


def test_every_flag_is_a_plain_option_the_main_clis_variables_can_bind() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    flags = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert [a.option_strings[0] for a in flags] == [
        "--admin-address", "--listen", "--admin-tls-ca", "--admin-tls-cert", "--admin-tls-key", "--tls-cert",
        "--tls-key", "--session-idle", "--log-format", "--log-level",
    ]  # fmt: skip
    for a in flags:
        assert type(a) is argparse._StoreAction and a.nargs is None, a.option_strings


def test_variables_fill_flags_and_a_flag_beats_its_variable() -> None:
    env = {"CONSENT_SIDECAR_ADMIN_ADDRESS": "unix:/run/admin.sock", "CONSENT_SIDECAR_SESSION_IDLE": "15m",
           "CONSENT_SIDECAR_LISTEN": "127.0.0.1:9000", "CONSENT_SIDECAR_TLS_CERT": ""}
    ns = parse(["--listen", "127.0.0.1:9100"], env)
    config = config_from(ns)
    assert (config.admin_address, config.session_idle, config.listen) == ("unix:/run/admin.sock", 900.0,
                                                                          "127.0.0.1:9100")
    assert config.tls_cert is None, "an empty variable counts as unset"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "the following arguments are required: --admin-address"),
        (["--admin-address", "nope"], {}, "invalid address 'nope'"),
        (["--admin-address", "a:1", "--session-idle", "0"], {}, "invalid duration '0'"),
        (["--admin-address", "a:1"], {"CONSENT_SIDECAR_SESSION_IDLE": "soon"},
         "--session-idle (from CONSENT_SIDECAR_SESSION_IDLE): invalid duration 'soon'"),
        (["--admin-address", "a:1"], {"CONSENT_SIDECAR_LISTEN": "8080"}, "(from CONSENT_SIDECAR_LISTEN)"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv, env)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("raw", "seconds"), [("90", 90.0), ("30m", 1800.0), ("1h", 3600.0), ("2.5s", 2.5)])
def test_session_idle_reads_seconds_minutes_or_hours(raw: str, seconds: float) -> None:
    ns = parse(["--admin-address", "a:1", "--session-idle", raw], {})
    assert ns.session_idle == seconds


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"tls_cert": "c.pem"}, "--tls-cert and --tls-key must be given together"),
        ({"admin_tls_key": "k.pem"}, "--admin-tls-cert and --admin-tls-key must be given together"),
        ({"admin_tls_ca": "/nonexistent/ca.pem"}, "--admin-tls-ca /nonexistent/ca.pem: cannot read"),
        ({"tls_cert": __file__, "tls_key": __file__}, "does not hold PEM certificates"),
        ({"listen": "localhost"}, "--listen 'localhost': expected host:port"),
    ],
)  # fmt: skip
def test_unusable_flags_are_refused_before_anything_listens(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConsoleConfigError, match=message.replace("(", r"\(")):
        ConsoleConfig(admin_address="127.0.0.1:1", **flags).check()


def test_the_entry_point_exits_2_on_an_unusable_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--admin-address", "127.0.0.1:1", "--tls-cert", "c.pem"]) == 2
    assert "consent-sidecar console: --tls-cert and --tls-key must be given together" in capsys.readouterr().err


def test_a_busy_listen_address_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["--admin-address", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}"]) == 1
    assert f"--listen 127.0.0.1:{port}: cannot listen" in capsys.readouterr().err


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True),
                                                 ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False),
                                                 ("console.example", False)])  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_SIDECAR_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_the_cli_module_imports_no_web_stack() -> None:
    done = run_python(
        "import sys, consent_sidecar.console.cli\n"
        "print([m for m in ('starlette', 'uvicorn', 'jinja2', 'multipart') if m in sys.modules])"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_without_the_console_extra_it_says_how_to_install_it() -> None:
    done = run_python(
        "import sys\nsys.modules['uvicorn'] = None\n"
        "from consent_sidecar.console.cli import main\n"
        "sys.exit(main(['--admin-address', '127.0.0.1:1', '--listen', '127.0.0.1:0']))"
    )
    assert done.returncode == 1
    assert "pip install 'consent-sidecar[console]'" in done.stderr


# -- the entry point, end to end ---------------------------------------------------------------------


async def read_until_listening(stream: asyncio.StreamReader, seen: list[str]) -> str:
    while True:
        line = (await stream.readline()).decode()
        assert line, "the console exited before listening:\n" + "".join(seen)
        seen.append(line)
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "console listening":
                return str(record["url"])


async def test_python_m_console_serves_signs_in_and_stops_on_sigterm_with_0(
    start_admin: StartAdmin, tokens: Tokens
) -> None:
    async with start_admin() as sidecar:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_SIDECAR_")}
        env["CONSENT_SIDECAR_ADMIN_ADDRESS"] = sidecar.address
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consent_sidecar.console", "--listen", "127.0.0.1:0", "--log-format", "json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        seen: list[str] = []
        try:
            url = await asyncio.wait_for(read_until_listening(proc.stderr, seen), WAIT)
            assert url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
                login = await http.get("/login")
                assert login.headers["x-frame-options"] == "DENY"
                csrf = login.text.split('name="csrf_token" value="')[1].split('"')[0]
                r = await http.post("/login", data={"token": tokens.owner, "csrf_token": csrf})
                assert (r.status_code, r.headers["location"]) == (303, "/categories")
                page = await http.get("/categories")
                assert page.status_code == 200 and 'data-category-id="C0002"' in page.text
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        rest = (await proc.stderr.read()).decode()
        logged = "".join(seen) + rest
        assert '"path": "/categories"' in logged and '"status": 303' in logged
        assert tokens.owner not in logged


# -- TLS: the console over HTTPS, the admin channel over TLS and mTLS --------------------------------


def openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)


def issue(d: Path, name: str, ca: str, san: str) -> None:
    openssl(
        "req", "-x509", "-CA", str(d / f"{ca}.pem"), "-CAkey", str(d / f"{ca}.key"), "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-keyout", str(d / f"{name}.key"),
        "-out", str(d / f"{name}.pem"), "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
        "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth,clientAuth",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the TLS tests' certificates: apt-get install -y openssl")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-subj", "/CN=ca")  # fmt: skip
    issue(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    issue(d, "client", "ca", "DNS:client")
    return d


@contextlib.asynccontextmanager
async def browser(url: str, pki: Path) -> AsyncIterator[httpx.AsyncClient]:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    async with httpx.AsyncClient(base_url=url, verify=context, timeout=WAIT) as http:
        yield http


async def sign_in(http: httpx.AsyncClient, token: str) -> httpx.Response:
    login = await http.get("/login")
    csrf = login.text.split('name="csrf_token" value="')[1].split('"')[0]
    return await http.post("/login", data={"token": token, "csrf_token": csrf})


async def test_over_https_every_cookie_is_secure(
    start_admin: StartAdmin, serve_console: ServeConsole, pki: Path, tokens: Tokens
) -> None:
    async with start_admin() as sidecar:
        config = ConsoleConfig(admin_address=sidecar.address, listen="127.0.0.1:0",
                               tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"))
        async with serve_console(config) as url, browser(url, pki) as http:
            assert url.startswith("https://127.0.0.1:")
            login = await http.get("/login")
            assert "secure" in login.headers["set-cookie"].lower()
            r = await sign_in(http, tokens.owner)
            session = [h for h in r.headers.get_list("set-cookie") if h.startswith("console_session=")]
            assert len(session) == 1 and "; secure" in session[0].lower() and "httponly" in session[0].lower()
            assert (await http.get("/categories")).status_code == 200


@pytest.mark.parametrize("mtls", [False, True])
async def test_the_admin_channel_speaks_tls_and_mtls(
    start_admin: StartAdmin, serve_console: ServeConsole, pki: Path, tokens: Tokens, mtls: bool
) -> None:
    server = {"admin_tls_cert": str(pki / "server.pem"), "admin_tls_key": str(pki / "server.key"),
              "admin_client_ca": str(pki / "ca.pem") if mtls else None}
    client = {"admin_tls_cert": str(pki / "client.pem"), "admin_tls_key": str(pki / "client.key")} if mtls else {}
    async with start_admin(**server) as sidecar:
        config = ConsoleConfig(admin_address=sidecar.address, listen="127.0.0.1:0", admin_tls_ca=str(pki / "ca.pem"),
                               **client)
        async with serve_console(config) as url, httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            r = await sign_in(http, tokens.owner)
            assert r.status_code == 303, r.text
            assert (await http.get("/status")).status_code == 200


@pytest.mark.parametrize("missing", ["the CA", "the client certificate"])
async def test_an_admin_channel_that_cannot_be_trusted_refuses_to_sign_in(
    start_admin: StartAdmin, serve_console: ServeConsole, pki: Path, tokens: Tokens, missing: str
) -> None:
    server = {"admin_tls_cert": str(pki / "server.pem"), "admin_tls_key": str(pki / "server.key"),
              "admin_client_ca": str(pki / "ca.pem")}
    async with start_admin(**server) as sidecar:
        if missing == "the CA":  # plaintext against a TLS listener
            config = ConsoleConfig(admin_address=sidecar.address, listen="127.0.0.1:0", admin_timeout=5.0)
        else:
            config = ConsoleConfig(admin_address=sidecar.address, listen="127.0.0.1:0", admin_timeout=5.0,
                                   admin_tls_ca=str(pki / "ca.pem"))
        async with serve_console(config) as url, httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
            r = await sign_in(http, tokens.owner)
            assert r.status_code == 503 and "did not answer" in r.text
            assert "console_session" not in r.headers.get("set-cookie", "")
