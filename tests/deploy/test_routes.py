"""The paths the deployment files send traffic to exist in the app and answer: probes, health
checks, the metrics path, and each route of the nginx and Caddy configurations."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot import healthcheck as healthcheck_module
from bot.app import create_app, create_worker_app
from bot.runtime import Runtime
from config.settings import Settings, load_settings
from tests.deploy import project

API_PORT = Settings.model_fields["port"].default
WORKER_PORT = Settings.model_fields["worker_http_port"].default  # `arbiter worker`
_URL_PATH = re.compile(r"https?://[^/'\"\s]+(/[^'\"\s)]*)")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    started = Runtime(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/deploy.db"))
    await started.start()
    yield started
    await started.close()


@pytest.fixture
def app(runtime: Runtime) -> web.Application:
    return create_app(runtime)


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[TestClient[Any, Any]]:
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


@pytest.fixture
async def by_port(
    runtime: Runtime, app: web.Application, client: TestClient[Any, Any]
) -> AsyncIterator[dict[int, tuple[TestClient[Any, Any], set[tuple[str, str]]]]]:
    """What answers on each port Arbiter listens on: `serve`'s app, and `worker`'s."""
    worker_app = create_worker_app(runtime)
    worker = TestClient(TestServer(worker_app))
    await worker.start_server()
    yield {
        API_PORT: (client, project.app_routes(app)),
        WORKER_PORT: (worker, project.app_routes(worker_app)),
    }
    await worker.close()


@pytest.fixture
def routes(app: web.Application) -> set[tuple[str, str]]:
    return project.app_routes(app)


# --- Probes and health checks ------------------------------------------------------------------


def _k8s_probes() -> list[tuple[str, str, Any]]:
    """(where, path, port) of every httpGet probe of the manifests."""
    found = []
    for path, document in project.k8s_documents():
        spec = project.pod_spec(document)
        for container in spec["containers"] if spec else []:
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                get = (container.get(kind) or {}).get("httpGet")
                if get:
                    port = ports.get(get["port"], get["port"])
                    found.append((f"{path.name} {container['name']} {kind}", get["path"], port))
    return found


def _health_check_paths() -> list[tuple[str, str]]:
    """(where, path) of the image's HEALTHCHECK and the compose health checks of Arbiter."""
    found = []
    healthcheck = project.last(project.final_stage(), "HEALTHCHECK")
    assert healthcheck is not None, "the final image has no HEALTHCHECK"
    command = " ".join(healthcheck.value)
    paths = _URL_PATH.findall(command)
    if command.endswith("-m bot.healthcheck"):  # the check's module says where it asks
        paths.append(healthcheck_module.PATH)
    found += [("Dockerfile HEALTHCHECK", p) for p in paths]
    for name, service in project.compose()["services"].items():
        if project.is_arbiter_image(service.get("image")) or "build" in service:
            test = (service.get("healthcheck") or {}).get("test") or []
            text = test if isinstance(test, str) else " ".join(test)
            found += [(f"compose {name} healthcheck", p) for p in _URL_PATH.findall(text)]
    return found


def test_the_guides_probes_are_in_the_manifests() -> None:
    probes = {(where.split()[1], where.split()[2]): path for where, path, _ in _k8s_probes()}
    assert probes[("api", "livenessProbe")] == "/health/live"
    assert probes[("api", "readinessProbe")] == "/health/ready"
    image = [path for where, path in _health_check_paths() if where.startswith("Dockerfile")]
    assert image == ["/health/live"]


async def test_every_probe_path_answers_on_the_port_arbiter_listens_on(
    by_port: dict[int, tuple[TestClient[Any, Any], set[tuple[str, str]]]],
) -> None:
    probes = _k8s_probes()
    assert probes, "no httpGet probe found in deploy/k8s"
    for where, path, port in probes:
        assert port in by_port, f"{where}: port {port}, Arbiter listens on {sorted(by_port)}"
        client, routes = by_port[port]
        assert project.route_matches(path, routes), f"{where}: no route for {path}"
        response = await client.get(path)
        assert response.status == 200, f"{where}: GET {path} answered {response.status}"


