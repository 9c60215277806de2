"""Login throttling: backoff after a few failures, a lock after more, per attempted account and per client address,
and every failure, throttle and lock in the audit trail without a clear ID number.

The policy is injected through settings (small numbers, a short lock); time is moved by editing the throttle rows,
never by sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, text, update

from federation import demo as demo_world
from federation.accounts import service as accounts
from federation.accounts.errors import BadCredentials, LoginThrottled
from federation.accounts.models import Account, LoginThrottle
from federation.app import create_app
from federation.audit.models import AuditEntry
from federation.audit.service import verify
from federation.db import utcnow
from federation.extensions import build_services
from federation.identity.service import IdentifierInput, IdentifierType, RegisterPerson, find_identifier, register
from federation.services import Services
from tests.conftest import make_settings

PASSWORD = demo_world.PASSWORD
WU = next(r for r in demo_world.RESIDENTS if r.name == "吴强")  # 51100219830228955X: the X variants apply
ZHANG = next(r for r in demo_world.RESIDENTS if r.name == "张伟")


def fifteen(id18: str) -> str:
    """The old 15-digit form of a number born in the 1900s (no century, no check character)."""
    assert id18[6:8] == "19"
    return id18[:6] + id18[8:17]


@functools.cache
def demo_password_hash() -> str:
    return accounts.hash_password(PASSWORD)


async def seed(svc: Services) -> None:
    """The demo staff and two residents, sharing one password hash (argon2 is slow on purpose)."""
    async with svc.db.uow() as uow:
        for username, institution, roles in demo_world.staff_accounts():
            uow.session.add(
                Account(
                    username=username,
                    kind="staff",
                    display_name=username,
                    password_hash=demo_password_hash(),
                    institution_code=institution,
                    roles=roles,
                )
            )
        for r in (WU, ZHANG):
            cmd = RegisterPerson(name=r.name, identifiers=[IdentifierInput(IdentifierType.ID_NUMBER, r.id_number)])
            reg = await register(uow, svc, cmd, actor="system:test")
            uow.session.add(
                Account(
                    kind="resident", person_id=reg.person.id, display_name=r.name, password_hash=demo_password_hash()
                )
            )
        await uow.commit()


def policy(**settings: int) -> pytest.MarkDecorator:
    """The throttling settings of one test (handed to the ``throttled`` fixture)."""
    return pytest.mark.parametrize("throttled", [settings], indirect=True, ids=["policy"])


@pytest.fixture
async def throttled(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Services]:
    """Services with the test's throttling policy and the demo world loaded."""
    settings = {"login_backoff_after": 3, "login_lock_after": 5, "login_lock_s": 30, "login_window_s": 900}
    settings.update(getattr(request, "param", {}))
    svc = build_services(make_settings(tmp_path, database_url=db_url, **settings))
    await seed(svc)
    yield svc
    await svc.close()


@pytest.fixture
async def http(throttled: Services) -> AsyncIterator[TestClient]:
    app = create_app(throttled.settings, svc=throttled)
    async with TestClient(TestServer(app)) as c:
        yield c


async def post_login(client: TestClient, username: str, password: str) -> tuple[int, dict, dict]:
    resp = await client.post("/api/v1/auth/token", json={"username": username, "password": password})
    return resp.status, dict(resp.headers), await resp.json()


async def throttle_rows(svc: Services) -> list[LoginThrottle]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(LoginThrottle))).scalars())


async def set_rows(svc: Services, **values: object) -> None:
    """Move time for every throttle row: lift a backoff, end a lock, or age the window."""
    async with svc.db.uow() as uow:
        await uow.session.execute(update(LoginThrottle).values(**values))
        await uow.commit()


async def lift_backoff(svc: Services) -> None:
    await set_rows(svc, next_allowed_at=None)


async def audit(svc: Services, action: str | None = None) -> list[AuditEntry]:
    async with svc.db.reader() as s:
        q = select(AuditEntry).order_by(AuditEntry.seq)
        if action:
            q = q.where(AuditEntry.action == action)
        return list((await s.execute(q)).scalars())


async def person_id_of(svc: Services, id_number: str) -> str:
    async with svc.db.reader() as s:
        ident = await find_identifier(s, svc.cipher, IdentifierInput(IdentifierType.ID_NUMBER, id_number))
    assert ident is not None
    return ident.person_id


async def user_row(svc: Services) -> LoginThrottle:
    [row] = [r for r in await throttle_rows(svc) if r.key.startswith("user:")]
    return row


