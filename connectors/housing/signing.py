"""Signed documents: canonical JSON, Ed25519 signatures, the federation's signing key and its published form.

Everything here is pure (no database, no server) so that ``twincity certificate verify FILE`` and any fund centre
reproduce the check offline with only the published key set. The signed bytes are the canonical form of the
document's ``payload``: keys sorted, no whitespace, UTF-8, integers and strings only (no floats, whose text forms
differ between languages), so every verifier rebuilds exactly the bytes that were signed.

The signing key is generated once per data directory (``housing-signing-key.json``, mode 0600, next to the core's
``secrets.json``) or given as ``TWINCITY_HOUSING_SIGNING_KEY`` (url-safe base64 of the 32-byte Ed25519 seed);
production refuses to generate one, like the core's other secrets.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.settings import ConfigurationError

ALG = "EdDSA"
KEY_FILE = "housing-signing-key.json"
KEY_ENV = "TWINCITY_HOUSING_SIGNING_KEY"
ENVELOPE_KEYS = frozenset({"payload", "kid", "alg", "signature"})


class SigningKeyMissing(ConfigurationError):
    """Production was started without the housing signing key."""


class NotCanonical(ValueError):
    """A payload holds a value canonical JSON cannot carry unambiguously (a float, a non-string key, ...)."""


# --- canonical bytes -----------------------------------------------------------------------------------------------


def _check(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotCanonical(f"{where}: keys must be strings")
            _check(v, f"{where}.{k}")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check(v, f"{where}[{i}]")
        return
    raise NotCanonical(f"{where}: {type(value).__name__} is not allowed in a signed document (use a string)")


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8 (not ASCII escapes), no floats."""
    _check(dict(payload), "payload")
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Strict url-safe base64 without padding: anything that does not re-encode to the same text is refused, so
    two different texts never decode to the same signature."""
    if not isinstance(text, str) or not text or not all(c.isalnum() or c in "-_" for c in text) or not text.isascii():
        raise ValueError("not url-safe base64")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not url-safe base64") from None
    if b64url(raw) != text:
        raise ValueError("not canonical base64")
    return raw


# --- keys ----------------------------------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """A stable id derived from the key itself: the same key always has the same id, wherever it is published."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "housing-" + hashlib.sha256(raw).hexdigest()[:16]


