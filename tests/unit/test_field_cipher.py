"""The field cipher: values name the data key that made them, so the key can change without losing any."""

from __future__ import annotations

import os
import secrets

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from federation.identity.crypto import FieldCipher, UnknownDataKey, key_id

INDEX = secrets.token_bytes(32)
OLD, NEW, OTHER = (secrets.token_bytes(32) for _ in range(3))


def legacy(key: bytes, plaintext: str, context: str) -> bytes:
    """A value as the cipher wrote it before values named their key: 01, nonce, ciphertext."""
    nonce = os.urandom(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())


def test_a_value_names_its_key_and_reads_back() -> None:
    cipher = FieldCipher(NEW, INDEX)
    blob = cipher.encrypt("500103198503122317", "identifier:id_number:")
    assert blob[:1] == b"\x02" and blob[1:5] == key_id(NEW)
    assert b"500103198503122317" not in blob
    assert cipher.decrypt(blob, "identifier:id_number:") == "500103198503122317"
    assert cipher.is_current(blob)


def test_the_context_is_bound() -> None:
    cipher = FieldCipher(NEW, INDEX)
    blob = cipher.encrypt("13800000000", "phone")
    with pytest.raises(InvalidTag):
        cipher.decrypt(blob, "identifier:id_number:")


def test_a_retired_key_still_decrypts_and_the_current_one_encrypts() -> None:
    old_blob = FieldCipher(OLD, INDEX).encrypt("CQ0000001", "identifier:social_security_card:")
    cipher = FieldCipher(NEW, INDEX, [OLD])
    assert cipher.decrypt(old_blob, "identifier:social_security_card:") == "CQ0000001"
    assert not cipher.is_current(old_blob)
    assert cipher.is_current(cipher.encrypt("CQ0000001", "identifier:social_security_card:"))


def test_values_written_before_keys_were_named_are_read_with_any_given_key() -> None:
    blob = legacy(OLD, "CQ0000002", "phone")
    assert FieldCipher(OLD, INDEX).decrypt(blob, "phone") == "CQ0000002"  # the key of the time, still current
    assert FieldCipher(NEW, INDEX, [OTHER, OLD]).decrypt(blob, "phone") == "CQ0000002"  # retired
    assert not FieldCipher(OLD, INDEX).is_current(blob)  # rewritten by reencrypt into the named layout
    with pytest.raises(InvalidTag):
        FieldCipher(NEW, INDEX, [OTHER]).decrypt(blob, "phone")


def test_a_key_that_is_not_given_is_said_to_be_missing() -> None:
    blob = FieldCipher(OLD, INDEX).encrypt("x", "phone")
    with pytest.raises(UnknownDataKey):
        FieldCipher(NEW, INDEX).decrypt(blob, "phone")


def test_a_tampered_value_is_refused() -> None:
    cipher = FieldCipher(NEW, INDEX)
    blob = bytearray(cipher.encrypt("x", "phone"))
    blob[-1] ^= 1
    with pytest.raises(InvalidTag):
        cipher.decrypt(bytes(blob), "phone")
    with pytest.raises(ValueError, match="unknown key version"):
        cipher.decrypt(b"\x07" + bytes(blob[1:]), "phone")


def test_the_current_key_listed_as_retired_too_is_harmless() -> None:
    cipher = FieldCipher(NEW, INDEX, [NEW, OLD, OLD])
    assert cipher.decrypt(cipher.encrypt("x", "phone"), "phone") == "x"


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FieldCipher(NEW, INDEX, [b"short"])


def test_the_blind_index_does_not_depend_on_the_data_key() -> None:
    assert FieldCipher(OLD, INDEX).blind_index("CQ0000001", "c") == FieldCipher(NEW, INDEX, [OLD]).blind_index(
        "CQ0000001", "c"
    )
