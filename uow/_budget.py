"""The retry budget: a fleet of operations must not turn an outage into a retry storm.

Each operation's retries are bounded by its own policy; nothing else bounds them
across operations. When the database is down or overloaded, every worker retries at
once, and the load on the struggling server is multiplied by the attempts per
operation. A retry budget (Finagle's ``RetryBudget``, tower's ``Budget``, the AWS
SDKs' retry quota) caps that: first attempts deposit, retries withdraw, and a retry
the budget cannot pay is not made. The operation waits (that costs the server nothing)
and asks again; when its time budget runs out first, it gives up with its own error, and
[`uow.retry_details`][uow.retry_details] says ``Reason.RETRY_BUDGET_EXHAUSTED``. A retry
that succeeds gives its withdrawal back: only failing retries, the amplification, are
capped, and the operations still waiting go out as soon as the database answers again.

Why wait rather than give up at once: measured with 40 closed-loop writers and a server
stopped for 60 s, giving up at once made every writer start new operations back to back,
and their first attempts (which no budget holds back) reached the port 8.5 times as often
as with no budget at all (`python -m benchmarks storm`, BENCHMARKS.md).

Only the retries of what an outage produces (lost connections, an unreachable or
failing-over server, interrupted reads) are paid from the budget: deadlocks and lock
waits are answers of a working server, bounded by their own count of attempts, and a
hot row under contention must not starve its writers.

Accounting, in retries: each first attempt deposits ``ratio`` (0.2: one retry per
five operations), each retry withdraws 1, and ``min_per_second * ttl`` is a reserve
that is always there. Deposits and withdrawals count for ``ttl`` seconds, so in a
sustained outage, once the deposits made before it have expired, at most ``ratio``
times the first attempts per second plus ``min_per_second`` retries per second are
made, whatever the number of workers.

The floor: a burst of retries can spend the reserve in a few seconds, and its
withdrawals then count for ``ttl``. Were that all, operations waiting on the empty
budget would find out that the database is back only when those expire (closed-loop
workers make no new deposits while they wait). So ``min_per_second`` is also a rate
that always gets through: whenever fewer retries than that were made in the last second
or so, one more is paid for, outside the balance. When it succeeds, its refund pays for
the next waiting retry, and the waiting operations drain as soon as the database answers.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from uow._policy import RetryBudgetPolicy

_SLOTS = 20


class RetryBudget:
    """One budget, shared by every operation on a database in this process (thread-safe)."""

    def __init__(self, policy: RetryBudgetPolicy, clock: Callable[[], float]) -> None:
        """Start with the reserve only."""
        self.policy = policy
        self._clock = clock
        self._slot_seconds = policy.ttl / _SLOTS
        self._ratio = policy.ratio
        self._net = [0.0] * _SLOTS
        self._stamp = [-1] * _SLOTS
        self._lock = threading.Lock()
        self._floor = 0.0
        self._floor_at = clock()
        self.deposits = 0
        """First attempts counted since the budget was made."""
        self.withdrawals = 0
        """Retries it paid for."""
        self.refusals = 0
        """Times it could not pay for a retry (an operation waiting asks again)."""
        self.refunds = 0
        """Retries it paid for that succeeded, and gave back."""

    def _slot(self, now: float) -> int:
        """Return the slot of ``now``, emptied if it last held an expired period."""
        period = math.floor(now / self._slot_seconds)
        index = period % _SLOTS
        if self._stamp[index] != period:
            self._stamp[index] = period
            self._net[index] = 0.0
        return index

    def _balance(self, now: float) -> float:
        period = math.floor(now / self._slot_seconds)
        live = sum(
            net
            for net, stamp in zip(self._net, self._stamp, strict=True)
            if period - stamp < _SLOTS
        )
        return self.policy.min_per_second * self.policy.ttl + live

    def deposit(self) -> None:
        """Count one first attempt (every operation does: `_slot` inlined)."""
        now = self._clock()
        period = math.floor(now / self._slot_seconds)
        index = period % _SLOTS
        with self._lock:
            if self._stamp[index] != period:
                self._stamp[index] = period
                self._net[index] = 0.0
            self._net[index] += self._ratio
            self.deposits += 1

    def withdraw(self) -> bool:
        """Pay for one retry if the budget (or its floor) allows it; return whether it did."""
        with self._lock:
            now = self._clock()
            floor = self._refill_floor(now)
            if self._balance(now) >= 1.0:
                self._net[self._slot(now)] -= 1.0
            elif floor < 1.0:
                self.refusals += 1
                return False
            # Every retry spends the floor, one second of debt at most: it pays only
            # when the balance has been paying fewer than ``min_per_second`` retries.
            self._floor = max(floor - 1.0, -self.policy.min_per_second)
            self.withdrawals += 1
            return True

    def _refill_floor(self, now: float) -> float:
        rate = self.policy.min_per_second
        self._floor = min(1.0, self._floor + (now - self._floor_at) * rate)
        self._floor_at = now
        return self._floor

    def refund(self) -> None:
        """Give back one withdrawal: the retry it paid for succeeded."""
        with self._lock:
            self._net[self._slot(self._clock())] += 1.0
            self.refunds += 1

    def poll_interval(self) -> float:
        """Seconds between asks of an operation waiting for the budget to pay a retry."""
        per_second = self.policy.min_per_second
        return min(1.0, max(0.05, 1.0 / per_second)) if per_second > 0 else 1.0

    def balance(self) -> float:
        """Retries the budget would pay for right now."""
        with self._lock:
            return self._balance(self._clock())

    def __repr__(self) -> str:
        return (
            f"<RetryBudget balance={self.balance():.1f} deposits={self.deposits} "
            f"withdrawals={self.withdrawals} refusals={self.refusals} refunds={self.refunds}>"
        )


_budgets: weakref.WeakKeyDictionary[object, dict[object, RetryBudget]] = weakref.WeakKeyDictionary()
_budgets_lock = threading.Lock()


def budget_for(
    database: object, policy: RetryBudgetPolicy, clock: Callable[[], float]
) -> RetryBudget:
    """Return the budget of ``database`` for this configuration, shared by its runners."""
    with _budgets_lock:
        try:
            by_policy = _budgets.setdefault(database, {})
        except TypeError:  # not weakly referenceable: a budget of its own
            return RetryBudget(policy, clock)
        key: tuple[object, object] = (policy, clock)
        try:
            budget = by_policy.get(key)
        except TypeError:  # an unhashable clock (a fake one, say): known by its identity,
            key = (policy, id(clock))  # which the budget holding it keeps from reuse
            budget = by_policy.get(key)
        if budget is None:
            budget = by_policy[key] = RetryBudget(policy, clock)
        return budget
