"""What the drift tests read: the deployment files, as data, and the real `arbiter` they describe.

Nothing here knows what the files *should* say; the tests compare these readings with the code
(the CLI's parser, the app's routes, the settings, the metrics).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import yaml
from aiohttp import web

from bot.cli.commands import _parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROCFILE = ROOT / "Procfile"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
ENV_EXAMPLE = ROOT / ".env.example"
DASHBOARD = ROOT / "dashboard"
PACKAGES = ("bot", "config", "handlers", "platforms", "prompts")

# Files of deploy/k8s that `kubectl apply -k` must not apply: a template, a run-once Job.
K8S_NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "migrate-job.yaml"}


def yaml_files() -> list[Path]:
    return sorted([COMPOSE_FILE, *DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in k8s_manifests():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path, document))
    return found


def pod_spec(document: dict[str, Any]) -> dict[str, Any] | None:
    kind = document.get("kind")
    if kind in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        spec: dict[str, Any] = document["spec"]["template"]["spec"]
        return spec
    return None


# --- The image ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper case, e.g. "RUN"
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json: bool  # exec form (a JSON array)


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile, parsed by Docker's own parser (BuildKit's, via `dockerfile`)."""
    return [
        Instruction(c.cmd.upper(), tuple(c.flags), tuple(c.value), bool(c.json))
        for c in dockerfile.parse_file(str(DOCKERFILE))
    ]


def dockerfile_stages() -> list[list[Instruction]]:
    """The instructions of each stage, its FROM first (ARGs before the first FROM are not in)."""
    stages: list[list[Instruction]] = []
    for instruction in dockerfile_instructions():
        if instruction.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def final_stage() -> list[Instruction]:
    return dockerfile_stages()[-1]


def last(stage: list[Instruction], cmd: str) -> Instruction | None:
    found = [i for i in stage if i.cmd == cmd]
    return found[-1] if found else None


def image_entrypoint() -> list[str]:
    instruction = last(final_stage(), "ENTRYPOINT")
    return list(instruction.value) if instruction else []


def image_cmd() -> list[str]:
    instruction = last(final_stage(), "CMD")
    return list(instruction.value) if instruction else []


# --- `arbiter` command lines -------------------------------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    where: str  # "docker-compose.yml: services.api", "Procfile: web", ...
    argv: tuple[str, ...]


def is_arbiter_image(image: str | None) -> bool:
    return bool(image) and str(image).split("/")[-1].split(":")[0] == "arbiter"


def _container_argv(command: list[str] | None, args: list[str] | None) -> tuple[str, ...]:
    """What a container of the image runs: command replaces ENTRYPOINT, args replace CMD."""
    head = command if command is not None else image_entrypoint()
    tail = args if args is not None else (image_cmd() if command is None else [])
    return tuple(head + tail)


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def compose_commands() -> list[CommandLine]:
    found = []
    for name, service in compose()["services"].items():
        if not (is_arbiter_image(service.get("image")) or "build" in service):
            continue
        # Compose: `entrypoint` replaces ENTRYPOINT (and drops CMD), `command` replaces CMD.
        entrypoint = _as_list(service.get("entrypoint"))
        command = _as_list(service.get("command"))
        argv = _container_argv(entrypoint, command)
        found.append(CommandLine(f"docker-compose.yml: services.{name}", argv))
    return found


def k8s_commands() -> list[CommandLine]:
    found = []
    for path, document in k8s_documents():
        spec = pod_spec(document)
        if spec is None:
            continue
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if not is_arbiter_image(container.get("image")):
                continue
            argv = _container_argv(container.get("command"), container.get("args"))
            where = f"{path.relative_to(ROOT)}: {document['kind']}/{container['name']}"
            found.append(CommandLine(where, argv))
    return found


PROCFILE_PORT = "5000"  # what Heroku, foreman and honcho put in $PORT


def procfile_lines() -> dict[str, str]:
    """Process type → its command line, as written."""
    found = {}
    for line in PROCFILE.read_text(encoding="utf-8").splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            found[name.strip()] = command.strip()
    return found


def shell_words(command: str, env: dict[str, str]) -> tuple[str, ...]:
    """The argv `sh -c command` would run under `env`: the shell's own expansion, run nothing."""
    result = subprocess.run(
        ["sh", "-c", f'set -- {command}; printf "%s\\0" "$@"'],
        env={"PATH": os.defpath, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return tuple(result.stdout.split("\0")[:-1])


def procfile_commands() -> list[CommandLine]:
    """Each process type's argv, as the process manager's shell expands it with $PORT set."""
    return [
        CommandLine(f"Procfile: {name}", shell_words(command, {"PORT": PROCFILE_PORT}))
        for name, command in procfile_lines().items()
    ]


def dockerfile_commands() -> list[CommandLine]:
    return [CommandLine("Dockerfile: ENTRYPOINT + CMD", tuple(image_entrypoint() + image_cmd()))]


_FENCE = re.compile(r"^```(\w*)\s*$")


def shell_lines(markdown: str) -> Iterator[str]:
    """The command lines of a document's bash blocks, continuation lines joined."""
    language: str | None = None
    pending = ""
    for line in markdown.splitlines():
        fence = _FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence[1]
            continue
        if language not in {"bash", "sh", "shell", "console"}:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            yield text


def doc_commands() -> list[CommandLine]:
    """`arbiter …` and `docker run … arbiter:TAG …` in docs/deployment.md's shell blocks, and
    `arbiter …` in its inline code."""
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    found = [
        CommandLine(f"docs/deployment.md: `{span}`", tuple(shlex.split(span)))
        for span in re.findall(r"`(arbiter [a-z][^`]*)`", text)
    ]
    for line in shell_lines(text):
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:  # a quote split by the line's `|` or `;`: not an arbiter command
                words = part.split()
            if words[:1] == ["arbiter"]:
                found.append(CommandLine(f"docs/deployment.md: {part.strip()}", tuple(words)))
            elif words[:2] == ["docker", "run"]:
                images = [i for i, w in enumerate(words) if is_arbiter_image(w)]
                if images:
                    args = words[images[0] + 1 :]
                    argv = tuple(image_entrypoint() + (args or image_cmd()))
                    found.append(CommandLine(f"docs/deployment.md: {part.strip()}", argv))
    return found


def _no_abbreviations(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A file must spell flags out: `--no-worker` passes argparse today, and becomes
    ambiguous the day another `--no-worker…` flag appears."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)
    return parser


def parse_arbiter(argv: tuple[str, ...]) -> argparse.Namespace:
    """argv through the real `arbiter` parser; AssertionError with argparse's own complaint."""
    assert argv[:1] == ("arbiter",), f"runs {argv[:1]}, not the arbiter command"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return _no_abbreviations(_parser()).parse_args(list(argv[1:]))
    except SystemExit:
        raise AssertionError(errors.getvalue().strip().splitlines()[-1]) from None


# --- The app -----------------------------------------------------------------------------------


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, sub-applications (the API under /api) included."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        info = resource.get_info()
        if "app" in info:
            found |= app_routes(info["app"])  # its routes carry the prefix already
            continue
        for route in resource:
            found.add((route.method, resource.canonical))
    return found


def route_matches(path: str, routes: set[tuple[str, str]], method: str = "GET") -> bool:
    """A concrete path answered by one of the routes (`{var}` parts match one segment)."""
    for route_method, pattern in routes:
        if route_method != method:
            continue
        regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(pattern))
        if re.fullmatch(regex, path):
            return True
    return False