async def test_every_health_check_path_answers(
    client: TestClient[Any, Any], routes: set[tuple[str, str]]
) -> None:
    checks = _health_check_paths()
    assert len(checks) >= 2
    for where, path in checks:
        assert project.route_matches(path, routes), f"{where}: no route for {path}"
        response = await client.get(path)
        assert response.status == 200, f"{where}: GET {path} answered {response.status}"


async def test_the_scraped_metrics_path_answers(
    by_port: dict[int, tuple[TestClient[Any, Any], set[tuple[str, str]]]],
) -> None:
    scraped: set[tuple[int, str]] = set()
    for config in ("prometheus.yml", "prometheus-kubernetes.yml"):
        for job in project.load_yaml(project.PROMETHEUS / config)["scrape_configs"]:
            scraped.update((port, job.get("metrics_path", "/metrics")) for port in by_port)
    for _, document in project.k8s_documents():
        annotations = (
            document.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations")
        )
        if annotations and "prometheus.io/path" in annotations:
            port = int(annotations["prometheus.io/port"])
            assert port in by_port, f"scraped on {port}, Arbiter listens on {sorted(by_port)}"
            scraped.add((port, annotations["prometheus.io/path"]))
    for port, path in scraped:
        response = await by_port[port][0].get(path)
        assert response.status == 200, f"GET {path} on {port} answered {response.status}"
        assert "arbiter_store_up" in await response.text()