async def fail_and_time(client: TestClient, username: str) -> tuple[dt.datetime, dt.datetime]:
    before = utcnow()
    status, headers, body = await post_login(client, username, "wrong")
    assert (status, body["code"]) == (401, "auth.bad_credentials")
    assert "Bearer" in headers["WWW-Authenticate"]
    return before, utcnow()


@policy(login_backoff_after=3, login_lock_after=10)
async def test_wrong_password_then_backoff_with_retry_after(http: TestClient, throttled: Services) -> None:
    for _ in range(2):
        await fail_and_time(http, "librarian@CQL")
    assert (await user_row(throttled)).next_allowed_at is None
    # the third failure starts the backoff: 2**0 seconds from the failure
    before, after = await fail_and_time(http, "librarian@CQL")
    row = await user_row(throttled)
    assert row.failures == 3
    assert row.next_allowed_at is not None
    assert before + dt.timedelta(seconds=1) <= row.next_allowed_at <= after + dt.timedelta(seconds=1)

    # while it lasts (stretched here so a slow machine cannot outlast it) every attempt is refused, and told how
    # long to wait; the right password waits too: the backoff is on the account, not on wrong guesses
    await set_rows(throttled, next_allowed_at=utcnow() + dt.timedelta(seconds=20))
    for password in ("wrong", PASSWORD):
        status, headers, body = await post_login(http, "librarian@CQL", password)
        assert status == 429
        assert body["code"] == "auth.throttled"
        assert headers["Content-Type"].startswith("application/problem+json")
        assert 18 <= int(headers["Retry-After"]) <= 21
        assert body["retry_after"] == int(headers["Retry-After"])
    assert (await user_row(throttled)).failures == 3  # refused attempts are not judged, so not counted

    # the backoff grows: after the fourth failure the wait is 2 seconds
    await lift_backoff(throttled)
    before, after = await fail_and_time(http, "librarian@CQL")
    row = await user_row(throttled)
    assert row.next_allowed_at is not None
    assert before + dt.timedelta(seconds=2) <= row.next_allowed_at <= after + dt.timedelta(seconds=2)

    # once the wait is over the right password works and clears the account's counter
    await lift_backoff(throttled)
    status, _, body = await post_login(http, "librarian@CQL", PASSWORD)
    assert status == 200, body
    assert not [r for r in await throttle_rows(throttled) if r.key.startswith("user:")]

    assert len(await audit(throttled, "auth.login_failed")) == 4
    assert len(await audit(throttled, "auth.login_throttled")) == 2
    assert len(await audit(throttled, "auth.login")) == 1


@policy(login_backoff_after=1, login_lock_after=20)
async def test_backoff_is_capped_at_a_minute(throttled: Services) -> None:
    for _ in range(8):
        await lift_backoff(throttled)
        with pytest.raises(BadCredentials):
            await accounts.login(throttled, "doctor@SCH1", "wrong", "10.0.0.1")
    row = await user_row(throttled)
    assert row.failures == 8  # 2**7 seconds, were it not capped
    assert row.next_allowed_at is not None
    assert dt.timedelta(seconds=50) <= row.next_allowed_at - utcnow() <= dt.timedelta(seconds=60)


@policy(login_backoff_after=3, login_lock_after=5, login_lock_s=30)
async def test_lock_after_n_failures_refuses_even_the_right_password(http: TestClient, throttled: Services) -> None:
    for i in range(5):
        status, _, body = await post_login(http, "doctor@SCH1", "wrong")
        assert (status, body["code"]) == (401, "auth.bad_credentials"), i
        await lift_backoff(throttled)  # only the lock is under test here
    status, headers, body = await post_login(http, "doctor@SCH1", PASSWORD)
    assert status == 429
    assert body["code"] == "auth.throttled"
    assert "locked" in body["detail"]
    assert 29 <= int(headers["Retry-After"]) <= 31

    rows = await throttle_rows(throttled)
    assert {r.key.split(":")[0] for r in rows} == {"user", "addr"}
    assert all(r.failures == 5 and r.locked_until and r.locked_until > utcnow() for r in rows)

    locked = await audit(throttled, "auth.locked")
    assert len(locked) == 1
    assert locked[0].actor == "login:doctor@SCH1"
    assert locked[0].outcome == "locked"
    assert locked[0].details == {"by": "account"}
    assert locked[0].client_address == "127.0.0.1"
    assert len(await audit(throttled, "auth.login_failed")) == 5
    refused = await audit(throttled, "auth.login_throttled")
    assert [e.outcome for e in refused] == ["refused"]

    # the lock ends on time, then the right password works
    await set_rows(throttled, locked_until=utcnow() - dt.timedelta(seconds=1))
    status, _, body = await post_login(http, "doctor@SCH1", PASSWORD)
    assert status == 200, body


