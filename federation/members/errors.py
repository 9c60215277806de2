"""Errors of the member registry."""

from federation.errors import Conflict, NotFound


class MemberNotFound(NotFound):
    code = "members.not_found"


class MemberExists(Conflict):
    code = "members.exists"
