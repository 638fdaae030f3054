"""Every command that the Procfile, the image, docker-compose.yml, the Kubernetes manifests and
docs/deployment.md run is a real `arbiter` subcommand with real flags, and each process kind
runs the command its role needs."""

from __future__ import annotations

import pytest

from config.settings import Settings
from tests.deploy import project

# Keyed by where they are, so a command the docs repeat is checked once.
COMMANDS = list(
    {
        c.where: c
        for c in (
            *project.procfile_commands(),
            *project.dockerfile_commands(),
            *project.compose_commands(),
            *project.k8s_commands(),
            *project.doc_commands(),
        )
    }.values()
)


@pytest.mark.parametrize("line", COMMANDS, ids=[c.where for c in COMMANDS])
def test_command_is_a_real_arbiter_command(line: project.CommandLine) -> None:
    try:
        project.parse_arbiter(line.argv)
    except AssertionError as exc:
        pytest.fail(f"{line.where}: `{' '.join(line.argv)}`: {exc}", pytrace=False)


def test_every_source_of_commands_was_read() -> None:
    # A reader that silently finds nothing would make the test above pass vacuously.
    wheres = {c.where.split(":")[0] for c in COMMANDS}
    assert {"Procfile", "Dockerfile", "docker-compose.yml", "docs/deployment.md"} <= wheres
    assert any(w.startswith("deploy/k8s/") for w in wheres)
    assert len(project.doc_commands()) >= 5


def _command(argv: tuple[str, ...]) -> tuple[str, bool]:
    args = project.parse_arbiter(argv)
    return args.command, bool(getattr(args, "no_workers", False))


def test_each_process_runs_what_its_role_needs() -> None:
    services = {c.where.split("services.")[-1]: c.argv for c in project.compose_commands()}
    assert _command(services["api"]) == ("serve", True), "compose api: serve --no-workers"
    assert _command(services["worker"]) == ("worker", False)
    assert _command(services["migrate"]) == ("migrate", False)
    procfile = {c.where.split(": ")[-1]: c.argv for c in project.procfile_commands()}
    # `worker:` runs the workers, so `web:` must not run a second set of them.
    assert _command(procfile["web"]) == ("serve", True), "Procfile web: serve --no-workers"
    assert _command(procfile["worker"]) == ("worker", False)
    k8s = {c.where.split("/")[-1]: c.argv for c in project.k8s_commands()}
    assert _command(k8s["api"]) == ("serve", True)
    assert _command(k8s["worker"]) == ("worker", False)
    assert _command(k8s["migrate"]) == ("migrate", False)


def test_the_procfile_web_process_listens_on_port() -> None:
    # Heroku and the process managers say where to listen in $PORT, and route only there.
    procfile = {c.where.split(": ")[-1]: c.argv for c in project.procfile_commands()}
    assert project.parse_arbiter(procfile["web"]).port == int(project.PROCFILE_PORT)


def test_containers_with_http_probes_run_the_web_server() -> None:
    # Probes need HTTP: `serve` answers on ARBITER_PORT, `worker` on ARBITER_WORKER_HTTP_PORT;
    # a probe on `migrate` (or on the wrong port) would never pass.
    ports = {
        "serve": Settings.model_fields["port"].default,
        "worker": Settings.model_fields["worker_http_port"].default,
    }
    for path, document in project.k8s_documents():
        spec = project.pod_spec(document)
        for container in spec["containers"] if spec else []:
            probes = [k for k in container if k.endswith("Probe")]
            if probes and project.is_arbiter_image(container.get("image")):
                argv = tuple(project.image_entrypoint() + container.get("args", []))
                command = _command(argv)[0]
                assert command in ports, f"{path.name}: {probes} on {argv}"
                named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
                for probe in probes:
                    port = container[probe]["httpGet"]["port"]
                    assert named.get(port, port) == ports[command], f"{path.name}: {probe}"
    for name, service in project.compose()["services"].items():
        if service.get("image", "").startswith("arbiter") or "build" in service:
            command = project.parse_arbiter(
                tuple(project.image_entrypoint() + service.get("command", project.image_cmd()))
            ).command
            check = service.get("healthcheck") or {}
            own_check = f":{ports.get(command)}/" in " ".join(check.get("test") or [])
            # The image's check (bot.healthcheck) asks both ports: fine for serve and worker.
            assert command in ports or check.get("disable", False) or own_check, (
                f"compose {name} runs `{command}`, which answers no HTTP, under the image's "
                "HEALTHCHECK: disable it"
            )


def test_compose_builds_on_the_dockerfiles_default_base() -> None:
    # PYTHON_IMAGE reaches the build (a local or mirrored base), defaulting to the Dockerfile's.
    (default,) = [
        i.value[0].split("=", 1)[1]
        for i in project.dockerfile_instructions()
        if i.cmd == "ARG" and i.value[0].startswith("PYTHON_IMAGE=")
    ]
    for name, service in project.compose()["services"].items():
        if "build" in service:
            argument = service["build"]["args"]["PYTHON_IMAGE"]
            assert argument == f"${{PYTHON_IMAGE:-{default}}}", f"compose {name}: {argument}"
