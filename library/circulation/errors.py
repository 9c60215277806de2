"""Errors of circulation, each with a stable code."""

from __future__ import annotations

from federation.errors import Conflict, Forbidden, InvalidInput, NotFound


class ItemNotFound(NotFound):
    code = "circulation.item_not_found"
    title = "No such item"


class AmbiguousBarcode(Conflict):
    code = "circulation.ambiguous_barcode"
    title = "Several libraries hold a copy with this barcode"


class ServicePointNotFound(NotFound):
    code = "circulation.unknown_service_point"
    title = "No such service point"


class NotALibrary(InvalidInput):
    code = "circulation.not_a_library"
    title = "The service point is not a library's"


class WrongLibrary(Forbidden):
    code = "circulation.wrong_library"
    title = "The service point belongs to another library"


class ItemUnavailable(Conflict):
    code = "circulation.item_unavailable"
    title = "The item cannot be lent now"


class ItemNotHere(Conflict):
    code = "circulation.item_not_here"
    title = "The item is not at this library"


class NotOnLoan(Conflict):
    code = "circulation.not_on_loan"
    title = "The item is not on loan and needs no check-in here"


class ItemInTransit(Conflict):
    code = "circulation.item_in_transit"
    title = "The item is in transit: receive it instead"


class ReaderBlocked(Conflict):
    code = "circulation.reader_blocked"
    title = "The reader is blocked at this library"


class LimitReached(Conflict):
    code = "circulation.limit_reached"
    title = "The reader has as many loans as allowed"


class LoanNotFound(NotFound):
    code = "circulation.loan_not_found"
    title = "No such loan"


class LoanNotActive(Conflict):
    code = "circulation.loan_not_active"
    title = "The loan is closed"


class RenewalLimit(Conflict):
    code = "circulation.renewal_limit"
    title = "No renewals left"


class TransitNotFound(NotFound):
    code = "circulation.transit_not_found"
    title = "No such transit"


class TransitClosed(Conflict):
    code = "circulation.transit_closed"
    title = "The transit was already received"


class NotDestination(Conflict):
    code = "circulation.not_destination"
    title = "This is not the transit's destination"


class NotHeldForReader(Conflict):
    code = "circulation.not_held_for_reader"
    title = "The item on the hold shelf waits for another reader"


class TransitionRefused(Conflict):
    code = "circulation.transition_refused"
    title = "The item's state does not allow this"


class AmbiguousCard(InvalidInput):
    code = "circulation.ambiguous_card"
    title = "Several libraries issued this card number: name the institution"


class IdempotencyKeyReused(InvalidInput):
    code = "idempotency.key_reused"
    title = "This Idempotency-Key was used for another request"


class BadIdempotencyKey(InvalidInput):
    code = "idempotency.bad_key"
    title = "The Idempotency-Key header must have 1 to 200 visible characters"


class IdempotencyInFlight(Conflict):
    code = "idempotency.in_flight"
    title = "A request with this Idempotency-Key is still running: retry shortly"


class RequestNotFound(NotFound):
    code = "circulation.request_not_found"
    title = "No such request"


class RequestClosed(Conflict):
    code = "circulation.request_closed"
    title = "The request is already fulfilled, cancelled or expired"


class AlreadyRequested(Conflict):
    code = "circulation.already_requested"
    title = "The reader already has an open request for this work"


class AlreadyOnLoan(Conflict):
    code = "circulation.already_on_loan"
    title = "The reader has a copy of this work on loan"


class WorkNotFound(NotFound):
    code = "circulation.work_not_found"
    title = "No such work"


class CredentialRequired(InvalidInput):
    code = "circulation.credential_required"
    title = "Staff placing a request name the reader by a credential"


class RenewalBlockedByRequest(Conflict):
    code = "circulation.renewal_blocked_by_request"
    title = "Another reader is waiting for this work"


class HoldNotExpired(Conflict):
    code = "circulation.hold_not_expired"
    title = "The copy's time on the hold shelf has not run out"


class OverdueBlock(Conflict):
    code = "circulation.overdue_block"
    title = "The reader has a loan overdue beyond the federation's limit"


class FineBlock(Conflict):
    code = "circulation.fine_block"
    title = "The reader's open fines at this library are above its threshold"


class RequestNotAllowed(Conflict):
    code = "circulation.request_not_allowed"
    title = "The library's policy does not let this reader request"


class FineNotFound(NotFound):
    code = "circulation.fine_not_found"
    title = "No such fine"


class FineSettled(Conflict):
    code = "circulation.fine_settled"
    title = "The fine was already paid or waived"


class ClosedDayNotFound(NotFound):
    code = "circulation.closed_day_not_found"
    title = "No such closed day"


class ClosedDayExists(Conflict):
    code = "circulation.closed_day_exists"
    title = "The library is already closed that day"


class AlwaysClosed(InvalidInput):
    code = "circulation.always_closed"
    title = "A library cannot be closed on every weekday"


class LibraryNotFound(NotFound):
    code = "circulation.library_not_found"
    title = "No such member library"


class NotYourLibrary(Forbidden):
    code = "circulation.not_your_library"
    title = "Librarians change only their own library's items, readers and policies"


class PolicyNotFound(NotFound):
    code = "circulation.policy_not_found"
    title = "No such loan rule"