@policy(login_backoff_after=3, login_lock_after=4, login_lock_s=30)
async def test_lock_holds_across_the_api_and_the_portal(http: TestClient, throttled: Services) -> None:
    for _ in range(4):
        await post_login(http, "librarian@SCL", "wrong")
        await lift_backoff(throttled)
    resp = await http.post("/api/v1/auth/session", json={"username": "librarian@SCL", "password": PASSWORD})
    assert resp.status == 429
    assert "twincity_session" not in resp.cookies


@policy(login_backoff_after=50, login_lock_after=3, login_lock_s=30)
async def test_throttled_per_client_address(http: TestClient, throttled: Services) -> None:
    # three different (unknown) usernames from one address: each account key has one failure, the address three
    for name in ("nobody@A", "nobody@B", "nobody@C"):
        status, _, body = await post_login(http, name, "guess")
        assert (status, body["code"]) == (401, "auth.bad_credentials")
    # a fourth username, never tried before, with the right password: refused because of the address
    status, headers, body = await post_login(http, "librarian@CDL", PASSWORD)
    assert status == 429
    assert body["code"] == "auth.throttled"
    assert 29 <= int(headers["Retry-After"]) <= 31
    # the same account from another address is fine: its own counter is clean
    account = await accounts.login(throttled, "librarian@CDL", PASSWORD, "10.1.2.3")
    assert account.username == "librarian@CDL"
    by_kind: dict[str, list[int]] = {}
    for row in await throttle_rows(throttled):
        by_kind.setdefault(row.key.split(":")[0], []).append(row.failures)
    assert sorted(by_kind["user"]) == [1, 1, 1]
    assert sorted(by_kind["addr"]) == [3]
    [locked] = await audit(throttled, "auth.locked")
    assert (locked.actor, locked.details, locked.client_address) == ("login:nobody@C", {"by": "address"}, "127.0.0.1")


@policy(login_backoff_after=50, login_lock_after=3)
async def test_address_lock_is_named_in_the_audit_trail(throttled: Services) -> None:
    for i in range(3):
        with pytest.raises(BadCredentials):
            await accounts.login(throttled, f"someone{i}@X", "guess", "10.9.9.9")
    with pytest.raises(LoginThrottled):
        await accounts.login(throttled, "librarian@CQL", PASSWORD, "10.9.9.9")
    entries = await audit(throttled, "auth.login_throttled")
    assert [(e.actor, e.client_address, e.outcome) for e in entries] == [("login:librarian@CQL", "10.9.9.9", "refused")]


@policy(login_backoff_after=50, login_lock_after=3)
async def test_every_spelling_of_an_id_number_shares_one_throttle(throttled: Services) -> None:
    number = WU.id_number
    assert number.endswith("X")
    spellings = [number, number.lower(), f"{number[:6]} {number[6:14]} {number[14:]}", fifteen(number)]
    # each from its own address, so only the account's counter can stop the last ones
    for i, spelling in enumerate(spellings[:3]):
        with pytest.raises(BadCredentials):
            await accounts.login(throttled, spelling, "wrong", f"10.0.0.{i + 1}")
    full_width = number.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    for j, spelling in enumerate([spellings[3], full_width, number]):
        with pytest.raises(LoginThrottled):
            await accounts.login(throttled, spelling, PASSWORD, f"10.0.1.{j + 1}")
    assert [r.failures for r in await throttle_rows(throttled) if r.key.startswith("user:")] == [3]


@policy(login_backoff_after=50, login_lock_after=3, login_lock_s=30)
async def test_failures_outside_the_window_are_forgotten(throttled: Services) -> None:
    for _ in range(3):
        with pytest.raises(BadCredentials):
            await accounts.login(throttled, "doctor@CQH1", "wrong", "10.0.0.1")
    with pytest.raises(LoginThrottled):
        await accounts.login(throttled, "doctor@CQH1", PASSWORD, "10.0.0.1")
    # an hour later: the lock is over and the window in which the failures counted has passed
    an_hour_ago = utcnow() - dt.timedelta(hours=1)
    await set_rows(throttled, window_started_at=an_hour_ago, locked_until=an_hour_ago + dt.timedelta(seconds=30))
    with pytest.raises(BadCredentials):
        await accounts.login(throttled, "doctor@CQH1", "wrong", "10.0.0.1")
    rows = await throttle_rows(throttled)
    assert [(r.failures, r.locked_until, r.next_allowed_at) for r in rows] == [(1, None, None)] * 2
    assert (await accounts.login(throttled, "doctor@CQH1", PASSWORD, "10.0.0.1")).username == "doctor@CQH1"


