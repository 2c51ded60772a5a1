"""Who is calling: passwords, API keys, WS-Security digests, and login throttling.

scrypt costs tens of milliseconds by design, so a verified (login, password)
pair is remembered in memory, keyed by an HMAC that also covers the stored
hash: a password change invalidates it at once. User and account status are
read on every call, so disabling a user or closing an account is immediate;
their right password is then answered exactly as a wrong one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from pba_server.accounts.models import Account, ApiKey, User
from pba_server.core.auth import Principal, burn_password_check, verify_password
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import AuthFailed, TooManyAttempts
from pba_server.core.models import LoginFailure, UsedNonce
from pba_server.core.secrets import SecretBox

FREE_FAILURES = 5
MAX_LOCKOUT_S = 900
DIGEST_WINDOW = timedelta(minutes=5)
CACHE_TTL_S = 300.0
CACHE_SIZE = 10000
API_KEY_PREFIX = "pk_"


class _VerifiedCache:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._data: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def token(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\0".join(parts).encode(), hashlib.sha256).digest()

    def hit(self, token: bytes) -> bool:
        with self._lock:
            exp = self._data.get(token)
            if exp is None:
                return False
            if exp < time.monotonic():
                del self._data[token]
                return False
            return True

    def add(self, token: bytes) -> None:
        with self._lock:
            self._data[token] = time.monotonic() + CACHE_TTL_S
            self._data.move_to_end(token)
            while len(self._data) > CACHE_SIZE:
                self._data.popitem(last=False)


@dataclass(frozen=True)
class _Found:
    user_id: int
    login: str
    password_hash: str
    user_status: str
    roles: str
    account_id: int
    account_path: str
    account_status: str
    key_pk: int | None = None
    key_id: str | None = None
    key_secret_encrypted: str | None = None
    key_last_used_at: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.user_status == "active" and self.account_status != "closed"

    def principal(self) -> Principal:
        if not self.usable:
            # the same answer as a wrong password: the right password of a
            # disabled user must not be told apart from a guess
            raise AuthFailed("invalid login or password")
        return Principal(
            user_id=self.user_id,
            login=self.login,
            account_id=self.account_id,
            account_path=self.account_path,
            roles=frozenset(self.roles.split(",")),
            via="apikey" if self.key_id else "password",
            api_key_id=self.key_id,
        )


_users = User.__table__
_accounts = Account.__table__
_failures = LoginFailure.__table__
_keys = ApiKey.__table__
_PRINCIPAL_COLUMNS = (
    _users.c.id,
    _users.c.login,
    _users.c.password_hash,
    _users.c.status,
    _users.c.roles,
    _accounts.c.id,
    _accounts.c.path,
    _accounts.c.status,
)
# Built once, run as Core on every call: building an ORM select per call cost
# more CPU than running it.
_USER_QUERY = (
    select(*_PRINCIPAL_COLUMNS, _failures.c.failures, _failures.c.last_failure_at)
    .select_from(
        _users.join(_accounts, _users.c.account_id == _accounts.c.id).outerjoin(
            _failures,
            and_(_failures.c.login == _users.c.login, _failures.c.address == bindparam("address")),
        )
    )
    .where(_users.c.login == bindparam("login"))
)
_KEY_QUERY = (
    select(
        *_PRINCIPAL_COLUMNS,
        _keys.c.id,
        _keys.c.key_id,
        _keys.c.secret_encrypted,
        _keys.c.last_used_at,
    )
    .select_from(
        _keys.join(_users, _keys.c.user_id == _users.c.id).join(
            _accounts, _users.c.account_id == _accounts.c.id
        )
    )
    .where(_keys.c.key_id == bindparam("key_id"), _keys.c.revoked_at.is_(None))
)


class Authenticator:
    """Authentication is the first thing done in a call's unit of work. The fast
    path only reads. Whenever something must be written (a failure counted, a
    nonce remembered), the read transaction is ended first and the write gets
    its own short transaction, committed even when the call then fails."""

    def __init__(self, engine: Engine, secret_box: SecretBox, clock: Clock) -> None:
        self.engine = engine
        self.secrets = secret_box
        self.clock = clock
        self._cache = _VerifiedCache()

    # -------------------------------------------------------------- entry points

    def password(self, uow: UnitOfWork, login: str, password: str, address: str) -> Principal:
        """HTTP Basic or WS-Security PasswordText."""
        if not login or len(login) > 128 or len(password) > 1024:
            raise AuthFailed("invalid login or password")
        if login.startswith(API_KEY_PREFIX):
            found = self._load_key(uow, login)
            secret = self.secrets.decrypt(found.key_secret_encrypted or "") if found else ""
            matches = hmac.compare_digest(secret.encode(), password.encode())
            if found is None or not matches or not found.usable:
                uow.session.rollback()
                self._check_throttle(login, address)
                self._failed(login, address)
                raise AuthFailed("invalid login or password")
            principal = found.principal()
            self._touch_key(uow, found)
            return principal

        found, failures, last_failure_at = self._load_user(uow, login, address)
        token = self._cache.token(login, password, found.password_hash if found else "")
        # A disabled user or closed account takes the wrong password's path
        # (no cache, a full hash check, a counted failure): same answer, same time.
        if found is not None and found.usable and self._cache.hit(token):
            if not failures:
                return found.principal()
            # A lockout holds for a cached password too, or it would tell a
            # guesser which guess is right; a success then resets the count.
            self._throttle(failures, last_failure_at)
            principal = found.principal()
            uow.session.rollback()
            self._succeeded(login, address)
            return principal
        uow.session.rollback()
        self._check_throttle(login, address)
        if found is None:
            burn_password_check(password)
            self._failed(login, address)
            raise AuthFailed("invalid login or password")
        if not verify_password(password, found.password_hash) or not found.usable:
            self._failed(login, address)
            raise AuthFailed("invalid login or password")
        principal = found.principal()
        self._cache.add(token)
        self._succeeded(login, address)
        return principal

    def digest(
        self,
        uow: UnitOfWork,
        login: str,
        digest_b64: str,
        nonce_b64: str,
        created: str,
        address: str,
    ) -> Principal:
        """WS-Security PasswordDigest: Base64(SHA-1(nonce + created + secret)).

        Only API credentials can use it: a user's password is stored as a
        one-way hash, so there is nothing to recompute the digest from.
        """
        if not login.startswith(API_KEY_PREFIX):
            raise AuthFailed("PasswordDigest works with API credentials (ApiKeyCreate) only")
        try:
            when = datetime.fromisoformat(created.strip().replace("Z", "+00:00"))
            nonce = base64.b64decode(nonce_b64, validate=True)
        except ValueError:
            raise AuthFailed("malformed WS-Security Nonce or Created") from None
        if when.tzinfo is None or not nonce or len(nonce) > 64:
            raise AuthFailed("malformed WS-Security Nonce or Created")
        now = self.clock.now()
        if abs(now - when) > DIGEST_WINDOW:
            raise AuthFailed("WS-Security Created is more than 5 minutes from the server's time")
        found = self._load_key(uow, login)
        uow.session.rollback()
        self._check_throttle(login, address)
        if found is None:
            self._failed(login, address)
            raise AuthFailed("invalid login or password")
        secret = self.secrets.decrypt(found.key_secret_encrypted or "")
        expected = base64.b64encode(
            hashlib.sha1(  # noqa: S324 - fixed by the WS-Security profile
                nonce + created.encode() + secret.encode()
            ).digest()
        ).decode()
        matches = hmac.compare_digest(expected.encode(), digest_b64.strip().encode())
        if not matches or not found.usable:
            self._failed(login, address)
            raise AuthFailed("invalid login or password")
        principal = found.principal()
        # Keyed by the bytes, re-encoded: Base64 has several spellings of one
        # value ("QQ==" and "QR==" are both b"A") and the digest covers the bytes.
        self._remember_nonce(base64.b64encode(nonce).decode("ascii"), now)
        self._touch_key(uow, found)
        return principal

    # -------------------------------------------------------------- internals

    def _load_user(
        self, uow: UnitOfWork, login: str, address: str
    ) -> tuple[_Found | None, int, datetime | None]:
        """The user, and this login's failure count from this address (same query)."""
        row = (
            uow.session.connection()
            .execute(_USER_QUERY, {"login": login, "address": address[:64]})
            .first()
        )
        if row is None:
            return None, 0, None
        return _Found(*row[:8]), row[8] or 0, row[9]

    def _load_key(self, uow: UnitOfWork, key_id: str) -> _Found | None:
        row = uow.session.connection().execute(_KEY_QUERY, {"key_id": key_id}).first()
        return _Found(*row) if row else None

    def _touch_key(self, uow: UnitOfWork, found: _Found) -> None:
        # last_used_at to the minute: a write on every call would cost more than it tells
        now = self.clock.now()
        last = found.key_last_used_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if last is None or now - last > timedelta(minutes=1):
            uow.session.rollback()
            with UnitOfWork(self.engine) as side:
                side.session.execute(
                    update(ApiKey).where(ApiKey.id == found.key_pk).values(last_used_at=now)
                )
                side.commit()

    def _remember_nonce(self, nonce: str, now: datetime) -> None:
        with UnitOfWork(self.engine) as side:
            side.session.add(UsedNonce(nonce=nonce, seen_at=now))
            try:
                side.session.flush()
            except IntegrityError:
                raise AuthFailed("WS-Security Nonce was already used (replay)") from None
            side.commit()

    def _check_throttle(self, login: str, address: str) -> None:
        with UnitOfWork(self.engine) as side:
            row = side.session.get(LoginFailure, (login[:128], address[:64]))
            if row is not None:
                self._throttle(row.failures, row.last_failure_at)

    def _throttle(self, failures: int, last_failure_at: datetime | None) -> None:
        """TooManyAttempts while the backoff after ``failures`` has not passed."""
        if failures < FREE_FAILURES or last_failure_at is None:
            return
        wait = min(2 ** min(failures - FREE_FAILURES, 16), MAX_LOCKOUT_S)
        remaining = (last_failure_at + timedelta(seconds=wait)) - self.clock.now()
        if remaining.total_seconds() > 0:
            raise TooManyAttempts(
                f"too many failed logins; try again in {int(remaining.total_seconds()) + 1} s"
            )

    def _failed(self, login: str, address: str) -> None:
        for _attempt in range(3):
            with UnitOfWork(self.engine) as side:
                row = side.session.get(
                    LoginFailure, (login[:128], address[:64]), with_for_update=True
                )
                if row is None:
                    side.session.add(
                        LoginFailure(
                            login=login[:128],
                            address=address[:64],
                            failures=1,
                            last_failure_at=self.clock.now(),
                        )
                    )
                else:
                    row.failures += 1
                    row.last_failure_at = self.clock.now()
                try:
                    side.commit()
                    return
                except IntegrityError:
                    continue  # a concurrent first failure inserted the row; count again

    def _succeeded(self, login: str, address: str) -> None:
        with UnitOfWork(self.engine) as side:
            result = side.session.execute(
                delete(LoginFailure).where(
                    LoginFailure.login == login[:128], LoginFailure.address == address[:64]
                )
            )
            if getattr(result, "rowcount", 0):
                side.commit()
