"""Passwords, login throttling, access tokens and API keys.

An ID number is no secret, so failed logins are throttled per attempted
account and per client address: after a few failures each further attempt
waits longer (exponential backoff), after more the key is locked for a while.
The counters are rows, so every process of a deployment sees the same ones.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections.abc import Sequence
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Row, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.accounts.errors import (
    AccountExists,
    AccountNotFound,
    ApiKeyNotFound,
    BadCredentials,
    InvalidToken,
    LoginThrottled,
    UnknownScope,
)
from federation.accounts.models import Account, ApiKey, LoginThrottle
from federation.audit.service import Record
from federation.db import UnitOfWork, dialect_insert, row_tuple, utcnow
from federation.direct import Statement
from federation.identity.idnumber import InvalidIdNumber, looks_like_id_number, mask_id_number, parse_id_number
from federation.identity.models import IdentifierType
from federation.identity.service import IdentifierInput, find_identifier
from federation.members.models import Institution
from federation.services import Services
from federation.web.routing import Principal

_hasher = PasswordHasher()
# Verified against when the account does not exist, so timing does not tell which accounts exist.
_DUMMY_HASH = _hasher.hash("no such account")
API_KEY_PREFIX = "tck"
# Operations an API key can be scoped to; extensions add theirs through the registry.
SCOPES: dict[str, str] = {
    "identity.read": "look persons up and cross-reference identifiers",
    "identity.write": "register persons and add identifiers",
    "identity.credentials": "report card status changes (lost, cancelled, reissued)",
    "consent.check": "ask whether a person's consent is in force",
}


def configure_passwords(time_cost: int, memory_kib: int) -> None:
    """Set the argon2 cost for new hashes (the composition root calls this; existing hashes carry their own)."""
    global _hasher, _DUMMY_HASH
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
    _DUMMY_HASH = _hasher.hash("no such account")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def _hash_off_loop(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU: off the event loop, so other requests keep being served
    return await asyncio.to_thread(hash_password, password)


@dataclasses.dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int
    account: Account


def _login_name(username: str) -> str:
    """One spelling per account: an ID number in any of its forms (15 or 18 characters, spaced, full-width,
    lower-case x) is one name, so writing it differently does not buy more attempts."""
    name = username.strip()
    if looks_like_id_number(name):
        try:
            return parse_id_number(name).value
        except InvalidIdNumber:
            return "".join(unicodedata.normalize("NFKC", name).split()).upper()
    return name.casefold()


def _throttle_key(svc: Services, kind: str, value: str) -> str:
    # attempted usernames may be ID numbers: keep only a keyed digest
    return f"{kind}:{svc.cipher.blind_index(value, 'login-throttle')[:40]}"


def _throttle_keys(svc: Services, username: str, client: str) -> list[str]:
    return [_throttle_key(svc, "user", _login_name(username)), _throttle_key(svc, "addr", client.strip().casefold())]


async def _locked_rows(
    session: AsyncSession, keys: Sequence[str], now: dt.datetime, *, create: bool
) -> dict[str, LoginThrottle]:
    """The throttle rows of ``keys``, locked until the transaction ends (PostgreSQL; SQLite has one writer).

    Concurrent attempts on one account or address queue here, so none slips past the check and no failure
    is lost; ``create`` inserts missing rows first, without failing when a concurrent attempt just did.
    """
    if create:
        for key in sorted(keys):
            await session.execute(
                dialect_insert(session, LoginThrottle)
                .values(key=key, failures=0, window_started_at=now)
                .on_conflict_do_nothing(index_elements=["key"])
            )
    q = (
        select(LoginThrottle)
        .where(LoginThrottle.key.in_(list(keys)))
        .order_by(LoginThrottle.key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.key: row for row in (await session.execute(q)).scalars()}


async def _check_throttle(session: AsyncSession, keys: Sequence[str], now: dt.datetime) -> None:
    rows = await _locked_rows(session, keys, now, create=False)
    for key in keys:
        row = rows.get(key)
        if row is None:
            continue
        if row.locked_until and row.locked_until > now:
            wait = int((row.locked_until - now).total_seconds()) + 1
            raise LoginThrottled("locked after too many failed logins; try again later", retry_after=wait)
        if row.next_allowed_at and row.next_allowed_at > now:
            wait = int((row.next_allowed_at - now).total_seconds()) + 1
            raise LoginThrottled("too many failed logins; wait before trying again", retry_after=wait)


def _record_failure(svc: Services, row: LoginThrottle, now: dt.datetime) -> bool:
    """Count one failure; returns True when this failure locked the key."""
    s = svc.settings
    if (now - row.window_started_at).total_seconds() > s.login_window_s and not (
        row.locked_until and row.locked_until > now
    ):
        row.failures, row.window_started_at, row.locked_until, row.next_allowed_at = 0, now, None, None
    row.failures += 1
    if row.failures >= s.login_lock_after:
        row.locked_until = now + dt.timedelta(seconds=s.login_lock_s)
        return True
    if row.failures >= s.login_backoff_after:
        row.next_allowed_at = now + dt.timedelta(seconds=min(2 ** (row.failures - s.login_backoff_after), 60))
    return False


async def _find_account(session: AsyncSession, svc: Services, username: str) -> Account | None:
    username = username.strip()
    if looks_like_id_number(username):
        try:
            ident = await find_identifier(session, svc.cipher, IdentifierInput(IdentifierType.ID_NUMBER, username))
        except Exception:  # noqa: BLE001 - an invalid number is just a failed login
            return None
        if ident is None:
            return None
        return (await session.execute(select(Account).where(Account.person_id == ident.person_id))).scalar_one_or_none()
    return (await session.execute(select(Account).where(Account.username == username))).scalar_one_or_none()


_DIGIT_RUN = re.compile(r"[0-9\uff10-\uff19]{8,}[Xx\uff38\uff58]?")


def _shown(username: str) -> str:
    """The attempted username as the audit trail may keep it: an ID number masked, even a mistyped one or one
    inside other text (which the checksum-based masking would miss), and never long."""
    if looks_like_id_number(username):
        return mask_id_number(username)
    return _DIGIT_RUN.sub(lambda m: mask_id_number(m.group(0)), username)[:100]


async def login(svc: Services, username: str, password: str, client: str) -> Account:
    """Check a password under the throttle; every failure and lock goes to the audit trail."""
    now = utcnow()
    keys = _throttle_keys(svc, username, client)
    async with svc.db.uow() as uow:
        try:
            await _check_throttle(uow.session, keys, now)
        except LoginThrottled:
            await svc.audit(
                uow,
                Record(
                    action="auth.login_throttled",
                    actor=f"login:{_shown(username)}",
                    outcome="refused",
                    client_address=client,
                ),
            )
            await uow.commit()
            raise
        account = await _find_account(uow.session, svc, username)
        stored = account.password_hash if account else _DUMMY_HASH
        ok = await asyncio.to_thread(_verify_password, stored, password)
        if account is not None and ok and account.active:
            throttle = await uow.session.get(LoginThrottle, keys[0])
            if throttle is not None:
                await uow.session.delete(throttle)
            await svc.audit(
                uow,
                Record(
                    action="auth.login",
                    actor=f"{account.kind}:{account.username or account.id}",
                    subject_person_id=account.person_id,
                    client_address=client,
                ),
            )
            await uow.commit()
            return account
        # the wait counts from when the failure is known, however long the password check took
        failed_at = utcnow()
        rows = await _locked_rows(uow.session, keys, failed_at, create=True)
        locked = [_record_failure(svc, rows[k], failed_at) for k in keys]
        subject = account.person_id if account else None
        await svc.audit(
            uow,
            Record(
                action="auth.login_failed",
                actor=f"login:{_shown(username)}",
                outcome="refused",
                subject_person_id=subject,
                client_address=client,
            ),
        )
        if any(locked):
            await svc.audit(
                uow,
                Record(
                    action="auth.locked",
                    actor=f"login:{_shown(username)}",
                    outcome="locked",
                    subject_person_id=subject,
                    client_address=client,
                    details={"by": ["account", "address"][locked.index(True)]},
                ),
            )
        await uow.commit()
    raise BadCredentials("wrong username or password")


def issue_token(svc: Services, account: Account) -> TokenGrant:
    ttl = svc.settings.access_token_ttl_s
    now = utcnow()
    claims = {
        "sub": account.id,
        "kind": account.kind,
        "iat": now,
        "exp": now + dt.timedelta(seconds=ttl),
        "jti": secrets.token_hex(8),
    }
    token = jwt.encode(claims, svc.settings.secret_bytes("token_key"), algorithm="HS256")
    return TokenGrant(token, ttl, account)


def principal_for(account: Account | Row[Any], *, via_session: bool = False) -> Principal:
    """The principal of an account (or of a row with the account's columns by name)."""
    return Principal(
        kind="staff" if account.kind == "staff" else "resident",
        id=account.id,
        name=account.username or account.display_name,
        person_id=account.person_id,
        institution=account.institution_code,
        roles=frozenset(account.roles or ()),
        via_session=via_session,
    )


# Read on every authenticated request, so built once and reading only what a principal needs (no entity loaded).
_ACCOUNT_QUERY = select(
    Account.id,
    Account.kind,
    Account.username,
    Account.display_name,
    Account.person_id,
    Account.institution_code,
    Account.roles,
    Account.active,
).where(Account.id == bindparam("p_id"))
_ACCOUNT = Statement(_ACCOUNT_QUERY, row=row_tuple("AccountRow", _ACCOUNT_QUERY.selected_columns))
_API_KEY_QUERY = (
    select(
        ApiKey.id,
        ApiKey.prefix,
        ApiKey.name,
        ApiKey.secret_hash,
        ApiKey.member_code,
        ApiKey.scopes,
        ApiKey.revoked_at,
        Institution.kind,
        Institution.active,
    )
    .outerjoin(Institution, Institution.code == ApiKey.member_code)
    .where(ApiKey.prefix == bindparam("p_prefix"))
)
_API_KEY = Statement(_API_KEY_QUERY, row=row_tuple("ApiKeyRow", _API_KEY_QUERY.selected_columns))


async def account_principal(svc: Services, account_id: str, *, via_session: bool = False) -> Principal:
    found = await svc.db.read_once(_ACCOUNT, {"p_id": account_id})
    account = found[0] if found else None
    if account is None or not account.active:
        raise InvalidToken("the account behind this token is gone or disabled")
    return principal_for(account, via_session=via_session)


_MAX_TOKEN_CHARS = 4096


async def principal_from_bearer(svc: Services, token: str) -> Principal:
    # a header may carry any bytes: anything but printable ASCII is no token of ours (and would not encode)
    if len(token) > _MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise InvalidToken("the access token is invalid or expired")
    if token.startswith(API_KEY_PREFIX + "_"):
        return await _api_key_principal(svc, token)
    return await account_principal(svc, _verified_subject(svc, token))


_VERIFIED_TOKENS = "accounts.verified_tokens"
_VERIFIED_MAX = 4096


def _verified_subject(svc: Services, token: str) -> str:
    """The account a bearer token names, once its signature and expiry hold.

    A token's claims cannot change, so its signature is checked once per process: later requests with the same
    token find (account, expiry) here and only the expiry is checked again (PyJWT's decode is about 3% of a
    request's work). Whether the account may still act is read from the database at every request, as before.
    """
    cache: collections.OrderedDict[str, tuple[str, float]] | None = svc.extras.get(_VERIFIED_TOKENS)
    if cache is None:
        cache = svc.extras[_VERIFIED_TOKENS] = collections.OrderedDict()
    hit = cache.get(token)
    if hit is not None:
        if time.time() < hit[1]:  # as PyJWT: valid while now < exp
            return hit[0]
        del cache[token]
    try:
        claims = jwt.decode(
            token, svc.settings.secret_bytes("token_key"), algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
        subject, expires = str(claims["sub"]), float(claims["exp"])
    except (jwt.PyJWTError, TypeError, ValueError):
        raise InvalidToken("the access token is invalid or expired") from None
    cache[token] = (subject, expires)
    if len(cache) > _VERIFIED_MAX:
        cache.popitem(last=False)
    return subject


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _api_key_principal(svc: Services, token: str) -> Principal:
    parts = token.split("_", 2)
    if len(parts) != 3:
        raise InvalidToken("malformed API key")
    _, prefix, secret = parts
    found = await svc.db.read_once(_API_KEY, {"p_prefix": prefix})
    key = found[0] if found else None
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.secret_hash, _key_hash(secret)):
        raise InvalidToken("unknown or revoked API key")
    return Principal(
        kind="apikey",
        id=key.id,
        name=key.name or key.prefix,
        institution=key.member_code,
        scopes=frozenset(key.scopes or ()),
        institution_kind=key.kind if key.active else None,  # the member's, read with the key
    )


async def create_api_key(
    uow: UnitOfWork, svc: Services, member_code: str, scopes: Sequence[str], *, name: str = "", actor: str
) -> tuple[ApiKey, str]:
    """Make a key; the clear key is returned once and never stored."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise UnknownScope(f"unknown scope(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCOPES))}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        prefix=prefix,
        secret_hash=_key_hash(secret),
        member_code=member_code.upper(),
        scopes=sorted(set(scopes)),
        name=name,
    )
    uow.session.add(key)
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="apikey.create",
            actor=actor,
            actor_institution=member_code,
            details={"prefix": prefix, "scopes": sorted(set(scopes))},
        ),
    )
    return key, f"{API_KEY_PREFIX}_{prefix}_{secret}"


async def create_staff(
    uow: UnitOfWork,
    username: str,
    password: str,
    institution: str,
    roles: Sequence[str],
    display_name: str | None = None,
) -> Account:
    exists = (await uow.session.execute(select(Account).where(Account.username == username))).scalar_one_or_none()
    if exists:
        raise AccountExists(f"account {username} exists")
    account = Account(
        username=username,
        kind="staff",
        display_name=display_name or username,
        password_hash=await _hash_off_loop(password),
        institution_code=institution.upper(),
        roles=list(roles),
    )
    uow.session.add(account)
    await uow.session.flush()
    return account


async def create_resident(uow: UnitOfWork, person_id: str, password: str, display_name: str) -> Account:
    exists = (await uow.session.execute(select(Account).where(Account.person_id == person_id))).scalar_one_or_none()
    if exists:
        raise AccountExists("this person already has an account")
    account = Account(
        username=None,
        kind="resident",
        display_name=display_name,
        person_id=person_id,
        password_hash=await _hash_off_loop(password),
    )
    uow.session.add(account)
    await uow.session.flush()
    return account


async def revoke_api_key(uow: UnitOfWork, svc: Services, prefix: str, *, actor: str) -> ApiKey:
    """Stop a key at once (every process checks the row on each request); revoking twice is harmless."""
    key = (await uow.session.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalar_one_or_none()
    if key is None:
        raise ApiKeyNotFound(f"no API key {prefix}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await svc.audit(
            uow,
            Record(
                action="apikey.revoke",
                actor=actor,
                actor_institution=key.member_code,
                details={"prefix": key.prefix},
            ),
        )
    return key


async def set_active(uow: UnitOfWork, svc: Services, account_id: str, active: bool, *, actor: str) -> Account:
    """Disable or re-enable an account; a disabled account's tokens and sessions stop working at once."""
    account = await uow.session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(f"no account {account_id}")
    if account.active != active:
        account.active = active
        await svc.audit(
            uow,
            Record(
                action="accounts.enable" if active else "accounts.disable",
                actor=actor,
                subject_person_id=account.person_id,
                details={"account": account.id},
            ),
        )
    return account
