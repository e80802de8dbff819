"""Secrets at rest: Fernet (AES-128-CBC + HMAC) with a key from settings or generated once."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def load_or_create_key(configured: str | None, data_dir: Path) -> bytes:
    if configured:
        return configured.encode()
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class SecretBox:
    """Encrypts a dict of secrets to one opaque string and back."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A key of its own for ``purpose``, derived from the installation's key: every process
        of one installation (same ``CRM_SECRET_KEY`` or generated key) derives the same one, and
        nothing outside the installation can."""
        return hmac.new(self._key, b"crm-hub/" + purpose.encode(), hashlib.sha256).digest()

    def seal(self, secrets: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(secrets).encode()).decode()

    def open(self, token: str | None) -> dict[str, str]:
        if not token:
            return {}
        try:
            return dict(json.loads(self._fernet.decrypt(token.encode())))
        except InvalidToken as exc:  # key changed: refuse loudly, never guess
            raise RuntimeError("cannot decrypt channel secrets: wrong CRM_SECRET_KEY") from exc
