"""The ``twincity`` command, run as a real process on SQLite in a temporary data directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from federation.identity.idnumber import check_digit

BEIJING = "11010519491231002X"
TIMEOUT = 300


def twincity() -> list[str]:
    script = Path(sys.executable).with_name("twincity")
    return [str(script)] if script.exists() else [sys.executable, "-m", "federation.cli"]


def run(data_dir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    # nothing from the caller's environment chooses the database: SQLite in data_dir, always
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINCITY_")}
    env.update(TWINCITY_DATA_DIR=str(data_dir), TWINCITY_LOG_JSON="false", PYTHONIOENCODING="utf-8")
    env.update({f"TWINCITY_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(  # noqa: S603 - our own console script
        [*twincity(), *args], capture_output=True, text=True, env=env, cwd=data_dir.parent, timeout=TIMEOUT
    )


def complete(first17: str) -> str:
    return first17 + check_digit(first17)


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = ("institutions", "service_points", "persons", "identifiers", "accounts", "consents")
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


def by_hand(db: Path, *statements: str) -> None:
    """Edit the trail the way someone with the database file would: the append-only triggers dropped first."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER audit_entries_no_update")
        conn.execute("DROP TRIGGER audit_entries_no_delete")
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


# --- identity check: no database needed ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-bare") / "var"


def test_identity_check_valid(bare: Path) -> None:
    out = run(bare, "identity", "check", BEIJING)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("valid")
    assert "110105********002X" in out.stdout
    assert "1949-12-31" in out.stdout and "female" in out.stdout
    assert BEIJING not in out.stdout + out.stderr


def test_identity_check_json(bare: Path) -> None:
    out = run(bare, "identity", "check", "--json", BEIJING.lower())
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["valid"] is True
    assert info["number"] == "110105********002X"
    assert info["birth_date"] == "1949-12-31"
    bad = run(bare, "identity", "check", "--json", BEIJING[:17] + "1")
    assert bad.returncode == 1
    assert json.loads(bad.stdout) == {
        "valid": False,
        "code": "id_number.checksum",
        "reason": "check digit should be X, got 1",
    }


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (BEIJING[:17] + "1", "check digit should be X, got 1"),
        (complete("11010519490230002"), "birth date 1949-02-30 is not a real date"),
        (BEIJING[:16], "has 16 characters"),
        (BEIJING + "1", "has 19 characters"),
        ("11010519491231002A", "character 18 is 'A'"),
        (complete("00010519800101001"), "not a province-level code"),
    ],
    ids=["check-digit", "impossible-date", "too-short", "too-long", "letter", "region"],
)
def test_identity_check_invalid(bare: Path, number: str, reason: str) -> None:
    out = run(bare, "identity", "check", number)
    assert out.returncode == 1, out.stdout
    assert out.stdout.startswith("invalid: ")
    assert reason in out.stdout
    if len(number) == 18:
        assert number not in out.stdout + out.stderr  # a rejected number is not echoed either


def test_identity_check_chongqing_number_born_before_the_municipality(bare: Path) -> None:
    # Chongqing became a municipality in 1997; a 50xxxx number with a 1980 birth date is still valid
    number = complete("50010319800101123")
    out = run(bare, "identity", "check", number)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("valid")
    assert "1980-01-01" in out.stdout
    assert "重庆" in out.stdout
    assert "warning" not in out.stdout


def test_identity_check_old_15_digit_number(bare: Path) -> None:
    out = run(bare, "identity", "check", BEIJING[:6] + BEIJING[8:17])
    assert out.returncode == 0, out.stdout
    assert "upgraded from the 15-digit format" in out.stdout


# --- the database commands, on one data directory set up once ------------------------------------------------


