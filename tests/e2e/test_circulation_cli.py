"""``twincity circulation notices`` as a real process on the demo world: the day's notices are raised once and
delivered to the inbox; run again the same day it raises nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.e2e.test_cli import run


def test_notices_from_the_command_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    for step in (run(data_dir, "db", "upgrade"), run(data_dir, "demo", "load")):
        assert step.returncode == 0, step.stderr
    first = run(data_dir, "circulation", "notices")
    assert first.returncode == 0, first.stderr
    counts = json.loads(first.stdout)
    assert counts["overdue"] >= 1  # the demo world has an overdue loan
    again = run(data_dir, "circulation", "notices")
    assert json.loads(again.stdout) == {"due_soon": 0, "overdue": 0, "transit_overdue": 0}
    with sqlite3.connect(data_dir / "twincity.db") as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM inbox_messages")]
        pending = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]
    assert "circulation.overdue" in kinds and pending == 0
    expired = run(data_dir, "circulation", "expire-holds")
    assert expired.returncode == 0 and json.loads(expired.stdout) == {"expired": 0}
