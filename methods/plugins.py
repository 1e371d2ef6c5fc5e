"""Methods from outside this repository, named on the command line: `--plugin path/to/file.py` or
`--plugin package.module`. Importing one runs its `methods.registry.register(...)` calls, as a built-in method
module registers itself (installed packages come in through the registry's entry points instead). The registry
records which plugin registered each name; a run records each plugin's source digest in config.json.

A plugin file is imported under a module name of its own and registered with cloudpickle to travel by value, so
Ray actors and Slurm jobs receive its classes without importing the file themselves.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from methods.registry import PluginError, import_plugin, load_builtins, registered_by

PLUGIN_PREFIX = "fewshot_ad_plugin"  # the module names plugin files are imported under


@dataclass(frozen=True)
class Plugin:
    """A plugin as a run records it: what was asked for, where its source is, a digest of it, what it registered."""

    ref: str  # as given: a file path or a module name
    origin: str  # the file, or the package folder, it was imported from
    digest: str  # SHA-256 of its source files: a resume sees a changed plugin
    methods: tuple[str, ...]


def source_digest(origin: Path) -> str:
    """SHA-256 (16 hex digits) over a module file, or over every .py file of a package folder with its name."""
    digest = hashlib.sha256()
    for path in sorted(origin.rglob("*.py")) if origin.is_dir() else [origin]:
        digest.update(f"{path.relative_to(origin).as_posix() if origin.is_dir() else path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _travel_by_value(module: object) -> None:
    """Let cloudpickle (Ray's copy and submitit's) ship the module's classes and functions by value."""
    for name in ("ray.cloudpickle", "cloudpickle"):
        try:
            importlib.import_module(name).register_pickle_by_value(module)
        except ImportError:
            continue


def import_file(path: Path, prefix: str) -> object:
    """A Python file imported once per process under a module name of its own (`prefix` + its stem + a hash of its
    path); a file that fails to import leaves nothing behind in `sys.modules`."""
    name = f"{prefix}_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_file(path: Path, label: str) -> object:
    """A plugin file, imported with `label` recorded as the source of what it registers (once per process)."""
    imported = import_plugin(label, lambda: import_file(path, PLUGIN_PREFIX))
    _travel_by_value(imported)
    return imported


def load_plugin(ref: str) -> Plugin:
    """Import a plugin file or module that registers methods; `PluginError` naming it when it cannot be imported,
    registers a name that exists, or registers nothing."""
    load_builtins()  # a plugin that takes a built-in's name is told so
    label = f"--plugin {ref}"
    if ref.endswith(".py") or "/" in ref or Path(ref).is_file():
        path = Path(ref).resolve()
        if not path.is_file():
            raise PluginError(f"{label}: no such file")
        _import_file(path, label)
        origin = path
    else:
        try:
            found = importlib.util.find_spec(ref)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise PluginError(f"{label}: no such file or importable module")
        module = import_plugin(label, lambda: importlib.import_module(ref))
        if getattr(module, "__file__", None) is None:
            raise PluginError(f"{label}: a namespace package (no __init__.py): name a module file or a package")
        file = Path(module.__file__)
        origin = file.parent if file.name == "__init__.py" else file
    methods = registered_by(label)
    if not methods:
        raise PluginError(f"{label}: registers no method (it must call methods.registry.register)")
    return Plugin(ref, str(origin), source_digest(origin), methods)


def load_plugins(refs: tuple[str, ...]) -> tuple[Plugin, ...]:
    """Every plugin of a run, in the order given."""
    return tuple(load_plugin(ref) for ref in refs)