World = tuple[Path, list[subprocess.CompletedProcess[str]], dict[str, int]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Upgraded, loaded twice and verified; ``counts`` are the rows after the first load. Tests change copies only."""
    data_dir = tmp_path_factory.mktemp("cli-world") / "var"
    steps = [run(data_dir, "db", "upgrade"), run(data_dir, "demo", "load")]
    after_first = counts(data_dir / "twincity.db")
    steps.append(run(data_dir, "demo", "load"))
    steps.append(run(data_dir, "audit", "verify"))
    return data_dir, steps, after_first


@pytest.fixture
def copy(world: World, tmp_path: Path) -> Path:
    """A data directory of the test's own, copied from the loaded world. The database through SQLite's backup: a
    file copy races with whoever closes it last, which checkpoints and deletes its -wal and -shm files."""
    target = tmp_path / "var"
    shutil.copytree(world[0], target, ignore=shutil.ignore_patterns("twincity.db*"))
    with (
        contextlib.closing(sqlite3.connect(world[0] / "twincity.db")) as source,
        contextlib.closing(sqlite3.connect(target / "twincity.db")) as copied,
    ):
        source.backup(copied)
    return target


def test_db_upgrade_creates_the_schema_and_secrets(world: World) -> None:
    data_dir, (upgrade, *_rest), _ = world
    assert upgrade.returncode == 0, upgrade.stderr
    assert "database at head" in upgrade.stdout
    assert (data_dir / "twincity.db").is_file()
    secrets_file = data_dir / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert "generated secrets" in upgrade.stderr
    # every later command reused them
    assert all("generated secrets" not in step.stderr for step in _rest)


def test_db_upgrade_twice_is_harmless(copy: Path) -> None:
    again = run(copy, "db", "upgrade")
    assert again.returncode == 0, again.stderr


def test_demo_load_is_idempotent(world: World) -> None:
    data_dir, (_, first, second, _), after_first = world
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "12 new persons" in first.stdout
    assert "19 new accounts" in first.stdout
    assert "0 new persons, 0 new accounts, 0 new consents" in second.stdout
    loaded = counts(data_dir / "twincity.db")
    assert loaded == after_first  # the second load added no row anywhere
    assert (loaded["persons"], loaded["accounts"], loaded["consents"]) == (12, 19, 6)
    # the core's seven members, and whatever member systems the extensions' demo worlds add (a clinic, the
    # social-security, housing and transport systems)
    assert loaded["institutions"] >= 7


def test_second_demo_load_reports_no_new_members(world: World) -> None:
    second = world[1][2]
    assert "0 new members" in second.stdout


def test_audit_verify_passes_on_an_untouched_trail(world: World) -> None:
    verify = world[1][3]
    assert verify.returncode == 0, verify.stderr
    m = re.search(r"audit trail intact: (\d+) entries verified in 1 chain$", verify.stdout, re.M)
    assert m and int(m.group(1)) > 0


def audit_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]


def test_audit_verify_prints_the_heads_to_keep(copy: Path) -> None:
    out = run(copy, "audit", "verify", "--heads")
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(copy / "twincity.db") as conn:
        link, last = conn.execute("SELECT link, hash FROM audit_entries ORDER BY link DESC LIMIT 1").fetchone()
    assert f"chain 0: {link} entries, last hash {last}" in out.stdout


def test_audit_verify_names_an_edited_entry(copy: Path) -> None:
    db = copy / "twincity.db"
    seq = audit_count(db) // 2
    by_hand(db, f"UPDATE audit_entries SET details = '{{}}' WHERE seq = {seq}")  # noqa: S608
    out = run(copy, "audit", "verify")
    assert out.returncode == 1
    assert f"audit trail BROKEN at entry {seq}:" in out.stderr
    assert "edited" in out.stderr
    assert f"({seq - 1} entries verified before it)" in out.stderr


def test_audit_verify_names_a_deleted_entry(copy: Path) -> None:
    db = copy / "twincity.db"
    seq = audit_count(db) - 2
    by_hand(db, f"DELETE FROM audit_entries WHERE seq = {seq}")  # noqa: S608
    out = run(copy, "audit", "verify")
    assert out.returncode == 1
    # named by the entry after the gap, in the one chain SQLite has
    assert f"BROKEN at entry {seq + 1}: entry {seq} of chain 0 is missing" in out.stderr


def test_the_file_refuses_edits_while_the_triggers_stand(copy: Path) -> None:
    conn = sqlite3.connect(copy / "twincity.db")
    try:
        for sql in ("UPDATE audit_entries SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_entries WHERE seq = 1"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    assert run(copy, "audit", "verify").returncode == 0


def test_apikey_create_prints_the_key_once(copy: Path) -> None:
    out = run(copy, "apikey", "create", "--member", "CQH1", "--scope", "identity.read", "--name", "his")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    key = lines[0]
    m = re.fullmatch(r"tck_([0-9a-f]{12})_([A-Za-z0-9_-]{40,})", key)
    assert m, key
    assert key not in out.stderr
    assert "not shown again" in out.stderr
    prefix, clear = m.groups()
    with sqlite3.connect(copy / "twincity.db") as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM api_keys").fetchone())
        trail = conn.execute("SELECT * FROM audit_entries WHERE action = 'apikey.create'").fetchall()
    assert row["prefix"] == prefix
    assert row["member_code"] == "CQH1"
    assert json.loads(row["scopes"]) == ["identity.read"]
    assert row["secret_hash"] == hashlib.sha256(clear.encode()).hexdigest()
    assert clear not in repr(row)
    assert len(trail) == 1 and clear not in repr(tuple(trail[0]))
    assert run(copy, "audit", "verify").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--member", "NOPE", "--scope", "identity.read"], "no member NOPE"),
        (["--member", "CQH1", "--scope", "identity.everything"], "unknown scope(s): identity.everything"),
    ],
    ids=["unknown-member", "unknown-scope"],
)
def test_apikey_create_refusals(copy: Path, args: list[str], message: str) -> None:
    out = run(copy, "apikey", "create", *args)
    assert out.returncode == 1
    assert message in out.stderr
    assert "tck_" not in out.stdout
    with sqlite3.connect(copy / "twincity.db") as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 0


def test_commands_on_a_database_without_schema_say_so(tmp_path: Path) -> None:
    for args in (["audit", "verify"], ["demo", "load"], ["apikey", "create", "--member", "CQH1"]):
        out = run(tmp_path / "var", *args)
        assert out.returncode == 1, args
        assert "twincity db upgrade" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["worker"],
        ["db"],
        ["db", "upgrade"],
        ["demo"],
        ["demo", "load"],
        ["audit"],
        ["audit", "verify"],
        ["identity"],
        ["identity", "check"],
        ["apikey"],
        ["apikey", "create"],
    ],
    ids=lambda c: " ".join(c) or "twincity",
)
def test_help(bare: Path, command: list[str]) -> None:
    out = run(bare, *command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: ")
    assert " ".join(command) in out.stdout.splitlines()[0]
    # asking for help changes nothing on disk
    assert not bare.exists()


def test_help_works_in_production_before_secrets_are_set(tmp_path: Path) -> None:
    out = run(tmp_path / "var", "--help", env="production")
    assert out.returncode == 0, out.stderr
    assert "audit" in out.stdout and "identity" in out.stdout


def test_production_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    out = run(tmp_path / "var", "audit", "verify", env="production")
    assert out.returncode == 1
    assert "TWINCITY_DATA_KEY" in out.stderr and "TWINCITY_TOKEN_KEY" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "var" / "secrets.json").exists()


def test_production_refuses_to_start_without_the_housing_signing_key(tmp_path: Path) -> None:
    """Read at its first use, a missing key would surface as a resident's failed certificate download, long after
    the start: production checks it as it checks the other secrets."""
    keys = {name: secrets.token_urlsafe(32) for name in ("data_key", "index_key", "session_key", "token_key")}
    assert run(tmp_path / "var", "db", "upgrade", env="production", **keys).returncode == 0
    out = run(tmp_path / "var", "audit", "verify", env="production", **keys)
    assert out.returncode == 1
    assert "TWINCITY_HOUSING_SIGNING_KEY" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "var" / "housing-signing-key.json").exists()  # nothing is made for production

    out = run(
        tmp_path / "var", "audit", "verify", env="production", housing_signing_key=secrets.token_urlsafe(32), **keys
    )
    assert out.returncode == 0, out.stderr


def test_malformed_secret_is_named_not_shown(tmp_path: Path) -> None:
    out = run(tmp_path / "var", "audit", "verify", token_key="sekrit-but-too-short")
    assert out.returncode == 1
    assert "TWINCITY_TOKEN_KEY must be 32 random bytes" in out.stderr
    assert "sekrit" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
