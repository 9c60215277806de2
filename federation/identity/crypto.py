"""Identifiers at rest: AES-GCM encryption and a keyed HMAC blind index for exact lookup.

The ciphertext binds the identifier's type as associated data, so a value
cannot be moved to another column or type unnoticed. The blind index is
domain-separated by type, so equal numbers of different kinds do not collide.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_VERSION = b"\x01"


class FieldCipher:
    def __init__(self, data_key: bytes, index_key: bytes) -> None:
        if len(data_key) != 32 or len(index_key) != 32:
            raise ValueError("data and index keys must be 32 bytes")
        self._aead = AESGCM(data_key)
        self._index_key = index_key

    def encrypt(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(12)
        return KEY_VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        if blob[:1] != KEY_VERSION:
            raise ValueError("unknown key version")
        nonce, ct = blob[1:13], blob[13:]
        return self._aead.decrypt(nonce, ct, context.encode()).decode()

    def blind_index(self, value: str, context: str) -> str:
        return hmac.new(self._index_key, f"{context}\x00{value}".encode(), hashlib.sha256).hexdigest()
