"""deploy/kubernetes: what the schemas cannot check, and the pod's sidecar run for real from its own spec.

`make lint-deploy` validates each manifest against the Kubernetes schemas and lints it; this
checks the meaning: the ConfigMap is examples/mappings.yaml, the kustomization lists every
manifest, mounts are directories (so a `kubectl apply` hot-reloads), every container is
locked down, probes reach a listener the kubelet can dial. Then it runs the sidecar container's
own args and env (mount paths under a temp directory, ports remapped) with the ConfigMap and
Secret laid out as the kubelet's atomic writer does, passes the probe, runs the example
pipeline container's script against it, and swaps `..data` as `kubectl apply` would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from consent_core.mapping_file import load_mapping
from ruamel.yaml import YAML

from consent_sidecar import cli
from consent_sidecar.auth.principals import parse_principals

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
EXAMPLE_MAPPING = ROOT / "examples" / "mappings.yaml"
BIN = Path(sys.executable).parent


def load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def manifests() -> dict[str, Any]:
    """Each resource by kind (the example has one of each)."""
    out: dict[str, Any] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        doc = load(path)
        assert doc["kind"] not in out, f"{path.name}: a second {doc['kind']}"
        out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def kube() -> dict[str, Any]:
    return manifests()


def pod(kube: dict[str, Any]) -> Any:
    return kube["Deployment"]["spec"]["template"]["spec"]


def sidecar_container(kube: dict[str, Any]) -> Any:
    (c,) = [c for c in pod(kube).get("initContainers", []) if c["name"] == "consent-sidecar"]
    return c


def pipeline_container(kube: dict[str, Any]) -> Any:
    (c,) = pod(kube)["containers"]
    return c


def env_of(container: Any) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def mount_for(container: Any, path: str) -> Any:
    """The volumeMount holding `path`."""
    hits = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert hits, f"{container['name']}: nothing mounted at {path}"
    return max(hits, key=lambda m: len(m["mountPath"]))


def volume(kube: dict[str, Any], name: str) -> Any:
    (v,) = [v for v in pod(kube)["volumes"] if v["name"] == name]
    return v


# -- the manifests' meaning --------------------------------------------------------------------


def test_the_configmap_is_the_example_mapping_verbatim(kube: dict[str, Any]) -> None:
    data = kube["ConfigMap"]["data"]
    assert list(data) == ["mappings.yaml"]
    assert data["mappings.yaml"] == EXAMPLE_MAPPING.read_text(), (
        "deploy/kubernetes/configmap-mapping.yaml has drifted from examples/mappings.yaml: "
        "copy the file into its data (indented by four spaces)"
    )


def test_the_kustomization_lists_every_manifest_and_the_image(kube: dict[str, Any]) -> None:
    k = load(KUBE / "kustomization.yaml")
    assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(k["resources"]) == sorted(files)
    assert set(os.listdir(KUBE)) == files | {"kustomization.yaml", "overlays"}  # nothing stray (.yml, notes)
    images = {c["image"].partition(":")[0] for c in (sidecar_container(kube), pipeline_container(kube))}
    assert {i["name"] for i in k["images"]} == images
    assert "configMapGenerator" not in k and "secretGenerator" not in k  # hashed names would mean restarts


def test_the_sidecar_is_a_native_sidecar_serving_the_image_entrypoint(kube: dict[str, Any]) -> None:
    c = sidecar_container(kube)
    assert c["restartPolicy"] == "Always"
    assert c["args"] == ["serve"] and "command" not in c  # the image's ENTRYPOINT consent-sidecar


def test_every_variable_is_a_flag_of_serve_or_health(kube: dict[str, Any]) -> None:
    known = {f.env for f in cli.flag_reference() if f.verb in ("serve", "health")}
    env = env_of(sidecar_container(kube))
    unknown = {k for k in env if k.startswith(cli.ENV_PREFIX)} - known
    assert not unknown, f"not a flag's variable: {unknown}"
    assert all(k.startswith(cli.ENV_PREFIX) for k in env)


def listen_addresses(kube: dict[str, Any]) -> list[str]:
    return env_of(sidecar_container(kube))["CONSENT_SIDECAR_LISTEN"].split(",")


def test_decisions_on_a_shared_unix_socket_and_loopback_tcp(kube: dict[str, Any]) -> None:
    listen = listen_addresses(kube)
    (unix,) = [a for a in listen if a.startswith("unix:")]
    assert "127.0.0.1:50051" in listen
    socket_path = unix.removeprefix("unix:")
    side, pipe = sidecar_container(kube), pipeline_container(kube)
    assert mount_for(side, socket_path)["name"] == mount_for(pipe, socket_path)["name"]
    assert "emptyDir" in volume(kube, mount_for(side, socket_path)["name"])
    assert not mount_for(side, socket_path).get("readOnly")
    assert env_of(pipe)["CONSENT_TARGET"] == unix


def test_probes_are_native_grpc_on_the_one_listener_the_kubelet_can_dial(kube: dict[str, Any]) -> None:
    c = sidecar_container(kube)
    ports = {p["containerPort"] for p in c["ports"]}
    wildcard = {int(a.rpartition(":")[2]) for a in listen_addresses(kube) if a.startswith(("0.0.0.0:", "[::]:"))}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = c[probe]["grpc"]
        assert grpc_probe["port"] in wildcard and grpc_probe["port"] in ports, probe
        assert grpc_probe.get("service", "") == ""  # overall health, what serve sets SERVING
    policy = kube["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == kube["Deployment"]["spec"]["selector"]["matchLabels"]
    opened = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert opened == ["metrics"] and "metrics" in {p["name"] for p in c["ports"]}


def test_every_container_is_locked_down(kube: dict[str, Any]) -> None:
    spec = pod(kube)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for c in (sidecar_container(kube), pipeline_container(kube)):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], c["name"]
    res = sidecar_container(kube)["resources"]
    assert res["requests"]["cpu"] and res["limits"]["cpu"]


def test_mapping_and_principals_are_directory_mounts_so_updates_hot_reload(kube: dict[str, Any]) -> None:
    c = sidecar_container(kube)
    env = env_of(c)
    for variable, kind, key in (
        ("CONSENT_SIDECAR_MAPPINGS", "configMap", "ConfigMap"),
        ("CONSENT_SIDECAR_PRINCIPALS", "secret", "Secret"),
    ):
        path = env[variable]
        m = mount_for(c, path)
        assert "subPath" not in m and "subPathExpr" not in m  # a subPath mount never sees an update
        assert m["readOnly"] is True
        source = volume(kube, m["name"])[kind]
        name = source.get("name") or source.get("secretName")
        assert name == kube[key]["metadata"]["name"]
        assert "items" not in source
        data = kube[key].get("data") or kube[key].get("stringData")
        assert path.removeprefix(m["mountPath"].rstrip("/") + "/") in data
    assert all("subPath" not in m for ct in (c, pipeline_container(kube)) for m in ct["volumeMounts"])


def test_the_audit_database_is_on_a_writable_volume(kube: dict[str, Any]) -> None:
    c = sidecar_container(kube)
    m = mount_for(c, env_of(c)["CONSENT_SIDECAR_AUDIT_DB"])
    assert not m.get("readOnly")
    assert "emptyDir" in volume(kube, m["name"]) or "persistentVolumeClaim" in volume(kube, m["name"])


def test_the_principals_secret_is_a_valid_principals_file(kube: dict[str, Any]) -> None:
    text = kube["Secret"]["stringData"]["principals.yaml"]
    principals = parse_principals(text, "principals.yaml")
    assert principals is not None


# -- the pod, run here ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def atomic_write(directory: Path, files: dict[str, str], stamp: str) -> None:
    """What the kubelet does for a ConfigMap or Secret volume: ..<stamp>/, ..data -> it, key -> ..data/key."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"..{stamp}").mkdir()
    for key, text in files.items():
        (directory / f"..{stamp}" / key).write_text(text)
    os.symlink(f"..{stamp}", directory / "..data_tmp")
    os.replace(directory / "..data_tmp", directory / "..data")
    for key in files:
        if not (directory / key).is_symlink():
            os.symlink(f"..data/{key}", directory / key)


