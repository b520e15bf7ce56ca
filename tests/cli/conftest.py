"""Fixtures of the CLI tests: a working directory with sample files, `serve` without a server, and a real one.

Test modules import nothing from here: they take the fixtures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from consent_core.mapping_file import parse_mapping
from consent_core.model import ConsentMapping
from samples import mapping_text
from serving import serve_process

from consent_sidecar.config import ServeConfig

# The sample with a shadow category of its own: C0005 -> amplitude.
MAPPINGS = mapping_text("""\
  - id: C0005
    name: Experiments
    shadow: true
    destinations: [amplitude]
""")

# categories[1].id sits at line 7, column 9: the example of docs/reference.md, "4. Mapping file".
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



# -- a real `consent-sidecar serve` process with an admin listener -------------------------------

WAIT = 30.0  # upper bound of every wait on a sidecar process, in seconds


@dataclasses.dataclass
class SidecarProcess:
    """A `consent-sidecar serve` child on unix sockets, its files, and the tokens of its principals."""

    directory: Path
    mappings: Path
    principals: Path
    audit_db: Path
    decision: str  # unix:... the --listen address
    admin: str  # unix:... the --admin-listen address
    tokens: dict[str, str]  # principal id -> token
    process: subprocess.Popen[str]
    tls: dict[str, str]  # the client's TLS flags' values, when the admin listener speaks TLS

    def env(self, who: str | None = "alice") -> dict[str, str]:
        """The environment of a CLI run as `who` (its token in CONSENT_SIDECAR_TOKEN; None = no token)."""
        return {} if who is None else {"CONSENT_SIDECAR_TOKEN": self.tokens[who]}

    def admin_flags(self) -> list[str]:
        flags = ["--address", self.admin]
        for name, value in self.tls.items():
            flags += [f"--{name}", value]
        return flags


def cli_bin() -> str:
    return str(Path(sys.executable).parent / "consent-sidecar")


@contextlib.contextmanager
def sidecar_process(directory: Path, *, tls: Path | None = None, mtls: bool = False) -> Iterator[SidecarProcess]:
    """Serves MAPPINGS with principals alice (owner) and bob (member), made by `principals add`.

    With `tls` (a directory of PEM files from the `pki` fixture) the admin listener speaks TLS,
    mTLS too when asked.
    """
    directory.mkdir(parents=True, exist_ok=True)
    mappings = directory / "mappings.yaml"
    principals = directory / "principals.yaml"
    tokens = {}
    for pid, role in (("alice", "owner"), ("bob", "member")):
        done = subprocess.run([cli_bin(), "principals", "add", "--principals", str(principals), "--id", pid,
                               "--role", role], capture_output=True, text=True, timeout=WAIT, check=True)
        tokens[pid] = done.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="cs-cli-") as sockets:
        decision, admin = f"unix:{sockets}/d.sock", f"unix:{sockets}/a.sock"
        flags = ["--listen", decision, "--admin-listen", admin, "--principals", str(principals), "--grace-period", "1"]
        client: dict[str, str] = {}
        if tls is not None:
            flags += ["--admin-tls-cert", str(tls / "server.pem"), "--admin-tls-key", str(tls / "server.key")]
            client["tls-ca"] = str(tls / "ca.pem")
            client["tls-server-name"] = "localhost"  # a unix socket has no host name to check
            if mtls:
                flags += ["--admin-client-ca", str(tls / "ca.pem")]
                client.update({"tls-cert": str(tls / "client.pem"), "tls-key": str(tls / "client.key")})
        with serve_process(directory, *flags, mapping=MAPPINGS) as running:
            running.wait_started(WAIT)
            yield SidecarProcess(directory, mappings, principals, directory / "audit.db", decision, admin, tokens,
                                 running.process, client)


@pytest.fixture
def served_sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    """A running `consent-sidecar serve` (plaintext admin listener) serving MAPPINGS."""
    with sidecar_process(tmp_path / "sidecar") as running:
        yield running


def openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server certificate (localhost) and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("cli-pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1")
    openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-subj", "/CN=ca")
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:client")):
        openssl("req", "-x509", "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), *ec,
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), "-subj", f"/CN={name}",
                "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:FALSE",
                "-addext", "extendedKeyUsage=serverAuth,clientAuth")  # fmt: skip
    return d


@pytest.fixture
def start_sidecar_process(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[SidecarProcess]]:
    """`sidecar_process` in this test's tmp_path: `with start_sidecar_process(tls=pki, mtls=True) as sc:`."""
    return functools.partial(sidecar_process, tmp_path / "sidecar")