def test_prometheus_scrapes_the_compose_api_on_its_port() -> None:
    services = project.compose()["services"]
    listens = {"serve": API_PORT, "worker": WORKER_PORT}
    for job in project.load_yaml(project.PROMETHEUS / "prometheus.yml")["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                assert host in services, f"prometheus.yml scrapes {host}: no such compose service"
                argv = project.image_entrypoint() + services[host].get(
                    "command", project.image_cmd()
                )
                command = project.parse_arbiter(tuple(argv)).command
                assert int(port) == listens.get(command), f"{target}: `{command}` listens elsewhere"


# --- The proxies -------------------------------------------------------------------------------

API, DASHBOARD, BLOCKED = "api", "dashboard", "blocked"


def _compose_ports() -> dict[str, int]:
    """The published port of the compose api and dashboard services."""
    found = {}
    for name in ("api", "dashboard"):
        published = str(project.compose()["services"][name]["ports"][0]).split(":")
        found[name] = int(published[-2] if len(published) > 1 else published[-1])
    return found


def _target(port: int) -> str:
    ports = _compose_ports()
    assert port in ports.values(), f"the proxy sends traffic to port {port}: nothing listens"
    return API if port == ports["api"] else DASHBOARD


def nginx_routing(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(exact, prefix) locations of the HTTPS server → API, DASHBOARD or BLOCKED."""
    upstreams = {
        name: int(port)
        for name, port in re.findall(r"upstream\s+(\w+)\s*\{[^}]*?server\s+[^:;\s]+:(\d+)", text)
    }
    exact: dict[str, str] = {}
    prefix: dict[str, str] = {}
    for modifier, path, body in re.findall(r"location\s+(=\s+|\^~\s+)?(\S+)\s*\{([^}]*)\}", text):
        assert not path.startswith("~"), "regex locations are not checked here: add them"
        if passed := re.search(r"proxy_pass\s+https?://(\w+)", body):
            target = _target(upstreams[passed[1]])
        elif re.search(r"return\s+40\d", body):
            target = BLOCKED
        else:
            raise AssertionError(f"nginx location {path}: neither proxied nor refused")
        (exact if modifier.strip() == "=" else prefix)[path] = target
    return exact, prefix


def nginx_resolve(routing: tuple[dict[str, str], dict[str, str]], path: str) -> str:
    exact, prefix = routing
    if path in exact:
        return exact[path]
    matches = [p for p in prefix if path.startswith(p)]
    assert matches, f"nginx: no location matches {path}"
    return prefix[max(matches, key=len)]


def caddy_routing(text: str) -> dict[str, str]:
    """Path matcher of each `handle` block → API, DASHBOARD or BLOCKED ("" for the fallback)."""
    routing = {}
    for matcher, body in re.findall(r"^\s*handle(?:\s+(\S+))?\s*\{(.*?)^\s*\}", text, re.M | re.S):
        if proxied := re.search(r"reverse_proxy\s+\S+?:(\d+)", body):
            routing[matcher] = _target(int(proxied[1]))
        elif re.search(r"respond\s+40\d", body):
            routing[matcher] = BLOCKED
        else:
            raise AssertionError(f"Caddy handle {matcher}: neither proxied nor refused")
    return routing


def caddy_resolve(routing: dict[str, str], path: str) -> str:
    # Caddy orders handle blocks by the specificity of their path matchers, longest first.
    for matcher in sorted((m for m in routing if m), key=len, reverse=True):
        hit = path.startswith(matcher[:-1]) if matcher.endswith("*") else path == matcher
        if hit:
            return routing[matcher]
    assert "" in routing, f"Caddy: no handle matches {path}"
    return routing[""]


def _expected(path: str) -> str:
    if path == "/metrics":
        return BLOCKED  # Prometheus scrapes port 8000 directly; the world does not
    dashboard_files = {
        "/" + p.relative_to(project.DASHBOARD).as_posix() for p in project.DASHBOARD.rglob("*")
    }
    if path == "/" or path in dashboard_files:
        return DASHBOARD
    return API


def _concrete(pattern: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", pattern)


Reader = Callable[[str], Any]
Resolver = Callable[[Any, str], str]
PROXIES: dict[str, tuple[Reader, Resolver]] = {
    "deploy/nginx.conf": (nginx_routing, nginx_resolve),
    "deploy/Caddyfile": (caddy_routing, caddy_resolve),
}


@pytest.mark.parametrize("name", PROXIES)
def test_the_proxy_routes_every_route_of_the_app(name: str, routes: set[tuple[str, str]]) -> None:
    read, resolve = PROXIES[name]
    routing: Any = read((project.ROOT / name).read_text(encoding="utf-8"))
    wrong = []
    for _method, pattern in sorted(routes):
        path = _concrete(pattern)
        got, expected = resolve(routing, path), _expected(path)
        if got != expected:
            wrong.append(f"{path} goes to {got}, should go to {expected}")
    assert not wrong, f"{name}: " + "; ".join(wrong)
    for path in ("/webhooks/github", "/webhooks/gitlab", "/api/", "/setup", "/health/ready"):
        assert project.route_matches(path, routes) or project.route_matches(path, routes, "POST")


@pytest.mark.parametrize("name", PROXIES)
def test_every_path_the_proxy_sends_to_the_api_exists(
    name: str, routes: set[tuple[str, str]]
) -> None:
    read, _ = PROXIES[name]
    routing: Any = read((project.ROOT / name).read_text(encoding="utf-8"))
    prefixes = {**routing[0], **routing[1]} if isinstance(routing, tuple) else routing
    for prefix, target in prefixes.items():
        if target != API:
            continue
        stem = prefix.rstrip("*")
        assert any(_concrete(p).startswith(stem) for _, p in routes), (
            f"{name} sends {prefix} to the API, which has no route there"
        )


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", size.strip())
    assert match, f"cannot read the size {size!r}"
    number, unit = match.groups()
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}  # nginx: k and m are binary
    units |= {"kb": 1000, "mb": 1000**2, "kib": 1024, "mib": 1024**2}  # Caddy: humanize
    return int(number) * units[unit.lower()]


def test_the_proxies_accept_webhook_bodies_as_large_as_arbiter_does() -> None:
    limit = Settings.model_fields["max_webhook_bytes"].default
    nginx = (project.DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    caddy = (project.DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    nginx_size = re.search(r"client_max_body_size\s+(\S+);", nginx)
    caddy_size = re.search(r"max_size\s+(\S+)", caddy)
    assert nginx_size and _bytes(nginx_size[1]) >= limit, "nginx would refuse large webhooks"
    assert caddy_size and _bytes(caddy_size[1]) >= limit, "Caddy would refuse large webhooks"


def test_the_dashboard_container_passes_the_api_to_the_api_service() -> None:
    text = (project.DEPLOY / "dashboard.nginx.conf").read_text(encoding="utf-8")
    passed = re.search(r"location\s+/api/\s*\{[^}]*proxy_pass\s+http://(\w+):(\d+)", text)
    assert passed, "the dashboard container does not pass /api/ on"
    assert passed[1] in project.compose()["services"] and int(passed[2]) == API_PORT
    listen = re.search(r"listen\s+(\d+)", text)
    assert listen and int(listen[1]) == _compose_ports()["dashboard"]