class Pod:
    """The Deployment's pod on this machine: each volume a directory, mount paths and ports remapped."""

    def __init__(self, kube: dict[str, Any], root: Path, sockets: Path) -> None:
        self.kube = kube
        self.volumes = {v["name"]: root / v["name"] for v in pod(kube)["volumes"]}
        for name, source in ((n, volume(kube, n)) for n in self.volumes):
            if "emptyDir" in source:
                self.volumes[name].mkdir()
        (self.socket_volume,) = [
            m["name"] for m in sidecar_container(kube)["volumeMounts"] if m["mountPath"] == "/run/consent"
        ]
        self.volumes[self.socket_volume] = sockets
        self.ports = {p: free_port() for p in (50051, 50052, 50061, 9464)}

    def write_configmap(self, mapping: str, stamp: str) -> None:
        (name,) = [v["name"] for v in pod(self.kube)["volumes"] if "configMap" in v]
        atomic_write(self.volumes[name], {"mappings.yaml": mapping}, stamp)

    def write_secret(self) -> None:
        (name,) = [v["name"] for v in pod(self.kube)["volumes"] if "secret" in v]
        atomic_write(self.volumes[name], dict(self.kube["Secret"]["stringData"]), "2026_01")

    def remap(self, container: Any, value: str) -> str:
        """Each comma-separated item: a path under a mount onto its volume, a port onto a free one."""
        items = []
        for item in value.split(","):
            scheme = "unix:" if item.startswith("unix:") else ""
            path = item.removeprefix(scheme)
            if path.startswith("/"):
                m = mount_for(container, path)
                path = str(self.volumes[m["name"]]) + path.removeprefix(m["mountPath"].rstrip("/"))
            else:
                host, sep, port = path.rpartition(":")
                if sep and port.isdigit() and int(port) in self.ports:
                    path = f"{'127.0.0.1' if host == '0.0.0.0' else host}:{self.ports[int(port)]}"
            items.append(scheme + path)
        return ",".join(items)

    def env(self, container: Any) -> dict[str, str]:
        # As the image's ENV: no bytecode written (here that would be next to the sources, in gen/).
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(self.volumes["tmp"]), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1"}
        env.update({k: self.remap(container, v) for k, v in env_of(container).items()})
        return env


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="cs-") as d:
        yield Path(d)


