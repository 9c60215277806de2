"""Validating a load's resources on more than one core.

Validation with fhir.resources is most of what a load costs, and it is plain Python: one core. For a load of
``SHARED_FROM`` resources or more, the service process validates the first part itself while worker processes
validate the rest, each from a pickled copy of the same JSON, so the answer is the same problems, in the same
order, as validating everything here. The service process goes on with the part it validated (copying bodies)
while the workers finish.

A worker is a fresh interpreter running ``serve`` on a pair of pipes (not multiprocessing's spawn, which would
run the caller's ``__main__`` again in the child, nor a fork of a process running threads). Workers are started on
first use, in the background: until a worker has imported the models, loads are validated here, as they are when
no worker can be started or when one dies (that load's part is validated here; the next load starts a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import pickle
import sys
from collections.abc import Awaitable, Sequence
from typing import Any

from federation import child
from health.fhir import profile

log = logging.getLogger(__name__)

SHARED_FROM = 64  # smaller loads are validated here: sending a part away costs more than it saves
Problems = list[profile.Problem]


def problems_of(resources: Sequence[Any], now: dt.datetime) -> list[Problems]:
    """Every resource's problems (``profile.check``), in order: what a worker runs on its part."""
    return [profile.check(r, now=now)[1] for r in resources]


