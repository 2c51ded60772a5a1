"""The operation table: every API operation is declared once, here.

A feature's service function is decorated with :func:`operation`; its
keyword-only parameters (after the :class:`CallContext`) and return annotation
are the operation's signature. The SOAP and XML-RPC adapters are generated
from this table, so the two protocols cannot drift.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ANY_ROLE: frozenset[str] = frozenset(
    {"admin", "billing", "sales", "support", "technical", "readonly"}
)


@dataclass(frozen=True)
class Param:
    name: str
    type: Any
    required: bool
    default: Any


@dataclass(frozen=True)
class Operation:
    name: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    result: Any
    roles: frozenset[str]
    mutating: bool
    idempotent: bool
    doc: str
    # audit: the dispatcher records successful mutations unless the service
    # function recorded a richer entry itself
    public: bool = False  # callable without credentials


_REGISTRY: dict[str, Operation] = {}


def operation(
    name: str,
    *,
    roles: frozenset[str] | set[str] = ANY_ROLE,
    mutating: bool = False,
    idempotent: bool = False,
    public: bool = False,
) -> Callable[[F], F]:
    """Declare ``func`` as the API operation ``name``.

    ``idempotent=True`` adds an optional ``idempotency_key`` parameter handled
    by the dispatcher; it implies ``mutating``.
    """

    def wrap(func: F) -> F:
        hints = typing.get_type_hints(func, include_extras=True)
        sig = inspect.signature(func)
        params: list[Param] = []
        for pname, p in list(sig.parameters.items())[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"{func.__qualname__}: parameter {pname} must be keyword-only")
            required = p.default is inspect.Parameter.empty
            params.append(Param(pname, hints[pname], required, None if required else p.default))
        if idempotent:
            params.append(Param("idempotency_key", str | None, False, None))
        if name in _REGISTRY:
            raise ValueError(f"operation {name} declared twice")
        _REGISTRY[name] = Operation(
            name=name,
            func=func,
            params=tuple(params),
            result=hints.get("return", type(None)),
            roles=frozenset(roles),
            mutating=mutating or idempotent,
            idempotent=idempotent,
            doc=inspect.cleandoc(func.__doc__ or name),
            public=public,
        )
        return func

    return wrap


def registry() -> dict[str, Operation]:
    return dict(sorted(_REGISTRY.items()))
