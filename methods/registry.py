"""One registry of methods: names, config dataclasses, presets, and what the runner must know up front.

>>> create_method("patchcore", preset="offline")                 # the bundled backbone
>>> create_method("patchcore:num_neighbors=3", preset="paper")    # a variant spec, checked against the config

Every option is checked against its config field's annotation (`methods.options`: type, `Literal` values,
ranges): a bad override is a one-line `MethodSpecError` naming the spec, the option and what is valid; a
preset that does not pass is a programming error, raised when the method registers.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import typing
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from methods.base import Method, MethodEntry, MethodVariant
from methods.options import describe, fits, parse, suggest

PRESETS = ("paper", "offline")
BUILTIN_MODULES = tuple(f"methods.{name}" for name in  # registration order = the default run order (fusion's
                        ("bgad", "clip_logic", "fusion", "gcad", "patchcore", "regad", "simplenet"))  # members too)


ENTRY_POINT_GROUP = "fewshot_ad_harness.methods"  # an outside package's pyproject: [project.entry-points."<this>"]


class MethodSpecError(ValueError):
    """An unknown method name, an unknown config key, or a value its field does not admit (type, choice, range)."""


class PluginError(ValueError):
    """An outside method that cannot be used: its plugin fails to import, registers a name that exists, or
    registers nothing. One line naming the plugin and the problem."""


_REGISTRY: dict[str, MethodEntry] = {}
_LOADED: list[bool] = []  # the built-in modules and entry points were imported (on the first lookup)
_SOURCE: list[str] = ["builtin"]  # what is registering now: builtin, or the plugin being imported


def load_builtins(entry_points: bool = True) -> None:
    """Import the built-in method modules, then every installed entry point of `ENTRY_POINT_GROUP`, once (each
    registers itself); lookups call it, so importing the registry imports no method. A bundle's entry point
    passes `entry_points=False` first: it runs only the code it carries, never what happens to be installed."""
    if _LOADED:
        return
    _LOADED.append(True)
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points else ()
    for point in sorted(points, key=lambda p: p.name):
        dist = point.dist
        import_plugin(f"entry point {point.name} ({dist.name} {dist.version})" if dist else f"entry point {point.name}",
                      point.load)


@contextmanager
def _registering_as(label: str) -> Iterator[None]:
    _SOURCE.append(label)
    try:
        yield
    finally:
        _SOURCE.pop()


def import_plugin(label: str, load: Callable[[], Any]) -> Any:
    """Run `load()`, which imports a plugin, with `label` recorded as the source of what it registers (see
    `registered_by`); the module. Any error while importing it is one `PluginError` line naming `label`."""
    try:
        with _registering_as(label):
            module = load()
    except Exception as error:  # whatever the plugin's own code raises while it is imported
        message = " ".join(str(error).split())[:300] or type(error).__name__
        raise PluginError(f"{label}: cannot be imported ({type(error).__name__}: {message})") from None
    return module


def registered_by(label: str) -> tuple[str, ...]:
    """The names registered by a plugin (by the label it was imported with)."""
    return tuple(name for name, entry in _REGISTRY.items() if entry.source == label)


def register(name: str, *, config: type, presets: dict[str, Any], summary: str, **declared: Any) -> Callable:
    """Decorator: register a factory `f(config) -> Method` under `name` with its presets and `MethodEntry`'s
    declarations: flags (`trains`, `cheap_fit`, ...), `requires` (config -> `Requirements`; default: the
    config's `backbone` / `backbones` fields) and, for a fusing method, `members` (an unknown keyword is a
    TypeError at import)."""
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is registered already (by {_REGISTRY[name].source}); choose another name")
    if declared.get("needs_fitted") and declared.get("members") is None:
        raise TypeError(f"{name}: a method that consumes fitted members declares `members`")
    if set(presets) != set(PRESETS):
        raise ValueError(f"{name}: presets must be exactly {PRESETS}")
    for preset, preset_config in presets.items():  # a broken preset is a bug: fail at import, not in a cell
        if not isinstance(preset_config, config):
            raise TypeError(f"{name}: preset {preset!r} is a {type(preset_config).__name__}, not a {config.__name__}")
        check_config(preset_config, f"{name} preset {preset!r}")

    def decorate(factory: Callable[..., Method]) -> Callable[..., Method]:
        _REGISTRY[name] = MethodEntry(name, factory, config, presets, summary, **declared, source=_SOURCE[-1])
        return factory

    return decorate


def list_methods() -> list[MethodEntry]:
    """All registered methods: the built-ins in `BUILTIN_MODULES` order, then the others in registration order."""
    load_builtins()
    rank = {module: index for index, module in enumerate(BUILTIN_MODULES)}
    return sorted(_REGISTRY.values(), key=lambda entry: rank.get(entry.factory.__module__, len(rank)))


def get_entry(name: str) -> MethodEntry:
    """The entry of a registered method, or an error listing the registered names."""
    load_builtins()
    if name not in _REGISTRY:
        raise MethodSpecError(f"unknown method {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def split_name(spec: str) -> tuple[str, str]:
    """The method name of a spec and the rest (its options). A name may be a family member, `family:member`
    (e.g. `anomalib:Patchcore`, options after a second colon) when one is registered under that name."""
    name, _, rest = spec.partition(":")
    member, _, options = rest.partition(":")
    if member and "=" not in member and "," not in member:
        load_builtins()
        if f"{name}:{member}" in _REGISTRY:
            return f"{name}:{member}", options
    return name, rest


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split `name:key=value,key=value` into the name and raw string overrides; a first item without `=` is kept
    under the key "" (a method's positional option, e.g. `vand:DIR`). `name` may be `family:member`."""
    name, rest = split_name(spec)
    overrides: dict[str, str] = {}
    for index, pair in enumerate(filter(None, rest.split(","))):
        key, sep, value = pair.partition("=")
        if index == 0 and not sep:  # `vand:DIR`: the value of the method's positional option (see build_config)
            overrides[""] = pair.strip()
            continue
        if not sep or not key.strip():
            raise MethodSpecError(f"{spec!r}: {pair!r} is not key=value")
        if key.strip() in overrides:
            raise MethodSpecError(f"{spec!r}: key {key.strip()!r} is given twice")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides



