"""The retry policy: how often, how long and how patiently an operation is rerun."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from uow._env import read_policy
from uow._kinds import ErrorKind

ENV_PREFIX = "RETRYING_UOW_"
"""Prefix of the environment variables read by `RetryPolicy.from_env`."""

_MAX_EXPONENT = 64  # beyond it every backoff step is at its ceiling anyway


def _not_a_bool(value: object) -> object:
    """Refuse ``True``/``False`` where a number is meant (pydantic would read them as 1/0)."""
    if isinstance(value, bool):
        msg = f"expected a number, not the boolean {value}"
        raise ValueError(msg)  # noqa: TRY004 -- pydantic reports ValueError as a validation error
    return value


Count = Annotated[int, BeforeValidator(_not_a_bool)]
Seconds = Annotated[float, BeforeValidator(_not_a_bool)]


class KindPolicy(BaseModel):
    """Settings for one error kind; ``None`` means "use the policy-wide value"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: bool = True
    """Whether errors of this kind rerun the operation at all."""
    attempts: Count | None = Field(default=None, ge=1, le=1000)
    """Most attempts when the last failure was of this kind (``None``: only the
    policy-wide ``attempts``, if set, and the time budget bound them)."""
    wait_initial: Seconds | None = Field(default=None, ge=0, le=60)
    """First backoff step for this kind, in seconds."""
    wait_max: Seconds | None = Field(default=None, ge=0, le=300)
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


class RetryBudgetPolicy(BaseModel):
    """How many retries a process may make across its operations after lost connections.

    With the defaults, such retries may reach 20% of first attempts plus 10 per second
    (Finagle's defaults), each counted for 30 s (an operation's default time budget):
    isolated failures (a restart under ordinary load) never meet it; a storm of retries
    against a database that stays down does. Deadlocks and lock waits keep their own
    count and are not paid from it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio: Seconds = Field(default=0.2, ge=0, le=100)
    """Retries allowed per first attempt."""
    min_per_second: Seconds = Field(default=10.0, ge=0, le=100_000)
    """Retries per second allowed whatever the traffic: a reserve of ``min_per_second * ttl``
    retries, and a rate that still gets through once a burst has spent it."""
    ttl: Seconds = Field(default=30.0, ge=1, le=3_600)
    """Seconds a first attempt's deposit, and a retry's withdrawal, count (by default the
    default time budget of an operation: what was deposited before an outage funds the
    retries of the operations it caught)."""


class RetryPolicy(BaseModel):
    """When and how a failed operation is rerun. Frozen, validated, bounded by default.

    The time budget always holds: no attempt starts once ``timeout`` seconds have
    passed since the first one began, and every wait of an attempt (connecting, each
    read, a pooled connection) ends with it. Counts bound some kinds as well: by
    default deadlocks and lock waits get 5 attempts, while the kinds a restart or a
    failover produce (``disconnect``, ``unavailable``, ``failover``) are retried until
    the time budget is spent. ``attempts`` caps every kind.

    The wait before retry number *n* (1 for the first retry) is drawn uniformly
    ("full jitter", so that clients retrying at once spread out):

        uniform(0, min(wait_max, wait_initial * wait_exp_base ** (n - 1)))

    with ``wait_initial`` and ``wait_max`` taken from the error kind's settings when it
    sets them. A retry whose wait would end past the time budget is not made.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: Count | None = Field(default=None, ge=1, le=1000)
    """Most attempts per operation, the first one included, whatever the kind
    (``None``: each kind's own count, or the time budget, bounds them)."""
    timeout: Seconds = Field(default=30.0, gt=0, le=86_400)
    """Total time budget of one operation in seconds, waits included."""
    wait_initial: Seconds = Field(default=0.1, ge=0, le=60)
    """First backoff step in seconds."""
    wait_max: Seconds = Field(default=5.0, ge=0, le=300)
    """Largest backoff step in seconds."""
    wait_exp_base: Seconds = Field(default=2.0, ge=1, le=10)
    """Growth factor of the backoff."""

    warn_transaction_after: Seconds | None = Field(default=10.0, gt=0, le=86_400)
    """Log a WARNING when an attempt keeps its transaction open longer (``None``: never)."""
    warn_idle_transaction: bool = True
    """Log a WARNING when an attempt leaves its transaction idle past the server's
    ``wait_timeout`` (MySQL/MariaDB), the classic cause of "server has gone away"."""

    retry_budget: RetryBudgetPolicy | None = RetryBudgetPolicy()
    """The retries all operations on the same database may make together (``None``: no cap)."""

    disconnect: KindPolicy = KindPolicy(wait_initial=0.02)
    unavailable: KindPolicy = KindPolicy()
    deadlock: KindPolicy = KindPolicy(attempts=5, wait_initial=0.01)
    lock_wait: KindPolicy = KindPolicy(attempts=5)
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

    def max_attempts(self, kind: ErrorKind) -> int | None:
        """Return the most attempts allowed when the last failure was of this kind.

        ``None`` means no count applies: the time budget alone bounds the operation.
        """
        caps = [cap for cap in (self.attempts, self.for_kind(kind).attempts) if cap is not None]
        return min(caps) if caps else None

    def backoff(self, kind: ErrorKind, retry_number: int, jitter: float) -> float:
        """Return the wait before retry ``retry_number`` (from 1); ``jitter`` is in [0, 1)."""
        settings = self.for_kind(kind)
        initial = self.wait_initial if settings.wait_initial is None else settings.wait_initial
        ceiling = self.wait_max if settings.wait_max is None else settings.wait_max
        exponent = min(retry_number - 1, _MAX_EXPONENT)
        return jitter * min(ceiling, initial * self.wait_exp_base**exponent)

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

        ``RETRYING_UOW_TIMEOUT=10``, ``RETRYING_UOW_ATTEMPTS=none``, and per kind with a
        double underscore (``RETRYING_UOW_DEADLOCK__ATTEMPTS=10``) or as a JSON object
        (``RETRYING_UOW_DEADLOCK='{"attempts": 10}'``). Every error names the variable
        and the expected form; a variable with the prefix that names no setting is an
        error too, naming the closest valid one.
        """
        return read_policy(cls, prefix)
