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

from pba_server.core.auth import ROLES

F = TypeVar("F", bound=Callable[..., Any])

# The roles (docs/api.md, "Roles"). ``admin`` may call every operation, so a
# declaration names the other roles that may; ``frozenset()`` is "admin only".
ANY_ROLE: frozenset[str] = frozenset(ROLES)


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
    # the dispatcher handles ``idempotency_key`` (stores and replays the first
    # answer); False for reads and for a mutation whose function declares the
    # key itself and answers repeats on its own (PaymentCharge: a repeat
    # reports the charge as it is now, not the first answer)
    idempotent: bool
    doc: str
    # audit: the dispatcher records successful mutations unless the service
    # function recorded a richer entry itself
    public: bool = False  # callable without credentials
    # every role may call it, on the caller's own credentials only (its
    # password, its API keys); acting on another user's needs admin
    self_service: bool = False


_REGISTRY: dict[str, Operation] = {}

KEY = "idempotency_key"


def operation(
    name: str,
    *,
    roles: frozenset[str] | set[str],
    mutating: bool = False,
    public: bool = False,
    self_service: bool = False,
) -> Callable[[F], F]:
    """Declare ``func`` as the API operation ``name``.

    ``roles`` is required: the roles besides ``admin`` that may call it. A
    mutating operation never admits ``readonly``, unless it is
    ``self_service`` (it acts on the caller's own credentials and checks so
    itself).

    Every mutating operation takes an optional ``idempotency_key``, so a
    client that lost an answer can ask again and get the first one: the
    dispatcher stores and replays it. A function that declares
    ``idempotency_key`` itself handles repeats on its own and gets the key
    passed in. A read may not declare one; there is no mutating operation
    without one.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"operation {name}: unknown roles {sorted(unknown)}")
    if mutating and "readonly" in roles and not self_service:
        raise ValueError(f"operation {name} changes data: the readonly role may not call it")
    if self_service and frozenset(roles) != ANY_ROLE:
        raise ValueError(f"operation {name}: a self-service operation is open to every role")

    def wrap(func: F) -> F:
        hints = typing.get_type_hints(func, include_extras=True)
        sig = inspect.signature(func)
        params: list[Param] = []
        for pname, p in list(sig.parameters.items())[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"{func.__qualname__}: parameter {pname} must be keyword-only")
            required = p.default is inspect.Parameter.empty
            params.append(Param(pname, hints[pname], required, None if required else p.default))
        own_key = any(p.name == KEY for p in params)
        if own_key and not mutating:
            raise ValueError(f"operation {name} changes nothing: it takes no {KEY}")
        if own_key and hints[KEY] not in (str, str | None):
            raise TypeError(f"operation {name}: {KEY} must be a str")
        if mutating and not own_key:
            params.append(Param(KEY, str | None, False, None))
        if name in _REGISTRY:
            raise ValueError(f"operation {name} declared twice")
        _REGISTRY[name] = Operation(
            name=name,
            func=func,
            params=tuple(params),
            result=hints.get("return", type(None)),
            roles=frozenset(roles),
            mutating=mutating,
            idempotent=mutating and not own_key,
            doc=inspect.cleandoc(func.__doc__ or name),
            public=public,
            self_service=self_service,
        )
        return func

    return wrap


def registry() -> dict[str, Operation]:
    return dict(sorted(_REGISTRY.items()))
