"""Password hashing, principals and the subtree rule.

Passwords are hashed with scrypt (stdlib, memory-hard). A principal is who is
calling: a user of one account, with roles. It may act only on its own
account and the accounts below it (materialized ``path`` prefix).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from pba_server.core.errors import Forbidden, NotFound

ROLES = ("admin", "billing", "sales", "support", "technical", "readonly")

# scrypt cost: ~50 ms and 16 MiB per check on a current core. Stored with the
# hash so it can be raised later without breaking old hashes.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    salt = base64.b64decode(salt_b64)
    expected = base64.b64decode(digest_b64)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
        maxmem=128 * 1024 * 1024,
    )
    return hmac.compare_digest(digest, expected)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def burn_password_check(password: str) -> None:
    """Spend the same time as a real check, so unknown logins are not revealed by timing."""
    verify_password(password, _DUMMY_HASH)


@dataclass(frozen=True)
class Principal:
    user_id: int
    login: str
    account_id: int
    account_path: str
    roles: frozenset[str]
    via: str = "password"  # password | apikey | system
    api_key_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def has_any(self, roles: frozenset[str] | set[str]) -> bool:
        return "admin" in self.roles or bool(self.roles & roles)

    def require_role(self, roles: frozenset[str] | set[str], operation: str) -> None:
        if not self.has_any(roles):
            raise Forbidden(
                f"{operation} needs one of the roles: {', '.join(sorted(roles | {'admin'}))}"
            )

    def sees(self, path: str) -> bool:
        return path.startswith(self.account_path)

    def require_sees(self, path: str, what: str, ident: object) -> None:
        # Outside the subtree reads as "does not exist": a reseller must not
        # learn that a sibling's customer exists.
        if not self.sees(path):
            raise NotFound(f"{what} {ident} not found")


SYSTEM = Principal(
    user_id=0,
    login="system",
    account_id=0,
    account_path="/",
    roles=frozenset({"admin"}),
    via="system",
)