@policy(login_backoff_after=50, login_lock_after=3, login_lock_s=30)
async def test_lock_lasts_even_when_the_window_has_passed(throttled: Services) -> None:
    for _ in range(3):
        with pytest.raises(BadCredentials):
            await accounts.login(throttled, "doctor@CQH1", "wrong", "10.0.0.1")
    await set_rows(throttled, window_started_at=utcnow() - dt.timedelta(hours=1))
    with pytest.raises(LoginThrottled):
        await accounts.login(throttled, "doctor@CQH1", PASSWORD, "10.0.0.1")


@policy(login_backoff_after=3, login_lock_after=4, login_lock_s=30)
async def test_audit_trail_never_holds_a_clear_id_number(http: TestClient, throttled: Services) -> None:
    number = ZHANG.id_number
    person_id = await person_id_of(throttled, number)
    attempts = [number, fifteen(number), f"{number[:6]}-{number[6:14]}-{number[14:]}", number, number]
    statuses = []
    for username in attempts:
        statuses.append((await post_login(http, username, "wrong"))[0])
        if statuses[-1] == 401:
            await lift_backoff(throttled)
    assert statuses == [401, 401, 401, 401, 429]  # locked after the fourth
    # a mistyped number (wrong check digit), and a number inside other text, are not kept either
    mistyped = number[:17] + ("0" if number[17] != "0" else "1")
    for username in (mistyped, f"ID:{WU.id_number}"):
        await post_login(http, username, "wrong")

    actions = {e.action for e in await audit(throttled)}
    assert {"auth.login_failed", "auth.locked", "auth.login_throttled"} <= actions

    async with throttled.db.reader() as s:
        raw = (await s.execute(text("SELECT * FROM audit_entries"))).all()
        throttles = (await s.execute(text("SELECT * FROM login_throttles"))).all()
    dumped = repr(raw) + repr(throttles)
    for secret in (number, fifteen(number), number[:17], mistyped, WU.id_number, WU.id_number[:17]):
        assert secret not in dumped
    assert f"login:{number[:6]}********{number[-4:]}" in dumped

    mine = [e for e in await audit(throttled) if e.subject_person_id == person_id]
    assert {e.action for e in mine} == {"identity.register", "auth.login_failed", "auth.locked"}
    mine = [e for e in mine if e.action.startswith("auth.")]
    assert all(e.actor.startswith("login:500103") for e in mine)
    assert (await verify_chain(throttled)).ok


async def verify_chain(svc: Services):  # noqa: ANN201
    async with svc.db.reader() as s:
        return await verify(s, svc.audit_key)


@policy(login_backoff_after=100, login_lock_after=100)
async def test_concurrent_failures_are_all_counted(http: TestClient, throttled: Services) -> None:
    results = await asyncio.gather(*(post_login(http, "librarian@CQL", f"wrong{i}") for i in range(8)))
    assert sorted(status for status, _, _ in results) == [401] * 8
    rows = await throttle_rows(throttled)
    assert sorted(r.failures for r in rows) == [8, 8]
    assert len(await audit(throttled, "auth.login_failed")) == 8
    assert (await verify_chain(throttled)).ok


@policy(login_backoff_after=2, login_lock_after=100)
async def test_concurrent_attempts_cannot_slip_past_the_backoff(http: TestClient, throttled: Services) -> None:
    assert (await post_login(http, "doctor@SCH2", "wrong"))[0] == 401
    # one failure to go before the backoff: of six guesses sent at once, one is judged, the rest wait
    results = await asyncio.gather(*(post_login(http, "doctor@SCH2", f"guess{i}") for i in range(6)))
    assert sorted(status for status, _, _ in results) == [401] + [429] * 5
    assert [r.failures for r in await throttle_rows(throttled) if r.key.startswith("user:")] == [2]


async def test_disabled_account_cannot_log_in_and_counts_as_a_failure(client: TestClient, demo: Services) -> None:
    async with demo.db.uow() as uow:
        account = (await uow.session.execute(select(Account).where(Account.username == "librarian@CQL"))).scalar_one()
        await accounts.set_active(uow, demo, account.id, False, actor="staff:admin@federation")
        await uow.commit()
    status, _, body = await post_login(client, "librarian@CQL", PASSWORD)
    assert (status, body["code"]) == (401, "auth.bad_credentials")
    assert [e.actor for e in await audit(demo, "accounts.disable")] == ["staff:admin@federation"]
