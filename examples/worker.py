"""A job worker whose database work runs in units of work: threads, a fork, layered retries.

Each job claims itself, does its slow part (a download, a computation) holding no
session and no connection, then records its result: two short operations, each rerun
whole by the runner on a transient failure.

1. Threads: worker threads share one runner; the engine's pool is thread-safe and no
   thread keeps a connection between operations.
2. Fork (prefork task queues: Celery, RQ, gunicorn): a forked child inherits the
   parent's pooled connections, sockets included. The child's first act is
   ``engine.dispose(close=False)``: it forgets them without closing them, since
   closing would end them for the parent too. The parent's connection survives.
3. Retry layering: the runner already reruns an operation on transient database errors,
   within its policy. The queue must not retry those again (attempts would multiply: 3
   runner attempts x 3 queue deliveries = 9 hits on a struggling database). It redelivers
   a job only when the runner gave up on exhaustion (``retry_details(error).reason`` is
   "attempts exhausted" or "time budget exhausted"), after a long delay; never on an
   error the runner called not retryable, and never on a lost COMMIT.

    python examples/worker.py             # SQLite in a temporary folder
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app python examples/worker.py

Exit status 0 when every job ran to completion exactly once and the checks held.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, event, func, make_url, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adapters.sqlalchemy import (
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
    create_engine,
    repository,
)
from uow import Reason, RetryDetails, RetryPolicy, Runner, retry_details

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection, Engine

THREADS = 4
THREAD_JOBS = 12
FORKED_CHILDREN = 2
FORKED_JOBS_EACH = 3
WORK_SECONDS = 0.05
ATTEMPTS = 3  # the runner's; by default only the time budget bounds a lost connection
REQUEUE_AFTER = 0.2  # in production: minutes, longer than the outage the runner rode out
MAX_DELIVERIES = 3
REQUEUE_REASONS = frozenset({Reason.ATTEMPTS_EXHAUSTED, Reason.TIME_BUDGET_EXHAUSTED})


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "worker_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(String(200))
    worker: Mapped[str | None] = mapped_column(String(64))


class JobRepository(SqlAlchemyRepository[Job]):
    model = Job

    def statuses(self, prefix: str) -> Counter[str]:
        query = select(Job.status, func.count()).where(Job.name.startswith(prefix))
        return Counter(dict(self.session.execute(query.group_by(Job.status)).all()))


class Jobs(SqlAlchemyUnitOfWork):
    """The worker's unit of work: a fresh session per attempt, ``uow.jobs`` on it."""

    jobs = repository(JobRepository)


# --- The jobs' database work: short operations, no session kept in between -----------


def enqueue(uow: Jobs, names: Sequence[str]) -> list[int]:
    jobs = [uow.jobs.add(Job(name=name, status="queued")) for name in names]
    uow.flush()  # the INSERTs now: the ids are known before the commit
    return [job.id for job in jobs]


