"""The deployment files are well-formed and say what the guide promises: YAML parses, the
Kubernetes manifests validate against the Kubernetes schemas (shipped with kubernetes-validate,
offline), docker-compose.yml against the Compose specification, the Dockerfile builds the image
the guide describes, and the resources match the starting configuration of docs/deployment.md.
Where docker compose, nginx or Caddy are installed, they check their own files too."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import project

# The oldest Kubernetes release still commonly run, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize(
    "path", project.yaml_files(), ids=lambda p: str(p.relative_to(project.ROOT))
)
def test_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert documents, f"{path} holds no YAML document"


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", project.k8s_manifests(), ids=lambda p: str(p.relative_to(project.ROOT))
)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    for document in documents:
        where = f"{path.name} {document.get('kind')}/{document.get('metadata', {}).get('name')}"
        try:
            # strict: a misspelt or misplaced field is an error, not silently dropped
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}", pytrace=False)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}", pytrace=False)


def test_kustomization_applies_the_long_lived_objects_only() -> None:
    kustomization = project.load_yaml(project.K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in project.k8s_manifests()}
    assert listed <= present, f"kustomization.yaml lists missing files: {listed - present}"
    assert listed == present - project.K8S_NOT_IN_KUSTOMIZATION
    assert {i["name"] for i in kustomization.get("images", [])} == {"arbiter"}


def _documents(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in project.k8s_documents() if d["kind"] == kind}


def test_k8s_objects_fit_together() -> None:
    deployments, jobs = _documents("Deployment"), _documents("Job")
    services, configmaps = _documents("Service"), _documents("ConfigMap")
    secrets = _documents("Secret")
    assert set(deployments) == {"arbiter-api", "arbiter-worker"}
    assert set(jobs) == {"arbiter-migrate"}
    for name, workload in {**deployments, **jobs}.items():
        template = workload["spec"]["template"]
        if workload["kind"] == "Deployment":
            selector = workload["spec"]["selector"]["matchLabels"]
            labels = template["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{name}: selector misses its pods"
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, f"{name} may run as root"
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
    service = services["arbiter-api"]
    api_labels = deployments["arbiter-api"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_labels.items()
    api_ports = {
        p["name"]
        for c in deployments["arbiter-api"]["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert {str(p["targetPort"]) for p in service["spec"]["ports"]} <= api_ports | {"8000"}


# --- The starting configuration ----------------------------------------------------------------


def _starting_configuration() -> dict[str, tuple[int, float | None, float | None]]:
    """Component → (replicas, memory in MiB, CPUs) from docs/deployment.md's table."""
    text = project.DEPLOYMENT_DOC.read_text(encoding="utf-8")
    table = text.split("#### Recommended starting configuration", 1)[1]
    rows = {}
    for line in table.splitlines()[1:]:
        if match := re.match(r"^\| ([A-Za-z]+) \| (\d+) \| (.*?) \|$", line):
            memory = re.search(r"(\d+(?:\.\d+)?)\s*(MB|GB) RAM", match[3])
            cpu = re.search(r"(\d+(?:\.\d+)?) CPU", match[3])
            mib = float(memory[1]) * (1024 if memory[2] == "GB" else 1) if memory else None
            rows[match[1]] = (int(match[2]), mib, float(cpu[1]) if cpu else None)
        elif rows and not line.startswith("|"):
            break
    assert {"API", "Worker"} <= set(rows), "the starting configuration table is gone"
    return rows


def _mib(quantity: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(quantity))
    assert match, f"cannot read the quantity {quantity!r}"
    number, unit = match.groups()
    factor = {"Mi": 1, "Gi": 1024, "m": 1, "g": 1024, "M": 1, "G": 1024}[unit]
    return float(number) * factor


def _cpus(quantity: str | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_k8s_replicas_and_resources_are_the_starting_configuration() -> None:
    rows = _starting_configuration()
    deployments = _documents("Deployment")
    for component, name in (("API", "arbiter-api"), ("Worker", "arbiter-worker")):
        replicas, memory, cpus = rows[component]
        deployment = deployments[name]
        assert deployment["spec"]["replicas"] == replicas, f"{name}: replicas"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for kind in ("requests", "limits"):
            given = container["resources"][kind]
            assert _mib(given["memory"]) == memory, f"{name}: {kind}.memory"
            assert _cpus(given["cpu"]) == cpus, f"{name}: {kind}.cpu"


def test_compose_limits_are_the_starting_configuration() -> None:
    rows = _starting_configuration()
    services = project.compose()["services"]
    for component, name in (
        ("API", "api"),
        ("Worker", "worker"),
        ("Dashboard", "dashboard"),
        ("PostgreSQL", "db"),
    ):
        _, memory, cpus = rows[component]
        limits = services[name]["deploy"]["resources"]["limits"]
        assert _mib(limits["memory"]) == memory, f"compose {name}: memory limit"
        if cpus is not None:
            assert _cpus(limits["cpus"]) == cpus, f"compose {name}: cpus limit"


# --- Docker Compose ----------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(project.compose())
    ]
    assert not errors, "\n".join(errors)