def health(env: dict[str, str], address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "consent-sidecar"), "health", "--address", address, "--timeout", "2"],
        env=env, capture_output=True, text=True, timeout=30,
    )


def read_json_line(stream: io.TextIOBase | Any, deadline: float) -> dict[str, Any]:
    line = stream.readline()
    assert line, "the pipeline printed nothing"
    assert time.monotonic() < deadline
    out: dict[str, Any] = json.loads(line)
    return out


def test_the_pod_runs_its_sidecar_passes_the_probe_and_hot_reloads_an_applied_mapping(
    kube: dict[str, Any], tmp_path: Path
) -> None:
    with short_dir() as sockets:
        p = Pod(kube, tmp_path, sockets)
        p.write_configmap(kube["ConfigMap"]["data"]["mappings.yaml"], "2026_01")
        p.write_secret()
        side = sidecar_container(kube)
        env = p.env(side)
        command = [str(BIN / "consent-sidecar"), *side["args"]]
        server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pipeline: subprocess.Popen[str] | None = None
        try:
            probe = f"127.0.0.1:{p.ports[side['readinessProbe']['grpc']['port']]}"
            deadline = time.monotonic() + 20
            while health(env, probe).returncode != 0:
                assert server.poll() is None, f"serve exited {server.returncode}: {server.communicate()[1]}"
                assert time.monotonic() < deadline, health(env, probe).stderr
                time.sleep(0.2)
            for address in env["CONSENT_SIDECAR_LISTEN"].split(","):
                assert health(env, address).returncode == 0, address
            assert health(env, env["CONSENT_SIDECAR_ADDRESS"]).returncode == 0
            metrics_port = next(p["containerPort"] for p in side["ports"] if p["name"] == "metrics")
            with urllib.request.urlopen(f"http://127.0.0.1:{p.ports[metrics_port]}/metrics", timeout=5) as page:
                assert "consent_sidecar_policy_info" in page.read().decode()

            # The example pipeline container's own script, against the socket.
            pipe = pipeline_container(kube)
            pipe_env = {**p.env(pipe), "INTERVAL_SECONDS": "0.2"}
            pipeline = subprocess.Popen(
                [sys.executable, *pipe["command"][1:], *pipe["args"]],
                env=pipe_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            assert pipeline.stdout is not None
            first = read_json_line(pipeline.stdout, time.monotonic() + 20)
            assert first["degraded"] is False
            assert (first["allowed"], first["blocked"]) == (["amplitude", "snowflake", "aws-s3"], ["google-ads"])

            # `kubectl apply` of a new mapping: the kubelet swaps ..data; the sidecar reloads.
            new = kube["ConfigMap"]["data"]["mappings.yaml"].replace("      - google-ads\n", "")
            assert load_mapping_text_ok(tmp_path, new)
            p.write_configmap(new, "2026_02")
            deadline = time.monotonic() + 20
            while True:
                line = read_json_line(pipeline.stdout, deadline)
                if line["generation"] != first["generation"]:
                    break
            assert line["degraded"] is False
            assert (line["allowed"], line["blocked"]) == (["amplitude", "google-ads", "snowflake", "aws-s3"], [])
        finally:
            if pipeline is not None:
                pipeline.kill()
                pipeline.communicate(timeout=10)
            server.send_signal(signal.SIGTERM)
            _, err = server.communicate(timeout=20)
        assert server.returncode == 0, err
        audit = subprocess.run(
            [str(BIN / "consent-sidecar"), "audit", "verify", "--audit-db", env["CONSENT_SIDECAR_AUDIT_DB"]],
            capture_output=True, text=True, timeout=30,
        )
        assert audit.returncode == 0, audit.stderr


def load_mapping_text_ok(tmp_path: Path, text: str) -> bool:
    path = tmp_path / "candidate.yaml"
    path.write_text(text)
    load_mapping(str(path))  # raises on an invalid mapping
    return True


# -- the etcd overlay (deploy/kubernetes/overlays/etcd) ------------------------------------------

ETCD_OVERLAY = KUBE / "overlays" / "etcd"


def test_the_etcd_overlay_lists_the_base_its_resources_and_its_patch() -> None:
    k = load(ETCD_OVERLAY / "kustomization.yaml")
    assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    resources = {p.name for p in ETCD_OVERLAY.glob("*.yaml")} - {"kustomization.yaml"}
    patches = {p.name for p in ETCD_OVERLAY.glob("*.patch.yaml")}
    assert sorted(k["resources"]) == sorted(["../../", *(resources - patches)])
    assert [p["path"] for p in k["patches"]] == sorted(patches)
    assert set(os.listdir(ETCD_OVERLAY)) == resources | {"kustomization.yaml"}
    for p in k["patches"]:
        patch = load(ETCD_OVERLAY / p["path"])
        assert (patch["kind"], patch["metadata"]["name"]) == (p["target"]["kind"], p["target"]["name"])
        assert patch["metadata"]["name"] == manifests()["Deployment"]["metadata"]["name"]


def _env_names(container: Any) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_the_etcd_overlay_switches_every_sidecar_to_etcd_and_drops_the_audit_db() -> None:
    (patch,) = [load(p) for p in ETCD_OVERLAY.glob("*.patch.yaml")]
    (side,) = patch["spec"]["template"]["spec"]["initContainers"]
    env = _env_names(side)
    assert env["CONSENT_SIDECAR_AUDIT_DB"] == {"name": "CONSENT_SIDECAR_AUDIT_DB", "$patch": "delete"}
    assert env["CONSENT_SIDECAR_ETCD_ENDPOINTS"]["value"].startswith("https://")
    assert env["CONSENT_SIDECAR_ETCD_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "consent-etcd-client"
    known = {f.env for f in cli.flag_reference() if f.verb == "serve"} | {"CONSENT_SIDECAR_ETCD_PASSWORD"}
    assert set(env) <= known


def test_the_editor_serves_the_admin_api_over_tls_to_owners_from_etcd() -> None:
    editor = load(ETCD_OVERLAY / "editor-deployment.yaml")
    (c,) = editor["spec"]["template"]["spec"]["containers"]
    env = _env_names(c)
    known = {f.env for f in cli.flag_reference() if f.verb in ("serve", "health")} | {"CONSENT_SIDECAR_ETCD_PASSWORD"}
    assert set(env) <= known
    assert "CONSENT_SIDECAR_AUDIT_DB" not in env
    for flag in ("ADMIN_LISTEN", "ADMIN_TLS_CERT", "ADMIN_TLS_KEY", "PRINCIPALS", "ETCD_ENDPOINTS", "ETCD_CA"):
        assert f"CONSENT_SIDECAR_{flag}" in env, flag
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("ADMIN_TLS_CERT", "PRINCIPALS", "ETCD_CA", "MAPPINGS"):
        value = env[f"CONSENT_SIDECAR_{path}"]["value"]
        assert any(value.startswith(m.rstrip("/") + "/") for m in mounts), path
    service = load(ETCD_OVERLAY / "editor-service.yaml")
    assert service["spec"]["selector"] == editor["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["admin"]