def claim(uow: Jobs, job_id: int, worker: str) -> str:
    job = uow.jobs.get(job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")  # permanent: never retried
    job.status, job.worker = "running", worker
    return job.name


def finish(uow: Jobs, job_id: int, result: str) -> None:
    if not result:
        raise ValueError(f"job {job_id}: empty result")  # a bug: permanent, never retried
    job = uow.jobs.get(job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    job.status, job.result = "done", result


def fail(uow: Jobs, job_id: int, reason: str) -> None:
    job = uow.jobs.get(job_id)
    if job is not None:
        job.status, job.result = "failed", reason[:200]


def statuses(uow: Jobs, prefix: str) -> Counter[str]:
    return uow.jobs.statuses(prefix)


def connection_id(uow: Jobs) -> int | None:
    """The server's id of the connection this operation runs on (MySQL/MariaDB)."""
    session = uow.session
    if session.get_bind().dialect.name not in {"mysql", "mariadb"}:
        return None
    return int(session.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def work(name: str) -> str:
    """The slow part of a job: no session, no connection held while it runs."""
    time.sleep(WORK_SECONDS)
    return "" if name.endswith("-buggy") else f"{name}: {len(name)} units"


def handle(units: Runner[Jobs], job_id: int, worker: str) -> None:
    """One delivery of one job. Claim and finish set values, so a rerun is harmless."""
    idempotent = units.using(idempotent=True)  # a lost COMMIT may simply be rerun
    name = idempotent.run(claim, job_id, worker)
    result = work(name)
    idempotent.run(finish, job_id, result)


# --- The task queue: deliveries, and what it may retry (see 3.) ----------------------


def should_requeue(error: BaseException) -> bool:
    """The queue's retry rule, layered over the runner's: redeliver only what it gave up on.

    A transient error the runner still had attempts for never reaches the queue; one it
    exhausted its attempts or time budget on may clear later, so it is redelivered
    after a long delay. Anything else (a bug, an IntegrityError, a lost COMMIT) is not
    the queue's to retry. An error without retry details did not come out of a unit of
    work: the job's own code (its download, say) follows the queue's own policy; in
    this example it is not retried.
    """
    details = retry_details(error)
    return details is not None and details.reason in REQUEUE_REASONS


@dataclass
class TaskQueue:
    """A stand-in for Celery, RQ, Dramatiq or arq: deliveries, delayed redelivery, dead letters."""

    units: Runner[Jobs]
    pending: queue.Queue[tuple[int, int] | None] = field(default_factory=queue.Queue)
    deliveries: Counter[int] = field(default_factory=Counter)
    dead: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, job_id: int, delivery: int = 1) -> None:
        self.pending.put((job_id, delivery))

    def deliver(self, job_id: int, delivery: int, worker: str) -> None:
        with self.lock:
            self.deliveries[job_id] += 1
        try:
            handle(self.units, job_id, worker)
        except Exception as error:  # noqa: BLE001 -- the queue decides, as a real one would
            details = retry_details(error)
            why = "" if details is None else f" ({details.reason}, attempt {details.attempt})"
            if should_requeue(error) and delivery < MAX_DELIVERIES:
                print(f"  queue: job {job_id} delivery {delivery} failed{why}: redeliver later")
                time.sleep(REQUEUE_AFTER)  # a real queue schedules it (countdown / eta)
                self.put(job_id, delivery + 1)
            else:
                print(f"  queue: job {job_id} delivery {delivery} failed{why}: dead letter")
                self.dead[job_id] = f"{type(error).__name__}: {error}"
                self.units.run(fail, job_id, self.dead[job_id])

    def work_threads(self, count: int) -> None:
        """Run ``count`` worker threads until every job, redeliveries included, is handled."""

        def loop(worker: str) -> None:
            while (item := self.pending.get()) is not None:
                self.deliver(*item, worker)
                self.pending.task_done()  # after a redelivery was queued, if any

        threads = [threading.Thread(target=loop, args=(f"thread-{i}",)) for i in range(count)]
        for thread in threads:
            thread.start()
        self.pending.join()
        for _ in threads:
            self.pending.put(None)
        for thread in threads:
            thread.join()


# --- 2. A forked worker process ------------------------------------------------------


def forked_worker(units: Runner[Jobs], engine: Engine, job_ids: list[int]) -> None:
    """The child's side of the fork: forget the parent's connections first, then work."""
    # The pooled connections (and their sockets) are the parent's: close=False drops
    # them from this process's pool without closing them, which would end them for the
    # parent too. Celery: the worker_process_init signal; gunicorn: post_fork;
    # multiprocessing: the initializer, or as here the target's first line.
    engine.dispose(close=False)
    for job_id in job_ids:
        handle(units, job_id, f"pid-{os.getpid()}")
    engine.dispose()  # this process's own connections: closed before it exits


def run_forked(units: Runner[Jobs], engine: Engine, prefix: str) -> bool:
    context = multiprocessing.get_context("fork")
    names = [f"{prefix}-fork-{i}" for i in range(FORKED_CHILDREN * FORKED_JOBS_EACH)]
    ids = units.run(enqueue, names)
    before = units.run(connection_id)  # the parent's pooled connection, idle from here on
    children = [
        context.Process(target=forked_worker, args=(units, engine, ids[i::FORKED_CHILDREN]))
        for i in range(FORKED_CHILDREN)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    after = units.run(connection_id)
    codes = [child.exitcode for child in children]
    done = units.run(statuses, f"{prefix}-fork-")
    print(f"  children exited {codes}; jobs: {dict(done)}")
    if before is not None:
        print(f"  parent's connection: {before} before the fork, {after} after")
    return codes == [0] * FORKED_CHILDREN and done == {"done": len(names)} and before == after


# --- 3. An outage longer than the runner's attempts ----------------------------------


@dataclass
class Outage:
    """Demo only: the database "goes away" under the next ``statements`` statements."""

    statements: int = 0

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, connection: Connection, *_: Any) -> None:
        if self.statements > 0:
            self.statements -= 1
            dbapi_connection: Any = connection.connection.dbapi_connection
            sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL: cut the link, as a
            if sock is not None:  # restart would: the statement fails with 2006
                sock.shutdown(socket.SHUT_RDWR)
            else:  # sqlite3: "Cannot operate on a closed database", also a disconnect
                dbapi_connection.close()


def run_layered(tasks: TaskQueue, outage: Outage, failed: list[RetryDetails], prefix: str) -> bool:
    [flaky, buggy] = tasks.units.run(enqueue, [f"{prefix}-flaky", f"{prefix}-buggy"])
    attempts = ATTEMPTS
    outage.statements = attempts  # every attempt of the first delivery meets the outage
    failed.clear()
    tasks.put(flaky)
    tasks.put(buggy)
    tasks.work_threads(1)
    done = tasks.units.run(statuses, prefix)
    # The hook saw every failed attempt; the redelivery then succeeded at its first.
    claims = sum(d.operation == "claim" for d in failed) + 1
    print(
        f"  flaky job: {tasks.deliveries[flaky]} deliveries, {claims} attempts in all "
        f"({attempts} by the runner, 1 after the redelivery; not up to {attempts} x {attempts})"
    )
    print(f"  buggy job: {tasks.deliveries[buggy]} delivery, dead letter: {tasks.dead.get(buggy)}")
    return (
        tasks.deliveries == Counter({flaky: 2, buggy: 1})
        and claims == attempts + 1
        and list(tasks.dead) == [buggy]
        and done == {"done": 1, "failed": 1}
    )


def main() -> int:
    logging.basicConfig(format="  %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    prefix = f"j{os.getpid()}-{time.monotonic_ns() % 100_000}"
    with tempfile.TemporaryDirectory() as workdir:
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir}/jobs.db"
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        outage = Outage()
        outage.install(engine)
        failed: list[RetryDetails] = []
        units = Jobs.factory(
            engine,
            policy=RetryPolicy(attempts=ATTEMPTS, timeout=20, wait_initial=0.05),
            hooks=[failed.append],  # each failed attempt, as a metrics hook would see it
        )
        print(f"database: {make_url(url)!r}")

        print(f"1. {THREADS} threads, {THREAD_JOBS} jobs, one runner")
        tasks = TaskQueue(units)
        for job_id in units.run(enqueue, [f"{prefix}-thread-{i}" for i in range(THREAD_JOBS)]):
            tasks.put(job_id)
        tasks.work_threads(THREADS)
        threads_done = units.run(statuses, f"{prefix}-thread-")
        print(f"  jobs: {dict(threads_done)}; deliveries: {sum(tasks.deliveries.values())}")
        threads_ok = threads_done == {"done": THREAD_JOBS} and not tasks.dead

        forked_ok = True
        if hasattr(os, "fork"):
            print(f"2. {FORKED_CHILDREN} forked children, engine.dispose(close=False) in each")
            engine.dispose()  # demo only: one pooled connection, so the check below is exact
            forked_ok = run_forked(units, engine, prefix)
        else:
            print("2. skipped: no fork() on this platform")

        print("3. an outage longer than the runner's attempts; a buggy job")
        layered_ok = run_layered(TaskQueue(units), outage, failed, f"{prefix}-layered")
        engine.dispose()
    ok = threads_ok and forked_ok and layered_ok
    print("OK" if ok else f"UNEXPECTED: threads={threads_ok} fork={forked_ok} layers={layered_ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