def default_workers() -> int:
    """One worker beside the service process where there is a second core; none otherwise."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


# ------------------------------------------------------------------------------------------------- the worker side


# the worker's command: the answer pipe (fd 1) is moved to a private descriptor before anything is imported, and
# fd 1 points at stderr, so nothing printed by any module (or by C code) can reach the frames
_COMMAND = "import os; fd = os.dup(1); os.dup2(2, 1); from health.fhir.validation import serve; serve(fd)"


def serve(answers: int) -> None:
    """A worker's main loop: (resources, now) frames in on stdin, their problems out on the descriptor
    ``answers``, until stdin ends. The first frame out says the models are imported and their validators built."""
    stdin, stdout = sys.stdin.buffer, os.fdopen(answers, "wb")

    def send(value: Any) -> None:
        stdout.write(child.frame(value))
        stdout.flush()

    problems_of([{"resourceType": "Observation", "status": "final"}], dt.datetime.now(dt.UTC))
    send("ready")
    while True:
        head = stdin.read(child.HEAD.size)
        if len(head) < child.HEAD.size:
            return
        resources, now = pickle.loads(stdin.read(child.HEAD.unpack(head)[0]))  # noqa: S301 - our own parent wrote it
        send(problems_of(resources, now))


# ------------------------------------------------------------------------------------------------- the service side


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.loop = asyncio.get_running_loop()
        self.ready = False
        self.busy = False

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _COMMAND,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child.environment(),
        )
        with contextlib.suppress(Exception):  # Linux: room for a part of ~2,500 Observations in one write
            child.widen(process.stdin.get_extra_info("pipe").fileno())  # type: ignore[union-attr]
        return cls(process)

    async def _read(self) -> Any:
        assert self.process.stdout is not None
        head = await self.process.stdout.readexactly(child.HEAD.size)
        return pickle.loads(await self.process.stdout.readexactly(child.HEAD.unpack(head)[0]))  # noqa: S301

    async def warm(self) -> None:
        self.ready = await self._read() == "ready"

    def send(self, frame: bytes) -> None:
        """Hand the worker a part now (``frame``): written straight into the pipe (sized to take a big part
        whole), so the worker starts while this process validates its own part without yielding."""
        assert self.process.stdin is not None
        self.process.stdin.write(frame)

    async def answer(self, count: int) -> list[Problems]:
        """The problems of the part sent last (``count`` resources)."""
        assert self.process.stdin is not None
        await self.process.stdin.drain()
        answer = await self._read()
        if not isinstance(answer, list) or len(answer) != count:
            raise RuntimeError("the worker's answer does not match what it was sent")
        return answer

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


class Validator:
    """The process's validation workers (``workers``: how many; 0 validates everything in this process)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: list[_Worker] = []
        self._starting: asyncio.Task[None] | None = None

    def _idle(self) -> list[_Worker]:
        """The workers ready for a part now; missing ones (never started, dropped, or left on an event loop that
        is not this one) are started in the background."""
        if self.workers <= 0:
            return []
        loop = asyncio.get_running_loop()
        for w in [w for w in self._pool if w.loop is not loop]:
            self._drop(w)
        if len(self._pool) < self.workers and self._starting is None:
            self._starting = loop.create_task(self._start(self.workers - len(self._pool)))
        return [w for w in self._pool if w.ready and not w.busy]

    async def ready(self, within: float = 60.0) -> bool:
        """Start the missing workers and wait (at most ``within`` seconds) until they take parts; whether all do."""
        self._idle()
        if self._starting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starting), within)
        return self.workers > 0 and len([w for w in self._pool if w.ready]) == self.workers

    async def _start(self, count: int) -> None:
        started: list[_Worker] = []
        try:
            for _ in range(count):
                worker = await _Worker.start()
                started.append(worker)
                await worker.warm()
                self._pool.append(worker)
        except Exception as e:  # noqa: BLE001 - validated here instead
            log.warning("FHIR validation workers could not be started, validating in process: %s", e)
            for w in started:
                self._drop(w)
        except BaseException:  # closed while starting
            for w in started:
                self._drop(w)
            raise
        finally:
            self._starting = None

    def split(self, resources: Sequence[Any], now: dt.datetime) -> tuple[int, Awaitable[list[Problems]] | None]:
        """How many resources, from the front, this process validates itself, and the problems of the others
        (in order) to await, or None when this process validates them all."""
        workers = self._idle() if len(resources) >= SHARED_FROM else []
        if not workers:
            return len(resources), None
        here = len(resources) // (len(workers) + 1)
        size = -(-(len(resources) - here) // len(workers))
        starts = range(here, len(resources), size)  # no more parts than workers; maybe fewer
        parts = [(w, resources[start : start + size]) for w, start in zip(workers, starts, strict=False)]
        try:
            frames = [child.frame((list(part), now)) for _, part in parts]
        except Exception:  # noqa: BLE001 - a part pickle refuses (nested beyond its limit): all validated here
            return len(resources), None
        sent: list[tuple[_Worker, Sequence[Any], BaseException | None]] = []
        for (w, part), frame in zip(parts, frames, strict=True):
            w.busy = True
            try:
                w.send(frame)
                sent.append((w, part, None))
            except Exception as e:  # noqa: BLE001 - a worker gone: its part is validated here
                sent.append((w, part, e))
        # a task of its own: the answers are read (and the workers freed) even if the caller never awaits them
        return here, asyncio.ensure_future(self._gather(sent, now))

    async def _gather(
        self, parts: list[tuple[_Worker, Sequence[Any], BaseException | None]], now: dt.datetime
    ) -> list[Problems]:
        async def one(w: _Worker, part: Sequence[Any], failed: BaseException | None) -> list[Problems]:
            if failed is not None:
                raise failed
            return await w.answer(len(part))

        try:
            answers = await asyncio.gather(*(one(*p) for p in parts), return_exceptions=True)
        except BaseException:  # cancelled while the workers answer: what is left in their pipes is unknown
            for w, _, _ in parts:
                self._drop(w)
            raise
        out: list[Problems] = []
        for (w, part, _), answer in zip(parts, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("a FHIR validation worker failed (%r); its part is validated in process", answer)
                self._drop(w)
                answer = problems_of(part, now)
            w.busy = False
            out.extend(answer)
        return out

    def _drop(self, worker: _Worker) -> None:
        """Stop using a worker (the next load starts another when none is left)."""
        with contextlib.suppress(ValueError):
            self._pool.remove(worker)
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()  # the event loop's child watcher reaps it

    async def _stop_all(self) -> None:
        pool, self._pool = self._pool, []
        for w in pool:
            with contextlib.suppress(Exception):
                await w.stop()

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        await self._stop_all()


def validator(svc: Any) -> Validator:
    """The service's validator, made on first use (and closed with the service)."""
    v = svc.extras.get("health.validator")
    if v is None:
        workers = svc.settings.fhir_validation_workers
        v = svc.extras["health.validator"] = Validator(default_workers() if workers is None else workers)
        svc.on_close(v.close)
    return v
