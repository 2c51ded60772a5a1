"""Encryption of secrets at rest (API key secrets, plugin credentials).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``: authenticated, with
a key the operator keeps outside the database (config ``secret_key`` or a key
file), so a stolen database dump does not give the secrets away.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "a stored secret cannot be decrypted: is this the server's secret key?"
            ) from exc

    @staticmethod
    def generate_key() -> bytes:
        return Fernet.generate_key()


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    try:
        os.write(fd, key + b"\n")
    finally:
        os.close(fd)
    return key
