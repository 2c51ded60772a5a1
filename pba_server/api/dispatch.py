"""The protocol-neutral call path shared by the SOAP and XML-RPC adapters.

``Dispatcher.call`` runs on a worker thread: it checks the arguments against
the operation table, authenticates, checks the role, applies idempotency,
calls the service function inside one unit of work and commits. Any error
leaves nothing written (the unit of work rolls back) and comes out as a
:class:`PbaError` with a stable code; unexpected ones become
``Server.Internal`` carrying the correlation id, which is also in the log.

A deadlock or serialization failure throws the whole unit of work away
(authentication, call and commit) and runs it again, up to
``db_retry_attempts`` times with a jittered pause (:func:`run_in_transaction`);
after-commit work (event delivery, kicks) runs once, for the attempt that
committed. If every attempt failed the caller gets ``Server.Busy``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pba_server.accounts.auth import Authenticator
from pba_server.core import idempotency
from pba_server.core.auth import Principal
from pba_server.core.carddata import refuse_in
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext
from pba_server.core.db import TransientFailure, UnitOfWork, is_transient, run_in_transaction
from pba_server.core.errors import (
    AuthFailed,
    Busy,
    Conflict,
    InternalError,
    PbaError,
    Unavailable,
    UnknownOperation,
    ValidationError,
)
from pba_server.core.operations import Operation
from pba_server.core.runtime import Runtime
from pba_server.core.schema import coerce, dump, quantize_amounts
from pba_server.core.secrets import SecretBox

log = logging.getLogger("pba.dispatch")


@dataclass
class Credentials:
    """What the transport found: HTTP Basic, or a WS-Security UsernameToken."""

    login: str | None = None
    password: str | None = None
    digest: bool = False  # PasswordDigest: password holds the digest
    nonce: str | None = None
    created: str | None = None


@dataclass
class CallMeta:
    correlation_id: str
    source_address: str
    protocol: str
    user: str = "-"
    operation: str = "-"
    extra: dict[str, str] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        secret_box: SecretBox,
        operations: dict[str, Operation],
        *,
        runtime: Runtime,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.retry_attempts = runtime.settings.db_retry_attempts
        self.clock = clock
        self.secrets = secret_box
        self.operations = operations
        self.auth = Authenticator(engine, secret_box, clock)

    def call(
        self,
        name: str,
        raw: dict[str, Any],
        creds: Credentials,
        meta: CallMeta,
        principal: Principal | None = None,
    ) -> Any:
        """Run operation ``name``; ``principal`` when the transport already
        authenticated the caller (before parsing), else ``creds`` are checked."""
        op = self.operations.get(name)
        if op is None:
            raise UnknownOperation(f"no operation named {name!r}")
        meta.operation = name  # only a known name: the log never repeats what a client sent
        try:
            # the one point where result money is quantized (core.schema)
            return quantize_amounts(op.result, self._call(op, raw, creds, meta, principal))
        except PbaError:
            raise
        except TransientFailure as exc:
            raise self._busy(exc, meta) from exc
        except (OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc, meta) from exc
        except Exception as exc:
            log.exception("internal error in %s [cid=%s]", name, meta.correlation_id)
            raise InternalError(f"internal error (correlation id {meta.correlation_id})") from exc

    def authenticate(self, creds: Credentials, meta: CallMeta) -> Principal:
        """Check credentials on their own, before the request body is parsed."""
        try:
            principal = run_in_transaction(
                self.engine,
                lambda uow: self._authenticate(uow, creds, meta),
                attempts=self.retry_attempts,
                what="authentication",
            )
        except PbaError:
            raise
        except TransientFailure as exc:
            raise self._busy(exc, meta) from exc
        except (OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc, meta) from exc
        meta.user = principal.login
        return principal

    def _busy(self, exc: TransientFailure, meta: CallMeta) -> Busy:
        log.error(
            "database busy after %d attempt(s) [cid=%s]: %s",
            exc.attempts,
            meta.correlation_id,
            exc.__cause__,
        )
        return Busy(
            f"the database was busy (deadlock or conflicting update) on every attempt; "
            f"nothing was written; try again (correlation id {meta.correlation_id})"
        )

    def _unavailable(self, exc: Exception, meta: CallMeta) -> PbaError:
        if is_transient(exc):  # e.g. from a unit of work that had committed a part
            return Busy(
                f"the database was busy (deadlock or conflicting update); try again "
                f"(correlation id {meta.correlation_id})"
            )
        log.error("database unavailable [cid=%s]: %s", meta.correlation_id, exc)
        return Unavailable(
            f"the database is unavailable; try again (correlation id {meta.correlation_id})"
        )

    def args_of(self, op: Operation, raw: dict[str, Any]) -> dict[str, Any]:
        names = {p.name for p in op.params}
        for k in raw:
            if k not in names:
                raise ValidationError(k, f"{op.name} has no parameter {k!r}")
        args: dict[str, Any] = {}
        for p in op.params:
            value = raw.get(p.name)
            if value is None:
                if p.required:
                    raise ValidationError(p.name, "is required")
                args[p.name] = p.default
            else:
                args[p.name] = coerce(p.type, value, p.name)
                if p.name != "idempotency_key":
                    refuse_in(p.name, args[p.name])
        return args

    def _authenticate(self, uow: UnitOfWork, creds: Credentials, meta: CallMeta) -> Principal:
        if creds.login is None or creds.password is None:
            raise AuthFailed(
                "credentials required: HTTP Basic, or a WS-Security UsernameToken on SOAP"
            )
        if creds.digest:
            return self.auth.digest(
                uow,
                creds.login,
                creds.password,
                creds.nonce or "",
                creds.created or "",
                meta.source_address,
            )
        return self.auth.password(uow, creds.login, creds.password, meta.source_address)

    def _call(
        self,
        op: Operation,
        raw: dict[str, Any],
        creds: Credentials,
        meta: CallMeta,
        given: Principal | None,
    ) -> Any:
        args = self.args_of(op, raw)
        key = args.pop("idempotency_key", None) if op.idempotent else None
        if key is not None:
            idempotency.check_key(key)
        return run_in_transaction(
            self.engine,
            lambda uow: self._attempt(uow, op, dict(args), key, creds, meta, given),
            attempts=self.retry_attempts,
            what=op.name,
        )

    def _attempt(
        self,
        uow: UnitOfWork,
        op: Operation,
        args: dict[str, Any],
        key: str | None,
        creds: Credentials,
        meta: CallMeta,
        given: Principal | None,
    ) -> Any:
        """One attempt of the call's unit of work: authenticate, check the role,
        replay or call, store the answer under the key, commit."""
        principal = given if given is not None else self._authenticate(uow, creds, meta)
        meta.user = principal.login
        principal.require_role(op.roles, op.name)
        ctx = CallContext(
            uow=uow,
            principal=principal,
            clock=self.clock,
            secrets=self.secrets,
            operation=op.name,
            correlation_id=meta.correlation_id,
            source_address=meta.source_address,
            runtime=self.runtime,
        )
        req_hash = ""
        if key is not None:
            req_hash = idempotency.request_hash(op.name, dump(args))
            stored = idempotency.find(uow.session, principal.user_id, key, op.name, req_hash)
            if stored is not None:
                meta.extra["idempotent_replay"] = "1"
                return coerce(op.result, json.loads(self.secrets.decrypt(stored)), "result")
        try:
            result = op.func(ctx, **args)
        except (PbaError, IntegrityError):
            if key is None:
                raise
            # A concurrent call with the same key may have committed what
            # this one was creating (a login, a name) or checking (an open
            # order): ours lost on that, not on the key's unique index.
            # Answer with the first result.
            uow.rollback()
            replay = self._stored(op, principal.user_id, key, req_hash, meta)
            if replay is None:
                raise
            return replay
        if key is not None:
            try:
                idempotency.store(
                    uow.session,
                    principal.user_id,
                    key,
                    op.name,
                    req_hash,
                    # encrypted: results may hold secrets shown once (API keys)
                    self.secrets.encrypt(json.dumps(dump(result))),
                    self.clock.now(),
                )
            except IntegrityError:
                # A concurrent call with the same key committed first: ours
                # rolls back whole and the caller gets the first result.
                uow.rollback()
                return self._replay(op, principal.user_id, key, req_hash, meta)
        try:
            uow.commit()
        except IntegrityError as exc:
            raise Conflict("the change conflicts with data written concurrently") from exc
        return result

    def _replay(self, op: Operation, user_id: int, key: str, req_hash: str, meta: CallMeta) -> Any:
        result = self._stored(op, user_id, key, req_hash, meta)
        if result is None:
            raise Conflict(f"idempotency key {key!r} is in use by a concurrent request")
        return result

    def _stored(
        self, op: Operation, user_id: int, key: str, req_hash: str, meta: CallMeta
    ) -> Any | None:
        """The first result stored under ``key`` (committed by another call), or None."""
        with UnitOfWork(self.engine) as uow:
            stored = idempotency.find(uow.session, user_id, key, op.name, req_hash)
        if stored is None:
            return None
        meta.extra["idempotent_replay"] = "1"
        return coerce(op.result, json.loads(self.secrets.decrypt(stored)), "result")
