"""Symmetric encryption for secrets at rest (API key secrets): Fernet, keyed from settings.secret_key."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()
