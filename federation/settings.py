"""Typed settings, read from ``TWINCITY_*`` variables and an optional TOML file.

The embedded default (SQLite, tantivy, in-process jobs) needs no setting at all.
Secrets are generated into the data directory on first start outside production;
production refuses to start without them.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

log = logging.getLogger(__name__)

SECRET_NAMES = ("data_key", "index_key", "session_key", "token_key")


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SearchEngine(enum.StrEnum):
    TANTIVY = "tantivy"
    ELASTICSEARCH = "elasticsearch"


class MissingSecrets(RuntimeError):
    """Production was started without the secrets it must be given."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWINCITY_", extra="forbid", env_nested_delimiter="__")

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default sqlite+aiosqlite in the data directory"
    )
    search_engine: SearchEngine = SearchEngine.TANTIVY
    elasticsearch_url: str | None = None
    broker_url: str | None = Field(
        default=None, description="Celery broker (redis://, amqp://); unset runs jobs in the service process"
    )
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    max_request_bytes: int = 1024 * 1024
    log_level: str = "INFO"
    log_json: bool = True
    access_token_ttl_s: int = 3600
    session_ttl_s: int = 8 * 3600
    # login throttling: failures before backoff starts, before a temporary lock, and how long a lock lasts
    login_backoff_after: int = 3
    login_lock_after: int = 10
    login_lock_s: int = 900
    login_window_s: int = 900
    extensions: list[str] | None = Field(
        default=None, description="extension entry points to mount; default: every installed one"
    )
    # secrets: base64 (url-safe) of 32 random bytes each
    data_key: SecretStr | None = None
    index_key: SecretStr | None = None
    session_key: SecretStr | None = None
    token_key: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, v: str | None) -> str | None:
        if v and v.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + v.split("://", 1)[1]
        if v and v.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + v.split(":///", 1)[1]
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get("TWINCITY_CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'twincity.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def secret_bytes(self, name: str) -> bytes:
        value = getattr(self, name)
        if value is None:
            raise MissingSecrets(f"secret {name} is not set")
        return base64.urlsafe_b64decode(value.get_secret_value())


def _secrets_file(data_dir: Path) -> Path:
    return data_dir / "secrets.json"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings and make sure every secret is present.

    Outside production, missing secrets are generated once into
    ``<data_dir>/secrets.json`` (mode 0600) and reused on later starts.
    """
    settings = Settings(**overrides)
    missing = [n for n in SECRET_NAMES if getattr(settings, n) is None]
    if not missing:
        return settings
    if settings.env is Environment.PRODUCTION:
        names = ", ".join(f"TWINCITY_{n.upper()}" for n in missing)
        raise MissingSecrets(f"production needs its secrets set: {names}")
    path = _secrets_file(settings.data_dir)
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    created = [n for n in missing if n not in stored]
    if created:
        for name in created:
            stored[name] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
        log.warning("generated secrets %s into %s; set TWINCITY_* secrets in production", ", ".join(created), path)
    return settings.model_copy(update={n: SecretStr(stored[n]) for n in missing})
