"""The retry policy: how often, how long and how patiently an operation is rerun."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from uow._kinds import ErrorKind

ENV_PREFIX = "RETRYING_UOW_"
"""Prefix of the environment variables read by :meth:`RetryPolicy.from_env`."""


class KindPolicy(BaseModel):
    """Settings for one error kind; ``None`` means "use the policy-wide value"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: bool = True
    """Whether errors of this kind rerun the operation at all."""
    attempts: int | None = Field(default=None, ge=1, le=100)
    """A lower cap on attempts for this kind (the policy-wide ``attempts`` still applies)."""
    wait_initial: float | None = Field(default=None, ge=0, le=60)
    """First backoff step for this kind, in seconds."""
    wait_max: float | None = Field(default=None, ge=0, le=300)
    """Largest backoff step for this kind, in seconds."""

    @model_validator(mode="after")
    def _check_waits(self) -> KindPolicy:
        if (
            self.wait_initial is not None
            and self.wait_max is not None
            and self.wait_initial > self.wait_max
        ):
            msg = f"wait_initial ({self.wait_initial}) must not exceed wait_max ({self.wait_max})"
            raise ValueError(msg)
        return self


class RetryPolicy(BaseModel):
    """When and how a failed operation is rerun. Frozen, validated, bounded by default.

    Two bounds always hold: at most ``attempts`` attempts, and no attempt starts once
    ``timeout`` seconds have passed since the first one began.

    Backoff before retry number *n* (1 for the first retry) is::

        min(wait_max, wait_initial * wait_exp_base ** (n - 1) + uniform(0, wait_jitter))

    with ``wait_initial`` and ``wait_max`` taken from the error kind's settings when it
    sets them. A retry whose wait would end past the time budget is not made.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(default=5, ge=1, le=100)
    """Most attempts per operation, the first one included."""
    timeout: float = Field(default=30.0, gt=0, le=86_400)
    """Total time budget of one operation in seconds, waits included."""
    wait_initial: float = Field(default=0.1, ge=0, le=60)
    """First backoff step in seconds."""
    wait_max: float = Field(default=5.0, ge=0, le=300)
    """Largest backoff step in seconds."""
    wait_exp_base: float = Field(default=2.0, ge=1, le=10)
    """Growth factor of the backoff."""
    wait_jitter: float = Field(default=0.1, ge=0, le=60)
    """Upper bound of the random amount added to each wait, so clients spread out."""

    warn_transaction_after: float | None = Field(default=10.0, gt=0, le=86_400)
    """Log a WARNING when an attempt keeps its transaction open longer (``None``: never)."""
    warn_idle_transaction: bool = True
    """Log a WARNING when an attempt leaves its transaction idle past the server's
    ``wait_timeout`` (MySQL/MariaDB), the classic cause of "server has gone away"."""

    disconnect: KindPolicy = KindPolicy(wait_initial=0.02)
    unavailable: KindPolicy = KindPolicy()
    deadlock: KindPolicy = KindPolicy(wait_initial=0.01)
    lock_wait: KindPolicy = KindPolicy()
    failover: KindPolicy = KindPolicy(wait_initial=0.5)
    interrupted: KindPolicy = KindPolicy(retry=False)
    permanent: KindPolicy = KindPolicy(retry=False)

    @model_validator(mode="before")
    @classmethod
    def _merge_kind_settings(cls, data: Any) -> Any:
        """Let ``deadlock={"attempts": 9}`` (or a KindPolicy) change only what it sets."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for kind in ErrorKind:
            given = merged.get(kind.value)
            if isinstance(given, KindPolicy):
                given = given.model_dump(exclude_unset=True)
            if isinstance(given, dict):
                default = cls.model_fields[kind.value].default
                merged[kind.value] = {**default.model_dump(exclude_unset=True), **given}
        return merged

    @model_validator(mode="after")
    def _check_consistency(self) -> RetryPolicy:
        if self.wait_initial > self.wait_max:
            msg = f"wait_initial ({self.wait_initial}) must not exceed wait_max ({self.wait_max})"
            raise ValueError(msg)
        if self.permanent.retry:
            msg = "permanent.retry: permanent errors are never retried"
            raise ValueError(msg)
        return self

    def for_kind(self, kind: ErrorKind) -> KindPolicy:
        """Return the settings for one error kind."""
        settings: KindPolicy = getattr(self, kind.value)
        return settings

    def max_attempts(self, kind: ErrorKind) -> int:
        """Return the most attempts allowed when the last failure was of this kind."""
        cap = self.for_kind(kind).attempts
        return self.attempts if cap is None else min(cap, self.attempts)

    def backoff(self, kind: ErrorKind, retry_number: int, jitter: float) -> float:
        """Return the wait before retry ``retry_number`` (from 1); ``jitter`` is in [0, 1)."""
        settings = self.for_kind(kind)
        initial = self.wait_initial if settings.wait_initial is None else settings.wait_initial
        ceiling = self.wait_max if settings.wait_max is None else settings.wait_max
        step = initial * self.wait_exp_base ** (retry_number - 1)
        return min(ceiling, step + jitter * self.wait_jitter)

    def override(self, **changes: Any) -> RetryPolicy:
        """Return a validated copy with some settings changed (per-operation override)."""
        current = self.model_dump()
        for name, value in changes.items():
            if isinstance(value, dict) and isinstance(current.get(name), dict):
                value = {**current[name], **value}  # noqa: PLW2901 -- merged per kind
            current[name] = value
        return RetryPolicy.model_validate(current)

    @classmethod
    def from_env(cls, prefix: str = ENV_PREFIX) -> RetryPolicy:
        """Read a policy from environment variables, defaults for what is not set.

        ``RETRYING_UOW_ATTEMPTS=3``, ``RETRYING_UOW_TIMEOUT=10``, and per kind with a
        double underscore: ``RETRYING_UOW_DEADLOCK__ATTEMPTS=10``.
        """

        class _FromEnv(RetryPolicy, BaseSettings):
            model_config = SettingsConfigDict(
                env_prefix=prefix, env_nested_delimiter="__", frozen=True, extra="ignore"
            )

        return cls.model_validate(_FromEnv().model_dump())
