"""Measuring what blocks an event loop: a ticker, and a profile of every callback it runs.

The ticker records how late each ``asyncio.sleep(0.001)`` wakes up: the loop's lag, as a
user of the loop feels it. It cannot tell why a wake-up was late: a loop that runs a
hundred busy tasks per iteration makes it wait too, without anything blocking. So every
callback the loop runs (a task step is one) is timed as well, with the thread's CPU time
and its voluntary and involuntary context switches, and a watchdog thread samples the loop
thread's stack while a callback is still running after the stall threshold. A long step
is then one of:

- *blocked*: it waited in a system call (voluntary context switches, little CPU): a
  blocking call on the loop (``time.sleep``, a sync socket read, a contended lock);
- *busy*: it computed for longer than the threshold itself (CPU time, garbage collection
  left out and reported apart);
- *gc*: the interpreter's garbage collector ran a long collection inside it (reported
  apart: the interpreter's, not a call of any code on the loop);
- *held*: other threads of the process ran for most of it (the test's helper threads, which
  restart the server): the loop thread waited for the interpreter lock they held, not for
  anything the code on the loop asked for;
- *preempted*: none of these, the operating system gave the CPU to another process
  (involuntary switches): the machine's noise, which the idle baseline shows too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KINDS = ("blocked", "busy", "gc", "held", "preempted")
STALL = 0.010
"""Seconds: a callback running this long holds up every other task of the loop."""
TICK = 0.001


@dataclass(frozen=True)
class Step:
    """One callback of the loop that ran longer than the stall threshold."""

    wall: float
    cpu: float
    gc: float
    """Seconds of garbage collection inside it (counted apart from ``cpu``)."""
    held: float
    """CPU seconds the process's other threads used while it ran (holding the GIL)."""
    voluntary: int
    involuntary: int
    callback: str
    stack: tuple[str, ...]
    """The loop thread's innermost frames, sampled while it ran (``file:line function``)."""

    @property
    def kind(self) -> str:
        if self.gc >= STALL:
            return "gc"
        if self.held >= self.wall / 2:
            return "held"
        if self.voluntary and self.cpu < self.wall / 2:
            return "blocked"
        if self.cpu - self.gc >= STALL:
            return "busy"
        return "preempted"

    def describe(self) -> str:
        where = " <- ".join(self.stack[-6:][::-1]) if self.stack else "(not sampled)"
        return (
            f"{self.kind}: {self.wall * 1e3:.1f} ms wall, {self.cpu * 1e3:.1f} ms CPU "
            f"({self.gc * 1e3:.1f} ms GC, {self.held * 1e3:.1f} ms held), {self.voluntary} "
            f"voluntary / {self.involuntary} involuntary switches; {self.callback}; at {where}"
        )


@dataclass
class Profile:
    """What one measured window saw: the ticker's lags and the long callbacks."""

    lags: list[float] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    callbacks: int = 0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.lags)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    def of_kind(self, kind: str) -> list[Step]:
        return [step for step in self.steps if step.kind == kind]

    def summary(self) -> str:
        kinds = {kind: len(self.of_kind(kind)) for kind in KINDS}
        return (
            f"{len(self.lags)} ticks, lag p50 {statistics.median(self.lags or [0]) * 1e3:.2f} ms,"
            f" p99 {self.percentile(0.99) * 1e3:.2f}, p99.9 {self.percentile(0.999) * 1e3:.2f},"
            f" max {self.worst * 1e3:.2f} ms; {self.callbacks} callbacks, over "
            f"{STALL * 1e3:.0f} ms: {kinds}"
        )


class _Current:
    """The callback the loop thread is running now (shared with the watchdog)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.sample: tuple[str, ...] = ()
        self.running = False


class LoopProfiler:
    """Time every callback of the running loop, and sample the stack of the long ones."""

    def __init__(self) -> None:
        self.profile = Profile()
        self._current = _Current()
        self._loop_thread = threading.get_ident()
        self._gc = 0.0
        self._gc_started = 0.0
        self._stop = threading.Event()

    @contextlib.contextmanager
    def measuring(self) -> Iterator[Profile]:
        """Profile the callbacks the loop of this thread runs inside the block."""
        self._loop_thread = threading.get_ident()
        original: Callable[[Any], None] = asyncio.events.Handle._run
        profiler = self

        def timed(handle: Any) -> None:
            current = profiler._current
            before = resource.getrusage(resource.RUSAGE_THREAD)
            others = profiler._others_cpu()
            cpu = time.thread_time()
            profiler._gc = 0.0
            current.sample = ()
            current.started = time.perf_counter()
            current.running = True
            try:
                original(handle)
            finally:
                current.running = False
                wall = time.perf_counter() - current.started
                profiler.profile.callbacks += 1
                if wall >= STALL:
                    after = resource.getrusage(resource.RUSAGE_THREAD)
                    profiler.profile.steps.append(
                        Step(
                            wall=wall,
                            cpu=time.thread_time() - cpu,
                            gc=profiler._gc,
                            held=profiler._others_cpu() - others,
                            voluntary=after.ru_nvcsw - before.ru_nvcsw,
                            involuntary=after.ru_nivcsw - before.ru_nivcsw,
                            callback=_describe(handle),
                            stack=current.sample,
                        )
                    )

        watchdog = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        asyncio.events.Handle._run = timed  # type: ignore[method-assign, assignment]
        gc.callbacks.append(self._on_gc)
        watchdog.start()
        try:
            yield self.profile
        finally:
            self._stop.set()
            asyncio.events.Handle._run = original  # type: ignore[method-assign, assignment]
            gc.callbacks.remove(self._on_gc)
            watchdog.join(5)

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if threading.get_ident() != self._loop_thread:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._gc += time.perf_counter() - self._gc_started
            self._gc_started = 0.0

    def _others_cpu(self) -> float:
        """CPU seconds used so far by the other threads of the process (but the watchdog)."""
        total = 0.0
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None or ident == self._loop_thread or thread.name == "loop-watchdog":
                continue
            with contextlib.suppress(OSError, ProcessLookupError):  # it has just ended
                total += time.clock_gettime(time.pthread_getcpuclockid(ident))
        return total

    def _watch(self) -> None:
        current = self._current
        while not self._stop.wait(0.002):
            started = current.started
            if not current.running or current.sample:
                continue
            if time.perf_counter() - started < STALL:
                continue
            frame = sys._current_frames().get(self._loop_thread)  # the loop's stack
            if frame is None or current.started != started:
                continue
            current.sample = tuple(
                f"{'/'.join(entry.filename.split('/')[-3:])}:{entry.lineno} {entry.name}"
                for entry in traceback.extract_stack(frame)[-14:]
            )


def _describe(handle: Any) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task step of {getattr(coro, '__qualname__', coro)!s}"
    return repr(callback)[:120]


async def tick(profile: Profile, stop: asyncio.Event) -> None:
    """Record how late each 1 ms sleep wakes up, until ``stop`` is set."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        profile.lags.append(max(time.perf_counter() - started - TICK, 0.0))
