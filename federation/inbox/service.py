"""Writing to and reading a resident's inbox, and the port through which a notice also leaves by SMS or e-mail.

Any context posts a :class:`Notice` with :func:`deliver`: the message is stored once (by its key) and then
handed to every configured :class:`NoticeSender`. The embedded default sends nothing further: the inbox is the
channel. SMS and e-mail are adapters behind the same port; they are given the person id and look the contact up
themselves, so no phone number or address ever travels in an event, a log line or the message.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import Database, new_id, utcnow
from federation.errors import NotFound
from federation.identity.idnumber import mask_id_numbers_in_text
from federation.inbox.models import InboxMessage

log = logging.getLogger(__name__)

SENDERS_KEY = "inbox.senders"  # ``Services.extras`` key: the configured NoticeSenders (default: the inbox only)


class MessageNotFound(NotFound):
    code = "inbox.message_not_found"
    title = "No such message"


@dataclasses.dataclass(frozen=True)
class Notice:
    """A message for one person, in Chinese and English; ``key`` makes its delivery idempotent."""

    person_id: str
    key: str
    kind: str
    title_zh: str
    title_en: str
    body_zh: str
    body_en: str
    link: str | None = None


class NoticeSender(Protocol):
    """A channel a notice leaves by, besides the inbox. Must not raise for a person it cannot reach."""

    channel: str

    async def send(self, person_id: str, channel: str, message: Notice) -> None: ...


class InboxOnly:
    """The embedded default: the message is in the inbox already, nothing else goes out."""

    channel = "inbox"

    async def send(self, person_id: str, channel: str, message: Notice) -> None:
        return None


ContactLookup = Callable[[str], Awaitable[str | None]]  # person id -> phone number or e-mail address, if known
Transport = Callable[[str, str], Awaitable[None]]  # (address, text) -> sent by a gateway


def mask_phone(phone: str) -> str:
    """``138****5678``: enough for a person to recognise their own number, not enough to call it."""
    digits = "".join(c for c in phone if c.isdigit())
    return f"{digits[:3]}****{digits[-4:]}" if len(digits) >= 8 else "****"


def mask_email(address: str) -> str:
    name, _, domain = address.partition("@")
    return f"{name[:1]}***@{domain}" if domain else "***"


class SmsSender:
    """The SMS adapter's shape: the gateway (``transport``) is the outside system; the text is the Chinese body."""

    channel = "sms"

    def __init__(self, contact: ContactLookup, transport: Transport) -> None:
        self.contact = contact
        self.transport = transport

    async def send(self, person_id: str, channel: str, message: Notice) -> None:
        phone = await self.contact(person_id)
        if not phone:
            return
        await self.transport(phone, f"{message.title_zh}：{message.body_zh}")
        log.info("sms notice %s sent to %s", message.kind, mask_phone(phone))


class EmailSender:
    """The e-mail adapter's shape: both languages in one message."""

    channel = "email"

    def __init__(self, contact: ContactLookup, transport: Transport) -> None:
        self.contact = contact
        self.transport = transport

    async def send(self, person_id: str, channel: str, message: Notice) -> None:
        address = await self.contact(person_id)
        if not address:
            return
        text = f"{message.title_zh} / {message.title_en}\n\n{message.body_zh}\n\n{message.body_en}"
        await self.transport(address, text)
        log.info("e-mail notice %s sent to %s", message.kind, mask_email(address))


class LoggingTransport:
    """A gateway fake for tests and the sandbox: remembers what it would send, logs only masked addresses."""

    def __init__(self, mask: Callable[[str], str] = mask_phone) -> None:
        self.mask = mask
        self.sent: list[tuple[str, str]] = []

    async def __call__(self, address: str, text: str) -> None:
        self.sent.append((address, text))
        log.info("fake gateway: %d characters to %s", len(text), self.mask(address))


def _clean(text: str, limit: int) -> str:
    return mask_id_numbers_in_text(text)[:limit]


async def post(session: AsyncSession, notice: Notice) -> InboxMessage | None:
    """Store the message unless one with its key exists; returns the new row, or None for a repeat."""
    if await session.scalar(select(InboxMessage.id).where(InboxMessage.key == notice.key)) is not None:
        return None
    row = InboxMessage(
        id=new_id(),
        person_id=notice.person_id,
        key=notice.key[:200],
        kind=notice.kind[:60],
        title_zh=_clean(notice.title_zh, 200),
        title_en=_clean(notice.title_en, 200),
        body_zh=_clean(notice.body_zh, 2000),
        body_en=_clean(notice.body_en, 2000),
        link=notice.link,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row


async def deliver(db: Database, notice: Notice, senders: Sequence[NoticeSender] = ()) -> bool:
    """Store ``notice`` in its own transaction, then hand it to the senders; False when it was delivered before.

    A second delivery of the same key (the outbox retries) neither
    stores nor sends again; a sender that fails is logged and does not undo the inbox message.
    """
    try:
        async with db.uow() as uow:
            row = await post(uow.session, notice)
            if row is None:
                return False
            await uow.commit()
    except IntegrityError:  # a concurrent delivery of the same key won
        return False
    for sender in senders:
        try:
            await sender.send(notice.person_id, sender.channel, notice)
        except Exception:  # noqa: BLE001 - an outside gateway's failure must not lose the inbox message
            log.warning("notice %s not sent by %s", notice.kind, sender.channel, exc_info=True)
    return True


async def messages(
    session: AsyncSession, person_id: str, *, unread: bool = False, limit: int = 50, offset: int = 0
) -> tuple[list[InboxMessage], int, int]:
    """A page of the person's messages, newest first, with the total matching and the unread count."""
    where = [InboxMessage.person_id == person_id]
    if unread:
        where.append(InboxMessage.read_at.is_(None))
    q = (
        select(InboxMessage)
        .where(*where)
        .order_by(InboxMessage.created_at.desc(), InboxMessage.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = list((await session.execute(q)).scalars())
    total = int(await session.scalar(select(func.count()).select_from(InboxMessage).where(*where)) or 0)
    unread_n = int(
        await session.scalar(
            select(func.count())
            .select_from(InboxMessage)
            .where(InboxMessage.person_id == person_id, InboxMessage.read_at.is_(None))
        )
        or 0
    )
    return rows, total, unread_n


async def mark_read(session: AsyncSession, person_id: str, message_id: str) -> InboxMessage:
    """Mark one of the person's messages read (once: the first reading's time stays)."""
    row = await session.get(InboxMessage, message_id)
    if row is None or row.person_id != person_id:
        raise MessageNotFound(f"no message {message_id}")
    await session.execute(
        update(InboxMessage)
        .where(InboxMessage.id == message_id, InboxMessage.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await session.refresh(row)
    return row
