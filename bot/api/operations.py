"""The shape of an API operation, and the refusals a handler may raise.

`server.py` routes and guards every Operation; `openapi.py` describes the same list, so an
operation cannot exist without being documented, nor be documented without existing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel

from bot.api.access import Caller, Role
from bot.api.models import QueryModel

if TYPE_CHECKING:
    from bot.runtime import Runtime

M = TypeVar("M", bound=QueryModel)


class ApiFailure(Exception):
    """A refusal, answered as an ApiError with this status."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        details: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Call:
    """One request to an operation, its parameters validated."""

    runtime: Runtime
    now: float  # UNIX seconds, from the API's clock
    caller: Caller | None
    query: QueryModel | None = None
    path: QueryModel | None = None

    def params(self, model: type[M]) -> M:
        """The validated query parameters, as the operation's query model."""
        if not isinstance(self.query, model):
            raise TypeError(f"this operation's query is not a {model.__name__}")
        return self.query

    def path_params(self, model: type[M]) -> M:
        if not isinstance(self.path, model):
            raise TypeError(f"this operation's path is not a {model.__name__}")
        return self.path


Handler = Callable[[Call], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Operation:
    method: Literal["GET", "POST"]
    path: str  # below /api, in OpenAPI's template form: "/reviews/{id}"
    operation_id: str
    summary: str
    handler: Handler
    response: type[BaseModel]
    role: Role | None  # None: open to anyone (still rate-limited)
    query: type[QueryModel] | None = None
    path_model: type[QueryModel] | None = None
    errors: tuple[int, ...] = ()  # refusals beyond those every guarded operation may give
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
