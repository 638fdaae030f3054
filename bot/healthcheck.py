"""`python -m bot.healthcheck`: the image's health check, for a container running `arbiter
serve` and one running `arbiter worker` alike.

The web server answers /health/live on ARBITER_PORT; a worker process on
ARBITER_WORKER_HTTP_PORT. One container runs one of them, so the check asks both and passes
when either answers 200. The ports and the address come from the settings (the environment and
`.env`), as the process read them.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from config.settings import SettingsError, load_settings

PATH = "/health/live"
TIMEOUT_SECONDS = 3.0
_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - a bind-all address is asked on loopback


def urls() -> list[str]:
    """Where `serve` and `worker` answer their liveness probe, per the settings."""
    settings = load_settings()
    host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
    host = f"[{host}]" if ":" in host else host
    ports = [settings.port, settings.worker_http_port]
    return [f"http://{host}:{port}{PATH}" for port in ports if port]


def alive(url: str) -> str | None:
    """None when `url` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return None if response.status == 200 else f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


def main() -> int:
    try:
        candidates = urls()
    except SettingsError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    failures = []
    for url in candidates:
        failure = alive(url)
        if failure is None:
            return 0
        failures.append(failure)
    print(f"healthcheck: nothing alive: {'; '.join(failures) or 'no port'}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
