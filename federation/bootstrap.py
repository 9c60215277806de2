"""What the core itself registers on a process's services (its job kinds and event handlers), what a
long-running process does once it has started, and how a bulk load keeps the cyclic collector out of its way."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from federation.services import Services


def register_core(svc: Services) -> None:
    from federation.identity import rekey
    from federation.identity import service as identity
    from federation.identity.models import Identifier, Person
    from federation.jobs import builtin

    builtin.register(svc)
    rekey.declare(svc, Identifier.value_enc, (Identifier.type, Identifier.institution_code), identity.context)
    rekey.declare(svc, Person.phone_enc, (), lambda: identity.PHONE_CONTEXT)


def freeze_startup_heap() -> None:
    """Once a server or worker process has started, the objects it made (modules, the FHIR and ORM models' schemas,
    compiled queries: a few hundred thousand) stay for its life; ``gc.freeze`` takes them out of the cyclic
    collector's sweeps, which otherwise walk them all at every full collection (53 ms) in the middle of a request
    or a load."""
    gc.collect()
    gc.freeze()


_BULK = threading.Lock()
_bulk_loads = 0
_saved_threshold: tuple[int, int, int] | None = None
BULK_THRESHOLD2 = 100  # young (generation 1) collections between two looks at the oldest generation; default 10


@contextlib.contextmanager
def bulk_load() -> Iterator[None]:
    """While a bulk load runs, the cyclic collector's full sweeps wait.

    A load keeps a few batches of records alive at a time (read ahead, being stored, being indexed): hundreds of
    thousands of objects that live long enough to reach the oldest generation and die there. Each full sweep
    walked them all (about 200 ms), 22 times in a load of 60,000 records: a fifth of its time, holding the
    GIL. Young collections go on as before, so short-lived cycles are still freed at once; the oldest generation
    is looked at ten times less often until the last concurrent load ends (memory stays flat: a 1 GB file
    loads in under 500 MB).
    """
    global _bulk_loads, _saved_threshold
    with _BULK:
        if _bulk_loads == 0:
            _saved_threshold = gc.get_threshold()
            first, second, _ = _saved_threshold
            gc.set_threshold(first, second, max(BULK_THRESHOLD2, _saved_threshold[2]))
        _bulk_loads += 1
    try:
        yield
    finally:
        with _BULK:
            _bulk_loads -= 1
            if _bulk_loads == 0 and _saved_threshold is not None:
                gc.set_threshold(*_saved_threshold)
                _saved_threshold = None
