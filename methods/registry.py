"""One registry of methods: names, config dataclasses, presets, and what the runner must know up front.

>>> create_method("patchcore", preset="offline")                 # the bundled backbone
>>> create_method("patchcore:num_neighbors=3", preset="paper")    # a variant spec, checked against the config
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable

from methods.base import Method

PRESETS = ("paper", "offline")


class MethodSpecError(ValueError):
    """An unknown method name, an unknown config key, or a value of the wrong type."""


@dataclass(frozen=True)
class MethodEntry:
    """What the registry knows of a method before any cell runs."""

    name: str
    factory: Callable[..., Method]
    config: type
    presets: dict[str, Any]  # preset name -> config instance
    summary: str
    trains: bool = False
    uses_auxiliary: bool = False  # needs other categories (RegAD)
    needs_fitted: bool = False  # consumes other members fitted in the same cell (fusion)

    def backbones(self, config: Any) -> tuple[str, ...]:
        """Backbone names whose weights the config needs."""
        names = getattr(config, "backbones", None)
        if names is not None:
            return tuple(names)
        return (config.backbone,) if getattr(config, "backbone", None) else ()


_REGISTRY: dict[str, MethodEntry] = {}


def register(name: str, *, config: type, presets: dict[str, Any], summary: str, trains: bool = False,
             uses_auxiliary: bool = False, needs_fitted: bool = False) -> Callable:
    """Decorator: register a factory `f(config) -> Method` under `name` with its presets."""
    if set(presets) != set(PRESETS):
        raise ValueError(f"{name}: presets must be exactly {PRESETS}")

    def decorate(factory: Callable[..., Method]) -> Callable[..., Method]:
        _REGISTRY[name] = MethodEntry(name, factory, config, presets, summary, trains, uses_auxiliary, needs_fitted)
        return factory

    return decorate


def list_methods() -> list[MethodEntry]:
    """All registered methods, in registration order."""
    return list(_REGISTRY.values())


def get_entry(name: str) -> MethodEntry:
    """The entry of a registered method, or an error listing the registered names."""
    if name not in _REGISTRY:
        raise MethodSpecError(f"unknown method {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split `name:key=value,key=value` into the name and raw string overrides."""
    name, _, rest = spec.partition(":")
    overrides: dict[str, str] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MethodSpecError(f"{spec!r}: {pair!r} is not key=value")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


def variant_dirname(spec: str) -> str:
    """A variant's folder name: its spec with characters outside [A-Za-z0-9._-] replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", spec)


def _convert(raw: str, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        return tuple(_convert(part, item_type, where) for part in raw.split("+") if part)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() in ("none", ""):
            return None
        return _convert(raw, args[0], where)
    try:
        if annotation is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if annotation in (int, float, str):
            return annotation(raw)
    except ValueError:
        raise MethodSpecError(f"{where}: {raw!r} is not a valid {annotation.__name__}") from None
    return raw


def build_config(spec: str, preset: str) -> tuple[MethodEntry, Any]:
    """The entry and the preset's config with the spec's overrides applied and type-checked."""
    if preset not in PRESETS:
        raise MethodSpecError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    name, overrides = parse_spec(spec)
    entry = get_entry(name)
    config = entry.presets[preset]
    hints = typing.get_type_hints(entry.config)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise MethodSpecError(f"{spec!r}: unknown key {key!r} for {name}; valid keys: {', '.join(sorted(fields))}")
        changes[key] = _convert(raw, hints[key], f"{spec!r} key {key!r}")
    return entry, dataclasses.replace(config, **changes)


def create_method(spec: str, preset: str = "offline") -> Method:
    """Build a method from a spec such as `patchcore` or `patchcore:num_neighbors=3`."""
    entry, config = build_config(spec, preset)
    return entry.factory(config)
