"""Every table of the core, imported in one place so the schema's metadata is complete."""

from federation.accounts.models import Account, ApiKey, LoginThrottle
from federation.audit.models import AuditEntry
from federation.consent.models import Consent
from federation.db import Base, OutboxMessage
from federation.identity.models import Identifier, MatchReview, Merge, Person
from federation.inbox.models import InboxMessage
from federation.jobs.models import Job
from federation.members.models import Institution, ServicePoint

__all__ = [
    "Account",
    "ApiKey",
    "AuditEntry",
    "Base",
    "Consent",
    "Identifier",
    "InboxMessage",
    "Institution",
    "Job",
    "LoginThrottle",
    "MatchReview",
    "Merge",
    "OutboxMessage",
    "Person",
    "ServicePoint",
]