def public_jwk(public: Ed25519PublicKey) -> dict[str, str]:
    """The key as a JWK (RFC 8037 OKP), which is what ``GET /api/v1/housing/keys`` publishes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": key_id(public), "alg": ALG, "use": "sig"}


def keys_from_jwks(data: Any) -> dict[str, Ed25519PublicKey]:
    """Public keys by id from a published key set ``{"keys": [...]}`` or a single JWK; raises ValueError."""
    items = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(items, list) or not items:
        raise ValueError("a key set needs a non-empty list 'keys'")
    out: dict[str, Ed25519PublicKey] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("kty") != "OKP" or item.get("crv") != "Ed25519":
            raise ValueError("only Ed25519 keys (kty OKP, crv Ed25519) are understood")
        raw = unb64url(str(item.get("x", "")))
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        key = Ed25519PublicKey.from_public_bytes(raw)
        kid = str(item.get("kid") or key_id(key))
        if kid != key_id(key):
            raise ValueError(f"key id {kid} does not match its key")
        out[kid] = key
    return out


@dataclasses.dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.public)]}

    def __repr__(self) -> str:  # never print the private key
        return f"SigningKey(kid={self.kid})"


def _from_seed(text: str, where: str) -> SigningKey:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SigningKeyMissing(f"{where}: the housing signing key must be 32 bytes in url-safe base64")
    return SigningKey(Ed25519PrivateKey.from_private_bytes(raw))


def load_or_create(data_dir: Path, *, production: bool, env: Mapping[str, str] | None = None) -> SigningKey:
    """The federation's signing key: from the environment, else from the data directory (created there once,
    outside production; two processes starting at once end with the same key: the first file written wins)."""
    env = os.environ if env is None else env
    if env.get(KEY_ENV):
        return _from_seed(env[KEY_ENV], KEY_ENV)
    path = data_dir / KEY_FILE
    if not path.exists():
        if production:
            raise SigningKeyMissing(f"production needs {KEY_ENV} set")
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = b64url(secrets.token_bytes(32))
        text = json.dumps({"ed25519_seed": seed}) + "\n"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            with contextlib.suppress(FileExistsError):  # another process won the race: use its key
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        stored = json.loads(path.read_text())
        seed_text = str(stored["ed25519_seed"])
    except (OSError, ValueError, KeyError, TypeError):
        raise SigningKeyMissing(f"{path} is not a housing signing key file; fix or remove it") from None
    return _from_seed(seed_text, str(path))


# --- signing and verifying -----------------------------------------------------------------------------------------


def sign(payload: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The signed document: the payload (which names the key too, so the id is covered by the signature), the key
    id and algorithm as hints, and the signature over the payload's canonical bytes."""
    body = {**payload, "kid": key.kid}
    signature = key.private.sign(canonical(body))
    return {"payload": body, "kid": key.kid, "alg": ALG, "signature": b64url(signature)}


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """A document as a file: itself canonical too, so what is stored, served and saved is byte for byte the same."""
    return canonical(document)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of a check. ``status``: valid, expired, not_yet_valid, bad_signature, unknown_key, malformed."""

    status: str
    detail: str
    payload: dict[str, Any] | None = None
    kid: str | None = None

    @property
    def valid(self) -> bool:
        return self.status == "valid"


def _no_floats(text: str) -> Any:
    raise ValueError("floats are not allowed in a signed document")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k}")
        out[k] = v
    return out


def parse_document(raw: bytes | str) -> dict[str, Any]:
    """Strict parsing: UTF-8 JSON, no duplicate keys, no floats or NaN; raises ValueError."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    data = json.loads(text, parse_float=_no_floats, parse_constant=_no_floats, object_pairs_hook=_unique_keys)
    if not isinstance(data, dict):
        raise ValueError("a signed document is a JSON object")
    return data


def _instant(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} is missing")
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return when


def verify(
    document: bytes | str | Mapping[str, Any],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    now: dt.datetime | None = None,
    skew: dt.timedelta = dt.timedelta(minutes=5),
) -> Verdict:
    """Check a signed document offline: its shape, its key, its signature over the canonical payload, then its
    validity window (``skew`` forgives a verifier's clock running behind the issuer's). The signature is checked
    first: a tampered document is never reported as merely expired."""
    try:
        data = dict(document) if isinstance(document, Mapping) else parse_document(document)
        if set(data) != ENVELOPE_KEYS:
            raise ValueError(f"a signed document has exactly the fields {', '.join(sorted(ENVELOPE_KEYS))}")
        payload, kid = data["payload"], data["kid"]
        if not isinstance(payload, dict) or not isinstance(kid, str):
            raise ValueError("payload must be an object and kid a string")
        if data["alg"] != ALG:
            raise ValueError(f"alg must be {ALG}")
        if payload.get("kid") != kid:
            raise ValueError("the signed payload names another key than the document")
        signature = unb64url(data["signature"])
        signed = canonical(payload)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        return Verdict("malformed", f"not a well-formed signed document: {e}")
    key = keys.get(kid)
    if key is None:
        return Verdict("unknown_key", f"signed with key {kid}, which is not among the published keys", kid=kid)
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return Verdict("bad_signature", "the signature does not match the document: it was changed or forged", kid=kid)
    try:
        issued = _instant(payload.get("issued_at"), "issued_at")
        expires = _instant(payload.get("expires_at"), "expires_at")
    except ValueError as e:
        return Verdict("malformed", f"signed, but its validity window is unreadable: {e}", payload, kid)
    now = now or dt.datetime.now(dt.UTC)
    if now + skew < issued:
        return Verdict("not_yet_valid", f"not valid before {issued.isoformat()}", payload, kid)
    if now >= expires:
        detail = f"the signature is genuine but the document expired at {expires.isoformat()}"
        return Verdict("expired", detail, payload, kid)
    return Verdict("valid", f"genuine, signed with key {kid}, valid until {expires.isoformat()}", payload, kid)