def test_compose_services_are_the_guides() -> None:
    services = project.compose()["services"]
    assert {"api", "worker", "db", "migrate", "dashboard", "mongo"} <= set(services)
    assert services["db"]["image"].startswith("postgres:16")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["db"]["volumes"])
    assert str(services["api"]["ports"][0]).endswith("8000:8000")
    assert str(services["dashboard"]["ports"][0]).endswith("3000:3000")
    assert services["mongo"]["profiles"] == ["mongo"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "migrate"):
        service = services[name]
        assert any(e["path"] == ".env" for e in service["env_file"]), f"{name}: settings"
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        assert service["depends_on"]["mongo"]["required"] is False
        url = service["environment"]["ARBITER_DATABASE_URL"]
        assert "@db:5432/" in url and url.startswith("${ARBITER_DATABASE_URL:-")
    for name in ("api", "worker"):
        migrate = services[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"
    assert services["dashboard"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on missing {dependency}"
            needs_health = service["depends_on"][dependency]["condition"] == "service_healthy"
            has_check = "healthcheck" in services[dependency] or "build" in services[dependency]
            assert not needs_health or has_check, f"{name} waits for {dependency}'s health"


def test_compose_mounts_files_that_exist() -> None:
    for name, service in project.compose()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (project.ROOT / source).exists(), f"compose {name} mounts {source}"


def _docker_compose() -> list[str] | None:
    if shutil.which("docker"):
        found = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if found.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


@pytest.mark.skipif(_docker_compose() is None, reason="docker compose is not installed")
@pytest.mark.parametrize("profiles", ["", "mongo,monitoring"])
def test_docker_compose_config_accepts_the_file(profiles: str, tmp_path: Path) -> None:
    command = _docker_compose()
    assert command is not None
    # No ARBITER_* or COMPOSE_* of the developer's, and an empty .env for interpolation.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "COMPOSE_"))}
    env |= {"COMPOSE_PROFILES": profiles} if profiles else {}
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    result = subprocess.run(
        [*command, "-f", str(project.COMPOSE_FILE), "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- The image ---------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    stages = project.dockerfile_stages()
    assert len(stages) >= 2, "one stage: the compilers would stay in the image"
    args = {
        i.value[0].split("=", 1)[0]: i.value[0].split("=", 1)[1]
        for i in project.dockerfile_instructions()
        if i.cmd == "ARG" and "=" in i.value[0]
    }
    final_base = project.last(project.final_stage(), "FROM")
    assert final_base is not None
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), final_base.value[0])
    assert re.match(r"python:3\.1[2-9][\w.-]*-slim", base), f"final base {base} is not slim"
    user = project.last(project.final_stage(), "USER")
    assert user is not None, "the final stage runs as root"
    assert user.value[0].split(":")[0] not in {"0", "root"}
    assert project.image_entrypoint() == ["arbiter"]


def test_the_dockerfile_needs_no_frontend_image() -> None:
    # A `# syntax=` line makes BuildKit pull a frontend image from a registry before building.
    first = project.DOCKERFILE.read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert not first.replace(" ", "").lower().startswith("#syntax="), first


def test_no_compilers_in_the_final_image() -> None:
    compilers = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cc)\b")
    for instruction in project.final_stage():
        if instruction.cmd == "RUN":
            command = " ".join(instruction.value)
            assert not ("install" in command and compilers.search(command)), command
        if instruction.cmd == "COPY" and any(f.startswith("--from=") for f in instruction.flags):
            assert not any(compilers.search(v) for v in instruction.value)
    for stage in project.dockerfile_stages()[:-1]:
        assert project.last(stage, "FROM") is not None


def test_dockerignore_keeps_secrets_out_and_what_the_image_needs_in() -> None:
    patterns = [
        line.strip()
        for line in (project.ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!").removeprefix("**/")
            if (
                fnmatch.fnmatch(path, bare)
                or fnmatch.fnmatch(path.split("/")[-1], bare)
                or path.startswith(bare.rstrip("/") + "/")
            ):
                verdict = not negate
        return verdict

    for secret in (".env", ".env.production", "key.private-key.pem", ".git/config", "arbiter.db"):
        assert ignored(secret), f".dockerignore lets {secret} into the build context"
    # The wheel's sources and metadata (the App manifest and the dashboard ship inside `bot`),
    # and the pinned requirements the Dockerfile installs.
    needed = ["pyproject.toml", "README.md", "bot/setup/app.yml", "bot/dashboard/index.html"]
    needed += ["deploy/image/requirements.txt", "deploy/image/build-requirements.txt"]
    needed += [f"{package}/__init__.py" for package in project.PACKAGES]
    for path in needed:
        assert not ignored(path), f".dockerignore keeps {path}, which the image needs, out"
        assert (project.ROOT / path).exists(), f"the image needs {path}, which does not exist"


# --- nginx and Caddy, where installed ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("name", ["nginx.conf", "dashboard.nginx.conf"])
def test_nginx_accepts_the_configuration(name: str, tmp_path: Path) -> None:
    key, cert = tmp_path / "arbiter.key", tmp_path / "arbiter.crt"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=arbiter.example.com"),
        ],
        capture_output=True,
        check=True,
    )
    text = (project.DEPLOY / name).read_text(encoding="utf-8")
    text = text.replace("/etc/ssl/certs/arbiter.crt", str(cert))
    text = text.replace("/etc/ssl/private/arbiter.key", str(key))
    text = text.replace("http://api:8000", "http://127.0.0.1:8000")  # compose's name, here
    (tmp_path / "site.conf").write_text(text, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_caddy_accepts_the_caddyfile(tmp_path: Path) -> None:
    caddyfile = project.DEPLOY / "Caddyfile"
    result = subprocess.run(
        ["caddy", "validate", "--adapter", "caddyfile", "--config", str(caddyfile)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
