"""Reading a policy model (`RetryPolicy`) from environment variables, with errors that name them."""

from __future__ import annotations

import difflib
import json
import os
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from uow._kinds import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping


_NONE = {"", "none", "null"}
_NOT_POLICY = frozenset({"RETRYING_UOW_STRICT"})
"""Variables with the prefix that configure something else than the policy."""
M = TypeVar("M", bound=BaseModel)

_KINDS = frozenset(kind.value for kind in ErrorKind)
_EXPECTED = {
    "attempts": "a whole number from 1 to 1000, or none",
    "timeout": "seconds, a number above 0 and at most 86400",
    "wait_initial": "seconds, a number from 0 to 60",
    "wait_max": "seconds, a number from 0 to 300",
    "wait_exp_base": "a number from 1 to 10",
    "warn_transaction_after": "seconds, a number above 0, or none",
    "warn_idle_transaction": "true or false",
    "retry": "true or false",
    "ratio": "retries per first attempt, a number from 0 to 100",
    "min_per_second": "retries per second, a number from 0 to 100000",
    "ttl": "seconds, a number from 1 to 3600",
    "retry_budget": 'none, or a JSON object, e.g. {"ratio": 0.2, "min_per_second": 10}',
}
_KIND_FORM = 'a JSON object of the kind\'s settings, e.g. {"attempts": 3, "wait_max": 1}'


def read_policy(cls: type[M], prefix: str, environ: Mapping[str, str] | None = None) -> M:
    """Build a policy from ``environ`` (the process environment by default)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    problems: list[InitErrorDetails] = []
    fields = set(cls.model_fields)
    nested = _nested_fields(cls)
    valid = sorted(
        [prefix + name.upper() for name in fields]
        + [
            f"{prefix}{group.upper()}__{name.upper()}"
            for group, names in nested.items()
            for name in names
        ]
    )
    for variable, raw in sorted(environ.items()):
        if not variable.upper().startswith(prefix.upper()) or variable.upper() in _NOT_POLICY:
            continue
        path = variable[len(prefix) :].lower().split("__")
        if len(path) == 1 and path[0] in nested and _scalar(raw) is not None:
            settings = _json_object(variable, raw, problems)
            if settings is not None:
                data.setdefault(path[0], {}).update(settings)
                sources[(path[0],)] = variable
        elif len(path) == 1 and path[0] in fields:
            data[path[0]] = _scalar(raw)
            sources[(path[0],)] = variable
        elif len(path) == 2 and path[1] in nested.get(path[0], ()):  # noqa: PLR2004
            data.setdefault(path[0], {})[path[1]] = _scalar(raw)
            sources[(path[0], path[1])] = variable
        else:
            problems.append(_unknown(variable, raw, valid))
    if not problems:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems.extend(_renamed(error, sources, prefix))
    raise ValidationError.from_exception_data(f"{cls.__name__}.from_env", problems)


def _nested_fields(cls: type[BaseModel]) -> dict[str, frozenset[str]]:
    """Map the policy's fields that are models of their own (kinds, budget) to their fields."""
    nested: dict[str, frozenset[str]] = {}
    for name, field in cls.model_fields.items():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                nested[name] = frozenset(candidate.model_fields)
    return nested


def _scalar(raw: str) -> str | None:
    return None if raw.strip().lower() in _NONE else raw.strip()


def _json_object(
    variable: str, raw: str, problems: list[InitErrorDetails]
) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    problems.append(_problem(variable, raw, "not a JSON object", _KIND_FORM))
    return None


def _unknown(variable: str, raw: str, valid: list[str]) -> InitErrorDetails:
    close = difflib.get_close_matches(variable.upper(), valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"valid names: {', '.join(valid)}"
    return _problem(variable, raw, "names no setting of the retry policy", hint)


def _renamed(
    error: ValidationError, sources: dict[tuple[str, ...], str], prefix: str
) -> list[InitErrorDetails]:
    renamed: list[InitErrorDetails] = []
    for detail in error.errors(include_url=False):
        loc = tuple(str(part) for part in detail["loc"])
        variable = sources.get(loc[:2]) or sources.get(loc[:1]) or prefix + "_".join(loc).upper()
        field = loc[-1] if loc else ""
        expected = _EXPECTED.get(field, _KIND_FORM if field in _KINDS else "see RetryPolicy")
        renamed.append(_problem(variable, detail.get("input"), detail["msg"], expected))
    return renamed


def _problem(variable: str, raw: object, message: str, expected: str) -> InitErrorDetails:
    return {
        "type": PydanticCustomError(
            "environment_variable",
            "{variable}: {message}; expected {expected}",
            {"variable": variable, "message": message, "expected": expected},
        ),
        "loc": (variable,),
        "input": raw,
    }
