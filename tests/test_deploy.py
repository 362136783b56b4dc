"""deploy/: the container image, the compose file and the Kubernetes manifests.

The Kubernetes and compose checks render and parse the files and always run (a few seconds).
The container checks build the image with podman and run it; they are slow, so they run only in
CI (`CI=true`) or when `DRAIN_CONTAINER_TESTS=1`. `deploy/test-base-image.sh` first makes podman
usable and provides the base image (`DRAIN_TEST_BASE_IMAGE`, by default a local Debian bookworm
with python3 it builds); where no container engine is usable they skip, saying why, unless
`DRAIN_CONTAINER_TESTS=1` asked for them, which makes that a failure. They build the image from
this working tree, or use the one named by `DRAIN_TEST_IMAGE`. Run them with `-rP` to see the
image size.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import Receiver, free_port, running_receiver, sign

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
FILE_SINK = KUBERNETES / "overlays" / "file-sink"
ARCHIVE = KUBERNETES / "overlays" / "archive"
IN_CI = os.environ.get("CI", "").lower() == "true"
CONTAINERS_REQUIRED = os.environ.get("DRAIN_CONTAINER_TESTS") == "1"
CONTAINER_TESTS = IN_CI or CONTAINERS_REQUIRED
BASE_IMAGE = os.environ.get("DRAIN_TEST_BASE_IMAGE", "localhost/python-base:bookworm")
# deploy/test-base-image.sh exits with this status when no container engine is usable here.
NO_CONTAINER_ENGINE = 77

SECRET_NAME = "vercel-drain-secret"
UID = 10001
METRICS_PORT = 9090
# What Vercel posts to, and so all that a public route may forward: log drains and trace drains.
VERCEL_PATHS = ["/", "/v1/traces"]
# The receiver's default graceful-shutdown time (DRAIN_SHUTDOWN_TIMEOUT) and the preStop sleep.
SHUTDOWN_TIMEOUT = 25
PRESTOP_SLEEP = 5


def require_tool(name: str) -> str:
    """The path of `name`; a missing tool fails the test in CI and skips it elsewhere."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    if IN_CI:
        pytest.fail(f"{name} is not installed")
    pytest.skip(f"{name} is not installed")


# ---- Kubernetes -------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(documents, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def file_sink() -> list[dict[str, Any]]:
    return kustomize(FILE_SINK)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def mount_of(path: str, container: dict[str, Any]) -> dict[str, Any]:
    """The volume mount whose mountPath is the deepest directory holding `path`."""
    holders = [
        mount
        for mount in container.get("volumeMounts", [])
        if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/")
    ]
    assert holders, f"{path} is on no volume (the root filesystem is read-only)"
    return max(holders, key=lambda mount: len(mount["mountPath"]))


def check_pod(workload: dict[str, Any], sink: str) -> dict[str, Any]:
    """The properties every receiver pod must have; returns its container."""
    spec = workload["spec"]
    assert spec["replicas"] >= 2
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("vercel-drain-receiver:")

    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == UID
    assert pod_security["fsGroup"] == UID
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod.get("automountServiceAccountToken") is False

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = env_of(container)
    assert ports["http"] == int(env["PORT"]) == 8080
    assert env["DRAIN_SINK"] == sink
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert (readiness["path"], readiness["port"]) == ("/readyz", "http")
    assert (liveness["path"], liveness["port"]) == ("/healthz", "http")

    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) >= {"cpu", "memory"}, f"{kind} lacks cpu or memory"
    assert re.fullmatch(r"\d+Mi", resources["limits"]["memory"])
    # Large batches (up to DRAIN_MAX_BODY_BYTES, 32 MiB) are held in memory while decoded.
    assert int(resources["limits"]["memory"][:-2]) >= 256

    # The secret comes from the Secret, mounted as a directory (no subPath, so updates arrive).
    secret_mount = mount_of(env["DRAIN_SECRET_FILE"], container)
    assert "subPath" not in secret_mount and secret_mount.get("readOnly") is True
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    assert volumes[secret_mount["name"]]["secret"]["secretName"] == SECRET_NAME
    assert mount_of(env["DRAIN_VERIFY_FILE"], container) == secret_mount
    # HOME and the file sink live under /data, which must be writable; so must /tmp.
    for path in ("/data", "/tmp"):
        assert mount_of(path, container).get("readOnly") is not True

    # /metrics is scraped from the pod on a port of its own, which no Service exposes.
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (annotations["prometheus.io/path"], annotations["prometheus.io/port"]) == (
        "/metrics", env["DRAIN_METRICS_PORT"])
    assert ports["metrics"] == int(env["DRAIN_METRICS_PORT"]) == METRICS_PORT
    assert set(ports) == {"http", "metrics"}
    assert env["DRAIN_LOG_FORMAT"] == "json"

    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT + PRESTOP_SLEEP
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP)]
    return container


