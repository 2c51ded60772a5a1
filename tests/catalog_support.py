"""Helpers for the catalog tests: a service-layer call context, and one way to
call an operation over either endpoint and get plain values back."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import zeep.exceptions
import zeep.helpers
from sqlalchemy import select

from pba_server.accounts.models import Account, User
from pba_server.core.auth import Principal
from pba_server.core.context import CallContext
from pba_server.core.db import UnitOfWork


@contextmanager
def service_ctx(env: Any, login: str = "admin", operation: str = "test") -> Iterator[CallContext]:
    """A call context as the dispatcher builds it, for ``login``; commits on success."""
    with UnitOfWork(env.app.engine) as uow:
        user, acc = uow.session.execute(
            select(User, Account)
            .join(Account, User.account_id == Account.id)
            .where(User.login == login)
        ).one()
        principal = Principal(
            user_id=user.id,
            login=user.login,
            account_id=acc.id,
            account_path=acc.path,
            roles=frozenset(user.roles.split(",")),
        )
        yield CallContext(
            uow=uow,
            principal=principal,
            clock=env.clock,
            secrets=env.app.secrets,
            operation=operation,
            correlation_id="test",
            runtime=env.app.runtime,
        )
        uow.commit()


def plain(value: Any) -> Any:
    """zeep objects -> dicts and lists; everything else as it is."""
    value = zeep.helpers.serialize_object(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _wire(value: Any) -> Any:
    """XML-RPC has no decimal: money travels as a string."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


class Caller:
    """Call operations by name over SOAP or XML-RPC with the same arguments."""

    def __init__(self, api: Any, protocol: str, login: str = "admin", password: str | None = None):
        self.protocol = protocol
        self.proxy = (
            api.soap(login, password) if protocol == "soap" else api.xmlrpc(login, password)
        )

    def __call__(self, op: str, **kw: Any) -> Any:
        if self.protocol == "soap":
            return plain(getattr(self.proxy, op)(**kw))
        return getattr(self.proxy, op)(_wire(kw))

    def fault(self, op: str, **kw: Any) -> tuple[str, str]:
        """(code, message) of the fault the call must raise."""
        if self.protocol == "soap":
            with pytest.raises(zeep.exceptions.Fault) as e:
                getattr(self.proxy, op)(**kw)
            return str(e.value.code).rsplit(":", 1)[-1], str(e.value.message)
        with pytest.raises(xmlrpc.client.Fault) as x:
            getattr(self.proxy, op)(_wire(kw))
        code, _, message = x.value.faultString.partition(": ")
        return code, message


def D(value: Any) -> Decimal:
    return Decimal(str(value))
