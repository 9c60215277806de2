"""`twincity run` serves with the same request limits the tests' servers have: a long catalogue query reaches the
handler and gets a clear answer, not the HTTP parser's 400 for a line over 8 KB."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.test_cli import run, twincity


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own server
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_long_query_line_reaches_the_handler(tmp_path: Path) -> None:
    data = tmp_path / "var"
    assert run(data, "db", "upgrade").returncode == 0
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINCITY_")}
    env.update(TWINCITY_DATA_DIR=str(data), TWINCITY_LOG_JSON="false")
    proc = subprocess.Popen(  # noqa: S603 - our own console script
        [*twincity(), "run", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/catalog/search?q={'a' * 12000}")
        # the handler answered (the query is too long for it: a clear 422 problem), not the parser
        assert status == 422, (status, body[:300])
        assert "problem" in body or "code" in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "Failed to create request handler with custom kwargs" not in out
