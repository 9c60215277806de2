"""Worker processes of our own: a fresh interpreter (``sys.executable -c``) running one of our functions and
speaking length-prefixed pickled frames over pipes, never a fork of a process running threads. The catalogue's
parse worker and the FHIR validation workers are two."""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any

HEAD = struct.Struct("<Q")  # a frame: its length, then the pickle


def environment() -> dict[str, str]:
    """A child interpreter's environment: ours, with our import path, so it imports what this process does."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEAD.pack(len(data)) + data
