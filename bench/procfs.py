"""What the benches read of other processes from Linux's /proc (no psutil): CPU used, children."""

from __future__ import annotations

import os


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (the state first); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None where it is gone or there is no /proc."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The running direct children of a process."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields is not None and int(fields[1]) == pid:  # the field after the state is the parent's pid
                found.append(int(entry))
    return found


def children_cpu(pid: int) -> float:
    """CPU seconds the running children of a process (and theirs) have used so far."""
    return sum((process_cpu(kid) or 0.0) + children_cpu(kid) for kid in children(pid))


def cpu_by_name(name: str) -> dict[int, float]:
    """CPU seconds used so far by every process whose command name is ``name`` (``postgres``: the server and each
    backend), by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() != name:
                    continue
        except OSError:
            continue
        if (cpu := process_cpu(int(entry))) is not None:
            found[int(entry)] = cpu
    return found


def used_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings of ``cpu_by_name``: a process gone by the second reading is not
    counted (its last seconds are lost), one started in between is counted whole."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, every core together, from /proc/stat (idle includes
    waiting for I/O)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / tick, idle / tick
