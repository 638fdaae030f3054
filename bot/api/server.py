"""The operator API as an aiohttp sub-application mounted at /api.

Every request passes one guard, in this order: CORS preflights are answered (and not
counted); the caller is identified by its bearer token, or else by its address; the rate
limit is applied to that client; the operation checks the caller's role; refusals become
ApiError answers; every answer gets the rate-limit headers, and the CORS headers when its
origin is allowed. What an operation answers is redacted (bot/redaction.py) on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.api.access import TOKENS_SETTING, Caller, Tokens, allows
from bot.api.cors import CorsPolicy
from bot.api.models import ApiError, QueryModel
from bot.api.openapi import OPENAPI_PATH, openapi_document
from bot.api.operations import ApiFailure, Call, Operation
from bot.api.ratelimit import ApiRateLimit
from bot.api.views import OPERATIONS
from bot.logs import get_logger
from bot.runtime import Runtime
from bot.store import StoreUnavailable
from config.settings import api_tokens

API_PREFIX = "/api"
NOT_CONFIGURED = (
    f"the operator API is disabled: no API token is configured. Set {TOKENS_SETTING} to "
    "TOKEN:ROLE entries (ROLE read or admin), e.g. "
    f"{TOKENS_SETTING}='<a long random token>:admin', and restart"
)
_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

log = get_logger(component="api")


@dataclass(frozen=True)
class ApiState:
    runtime: Runtime
    tokens: Tokens
    cors: CorsPolicy
    limiter: ApiRateLimit
    clock: Callable[[], float]
    document: dict[str, Any]


API_STATE: web.AppKey[ApiState] = web.AppKey("api_state", ApiState)
CALLER: web.RequestKey[Caller | None] = web.RequestKey("api_caller", Caller)


def build_api(runtime: Runtime, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The /api sub-application. `clock` (UNIX seconds) drives the rate limit and "today"."""
    settings = runtime.settings
    state = ApiState(
        runtime=runtime,
        tokens=Tokens(api_tokens(settings)),
        cors=CorsPolicy(settings.cors_origins),
        limiter=ApiRateLimit(
            settings.api_rate_limit_per_minute,
            60.0,
            redis=runtime.redis_client(),  # shared by every web process when there is Redis
            prefix=settings.redis_key_prefix,
            clock=clock,
        ),
        clock=clock,
        document=openapi_document(
            OPERATIONS, title=settings.api_title, version=settings.api_version, prefix=API_PREFIX
        ),
    )
    api = web.Application(middlewares=[_guard])
    api[API_STATE] = state
    methods: dict[str, set[str]] = {OPENAPI_PATH: {"GET"}}
    api.router.add_get(OPENAPI_PATH, _openapi, allow_head=False)
    for op in OPERATIONS:
        api.router.add_route(op.method, op.path, _endpoint(op))
        methods.setdefault(op.path, set()).add(op.method)
    for path, allowed in methods.items():
        api.router.add_route("OPTIONS", path, _preflight(allowed))
    if not state.tokens.configured:
        log.warning("the operator API and dashboard refuse every request", missing=TOKENS_SETTING)
    return api


# --- The guard -----------------------------------------------------------------------------------


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.config_dict[API_STATE]
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS":
        response = await _answer(request, handler)  # preflights are not counted
        if response.status >= 400:
            response.headers.update(state.cors.headers(origin))
        return response
    caller = state.tokens.caller(request.headers.get("Authorization"))
    request[CALLER] = caller
    client = caller.key if caller is not None else f"address:{request.remote or 'unknown'}"
    verdict = await state.limiter.hit(client)
    if verdict.allowed:
        response = await _answer(request, handler)
    else:
        wait = verdict.headers()["Retry-After"]
        response = _error(
            ApiFailure(
                429,
                "rate_limited",
                f"more than {verdict.limit} requests in 60 seconds from this client: try again "
                f"in {wait} s (the limit is ARBITER_API_RATE_LIMIT_PER_MINUTE)",
            )
        )
    response.headers.update(verdict.headers())
    response.headers.update(state.cors.headers(origin))
    response.headers.update(_API_HEADERS)
    response.headers.add("Vary", "Origin")
    return response


