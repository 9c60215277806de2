"""A connector's configuration: where the partner is, how patiently to call it, how often to sync.

Policies are data: every timeout, retry count, breaker threshold and rate is a field here, stored per connector
in the ``connectors`` table, so an administrator (or a test) changes them without touching code. Secrets (API keys,
passwords) travel separately, encrypted at rest and never rendered in a ``repr``, a log line or an answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class ConnectorConfig(BaseModel):
    """The non-secret settings of one connector. Unknown keys are refused so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, max_length=500, description="the partner's API root, http(s)://...")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=20.0, gt=0, le=600, description="per request, the whole answer")
    max_attempts: int = Field(default=4, ge=1, le=10, description="tries per call, on transient errors only")
    backoff_base_s: float = Field(default=0.5, ge=0, le=60)
    backoff_cap_s: float = Field(default=30.0, ge=0, le=600)
    retry_after_cap_s: float = Field(default=60.0, ge=0, le=3600, description="a longer Retry-After gives up")
    breaker_threshold: int = Field(default=5, ge=1, le=1000, description="consecutive failed calls that open it")
    breaker_cooldown_s: float = Field(default=60.0, ge=0, le=86400)
    rate_per_s: float = Field(default=20.0, gt=0, le=10_000, description="token bucket refill")
    burst: int = Field(default=20, ge=1, le=10_000)
    max_body_bytes: int = Field(default=8 * 2**20, ge=1024, le=512 * 2**20)
    schedule_s: float | None = Field(default=None, gt=0, description="sync period in the embedded runner")
    page_size: int = Field(default=200, ge=1, le=10_000)
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict, description="kind-specific, non-secret settings")

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")


class Secrets(BaseModel):
    """Credentials for the partner; values are ``SecretStr`` so they never print."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: dict[str, SecretStr] = Field(default_factory=dict)

    def get(self, key: str) -> str | None:
        v = self.values.get(key)
        return v.get_secret_value() if v is not None else None

    def plain(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.values.items()}
