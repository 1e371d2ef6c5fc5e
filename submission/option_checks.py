"""Checks of option values shared by the run configuration and the executor configuration: each raises a
one-line `HarnessError` naming the option and the problem."""
from __future__ import annotations

from numbers import Integral
from typing import Any

from submission.errors import HarnessError


def is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HarnessError(f"{option} {value!r}: choose one of {', '.join(choices)}")


def sequence(option: str, values: Any) -> tuple:
    """A list or tuple option's items; a single string (a common slip from Python) is an error."""
    if not isinstance(values, (tuple, list)):
        raise HarnessError(f"{option} {values!r}: expected a tuple of values, not a {type(values).__name__}")
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise HarnessError(f"{option}: {', '.join(repeated)} given more than once")
    return tuple(values)


def names(option: str, values: Any) -> None:
    for value in sequence(option, values):
        if not isinstance(value, str) or not value.strip():
            raise HarnessError(f"{option} {value!r}: expected a non-empty name")


def numbers(option: str, values: Any, low: int, below: int | None = None) -> None:
    """Integers >= low (and < below); at least one."""
    values = sequence(option, values)
    if not values:
        raise HarnessError(f"{option}: give at least one value")
    for value in values:
        if not is_int(value) or value < low or (below is not None and value >= below):
            bound = f"an integer >= {low}" if below is None else f"an integer in [{low}, {below})"
            raise HarnessError(f"{option} {value!r}: must be {bound}")
