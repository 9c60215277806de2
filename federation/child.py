"""Worker processes of our own: a fresh interpreter (``sys.executable -c``) running one of our functions and
speaking length-prefixed pickled frames over pipes, never a fork of a process running threads. The catalogue's
parse worker and the FHIR validation workers are two."""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
from typing import Any

PIPE_BYTES = 1 << 20  # Linux's most for an unprivileged process (/proc/sys/fs/pipe-max-size)

HEAD = struct.Struct("<Q")  # a frame: its length, then the pickle


def environment() -> dict[str, str]:
    """A child interpreter's environment: ours, with our import path, so it imports what this process does."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEAD.pack(len(data)) + data


def widen(fd: int) -> None:
    """Make the pipe of ``fd`` hold ``PIPE_BYTES`` (Linux; elsewhere it stays as it is). Each read or write of a
    pipe gives up the GIL and waits to take it back: for a frame of megabytes read beside a busy event loop, a
    64 KiB pipe meant such a wait (up to a switch interval, 5 ms) every 64 KiB, while the worker stood still."""
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
