"""What a config option admits, declared on its annotation, and the checks the registry runs with it.

A method config is a frozen dataclass; each field's annotation says what values it takes:
`Literal["paper", "seed"]` lists them, `Annotated[T, mark]` adds a mark — `Range(ge=1)` bounds a number,
`NonEmpty()` needs a tuple item, `OneOf(names, what)` checks names known only at run time (open_clip's
models), `Check(admits, what)` anything else (a path that must exist). `parse` turns a spec's text into a
value, `fits` tests a value, `describe` says in words what is valid, for one-line errors:

>>> describe(Annotated[int, Range(ge=1)])
'an integer >= 1'
>>> fits(0, Annotated[int, Range(ge=1)]), fits("sed", Literal["paper", "seed"])
(False, False)
"""
from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterable, Literal

# A config field's metadata key (`field(default=..., metadata={UNRECORDED: value})`): the value that reproduces what
# the method did before the field existed, so a resume compares old rows, which do not record it, with that value.
UNRECORDED = "unrecorded"


@dataclass(frozen=True)
class Range:
    """Bounds of a number option (None = unbounded): `Annotated[int, Range(ge=1)]`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def admits(self, value: Any) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))

    def __str__(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"in [{self.ge:g}, {self.le:g}]"
        bounds = [(">=", self.ge), (">", self.gt), ("<=", self.le)]
        return " and ".join(f"{sign} {bound:g}" for sign, bound in bounds if bound is not None)


@dataclass(frozen=True)
class NonEmpty:
    """A tuple option that needs at least one item."""

    def admits(self, value: Any) -> bool:
        return len(value) > 0


@dataclass(frozen=True)
class OneOf:
    """Allowed names known only at run time (open_clip's model names): `names()` lists them."""

    names: Callable[[], Iterable[str]]
    what: str  # e.g. "an open_clip model name"

    def admits(self, value: Any) -> bool:
        return value in set(self.names())


@dataclass(frozen=True)
class Check:
    """Any other test of a value (e.g. a folder that must exist) and what it expects, in words."""

    admits: Callable[[Any], bool]
    what: str


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1)]
PositiveFraction = Annotated[float, Range(gt=0, le=1)]

_UNIONS = (typing.Union, types.UnionType)


def _base_and_marks(annotation: Any) -> tuple[Any, tuple]:
    if typing.get_origin(annotation) is Annotated:
        base, *marks = typing.get_args(annotation)
        return base, tuple(marks)
    return annotation, ()


def fits(value: Any, annotation: Any) -> bool:
    """Whether `value` has the annotation's type and passes its marks (bool is not an int; floats are finite)."""
    base, marks = _base_and_marks(annotation)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        ok = any(value == choice and type(value) is type(choice) for choice in args)
    elif origin in _UNIONS:
        ok = any(fits(value, option) for option in args)
    elif origin is tuple:
        ok = isinstance(value, tuple)
        if ok:
            items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
            ok = len(items) == len(value) and all(map(fits, value, items))
    elif base is type(None):
        ok = value is None
    elif base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(base, type) and base is not object:
        ok = isinstance(value, base)
    else:  # Any, or an annotation this module does not know: nothing to check
        ok = True
    return ok and all(mark.admits(value) for mark in marks if hasattr(mark, "admits"))


def describe(annotation: Any) -> str:
    """What the annotation admits, in words: 'an integer >= 1', 'one of paper, seed', '... or none'."""
    base, marks = _base_and_marks(annotation)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        text = "one of " + ", ".join(str(choice) for choice in args)
    elif origin in _UNIONS:
        options = [option for option in args if option is not type(None)]
        text = " or ".join(describe(option) for option in options) + (" or none" if len(options) < len(args) else "")
    elif origin is tuple:
        text = f"a '+'-separated list of items each {describe(args[0])}"
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
            base, getattr(base, "__name__", str(base)))
    for mark in marks:
        if isinstance(mark, Range):
            text = f"{text} {mark}"
        elif isinstance(mark, NonEmpty):
            text = "a non-empty " + text.removeprefix("a ")
        elif isinstance(mark, (OneOf, Check)):
            text = mark.what
    return text


def suggest(raw: str, annotation: Any) -> str:
    """' (did you mean 'seed'?)' for a near miss of a Literal or OneOf name, else ''."""
    base, marks = _base_and_marks(annotation)
    names = [str(choice) for choice in typing.get_args(base)] if typing.get_origin(base) is Literal else []
    for mark in marks:
        if isinstance(mark, OneOf):
            names = list(mark.names())
    for option in typing.get_args(base) if typing.get_origin(base) in _UNIONS else ():
        if suggestion := suggest(raw, option):
            return suggestion
    close = difflib.get_close_matches(raw, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse(raw: str, annotation: Any) -> Any:
    """A spec's text as a value of the annotation's type (`+` separates tuple items, `none` is None);
    ValueError when it cannot be read as one. The value still has to pass `fits`."""
    base, _ = _base_and_marks(annotation)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        for choice in args:
            if str(choice) == raw or (isinstance(choice, bool) and raw.lower() == str(choice).lower()):
                return choice
        raise ValueError(raw)
    if origin in _UNIONS:
        if type(None) in args and raw.lower() in ("none", ""):
            return None
        for option in (option for option in args if option is not type(None)):
            try:
                return parse(raw, option)
            except ValueError:
                continue
        raise ValueError(raw)
    if origin is tuple:
        return tuple(parse(part.strip(), args[0]) for part in raw.split("+") if part.strip())
    if base is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(raw)
        return raw.lower() in ("true", "1", "yes")
    if base in (int, float):
        return base(raw)
    return raw
