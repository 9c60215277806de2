"""``twincity certificate verify FILE --keys KEYS`` offline: no server, no database, only the saved key set."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner

from connectors.housing import signing
from connectors.housing.cli import certificate


def _files(tmp_path, *, expires: str = "2099-01-01T00:00:00+00:00"):
    key = signing.load_or_create(tmp_path / "issuer", production=False, env={})
    payload = {
        "type": "housing.deposit_certificate",
        "id": "abc",
        "issued_at": "2026-01-01T00:00:00+00:00",
        "expires_at": expires,
        "holder": {"name": "陈静"},
        "fund_centre": {"name": "重庆住房公积金管理中心"},
    }
    doc = tmp_path / "cert.json"
    doc.write_bytes(signing.document_bytes(signing.sign(payload, key)))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(key.jwks()))
    return doc, keys


def test_a_genuine_certificate_is_valid(tmp_path):
    doc, keys = _files(tmp_path)
    result = CliRunner().invoke(certificate, ["verify", str(doc), "--keys", str(keys)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid:") and "陈静" in result.output


def test_one_changed_byte_fails_and_an_expired_one_says_so(tmp_path):
    doc, keys = _files(tmp_path)
    raw = bytearray(doc.read_bytes())
    raw[raw.index(b"abc")] = ord("x")
    doc.write_bytes(bytes(raw))
    result = CliRunner().invoke(certificate, ["verify", str(doc), "--keys", str(keys)])
    assert result.exit_code == 1 and "bad_signature" in result.output

    doc, keys = _files(tmp_path / "old", expires="2026-06-01T00:00:00+00:00")
    now = dt.datetime(2026, 7, 1, tzinfo=dt.UTC).isoformat()
    result = CliRunner().invoke(certificate, ["verify", str(doc), "--keys", str(keys), "--at", now])
    assert result.exit_code == 1 and "expired" in result.output


def test_a_bad_key_file_is_a_clear_error(tmp_path):
    doc, keys = _files(tmp_path)
    keys.write_text("<html>")
    result = CliRunner().invoke(certificate, ["verify", str(doc), "--keys", str(keys)])
    assert result.exit_code == 1 and "not a key set" in result.output
