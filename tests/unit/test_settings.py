"""Settings: the embedded default needs nothing, secrets are generated once outside production, production refuses
to start without them, a TOML file is read, and database URLs get their async driver."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
from pathlib import Path

import pytest

from federation.settings import (
    SECRET_NAMES,
    Environment,
    MissingSecrets,
    SearchEngine,
    Settings,
    load_settings,
)

ENV_NAMES = {f"TWINCITY_{n.upper()}" for n in SECRET_NAMES}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TWINCITY_* variable from the caller's shell (or CI) leaks in; ./var is the test's own."""
    for name in list(os.environ):
        if name.startswith("TWINCITY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def all_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {name: key() for name in sorted(ENV_NAMES)}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_embedded_default_needs_no_setting(tmp_path: Path) -> None:
    s = load_settings()
    assert s.env is Environment.DEVELOPMENT
    assert s.database_url is None
    assert s.is_sqlite
    assert s.effective_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'var' / 'twincity.db').resolve()}"
    assert s.search_engine is SearchEngine.TANTIVY
    assert s.broker_url is None
    for name in SECRET_NAMES:
        assert len(s.secret_bytes(name)) == 32


def test_secrets_generated_once_private_and_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    with caplog.at_level(logging.WARNING, logger="federation.settings"):
        first = load_settings(data_dir=data_dir)
    path = data_dir / "secrets.json"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "federation.settings"]
    assert len(warnings) == 1
    assert "secrets.json" in warnings[0].getMessage()
    stored = json.loads(path.read_text())
    assert set(stored) == set(SECRET_NAMES)
    # the log line names the secrets, never their values
    assert not any(v in warnings[0].getMessage() for v in stored.values())
    assert [p.name for p in data_dir.iterdir()] == ["secrets.json"]  # no temporary file left behind

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="federation.settings"):
        second = load_settings(data_dir=data_dir)
    assert not [r for r in caplog.records if r.name == "federation.settings"]
    for name in SECRET_NAMES:
        assert first.secret_bytes(name) == second.secret_bytes(name)
        assert getattr(first, name).get_secret_value() == stored[name]
    assert json.loads(path.read_text()) == stored


def test_secrets_differ_from_one_another(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path / "d")
    assert len({s.secret_bytes(n) for n in SECRET_NAMES}) == len(SECRET_NAMES)


def test_given_secret_is_used_and_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_key = key()
    monkeypatch.setenv("TWINCITY_TOKEN_KEY", token_key)
    s = load_settings(data_dir=tmp_path / "d")
    assert s.token_key is not None and s.token_key.get_secret_value() == token_key
    stored = json.loads((tmp_path / "d" / "secrets.json").read_text())
    assert set(stored) == {"data_key", "index_key", "session_key"}


def test_production_without_secrets_refuses_naming_the_variables(tmp_path: Path) -> None:
    with pytest.raises(MissingSecrets) as e:
        load_settings(env="production", data_dir=tmp_path / "prod")
    for name in ENV_NAMES:
        assert name in str(e.value)
    # nothing was generated
    assert not (tmp_path / "prod" / "secrets.json").exists()


def test_production_with_some_secrets_names_only_the_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINCITY_ENV", "production")
    monkeypatch.setenv("TWINCITY_DATA_KEY", key())
    monkeypatch.setenv("TWINCITY_INDEX_KEY", key())
    with pytest.raises(MissingSecrets) as e:
        load_settings(data_dir=tmp_path / "prod")
    assert "TWINCITY_SESSION_KEY" in str(e.value) and "TWINCITY_TOKEN_KEY" in str(e.value)
    assert "TWINCITY_DATA_KEY" not in str(e.value)


def test_production_ignores_a_generated_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_settings(data_dir=tmp_path / "d")  # development generates the file
    monkeypatch.setenv("TWINCITY_ENV", "production")
    with pytest.raises(MissingSecrets):
        load_settings(data_dir=tmp_path / "d")


def test_production_with_all_four_secrets_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = all_secrets(monkeypatch)
    monkeypatch.setenv("TWINCITY_ENV", "production")
    monkeypatch.setenv("TWINCITY_DATA_DIR", str(tmp_path / "prod"))
    s = load_settings()
    assert s.env is Environment.PRODUCTION
    assert s.data_dir == tmp_path / "prod"
    for name in SECRET_NAMES:
        assert s.secret_bytes(name) == base64.urlsafe_b64decode(values[f"TWINCITY_{name.upper()}"])
    assert not (tmp_path / "prod").exists()


def test_secret_without_base64_padding_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what `python -c "import secrets; print(secrets.token_urlsafe(32))"` prints: 43 characters, no "="
    raw = secrets.token_bytes(32)
    monkeypatch.setenv("TWINCITY_TOKEN_KEY", base64.urlsafe_b64encode(raw).decode().rstrip("="))
    s = load_settings(data_dir=tmp_path / "d")
    assert s.secret_bytes("token_key") == raw


