"""`arbiter config`: the effective settings (secrets and URL credentials masked), which
platforms are enabled, the model, Redis, and any `ARBITER_*` variable that is no setting."""

from __future__ import annotations

import json
import sys
from typing import Any

from bot.llm.status import model_status
from config.settings import (
    Settings,
    effective_settings,
    mask_url,
    platform_status,
    unknown_settings,
)


def config_command(settings: Settings, *, as_json: bool = False) -> int:
    values = effective_settings(settings)
    statuses = platform_status(settings)
    model = model_status(settings)
    allowed = [model_status(settings, name) for name in settings.allowed_models]
    unknown = unknown_settings()
    for variable in unknown:
        print(f"arbiter: warning: {variable.warning()}", file=sys.stderr)
    if as_json:
        report: dict[str, Any] = {
            "settings": values,
            "platforms": {
                name: {"enabled": s.enabled, "mode": s.mode or None, "missing": list(s.missing)}
                for name, s in statuses.items()
            },
            "llm": model.as_dict(),
            "allowed_models": [m.as_dict() for m in allowed],
            "redis": _redis(settings),
            "unknown_variables": [
                {"variable": u.variable, "closest": u.closest, "source": u.source} for u in unknown
            ],
        }
        print(json.dumps(report, indent=2, default=str))
        return 0
    width = max(len(name) for name in values)
    for name, value in values.items():
        shown = json.dumps(value) if isinstance(value, list) else value
        print(f"{name:<{width}}  {'' if shown is None else shown}")
    print()
    for status in statuses.values():
        print(status.describe())
    print(model.describe())
    for other in allowed:
        print(f"allowed {other.describe()}")
    print(f"redis: {_redis(settings)}")
    return 0


def _redis(settings: Settings) -> str:
    if settings.redis_url is None:
        return "not used: each web process counts the API rate limit alone (ARBITER_REDIS_URL)"
    return f"{mask_url(settings.redis_url)}: the API rate limit is shared by every web process"