async def _answer(request: web.Request, handler: Any) -> web.StreamResponse:
    """The handler's answer, with every failure turned into an ApiError answer."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiFailure as failure:
        return _error(failure)
    except web.HTTPException as exc:  # the router's 404 and 405
        return _error(_from_http(exc))
    except StoreUnavailable as exc:
        log.warning("store unavailable", path=request.path, error=str(exc))
        return _error(ApiFailure(503, "store_unavailable", "the store cannot be reached now"))
    except Exception:
        log.exception("api operation failed", path=request.path, method=request.method)
        return _error(ApiFailure(500, "internal", "the server failed to answer; see its log"))


def _from_http(exc: web.HTTPException) -> ApiFailure:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ApiFailure(
            405,
            "method_not_allowed",
            f"{exc.method} is not allowed here; use {allowed}",
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPNotFound):
        return ApiFailure(404, "not_found", "no such API endpoint; see /api/openapi.json")
    return ApiFailure(exc.status, "bad_request", exc.reason)


def _error(failure: ApiFailure) -> web.Response:
    body = ApiError(error=failure.error, message=failure.message, details=failure.details)
    return web.json_response(
        body.model_dump(mode="json"), status=failure.status, headers=failure.headers
    )


# --- Operations ----------------------------------------------------------------------------------


def _endpoint(op: Operation) -> Callable[[web.Request], Any]:
    async def endpoint(request: web.Request) -> web.Response:
        state = request.config_dict[API_STATE]
        caller = request.get(CALLER)
        if op.role is not None:
            if not state.tokens.configured:
                raise ApiFailure(403, "api_not_configured", NOT_CONFIGURED)
            if caller is None:
                raise ApiFailure(
                    401,
                    "unauthorized",
                    "send a token of ARBITER_API_TOKENS as `Authorization: Bearer TOKEN`",
                    headers={"WWW-Authenticate": 'Bearer realm="arbiter"'},
                )
            if not allows(caller.role, op.role):
                raise ApiFailure(
                    403, "forbidden", f"this needs an {op.role} token; this one is {caller.role}"
                )
        query = _parameters(op.query, request.query, "query")
        path = _parameters(op.path_model, request.match_info, "path")
        call = Call(state.runtime, state.clock(), caller, query=query, path=path)
        result: BaseModel = await op.handler(call)
        # Stored text (errors, reasons, findings) may predate redaction at its source.
        return web.json_response(state.runtime.redactor.scrub_value(result.model_dump(mode="json")))

    endpoint.__name__ = op.operation_id
    return endpoint


def _parameters(
    model: type[QueryModel] | None, given: Mapping[str, str], where: str
) -> QueryModel | None:
    values: dict[str, str] = {}
    problems: list[str] = []
    for name in dict.fromkeys(given):
        all_given = given.getall(name) if hasattr(given, "getall") else [given[name]]
        if len(all_given) > 1:
            problems.append(f"{name}: given more than once")
        values[name] = all_given[0]
    if model is None:
        problems += [f"{name}: not a parameter of this operation" for name in values]
        model_value = None
    else:
        try:
            model_value = model.model_validate(values)
        except ValidationError as exc:
            problems += [_problem(error) for error in exc.errors()]
            model_value = None
    if problems:
        raise ApiFailure(400, "bad_request", f"invalid {where} parameters", details=problems)
    return model_value


def _problem(error: Any) -> str:
    """One validation error, naming the parameter and never echoing the value."""
    name = ".".join(str(part) for part in error.get("loc", ())) or "?"
    if error.get("type") == "extra_forbidden":
        return f"{name}: not a parameter of this operation"
    return f"{name}: {error.get('msg', 'invalid')}"


async def _openapi(request: web.Request) -> web.Response:
    _parameters(None, request.query, "query")
    return web.json_response(request.config_dict[API_STATE].document)


def _preflight(methods: Iterable[str]) -> Callable[[web.Request], Any]:
    allowed = frozenset(methods)

    async def preflight(request: web.Request) -> web.Response:
        state = request.config_dict[API_STATE]
        origin = request.headers.get("Origin")
        if origin is None or "Access-Control-Request-Method" not in request.headers:
            return web.Response(status=204, headers={"Allow": ", ".join(sorted(allowed))})
        headers = state.cors.preflight(origin, allowed)
        if headers is None:
            raise ApiFailure(
                403,
                "forbidden",
                "this origin is not allowed: add it to ARBITER_CORS_ORIGINS",
            )
        return web.Response(status=204, headers={**headers, "Vary": "Origin"})

    return preflight
