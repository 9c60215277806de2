"""``twincity run --workers N``: several server processes on one port, started and stopped together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e.test_cli import run, twincity


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    data = tmp_path / "var"
    assert run(data, "db", "upgrade").returncode == 0
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINCITY_")}
    env.update(TWINCITY_DATA_DIR=str(data), TWINCITY_LOG_JSON="false")
    proc = subprocess.Popen(  # noqa: S603 - our own console script
        [*twincity(), "run", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answered = 0
        deadline = time.monotonic() + 120
        while answered < 20 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:  # noqa: S310
                    answered += r.status == 200
            except OSError:
                time.sleep(0.2)
        assert answered == 20
        children = _children(proc.pid)
        assert len(children) >= 2, children
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "2 server processes" in out
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a worker outlived the command"


def _children(pid: int) -> list[int]:
    """The server processes ``pid`` spawned (multiprocessing's resource tracker is not one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found
