"""What the core itself registers on a process's services (its job kinds and event handlers), and what a
long-running process does once it has started."""

from __future__ import annotations

import gc

from federation.services import Services


def register_core(svc: Services) -> None:
    from federation.jobs import builtin

    builtin.register(svc)


def freeze_startup_heap() -> None:
    """Once a server or worker process has started, the objects it made (modules, the FHIR and ORM models' schemas,
    compiled queries: a few hundred thousand) stay for its life; ``gc.freeze`` takes them out of the cyclic
    collector's sweeps, which otherwise walk them all at every full collection (53 ms) in the middle of a request
    or a load."""
    gc.collect()
    gc.freeze()
