"""Typed settings, read from ``TWINCITY_*`` variables and an optional TOML file.

The embedded default (SQLite, tantivy, in-process jobs) needs no setting at all.
Secrets are generated into the data directory on first start outside production;
production refuses to start without them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

log = logging.getLogger(__name__)

SECRET_NAMES = ("data_key", "index_key", "session_key", "token_key")
SECRET_BYTES = 32
POOL_SIZE, POOL_OVERFLOW = 30, 10  # database connections per process, kept and at a peak (``database_pool_*``)


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SearchEngine(enum.StrEnum):
    TANTIVY = "tantivy"
    ELASTICSEARCH = "elasticsearch"


class ConfigurationError(RuntimeError):
    """Something the service cannot run without is missing or malformed; told in a sentence, never a value."""


class MissingSecrets(ConfigurationError):
    """Production was started without the secrets it must be given."""


class Settings(BaseSettings):
    # hide_input_in_errors: a malformed secret must not be echoed into a log by its validation error
    model_config = SettingsConfigDict(
        env_prefix="TWINCITY_", extra="forbid", env_nested_delimiter="__", hide_input_in_errors=True
    )

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default sqlite+aiosqlite in the data directory"
    )
    # connections each server process keeps open, and how many more it opens at a peak (closed once returned).
    # Keep it above the requests a process serves at once: under it, every request past the pool opens and closes
    # a connection (on PostgreSQL a backend forked, authenticated and its statements prepared again, on SQLite a
    # thread). Workers x (size + overflow) must stay under PostgreSQL's max_connections (100 by default).
    database_pool_size: int = Field(default=POOL_SIZE, ge=1, le=1000)
    database_pool_overflow: int = Field(default=POOL_OVERFLOW, ge=0, le=1000)
    search_engine: SearchEngine = SearchEngine.TANTIVY
    elasticsearch_url: str | None = None
    # the embedded engine's indexing budget for a rebuild (reindex): one segment per this much, and every search
    # visits every segment; taken as documents come (1M works: one segment, 2.7 GB resident at the peak)
    search_rebuild_mb: int = Field(default=1024, ge=64, le=4000)
    broker_url: str | None = Field(
        default=None, description="Celery broker (redis://, amqp://); unset runs jobs in the service process"
    )
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    max_request_bytes: int = 1024 * 1024
    # FHIR Bundles are read past max_request_bytes up to this; a Bundle with more entries than the next runs as a job
    fhir_max_bundle_bytes: int = 32 * 1024 * 1024
    fhir_sync_max_entries: int = 1000
    # processes validating big FHIR loads beside the service; default one where there is a second core, 0: none
    fhir_validation_workers: int | None = Field(default=None, ge=0, le=64)
    log_level: str = "INFO"
    log_json: bool = True
    access_token_ttl_s: int = 3600
    session_ttl_s: int = 8 * 3600
    # login throttling: failures before backoff starts, before a temporary lock, and how long a lock lasts
    # addresses of our own reverse proxies: behind them the client is read from X-Forwarded-For
    trusted_proxies: list[str] = Field(default_factory=list)
    # argon2 cost of new password hashes (the library's defaults); tests lower it
    password_time_cost: int = Field(default=3, ge=1, le=20)
    password_memory_kib: int = Field(default=65536, ge=64, le=4 * 1024 * 1024)
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
    # data keys that encrypted values still stored, comma-separated: they decrypt, the data key encrypts; see
    # docs/operations.md (changing the data key) and ``twincity secrets reencrypt``
    retired_data_keys: SecretStr | None = None

    @field_validator(*SECRET_NAMES)
    @classmethod
    def _secret_shape(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is not None:
            _decode_secret(v.get_secret_value(), str(info.field_name))
        return v

    @field_validator("retired_data_keys")
    @classmethod
    def _retired_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            _split_keys(v.get_secret_value())
        return v

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
            # a file that is named but missing is a mistake, not an empty configuration
            if not Path(toml_file).is_file():
                raise FileNotFoundError(f"TWINCITY_CONFIG names {toml_file}, which is not a file")
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
        return _decode_secret(value.get_secret_value(), name)

    def retired_data_key_bytes(self) -> list[bytes]:
        return _split_keys(self.retired_data_keys.get_secret_value()) if self.retired_data_keys else []


def _split_keys(value: str) -> list[bytes]:
    return [_decode_secret(part, "retired_data_keys") for part in value.split(",") if part.strip()]


def _decode_secret(value: str, name: str) -> bytes:
    """32 bytes from url-safe base64; the padding may be left off (``secrets.token_urlsafe(32)`` omits it)."""
    text = value.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != SECRET_BYTES:
        # the message names the variable, never the value
        raise ValueError(f"TWINCITY_{name.upper()} must be {SECRET_BYTES} random bytes in url-safe base64")
    return raw


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _secrets_file(data_dir: Path) -> Path:
    return data_dir / "secrets.json"


def _write_private(path: Path, text: str, *, exclusive: bool) -> bool:
    """Write ``text`` readable by the owner only from the first byte, atomically.

    With ``exclusive``, an existing file is left alone and False returned.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if not exclusive:
            tmp.replace(path)
            return True
        try:
            os.link(tmp, path)  # fails when the file exists, and a reader never sees it half written
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = _read_secrets(path)
    retired = stored.get("retired_data_keys")
    if retired and "data_key" in missing and settings.retired_data_keys is None:
        # the file's data key was changed: the one it replaced, kept here, still decrypts
        try:
            _split_keys(retired)
        except ValueError:
            raise MissingSecrets(f"{path}: retired_data_keys must be keys separated by commas") from None
        settings = settings.model_copy(update={"retired_data_keys": SecretStr(retired)})
    created = [n for n in missing if n not in stored]
    if created:
        first = not stored
        stored.update({name: new_secret() for name in created})
        # Two processes starting at once on a fresh directory: the first to create the file wins, the other
        # reads what it wrote, so they never run with different keys.
        if not _write_private(path, json.dumps(stored, indent=2), exclusive=first):
            stored = _read_secrets(path)
        else:
            log.warning("generated secrets %s into %s; set TWINCITY_* secrets in production", ", ".join(created), path)
    for name in missing:
        if name not in stored:
            raise MissingSecrets(f"{path} lacks {name}")
        try:
            _decode_secret(stored[name], name)
        except ValueError:
            raise MissingSecrets(f"{path}: {name} is not {SECRET_BYTES} bytes in url-safe base64") from None
    return settings.model_copy(update={n: SecretStr(stored[n]) for n in missing})


def _read_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MissingSecrets(f"{path} is not valid JSON ({e.msg}); fix or remove it") from None
    if not isinstance(stored, dict):
        raise MissingSecrets(f"{path} must hold a JSON object of secrets")
    return {str(k): str(v) for k, v in stored.items()}
