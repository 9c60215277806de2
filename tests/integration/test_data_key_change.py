"""Changing the data key: the old key retired, every value rewritten under the new one, then the old key gone.

Against the real database (SQLite, or PostgreSQL with TWINCITY_TEST_DATABASE_URL), with the demo world's persons,
identifiers and connectors, a deposit certificate, a value written before values named their key, and one
encrypted under a key nobody gives.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from sqlalchemy import select, update

from connectors.framework import service as connectors
from connectors.framework.models import Connector
from connectors.framework.service import _loaded
from connectors.housing.models import DepositCertificate
from connectors.housing.service import certificate_context, stored_document
from federation.audit.models import AuditEntry
from federation.cli import main
from federation.demo import RESIDENTS
from federation.extensions import build_services
from federation.identity import rekey
from federation.identity import service as identity
from federation.identity.crypto import FieldCipher
from federation.identity.models import Identifier, IdentifierType, Person
from federation.members import service as members
from federation.settings import Settings


def _with_keys(settings: Settings, data_key: bytes, retired: list[bytes]) -> Settings:
    enc = base64.urlsafe_b64encode
    return settings.model_copy(
        update={
            "data_key": SecretStr(enc(data_key).decode()),
            "retired_data_keys": SecretStr(",".join(enc(k).decode() for k in retired)) if retired else None,
        }
    )


async def _everything_reads(svc) -> dict[str, int]:  # noqa: ANN001 - Services
    """Every encrypted value decrypted the way the service reads it; how many of each."""
    counts = {"identifiers": 0, "phones": 0, "connectors": 0, "certificates": 0}
    async with svc.db.reader() as s:
        for ident in (await s.execute(select(Identifier))).scalars():
            assert identity.reveal(svc.cipher, ident)
            counts["identifiers"] += 1
        for (blob,) in await s.execute(select(Person.phone_enc).where(Person.phone_enc.is_not(None))):
            assert svc.cipher.decrypt(blob, identity.PHONE_CONTEXT)
            counts["phones"] += 1
        for row in (await s.execute(select(Connector).where(Connector.secrets_enc.is_not(None)))).scalars():
            assert _loaded(svc, row).secrets is not None
            counts["connectors"] += 1
        ids = [i for (i,) in await s.execute(select(DepositCertificate.id))]
    for cert_id in ids:
        assert (await stored_document(svc, cert_id))[1] == b'{"demo": true}'
        counts["certificates"] += 1
    return counts


async def _blobs(svc) -> list[bytes]:  # noqa: ANN001
    async with svc.db.reader() as s:
        out = [b for (b,) in await s.execute(select(Identifier.value_enc))]
        out += [b for (b,) in await s.execute(select(Person.phone_enc).where(Person.phone_enc.is_not(None)))]
        out += [b for (b,) in await s.execute(select(Connector.secrets_enc).where(Connector.secrets_enc.is_not(None)))]
        out += [b for (b,) in await s.execute(select(DepositCertificate.document_enc))]
    return out


async def test_the_data_key_changes_without_losing_a_value(demo, settings: Settings) -> None:
    old_key = settings.secret_bytes("data_key")
    zhang = RESIDENTS[0]
    async with demo.db.uow() as uow:
        person = (await uow.session.execute(select(Person).where(Person.name == zhang.name))).scalars().first()
        cert = DepositCertificate(
            id=secrets.token_hex(16),
            person_id=person.id,
            connector="demo",
            member_code="CQ-HPF",
            kid="k",
            issued_at=dt.datetime.now(dt.UTC),
            expires_at=dt.datetime.now(dt.UTC),
            digest="0" * 64,
            document_enc=b"",
        )
        cert.document_enc = demo.cipher.encrypt('{"demo": true}', certificate_context(cert.id))
        uow.session.add(cert)
        # a value written before values named their key (01 | nonce | ciphertext)
        ident = (await uow.session.execute(select(Identifier).where(Identifier.person_id == person.id))).scalars()
        ident = ident.first()
        nonce = os.urandom(12)
        ctx = identity.context(ident.type, ident.institution_code)
        plain = identity.reveal(demo.cipher, ident)
        ident.value_enc = b"\x01" + nonce + AESGCM(old_key).encrypt(nonce, plain.encode(), ctx.encode())
        await members.upsert(
            uow, members.NewInstitution("CQSI", "重庆市社会保险事务中心", "system", system_kind="social_security")
        )
        await connectors.configure(
            uow,
            demo,
            "cq-si",
            kind="social_security",
            member_code="CQSI",
            config={"base_url": "http://127.0.0.1:9/"},
            secrets={"api_key": "the partner's key"},
            actor="test",
        )
        await uow.commit()
    before = await _everything_reads(demo)
    assert min(before.values()) >= 1, before
    async with demo.db.reader() as s:
        updated_at = dict((await s.execute(select(Person.id, Person.updated_at))).all())

    # the operator: a new data key, the old one retired
    new_key = secrets.token_bytes(32)
    svc = build_services(_with_keys(settings, new_key, [old_key]))
    try:
        assert await _everything_reads(svc) == before  # nothing lost while both keys are given
        async with svc.db.reader() as s:  # lookups by identifier: the blind index does not depend on the data key
            found = await identity.find_identifier(
                s, svc.cipher, identity.IdentifierInput(type=IdentifierType.SOCIAL_SECURITY_CARD, value=zhang.ss_card)
            )
        assert found is not None
        total = sum(before.values())

        checked = await rekey.reencrypt(svc, check=True)
        assert sum(r.rewritten for r in checked) == total
        assert not any(svc.cipher.is_current(b) for b in await _blobs(svc))  # a check writes nothing

        done = await rekey.reencrypt(svc, batch=7)  # small batches: the walk across batches is exercised
        assert sum(r.rewritten for r in done) == total and not any(r.unreadable for r in done)
        assert {r.name for r in done} == {
            "connectors.secrets_enc",
            "housing_certificates.document_enc",
            "identifiers.value_enc",
            "persons.phone_enc",
        }
        assert all(svc.cipher.is_current(b) for b in await _blobs(svc))
        again = await rekey.reencrypt(svc)
        assert sum(r.rewritten for r in again) == 0 and sum(r.current for r in again) == total
        async with svc.db.reader() as s:
            assert dict((await s.execute(select(Person.id, Person.updated_at))).all()) == updated_at
            audited = (
                (await s.execute(select(AuditEntry).where(AuditEntry.action == "secrets.reencrypt"))).scalars().all()
            )
        assert len(audited) == 2
        assert audited[0].details["identifiers.value_enc"]["rewritten"] >= 1
    finally:
        await svc.close()

    # the old key removed: everything still reads
    svc = build_services(_with_keys(settings, new_key, []))
    try:
        assert await _everything_reads(svc) == before
    finally:
        await svc.close()


async def test_a_value_no_given_key_opens_is_named_and_the_rest_rewritten(demo, settings: Settings) -> None:
    stranger = FieldCipher(secrets.token_bytes(32), settings.secret_bytes("index_key"))
    async with demo.db.uow() as uow:
        ident = (await uow.session.execute(select(Identifier).limit(1))).scalars().one()
        lost_id = ident.id
        ctx = identity.context(ident.type, ident.institution_code)
        await uow.session.execute(
            update(Identifier).where(Identifier.id == lost_id).values(value_enc=stranger.encrypt("x", ctx))
        )
        await uow.commit()
    svc = build_services(_with_keys(settings, secrets.token_bytes(32), [settings.secret_bytes("data_key")]))
    try:
        reports = {r.name: r for r in await rekey.reencrypt(svc)}
        ids = reports["identifiers.value_enc"]
        assert ids.unreadable == 1 and ids.unreadable_keys == [lost_id]
        assert ids.rewritten >= 1
        assert reports["persons.phone_enc"].unreadable == 0
    finally:
        await svc.close()


def test_the_command_rewrites_and_then_finds_nothing_left(settings: Settings, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import asyncio

    from federation import demo as demo_world

    async def load() -> None:
        svc = build_services(settings)
        try:
            await demo_world.load(svc)
        finally:
            await svc.close()

    asyncio.run(load())
    path = settings.data_dir / "secrets.json"
    stored = json.loads(path.read_text())
    stored["retired_data_keys"], stored["data_key"] = (
        stored["data_key"],
        base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    )
    path.write_text(json.dumps(stored))
    for name in [n for n in os.environ if n.startswith("TWINCITY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TWINCITY_ENV", "test")
    monkeypatch.setenv("TWINCITY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TWINCITY_DATABASE_URL", settings.effective_database_url)
    runner = CliRunner()
    check = runner.invoke(main, ["secrets", "reencrypt", "--check"])
    assert check.exit_code == 1, check.output
    assert "identifiers.value_enc: " in check.output and " to rewrite, 0 under the current key" in check.output
    done = runner.invoke(main, ["secrets", "reencrypt"])
    assert done.exit_code == 0, done.output
    assert "the retired keys can be removed" in done.output
    after = runner.invoke(main, ["secrets", "reencrypt", "--check"])
    assert after.exit_code == 0, after.output
    assert "0 to rewrite" in after.output
