"""Metrics, traces and structured logs from the retry hook: Prometheus, OpenTelemetry, structlog.

A hook receives a frozen ``RetryDetails`` on every scheduled retry and whenever an operation
stops with an error. Three integrations, none of which the library needs installed:

- Prometheus: ``uow_retries_total{operation, kind, attempt}`` counts scheduled reruns,
  ``uow_give_ups_total{operation, kind, reason}`` operations that ran out of attempts or time;
- OpenTelemetry: an event on the current span per retry and per give-up;
- structlog: the library's own log records (logger ``retrying_uow``) rendered as JSON, with
  their ``uow_*`` fields as keys (``RetryDetails.log_fields()`` gives the same fields).

The in-memory adapter forces the failures: one deadlock (retried once), then a connection
lost on every attempt (given up after three). The example prints what each integration saw
and checks the counter values.

    pip install prometheus-client opentelemetry-sdk structlog
    python examples/observability.py
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter, generate_latest

from adapters.memory import InMemoryRepository, InMemoryUnitOfWork
from uow import Reason, RetryDetails, RetryPolicy, repository
from uow.testing import Fault, inject, set_testing

# --- Prometheus ---------------------------------------------------------------------------
registry = CollectorRegistry()  # your application's registry (or the default one)
RETRIES = Counter(
    "uow_retries",
    "Scheduled reruns of a business operation, by the attempt that failed",
    ["operation", "kind", "attempt"],
    registry=registry,
)
GIVE_UPS = Counter(
    "uow_give_ups",
    "Business operations that stopped retrying (attempts or time budget exhausted)",
    ["operation", "kind", "reason"],
    registry=registry,
)


def prometheus_hook(details: RetryDetails) -> None:
    if details.will_retry:
        RETRIES.labels(details.operation, details.kind.value, str(details.attempt)).inc()
    elif details.reason is not Reason.NOT_RETRYABLE:  # hooks also see errors never retried
        GIVE_UPS.labels(details.operation, details.kind.value, details.reason).inc()


# --- OpenTelemetry ------------------------------------------------------------------------
def opentelemetry_hook(details: RetryDetails) -> None:
    if details.reason is Reason.NOT_RETRYABLE:
        return  # the span records the exception itself
    attributes: dict[str, str | int | float | bool] = {
        key: value
        for key, value in details.log_fields().items()
        if isinstance(value, str | int | float | bool)  # OpenTelemetry's attribute types
    }
    name = "uow.retry" if details.will_retry else "uow.give_up"
    trace.get_current_span().add_event(name, attributes)


# --- structlog: render the library's stdlib log records, uow_* extras included -------------
def log_as_json() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        )
    )
    library = logging.getLogger("retrying_uow")
    library.addHandler(handler)
    library.setLevel(logging.WARNING)


# --- a domain operation on the in-memory adapter -----------------------------------------
@dataclass
class Task:
    name: str
    id: int | None = None


class TaskRepository(InMemoryRepository[Task]):
    pass


class Tasks(InMemoryUnitOfWork):
    tasks = repository(TaskRepository)


def create_task(uow: Tasks, name: str) -> Task:
    return uow.tasks.add(Task(name=name))


def force_failures(tracer: trace.Tracer) -> None:
    """One deadlock, retried; then a connection lost on every attempt, given up after three."""
    units = Tasks.factory(
        policy=RetryPolicy(attempts=3), hooks=[prometheus_hook, opentelemetry_hook]
    )
    with set_testing(True):  # no backoff sleeps in this demo
        with tracer.start_as_current_span("import report"), inject(Fault.deadlock(at=1)):
            units.run(create_task, "report")  # the first attempt deadlocks, the second commits
        with (
            tracer.start_as_current_span("import archive"),
            inject(Fault.disconnect(at=1, times=3)),  # every attempt loses its connection
        ):
            try:
                units.run(create_task, "archive")
            except Exception as error:  # noqa: BLE001 -- the caller gets the driver's error back
                print(f"gave up: {error!r}")


EXPECTED = {
    ("uow_retries_total", ("create_task", "deadlock", "1")): 1.0,
    ("uow_retries_total", ("create_task", "disconnect", "1")): 1.0,
    ("uow_retries_total", ("create_task", "disconnect", "2")): 1.0,
    ("uow_give_ups_total", ("create_task", "disconnect", "attempts exhausted")): 1.0,
}


def main() -> int:
    log_as_json()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    print("--- structlog: the library's log lines as JSON")
    force_failures(provider.get_tracer("example"))

    print("--- Prometheus")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("uow_") and "_created" not in line:
            print(line)
    print("--- OpenTelemetry span events")
    events = [(span.name, event) for span in spans.get_finished_spans() for event in span.events]
    for span_name, span_event in events:
        attributes = {key: str(value) for key, value in (span_event.attributes or {}).items()}
        print(
            f"{span_name}: {span_event.name} attempt={attributes['uow_attempt']} "
            f"kind={attributes['uow_kind']} errno={attributes['uow_errno']}"
        )

    for (name, (operation, kind, last)), value in EXPECTED.items():
        label = "attempt" if name == "uow_retries_total" else "reason"
        labels = {"operation": operation, "kind": kind, label: last}
        got = registry.get_sample_value(name, labels)
        if got != value:
            print(f"FAILED: {name}{labels} is {got}, expected {value}")
            return 1
    if len(events) != len(EXPECTED):  # one span event per retry and per give-up
        print(f"FAILED: {len(events)} span events")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