@pytest.mark.parametrize("bad", ["abc", base64.urlsafe_b64encode(b"short").decode(), "!!not base64!!" * 4])
def test_malformed_secret_is_refused_naming_the_variable(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError) as e:
        Settings(data_dir=tmp_path, data_key=bad)
    assert "TWINCITY_DATA_KEY" in str(e.value)
    assert bad not in str(e.value)  # a secret, even a malformed one, is never echoed into a log


def test_corrupt_secrets_file_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "secrets.json").write_text("{not json")
    with pytest.raises(MissingSecrets, match="not valid JSON"):
        load_settings(data_dir=d)


def test_toml_config_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "twincity.toml"
    config.write_text(
        "\n".join(
            [
                'database_url = "postgres://app@db.example/twincity"',
                "port = 9090",
                'search_engine = "elasticsearch"',
                'elasticsearch_url = "http://es:9200"',
                "login_lock_after = 7",
                f'data_dir = "{(tmp_path / "from-toml").as_posix()}"',
            ]
        )
    )
    monkeypatch.setenv("TWINCITY_CONFIG", str(config))
    s = load_settings()
    assert s.port == 9090
    assert s.search_engine is SearchEngine.ELASTICSEARCH
    assert s.elasticsearch_url == "http://es:9200"
    assert s.login_lock_after == 7
    assert s.data_dir == tmp_path / "from-toml"
    assert s.database_url == "postgresql+asyncpg://app@db.example/twincity"
    assert not s.is_sqlite
    # variables win over the file
    monkeypatch.setenv("TWINCITY_PORT", "9191")
    assert load_settings().port == 9191


def test_toml_unknown_setting_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "twincity.toml"
    config.write_text("prot = 9090\n")
    monkeypatch.setenv("TWINCITY_CONFIG", str(config))
    with pytest.raises(ValueError, match="prot"):
        load_settings()


def test_missing_toml_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINCITY_CONFIG", str(tmp_path / "nowhere.toml"))
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        load_settings()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ],
)
def test_database_url_gets_the_async_driver(tmp_path: Path, given: str, expected: str) -> None:
    s = load_settings(data_dir=tmp_path / "d", database_url=given)
    assert s.database_url == expected
    assert s.effective_database_url == expected
    assert s.is_sqlite is expected.startswith("sqlite")


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINCITY_DATABASE_URL", "postgres://app@db/twincity")
    assert load_settings(data_dir=tmp_path / "d").effective_database_url == "postgresql+asyncpg://app@db/twincity"


def test_throttle_policy_is_injectable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINCITY_LOGIN_BACKOFF_AFTER", "2")
    s = load_settings(data_dir=tmp_path / "d", login_lock_after=4, login_lock_s=5)
    assert (s.login_backoff_after, s.login_lock_after, s.login_lock_s) == (2, 4, 5)


def test_the_embedded_engine_rebuilds_within_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from federation.services import _search_engine

    assert _search_engine(Settings(data_dir=tmp_path)).rebuild_heap == 1024 * 1_000_000
    monkeypatch.setenv("TWINCITY_SEARCH_REBUILD_MB", "256")
    assert _search_engine(load_settings()).rebuild_heap == 256 * 1_000_000
    monkeypatch.setenv("TWINCITY_SEARCH_REBUILD_MB", "16")
    with pytest.raises(ValueError, match="search_rebuild_mb"):
        load_settings()


def test_retired_data_keys_are_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, older = key(), key()
    monkeypatch.setenv("TWINCITY_RETIRED_DATA_KEYS", f"{old}, {older}")
    settings = load_settings(env="test", data_dir=tmp_path / "var")
    assert settings.retired_data_key_bytes() == [base64.urlsafe_b64decode(k) for k in (old, older)]


def test_without_retired_data_keys_there_are_none(tmp_path: Path) -> None:
    assert load_settings(env="test", data_dir=tmp_path / "var").retired_data_key_bytes() == []


def test_a_malformed_retired_data_key_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWINCITY_RETIRED_DATA_KEYS", f"{key()},not-a-key")
    with pytest.raises(ValueError, match="TWINCITY_RETIRED_DATA_KEYS") as err:
        load_settings(env="test", data_dir=tmp_path / "var")
    assert "not-a-key" not in str(err.value)


def test_a_data_key_changed_in_the_secrets_file_keeps_the_old_one_as_retired(tmp_path: Path) -> None:
    first = load_settings(env="test", data_dir=tmp_path / "var")
    path = tmp_path / "var" / "secrets.json"
    stored = json.loads(path.read_text())
    stored["retired_data_keys"], stored["data_key"] = stored["data_key"], key()
    path.write_text(json.dumps(stored))
    second = load_settings(env="test", data_dir=tmp_path / "var")
    assert second.secret_bytes("data_key") != first.secret_bytes("data_key")
    assert second.retired_data_key_bytes() == [first.secret_bytes("data_key")]
    stored["retired_data_keys"] = "nonsense"
    path.write_text(json.dumps(stored))
    with pytest.raises(MissingSecrets, match="retired_data_keys"):
        load_settings(env="test", data_dir=tmp_path / "var")