def test_base_renders_the_stdout_deployment_and_its_companions(base: list[dict[str, Any]]) -> None:
    assert sorted(doc["kind"] for doc in base) == sorted(
        ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"]
    )
    assert {doc["metadata"]["namespace"] for doc in base} == {"vercel-drain"}
    # The Secret is made from register.py's file by the user, never applied (and overwritten) here.
    assert not by_kind(base, "Secret")
    deployment = one(base, "Deployment")
    container = check_pod(deployment, sink="stdout")
    assert "DRAIN_DIR" not in env_of(container)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mount_of("/data", container)["name"]]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def check_service(documents: list[dict[str, Any]], pod_labels: dict[str, str]) -> dict[str, Any]:
    services = {doc["metadata"]["name"]: doc for doc in by_kind(documents, "Service")}
    service = services["vercel-drain-receiver"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["spec"]["selector"], pod_labels)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"

    ingress = one(documents, "Ingress")
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"]
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts and set(hosts) <= set(tls["hosts"]), "every Ingress host must be under TLS"
    assert "defaultBackend" not in ingress["spec"]
    for rule in ingress["spec"]["rules"]:
        routed = [(path["path"], path["pathType"]) for path in rule["http"]["paths"]]
        assert routed == [(path, "Exact") for path in VERCEL_PATHS], "only what Vercel posts to"
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "vercel-drain-receiver"
            assert backend["port"]["name"] == port["name"]
    # ingress-nginx refuses bodies over 1m by default; batches reach the receiver's 32 MiB limit.
    body_size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert re.fullmatch(r"\d+m", body_size) and int(body_size[:-1]) >= 32

    pdb = one(documents, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["minAvailable"] == 1
    return service


def test_base_service_ingress_hpa_and_pdb_point_at_the_pods(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment")
    check_service(base, deployment["spec"]["template"]["metadata"]["labels"])
    hpa = one(base, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= deployment["spec"]["replicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_file_sink_overlay_is_a_statefulset_with_a_volume_per_pod(
    file_sink: list[dict[str, Any]],
) -> None:
    assert not by_kind(file_sink, "Deployment")
    assert not by_kind(file_sink, "HorizontalPodAutoscaler")
    assert not by_kind(file_sink, "Secret")
    statefulset = one(file_sink, "StatefulSet")
    container = check_pod(statefulset, sink="file")
    spec = statefulset["spec"]

    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    env = env_of(container)
    assert mount_of(env["DRAIN_DIR"], container)["name"] == claim["metadata"]["name"]
    assert mount_of("/data", container)["name"] == claim["metadata"]["name"]
    pod_volumes = {v["name"] for v in spec["template"]["spec"]["volumes"]}
    assert claim["metadata"]["name"] not in pod_volumes
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Retain",
    }

    labels = spec["template"]["metadata"]["labels"]
    services = {doc["metadata"]["name"]: doc for doc in by_kind(file_sink, "Service")}
    governing = services[spec["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    assert selects(governing["spec"]["selector"], labels)
    check_service(file_sink, labels)


def test_both_workloads_run_the_same_pod_apart_from_the_sink(
    base: list[dict[str, Any]], file_sink: list[dict[str, Any]]
) -> None:
    deployment = one(base, "Deployment")["spec"]["template"]
    statefulset = one(file_sink, "StatefulSet")["spec"]["template"]
    assert deployment["metadata"]["labels"] == statefulset["metadata"]["labels"]
    (ours,), (theirs,) = deployment["spec"]["containers"], statefulset["spec"]["containers"]
    for key in ("image", "ports", "readinessProbe", "livenessProbe", "startupProbe",
                "resources", "securityContext", "lifecycle"):
        assert ours[key] == theirs[key], key
    pod_a, pod_b = dict(deployment["spec"]), dict(statefulset["spec"])
    pod_b["securityContext"] = {k: v for k, v in pod_b["securityContext"].items()
                                if k != "fsGroupChangePolicy"}
    for key in ("securityContext", "terminationGracePeriodSeconds", "automountServiceAccountToken",
                "topologySpreadConstraints"):
        assert pod_a[key] == pod_b[key], key
    env_a, env_b = env_of(ours), env_of(theirs)
    assert {k: v for k, v in env_a.items() if k != "DRAIN_SINK"} == {
        k: v for k, v in env_b.items() if k not in ("DRAIN_SINK", "DRAIN_DIR")
    }


@pytest.fixture(scope="module")
def archive() -> list[dict[str, Any]]:
    return kustomize(ARCHIVE)


def storage_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", quantity)
    assert match, f"not a binary quantity: {quantity}"
    return int(match.group(1)) * 1024 ** ("KMGT".index(match.group(2)[0]) + 1)


def test_archive_overlay_is_a_deployment_with_a_spool_volume_and_the_archive_set(
    archive: list[dict[str, Any]], base: list[dict[str, Any]],
) -> None:
    from receiver.settings import load_settings

    assert not by_kind(archive, "StatefulSet")
    assert not by_kind(archive, "Secret"), "credentials are the user's Secret, never applied here"
    deployment = one(archive, "Deployment")
    container = check_pod(deployment, sink="file")
    pod = deployment["spec"]["template"]["spec"]
    env = env_of(container)

    # Stateless replicas: the base's autoscaler and Service still drive the Deployment.
    hpa = one(archive, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    check_service(archive, deployment["spec"]["template"]["metadata"]["labels"])

    # The spool: DRAIN_DIR on a generic ephemeral volume (a claim per pod), not an emptyDir,
    # bigger than the 503 limit so it never fills.
    volumes = {v["name"]: v for v in pod["volumes"]}
    spool = volumes[mount_of(env["DRAIN_DIR"], container)["name"]]
    assert set(spool) == {"name", "ephemeral"}, spool
    claim = spool["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    size = storage_bytes(claim["resources"]["requests"]["storage"])
    settings = load_settings([], {**env, "DRAIN_ARCHIVE_HOST": "vercel-drain-receiver-abc12"})
    assert 0 < settings.spool_max_bytes < size
    assert settings.archive.startswith("s3://") and settings.dir == Path(env["DRAIN_DIR"])
    assert settings.rotate_every > 0

    # Each replica's name in its keys is its pod's: no two replicas share one.
    (host,) = [item for item in container["env"] if item["name"] == "DRAIN_ARCHIVE_HOST"]
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    # Credentials: an optional Secret (envFrom) or the ServiceAccount's role (IRSA).
    (source,) = container["envFrom"]
    assert source["secretRef"] == {"name": "vercel-drain-archive", "optional": True}
    account = one(archive, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert "eks.amazonaws.com/role-arn" in (ARCHIVE / "serviceaccount.yaml").read_text()

    # SIGTERM rotates and uploads within the shutdown timeout, inside the grace period.
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout + PRESTOP_SLEEP
    assert settings.shutdown_timeout > SHUTDOWN_TIMEOUT

    # Otherwise the base's pod.
    (theirs,) = one(base, "Deployment")["spec"]["template"]["spec"]["containers"]
    for key in ("image", "ports", "readinessProbe", "livenessProbe", "startupProbe",
                "resources", "securityContext", "lifecycle"):
        assert container[key] == theirs[key], key


# ---- compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_the_receiver_behind_caddy_with_a_register_profile(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"receiver", "caddy", "register"}
    receiver, caddy, register = services["receiver"], services["caddy"], services["register"]

    build = receiver["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert receiver["read_only"] is True and receiver["tmpfs"] == ["/tmp"]
    assert "drain-data:/data" in receiver["volumes"]
    assert receiver["environment"]["DRAIN_SECRET_FILE"].startswith("/data/")
    assert receiver["environment"]["DRAIN_DIR"].startswith("/data/")
    assert "ports" not in receiver, "only Caddy is published; plain HTTP stays inside"
    assert receiver["environment"]["DRAIN_METRICS_PORT"] == str(METRICS_PORT)
    assert set(receiver["expose"]) == {receiver["environment"]["PORT"], str(METRICS_PORT)}
    assert receiver["stop_signal"] == "SIGTERM"
    assert int(receiver["stop_grace_period"].rstrip("s")) > SHUTDOWN_TIMEOUT
    assert "/readyz" in " ".join(receiver["healthcheck"]["test"])

    assert "443:443" in caddy["ports"] and "80:80" in caddy["ports"]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert caddy["depends_on"]["receiver"]["condition"] == "service_healthy"
    assert "DRAIN_DOMAIN" in caddy["environment"]
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert re.search(r"^\{\$DRAIN_DOMAIN\} \{$", caddyfile, re.MULTILINE)
    port = receiver["environment"]["PORT"]
    assert re.findall(r"^\s*reverse_proxy (.*)$", caddyfile, re.MULTILINE) == [f"receiver:{port}"]
    assert re.findall(r"^\s*@vercel path (.*)$", caddyfile, re.MULTILINE) == [" ".join(VERCEL_PATHS)]

    assert register["profiles"] == ["register"]
    assert register["command"] == ["python", "register.py"]
    assert register["image"] == receiver["image"]
    assert register["volumes"] == ["drain-data:/data"]
    assert register["read_only"] is True and register["tmpfs"] == ["/tmp"]
    environment = register["environment"]
    assert environment["DRAIN_SECRET_FILE"] == receiver["environment"]["DRAIN_SECRET_FILE"]
    assert environment["DRAIN_URL"] == "https://${DRAIN_DOMAIN}/"
    assert "VERCEL_TOKEN" in environment
    assert set(compose["volumes"]) >= {"drain-data", "caddy-data"}


def podman_compose_config(*args: str, domain: str | None) -> subprocess.CompletedProcess[str]:
    # An extra check on top of the YAML one above, so a missing podman-compose only skips it.
    tool = shutil.which("podman-compose") or shutil.which(
        "podman-compose", path=str(Path(sys.executable).parent))
    if not tool:
        pytest.skip("podman-compose is not installed (pip install podman-compose)")
    env = {key: value for key, value in os.environ.items()
           if key not in ("DRAIN_DOMAIN", "VERCEL_TOKEN", "DRAIN_SINK")}
    if domain:
        env["DRAIN_DOMAIN"] = domain
    return subprocess.run(
        [tool, "-f", str(DEPLOY / "compose.yaml"), *args, "config"],
        capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
    )


def test_compose_file_is_valid_for_podman_compose() -> None:
    result = podman_compose_config("--profile", "register", domain="drain.example.com")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == {"receiver", "caddy", "register"}
    assert rendered["services"]["register"]["environment"]["DRAIN_URL"] == (
        "https://drain.example.com/"
    )
    assert rendered["services"]["receiver"]["build"]["context"] == str(REPO)
    # Without the profile the one-shot register service is left out of `up`.
    default = yaml.safe_load(podman_compose_config(domain="drain.example.com").stdout)
    assert set(default["services"]) == {"receiver", "caddy"}
    # A missing domain is an error, not a certificate request for an empty name.
    missing = podman_compose_config(domain=None)
    assert missing.returncode != 0
    assert "DRAIN_DOMAIN" in missing.stderr


# ---- the Caddyfile, run by caddy in front of a real receiver ----------------------------------


@dataclass
class Proxied:
    url: str
    receiver: Receiver
    secret: str


@pytest.fixture(scope="module")
def behind_caddy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    """deploy/Caddyfile as it is, with plain HTTP on a free port for the site and the receiver's
    loopback address for `receiver:8080`: its routes are what is under test, not its TLS."""
    caddy = shutil.which("caddy")
    if not caddy:  # an extra check on top of the static one, so a missing caddy only skips it
        pytest.skip("caddy is not installed (apt-get install caddy)")
    workdir = tmp_path_factory.mktemp("caddy")
    secret = "caddy-" + uuid.uuid4().hex
    with running_receiver(workdir / "receiver", env={"DRAIN_SECRET": secret}) as receiver:
        port = free_port()
        upstream = receiver.url.removeprefix("http://")
        site = (DEPLOY / "Caddyfile").read_text().replace("reverse_proxy receiver:8080",
                                                          f"reverse_proxy {upstream}")
        config = workdir / "Caddyfile"
        config.write_text("{\n\tadmin off\n}\n" + site)
        env = {**os.environ, "DRAIN_DOMAIN": f"http://127.0.0.1:{port}",
               "XDG_DATA_HOME": str(workdir / "data"), "XDG_CONFIG_HOME": str(workdir / "config")}
        log = (workdir / "caddy.log").open("wb")
        process = subprocess.Popen([caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
                                   env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, (workdir / "caddy.log").read_text()
                try:
                    httpx.get(url + "/", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, (workdir / "caddy.log").read_text()
                    time.sleep(0.1)
            yield Proxied(url, receiver, secret)
        finally:
            process.terminate()
            process.wait(timeout=10)
            log.close()


CADDY_REFUSAL = "nothing here: Vercel delivers to / and /v1/traces"


def test_caddy_forwards_deliveries_to_the_receiver(behind_caddy: Proxied) -> None:
    batch = records(2)
    body = b"".join(json.dumps(r).encode() + b"\n" for r in batch)
    response = httpx.post(behind_caddy.url + "/", content=body, timeout=30,
                          headers={"x-vercel-signature": sign(body, behind_caddy.secret)})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert ids_in(behind_caddy.receiver.stdout().decode())[-2:] == [r["id"] for r in batch]
    traces = httpx.post(behind_caddy.url + "/v1/traces", content=b"{}", timeout=10)
    assert CADDY_REFUSAL not in traces.text, "/v1/traces reaches the receiver"


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/metrics/", "/x", "/v1"])
def test_caddy_forwards_nothing_else(behind_caddy: Proxied, path: str) -> None:
    for method in ("GET", "POST"):
        response = httpx.request(method, behind_caddy.url + path, timeout=10)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == CADDY_REFUSAL
        assert "drain_" not in response.text


# ---- Dockerfile (static) ----------------------------------------------------------------------


def test_dockerfile_declares_a_small_non_root_read_only_friendly_image() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines()
                    if line and not line[0].isspace() and not line.startswith("#")]
    assert "ARG BASE_IMAGE=python:3.12-slim" in instructions
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) == 2 and all(line.startswith("FROM ${BASE_IMAGE}") for line in froms)
    user = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert user == ["${UID}:${UID}"] and "ARG UID=10001" in instructions
    assert 'VOLUME ["/data"]' in instructions
    entrypoints = [line for line in instructions if line.startswith("ENTRYPOINT")]
    assert not entrypoints, "`docker run IMAGE python register.py` must work"
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", dockerfile, re.MULTILINE)
    assert f"EXPOSE 8080 {METRICS_PORT}" in instructions
    for setting in ("DRAIN_SECRET_FILE=/data/drain-secret", "DRAIN_DIR=/data/logs",
                    "PYTHONDONTWRITEBYTECODE=1", "HOME=/data", "PORT=8080",
                    f"DRAIN_METRICS_PORT={METRICS_PORT}"):
        assert setting in dockerfile
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    assert ignored[0] == "*", "the build context is an allow-list"
    assert {"!pyproject.toml", "!receiver/", "!register.py"} <= set(ignored)


# ---- the image, built and run with podman -----------------------------------------------------

container_tests = pytest.mark.skipif(
    not CONTAINER_TESTS, reason="container tests run in CI or with DRAIN_CONTAINER_TESTS=1"
)
IMAGE = "localhost/vercel-drain-receiver:test"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}:\n{result.stderr}"
    return result


def base_image() -> str:
    """The base image, made ready by deploy/test-base-image.sh; skips where no engine is usable."""
    prepared = subprocess.run(["bash", str(DEPLOY / "test-base-image.sh"), BASE_IMAGE],
                              capture_output=True, text=True, timeout=900)
    if prepared.returncode == NO_CONTAINER_ENGINE and not CONTAINERS_REQUIRED:
        reason = " ".join(prepared.stderr.replace("test-base-image: ", "").split())
        pytest.skip(f"no usable container engine: {reason}")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    return prepared.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def python_base() -> str:
    return base_image()


@pytest.fixture(scope="module")
def image(python_base: str) -> str:
    given = os.environ.get("DRAIN_TEST_IMAGE")
    if given:  # an image built already, e.g. by an earlier CI step
        podman("image", "exists", given)
        return given
    # `--format docker`: podman's default OCI format drops HEALTHCHECK. The certificates mount
    # lets pip in the build trust what this machine trusts (some sandboxes intercept TLS).
    certificates = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"] if Path("/etc/ssl/certs").is_dir() else []
    built = subprocess.run(
        ["podman", "build", "--isolation", "chroot", *certificates,
         "--build-arg", f"BASE_IMAGE={python_base}", "--format", "docker",
         "-f", str(DEPLOY / "Dockerfile"), "-t", IMAGE, str(REPO)],
        capture_output=True, text=True, timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def metrics_port_supported(image: str) -> bool:
    """Whether the receiver in the image serves /metrics on a port of its own (--metrics-port)."""
    usage = podman("run", "--rm", image, "drain-receiver", "--help", check=False)
    return "--metrics-port" in usage.stdout + usage.stderr


@dataclass
class Container:
    name: str
    url: str
    metrics_url: str
    volume_dir: Path | None

    def stdout(self) -> str:
        return podman("logs", self.name).stdout

    def stderr(self) -> str:
        return podman("logs", self.name).stderr

    def state(self) -> dict[str, Any]:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)


def start(image: str, name: str, *args: str) -> Container:
    """Runs `image` on the host's network, on free ports, until it serves.

    DRAIN_METRICS_PORT is set even where the receiver does not know it yet, so that the image's
    default (9090) is never bound twice by containers running side by side.
    """
    port, metrics_port = free_port(), free_port()
    podman("run", "-d", "--name", name, "--network", "host", "--read-only", "--read-only-tmpfs=false",
           "-e", f"PORT={port}", "-e", f"DRAIN_METRICS_PORT={metrics_port}", *args, image)
    container = Container(name, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}",
                          None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = container.state()
        assert state["Running"], f"container exited {state['ExitCode']}:\n{container.stderr()}"
        try:
            if httpx.get(container.url + "/healthz", timeout=1).status_code == 200:
                return container
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"container did not serve /healthz:\n{container.stderr()}")


def remove(name: str) -> None:
    podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[Container]:
    """The image as documented for one host: read-only root (a tmpfs on /tmp), data on a named
    volume; here with both sinks and two worker processes."""
    name = f"drain-test-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    try:
        container = start(image, name, "-v", f"{name}:/data", "--tmpfs", "/tmp:rw,mode=1777",
                          "-e", "DRAIN_SINK=stdout,file", "-e", "DRAIN_WORKERS=2")
        mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout
        container.volume_dir = Path(mountpoint.strip())
        yield container
    finally:
        remove(name)
        podman("volume", "rm", "--force", name, check=False)


def records(count: int) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:10]
    return [
        {"id": f"{run}-{n}", "deploymentId": "dpl_1", "source": "lambda", "host": "x.vercel.app",
         "timestamp": 1732600000000 + n, "projectId": "prj_1", "level": "info",
         "message": f"line {n} ünïcode", "proxy": {"method": "GET", "path": "/?q=1"}}
        for n in range(count)
    ]


def ids_in(lines: str) -> list[str]:
    return [json.loads(line)["id"] for line in lines.splitlines() if line.strip()]


@container_tests
def test_image_runs_as_non_root_has_a_healthcheck_and_is_small(image: str, python_base: str) -> None:
    (inspected,) = json.loads(podman("image", "inspect", image).stdout)
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])
    assert "/data" in config["Volumes"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9090/tcp"}
    assert "DRAIN_METRICS_PORT=9090" in config["Env"]
    assert config["Cmd"] == ["drain-receiver"] and not config.get("Entrypoint")
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image {image}: {size / 1e6:.1f} MB")
    # localhost/python-base:bookworm alone is ~272 MB; python:3.12-slim is ~125 MB.
    base_size = int(podman("image", "inspect", "--format", "{{.Size}}", python_base).stdout)
    print(f"added to the base image: {(size - base_size) / 1e6:.1f} MB")
    # DuckDB (search and its page in the same container) is 66 MB of the ~150 MB added, and
    # botocore (the archive) ~30 MB.
    assert size - base_size < 170e6, "the receiver's layers should stay small"


@container_tests
def test_register_py_runs_from_the_image(image: str) -> None:
    result = podman("run", "--rm", "--read-only", image, "python", "register.py", "--help",
                    check=False)
    assert result.returncode == 0, result.stderr
    assert "VERCEL_TOKEN" in result.stdout + result.stderr


@container_tests
def test_container_is_non_root_with_a_read_only_root(served: Container) -> None:
    assert podman("exec", served.name, "id", "-u").stdout.strip() == str(UID)
    assert podman("exec", served.name, "id", "-g").stdout.strip() == str(UID)
    refused = podman("exec", served.name, "touch", "/app/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    processes = podman("top", served.name, "user", "args").stdout.splitlines()[1:]
    assert len([p for p in processes if "spawn_main" in p]) == 2, processes
    assert not [p for p in processes if p.split()[0] in ("root", "0")], processes
    assert podman("healthcheck", "run", served.name, check=False).returncode == 0
    assert httpx.get(served.url + "/readyz", timeout=5).status_code == 200
    # No secret was given: the receiver generated one on the volume, private to its user.
    assert served.volume_dir is not None
    secret_file = served.volume_dir / "drain-secret"
    assert secret_file.stat().st_uid == UID
    assert secret_file.stat().st_mode & 0o777 == 0o600


@container_tests
def test_deliveries_come_out_on_stdout_and_in_the_file_sink(
    served: Container, metrics_port_supported: bool,
) -> None:
    assert served.volume_dir is not None
    secret = (served.volume_dir / "drain-secret").read_text().split()[0]
    ndjson, array, zipped = records(3), records(2), records(2)
    ndjson_body = b"".join(json.dumps(r).encode() + b"\n" for r in ndjson)
    array_body = json.dumps(array).encode()
    zipped_body = gzip.compress(b"\r\n".join(json.dumps(r).encode() for r in zipped))
    for body, headers in (
        (ndjson_body, {"content-type": "application/x-ndjson"}),
        (array_body, {"content-type": "application/json"}),
        (zipped_body, {"content-type": "application/x-ndjson", "content-encoding": "gzip"}),
    ):
        response = httpx.post(served.url + "/", content=body, timeout=30,
                              headers={**headers, "x-vercel-signature": sign(body, secret)})
        assert response.status_code == 200, response.text
    forged = json.dumps(records(1)).encode()
    rejected = httpx.post(served.url + "/", content=forged, timeout=30,
                          headers={"x-vercel-signature": sign(forged, "not-the-secret")})
    assert rejected.status_code == 403

    sent = [r["id"] for r in ndjson + array + zipped]
    stdout, stderr = served.stdout(), served.stderr()
    assert ids_in(stdout) == sent, "stdout holds exactly the records, in order"
    assert json.loads(stdout.splitlines()[0]) == ndjson[0]
    assert "Uvicorn running" in stderr or "receiver" in stderr
    assert not any(record_id in stderr for record_id in sent)

    if metrics_port_supported:
        hidden = httpx.get(served.url + "/metrics", timeout=10)
        assert hidden.status_code == 404, "with a metrics port, the public port hides /metrics"
        assert "drain_records_accepted_total" not in hidden.text
    metrics = httpx.get((served.metrics_url if metrics_port_supported else served.url)
                        + "/metrics", timeout=10)
    assert metrics.status_code == 200
    accepted = re.search(r'^drain_records_accepted_total\{stream="logs"\} ([0-9.e+]+)$', metrics.text,
                         re.MULTILINE)
    assert accepted and float(accepted.group(1)) == len(sent), "summed over both workers"

    files = sorted((served.volume_dir / "logs").rglob("*.ndjson"))
    assert files, "the file sink wrote nothing under /data/logs"
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", f.parent.name) for f in files)
    assert all(f.stat().st_uid == UID for f in files)
    written = "".join(f.read_text() for f in files)
    assert sorted(ids_in(written)) == sorted(sent)


@container_tests
def test_register_in_the_image_hands_its_secret_to_the_running_receiver(
    image: str, served: Container,
) -> None:
    """The compose `register` service: register.py in a second container on the same volume
    writes a fresh secret and the verify code; the running receiver takes both, no restart."""
    from tests.fake_vercel import PERSONAL_TOKEN, fake_vercel

    assert served.volume_dir is not None
    before = (served.volume_dir / "drain-secret").read_text().split()
    with fake_vercel() as api:
        run = podman(
            "run", "--rm", "--network", "host", "--read-only", "--read-only-tmpfs=false",
            "-v", f"{served.name}:/data",
            "-e", f"VERCEL_TOKEN={PERSONAL_TOKEN}", "-e", f"VERCEL_API_URL={api.url}",
            "-e", "DRAIN_API=drains", "-e", "DRAIN_URL=https://drain.example.com/",
            image, "python", "register.py", check=False, timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        (created,) = api.secrets.values()
        code = api.verification_code
    assert created and created not in run.stdout + run.stderr
    assert (served.volume_dir / "drain-secret").read_text().split() == [created, *before]
    assert (served.volume_dir / "drain-verify").read_text().strip() == code

    handshake = httpx.post(served.url + "/", content=b"{}", timeout=10)
    assert handshake.status_code == 200 and handshake.headers["x-vercel-verify"] == code
    batch = records(2)
    body = json.dumps(batch).encode()
    for secret, expected in ((created, 200), (before[0], 200), ("wrong", 403)):
        response = httpx.post(served.url + "/", content=body, timeout=30,
                              headers={"x-vercel-signature": sign(body, secret)})
        assert response.status_code == expected, response.text
    assert ids_in(served.stdout())[-4:] == [r["id"] for r in batch] * 2


@container_tests
def test_served_container_stops_cleanly_on_sigterm(served: Container) -> None:
    began = time.monotonic()
    podman("stop", "--time", "30", served.name, timeout=60)
    took = time.monotonic() - began
    state = served.state()
    assert not state["Running"]
    assert state["ExitCode"] == 0, served.stderr()
    assert took < 15, f"stopping took {took:.1f}s"
    assert served.volume_dir is not None
    written = "".join(f.read_text() for f in (served.volume_dir / "logs").rglob("*.ndjson"))
    assert len(ids_in(written)) == 11, "the files are whole after the stop"


@container_tests
def test_kubernetes_shaped_container_reads_a_mounted_secret(image: str, tmp_path: Path) -> None:
    """As the Deployment runs it: secret read-only from a mounted directory, /data and /tmp
    empty scratch space, stdout sink; stopped with SIGTERM while a delivery is in flight."""
    secrets_dir = tmp_path / "secret"
    secrets_dir.mkdir()
    secret = "s3cr3t-" + uuid.uuid4().hex
    (secrets_dir / "drain-secret").write_text(f"{secret}\nold-secret\n")
    os.chown(secrets_dir / "drain-secret", 0, UID)
    os.chmod(secrets_dir / "drain-secret", 0o440)
    (secrets_dir / "drain-verify").write_text("verify-code-123\n")
    os.chmod(secrets_dir / "drain-verify", 0o444)
    name = f"drain-test-{uuid.uuid4().hex[:8]}"
    try:
        container = start(
            image, name,
            "-v", f"{secrets_dir}:/etc/vercel-drain:ro",
            "--tmpfs", "/data:rw,mode=0700,U",
            "--tmpfs", "/tmp:rw,mode=1777",
            "-e", "DRAIN_SECRET_FILE=/etc/vercel-drain/drain-secret",
            "-e", "DRAIN_VERIFY_FILE=/etc/vercel-drain/drain-verify",
        )
        handshake = httpx.post(container.url + "/", content=b"{}", timeout=10)
        assert handshake.status_code == 200
        assert handshake.headers["x-vercel-verify"] == "verify-code-123"
        batch = records(3)
        body = b"\n".join(json.dumps(r).encode() for r in batch)
        for key in (secret, "old-secret"):
            response = httpx.post(container.url + "/", content=body, timeout=30,
                                  headers={"x-vercel-signature": sign(body, key)})
            assert response.status_code == 200, response.text
        assert ids_in(container.stdout()) == [r["id"] for r in batch] * 2

        # A delivery still uploading when SIGTERM arrives is finished and acknowledged.
        late = records(4)
        chunks = [json.dumps(r).encode() + b"\n" for r in late]
        signature = sign(b"".join(chunks), secret)
        uploading = threading.Event()
        answer: list[httpx.Response | BaseException] = []

        def slowly() -> Iterator[bytes]:
            for chunk in chunks:
                yield chunk
                uploading.set()
                time.sleep(0.5)

        def deliver() -> None:
            try:
                answer.append(httpx.post(container.url + "/", content=slowly(), timeout=30,
                                         headers={"x-vercel-signature": signature}))
            except BaseException as error:  # reported by the assertion below
                answer.append(error)

        sender = threading.Thread(target=deliver)
        sender.start()
        assert uploading.wait(10)
        began = time.monotonic()
        podman("stop", "--time", "30", name, timeout=60)
        took = time.monotonic() - began
        sender.join(30)
        assert answer and isinstance(answer[0], httpx.Response), answer
        assert answer[0].status_code == 200, answer[0].text
        assert container.state()["ExitCode"] == 0, container.stderr()
        assert took < SHUTDOWN_TIMEOUT, f"stopping took {took:.1f}s"
        assert ids_in(container.stdout())[-4:] == [r["id"] for r in late]
    finally:
        remove(name)


def test_compose_passes_the_archive_settings_from_env(compose: dict[str, Any]) -> None:
    from receiver.settings import load_settings

    environment = compose["services"]["receiver"]["environment"]
    example = (DEPLOY / ".env.example").read_text()
    names = ("DRAIN_ARCHIVE", "DRAIN_ARCHIVE_ENDPOINT", "DRAIN_ARCHIVE_HOST", "DRAIN_SPOOL_MAX_BYTES",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
    for name in names:
        assert re.fullmatch(rf"\$\{{{name}:-[^}}]*\}}", environment[name]), name
        assert re.search(rf"^{name}=", example, re.MULTILINE), f"{name} is not in .env.example"
    # The example's values, as compose passes them, are settings the receiver starts with.
    values = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    rendered = {k: v for k, v in environment.items() if not str(v).startswith("${")}
    rendered |= {name: values[name] for name in names}
    assert load_settings([], {**rendered, "DRAIN_SINK": "file"}).archive == ""
    archived = load_settings([], {**rendered, "DRAIN_SINK": "file", "DRAIN_ARCHIVE": "s3://acme-logs/vercel"})
    assert archived.archive == "s3://acme-logs/vercel" and archived.rotate_every == 300


def test_compose_renders_the_archive_from_env_with_podman_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAIN_ARCHIVE", "s3://acme-logs/vercel")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)  # other modules' tests set it
    result = podman_compose_config(domain="drain.example.com")
    assert result.returncode == 0, result.stderr
    environment = yaml.safe_load(result.stdout)["services"]["receiver"]["environment"]
    assert environment["DRAIN_ARCHIVE"] == "s3://acme-logs/vercel"
    assert environment["AWS_REGION"] == "eu-west-1"
    assert environment["AWS_ACCESS_KEY_ID"] == ""