def check_config(config: Any, where: str) -> None:
    """Raise `MethodSpecError` naming the first field of a config dataclass whose value its annotation rejects."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not fits(value, hints[field.name]):
            expected = describe(hints[field.name])
            raise MethodSpecError(f"{where}: {field.name}={value!r} is not valid; expected {expected}")


def _override(spec: str, key: str, raw: str, annotation: Any) -> Any:
    """A spec's value for one option, parsed and checked, or a one-line error saying what is valid."""
    try:
        value = parse(raw, annotation)
        if fits(value, annotation):
            return value
    except ValueError:
        pass
    raise MethodSpecError(f"{spec!r}: {key}={raw!r} is not valid; expected {describe(annotation)}"
                          f"{suggest(raw, annotation)}")


def build_config(spec: str, preset: str) -> tuple[MethodEntry, Any]:
    """The entry and the preset's config with the spec's overrides applied and type-checked."""
    if preset not in PRESETS:
        raise MethodSpecError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    name, overrides = parse_spec(spec)
    entry = get_entry(name)
    if "" in overrides:
        if entry.positional is None:
            raise MethodSpecError(f"{spec!r}: {overrides['']!r} is not key=value")
        overrides[entry.positional] = overrides.pop("")
    config = entry.presets[preset]
    hints = typing.get_type_hints(entry.config, include_extras=True)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise MethodSpecError(f"{spec!r}: unknown key {key!r} for {name}; valid keys: {', '.join(sorted(fields))}")
        changes[key] = _override(spec, key, raw, hints[key])
    return entry, dataclasses.replace(config, **changes)


def create_method(spec: str, preset: str = "offline") -> Method:
    """Build a method from a spec such as `patchcore` or `patchcore:num_neighbors=3`."""
    entry, config = build_config(spec, preset)
    return entry.factory(config)


def build_variant(spec: str, preset: str = "offline") -> MethodVariant:
    """The variant of a spec under a preset (overrides checked against the config dataclass)."""
    entry, config = build_config(spec, preset)
    return MethodVariant(spec, entry, config)
