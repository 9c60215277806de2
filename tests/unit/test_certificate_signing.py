"""Signed certificates offline: one changed byte anywhere fails, an expired one says so, the signed bytes are
canonical so any verifier reproduces them, and the key is made once per data directory."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from connectors.housing import signing

NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def payload(**extra) -> dict:
    return {
        "type": "housing.deposit_certificate",
        "id": "c0ffee",
        "issued_at": "2026-12-01T08:00:00+00:00",
        "expires_at": "2027-03-01T08:00:00+00:00",
        "holder": {"name": "陈静", "id_number": "51020219620830026X"},
        "account": {"number": "CQ2012000005", "balance": "45678.90", "months_deposited": 150},
        **extra,
    }


@pytest.fixture
def key(tmp_path) -> signing.SigningKey:
    return signing.load_or_create(tmp_path, production=False, env={})


def keys_of(key: signing.SigningKey) -> dict:
    return signing.keys_from_jwks(json.loads(json.dumps(key.jwks())))


def test_a_genuine_document_verifies_offline_with_the_published_key_set(key):
    raw = signing.document_bytes(signing.sign(payload(), key))
    verdict = signing.verify(raw, keys_of(key), now=NOW)
    assert verdict.valid, verdict.detail
    assert verdict.payload["holder"]["name"] == "陈静"


def test_one_changed_byte_anywhere_fails(key):
    raw = signing.document_bytes(signing.sign(payload(), key))
    keys = keys_of(key)
    for i in range(len(raw)):
        for flip in (0x01, 0x20):
            changed = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1 :]
            verdict = signing.verify(changed, keys, now=NOW)
            assert not verdict.valid, (i, changed[max(0, i - 10) : i + 10])
            assert verdict.status != "expired"


def test_every_other_last_signature_character_fails(key):
    """Base64's last character carries unused bits: a lenient decoder would accept several spellings."""
    doc = signing.sign(payload(), key)
    keys = keys_of(key)
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if c == doc["signature"][-1]:
            continue
        changed = {**doc, "signature": doc["signature"][:-1] + c}
        assert not signing.verify(signing.document_bytes(changed), keys, now=NOW).valid


def test_an_expired_document_says_so(key):
    raw = signing.document_bytes(signing.sign(payload(), key))
    verdict = signing.verify(raw, keys_of(key), now=dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.UTC))
    assert verdict.status == "expired"
    assert "expired" in verdict.detail and "2027-03-01" in verdict.detail


def test_a_document_not_yet_valid_says_so_beyond_the_clock_skew(key):
    raw = signing.document_bytes(signing.sign(payload(), key))
    assert signing.verify(raw, keys_of(key), now=NOW - dt.timedelta(minutes=4)).valid
    assert signing.verify(raw, keys_of(key), now=NOW - dt.timedelta(hours=1)).status == "not_yet_valid"


def test_another_key_is_unknown_and_a_forged_key_id_fails(key, tmp_path):
    other = signing.load_or_create(tmp_path / "other", production=False, env={})
    raw = signing.document_bytes(signing.sign(payload(), other))
    assert signing.verify(raw, keys_of(key), now=NOW).status == "unknown_key"
    forged = signing.sign(payload(), other)
    forged = {**forged, "kid": key.kid, "payload": {**forged["payload"], "kid": key.kid}}
    assert signing.verify(signing.document_bytes(forged), keys_of(key), now=NOW).status == "bad_signature"


def test_the_signed_bytes_are_canonical_and_reproducible_by_any_verifier(key):
    doc = signing.sign(payload(), key)
    signed = json.dumps(doc["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert signed == signing.canonical(doc["payload"])
    assert "陈静".encode() in signed and b" " not in signed
    pretty = json.dumps(doc, indent=2, ensure_ascii=True)  # re-serialised by someone else: still the same document
    assert signing.verify(pretty, keys_of(key), now=NOW).valid


@pytest.mark.parametrize(
    "bad",
    [b"", b"[]", b"{", b"<html></html>", b'{"payload":{},"kid":"x","alg":"EdDSA","signature":"AA","x":1}'],
)
def test_garbage_is_malformed_not_an_exception(key, bad):
    assert signing.verify(bad, keys_of(key), now=NOW).status == "malformed"


def test_floats_and_duplicate_keys_are_refused():
    with pytest.raises(signing.NotCanonical):
        signing.canonical({"amount": 1.5})
    with pytest.raises(ValueError):
        signing.parse_document('{"a":1,"a":2}')


def test_the_key_is_made_once_per_data_directory_private_and_never_printed(tmp_path):
    first = signing.load_or_create(tmp_path, production=False, env={})
    again = signing.load_or_create(tmp_path, production=False, env={})
    assert first.kid == again.kid
    path = tmp_path / signing.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    seed = json.loads(path.read_text())["ed25519_seed"]
    assert seed not in repr(first)
    with pytest.raises(signing.SigningKeyMissing):
        signing.load_or_create(tmp_path / "prod", production=True, env={})
    from_env = signing.load_or_create(tmp_path / "prod", production=True, env={signing.KEY_ENV: seed})
    assert from_env.kid == first.kid
