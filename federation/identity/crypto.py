"""Identifiers at rest: AES-GCM encryption and a keyed HMAC blind index for exact lookup.

The ciphertext binds the identifier's type as associated data, so a value
cannot be moved to another column or type unnoticed. The blind index is
domain-separated by type, so equal numbers of different kinds do not collide.

A ciphertext names the data key that made it, so the data key can be changed
without losing what the old one encrypted: the new key encrypts, every key
given as retired still decrypts, and ``twincity secrets reencrypt``
(:mod:`federation.identity.rekey`) rewrites the values under the new key, after
which the retired key can go. Two layouts are read:

* ``01 | nonce (12) | ciphertext``: written before keys were named; tried with
  the current key, then with each retired one;
* ``02 | key id (4) | nonce (12) | ciphertext``: the key id is the start of a
  SHA-256 of the key (it says which key, and nothing about the key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LEGACY_VERSION = b"\x01"
KEYED_VERSION = b"\x02"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


class UnknownDataKey(ValueError):
    """The value was encrypted under a data key this process is not given (neither current nor retired)."""


def key_id(data_key: bytes) -> bytes:
    """The id a ciphertext carries for the data key that made it."""
    return hashlib.sha256(b"twincity-data-key-id\x00" + data_key).digest()[:_KEY_ID_BYTES]


class FieldCipher:
    def __init__(self, data_key: bytes, index_key: bytes, retired_data_keys: Sequence[bytes] = ()) -> None:
        if len(data_key) != 32 or len(index_key) != 32 or any(len(k) != 32 for k in retired_data_keys):
            raise ValueError("data and index keys must be 32 bytes")
        self._aead = AESGCM(data_key)
        self._current = key_id(data_key)
        raw = {self._current: data_key}
        for key in retired_data_keys:
            kid = key_id(key)
            if raw.setdefault(kid, key) != key:  # 1 in 4 billion: the ids would not say which key
                raise ValueError("two data keys have the same id; generate another new key")
        self._keys = {kid: self._aead if kid == self._current else AESGCM(key) for kid, key in raw.items()}
        self._legacy_order = list(self._keys.values())  # the current key first, then the retired in order given
        self._index_key = index_key

    def encrypt(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return KEYED_VERSION + self._current + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        version = blob[:1]
        if version == KEYED_VERSION:
            start = 1 + _KEY_ID_BYTES
            aead = self._keys.get(blob[1:start])
            if aead is None:
                raise UnknownDataKey("encrypted under a data key that is not given (current or retired)")
            nonce, ct = blob[start : start + _NONCE_BYTES], blob[start + _NONCE_BYTES :]
            return aead.decrypt(nonce, ct, context.encode()).decode()
        if version == LEGACY_VERSION:
            nonce, ct = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
            for aead in self._legacy_order:
                try:
                    return aead.decrypt(nonce, ct, context.encode()).decode()
                except InvalidTag:
                    continue
            raise InvalidTag()
        raise ValueError("unknown key version")

    def is_current(self, blob: bytes) -> bool:
        """Whether ``blob`` is encrypted under the current data key in the current layout."""
        return blob[: 1 + _KEY_ID_BYTES] == KEYED_VERSION + self._current

    def blind_index(self, value: str, context: str) -> str:
        return hmac.new(self._index_key, f"{context}\x00{value}".encode(), hashlib.sha256).hexdigest()
