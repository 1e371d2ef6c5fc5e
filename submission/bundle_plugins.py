"""Outside methods in bundles: `package` copies the source of every plugin or entry-point package a bundled
variant comes from into `plugins/` (nothing else of the user's files) and lists it in bundle.json with its pip
requirements; the bundle's entry point imports it from there, so the bundle runs where the plugin is not
installed. A file plugin may name its own requirements in a module-level `REQUIREMENTS = ["pkg>=1", ...]`."""
from __future__ import annotations

import importlib.metadata
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from methods.plugins import load_plugin, source_digest
from methods.registry import get_entry, list_methods, parse_spec
from submission.errors import HarnessError

PLUGIN_DIR = "plugins"


def load_run_plugins(config: dict[str, Any], run_dir: Path) -> None:
    """Import the plugins a run recorded (config.json `plugins`), each unchanged since the run."""
    for plugin in config.get("plugins", []):
        origin = Path(plugin["origin"])
        if not origin.exists():
            raise HarnessError(f"{run_dir}: the run's plugin {plugin['ref']} is gone ({origin})")
        if source_digest(origin) != plugin["digest"]:
            raise HarnessError(f"{run_dir}: the plugin {plugin['ref']} changed since the run (source digest "
                               f"{source_digest(origin)}, the run recorded {plugin['digest']}); rerun, then package")
        load_plugin(str(origin) if origin.is_file() else plugin["ref"])  # a file from where the run read it


def _distribution(module: str) -> importlib.metadata.Distribution | None:
    """The installed distribution that provides a top-level module, if any."""
    for name in importlib.metadata.packages_distributions().get(module, []):
        return importlib.metadata.distribution(name)
    return None


def copy_plugin_sources(specs: list[str], bundle: Path, pinned: tuple[str, ...] = ()
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    """Copy the source of each outside method among `specs` into `bundle/plugins/`; bundle.json's entries and
    the pip requirements they declare (less the harness itself and the `pinned` packages the bundle pins)."""
    entries: list[dict[str, Any]] = []
    requirements: list[str] = []
    for spec in specs:
        entry = get_entry(parse_spec(spec)[0])
        if entry.source == "builtin":
            continue
        module = sys.modules[entry.factory.__module__]
        if any(e["source"] == entry.source for e in entries):
            continue
        target = bundle / PLUGIN_DIR
        target.mkdir(exist_ok=True)
        if entry.source.startswith("--plugin") and Path(entry.source.split(" ", 1)[1]).is_file():
            origin = Path(module.__file__)
            shutil.copyfile(origin, target / origin.name)
            entries.append({"source": entry.source, "kind": "file", "path": f"{PLUGIN_DIR}/{origin.name}"})
            requirements += list(getattr(module, "REQUIREMENTS", []))
            continue
        top = module.__name__.split(".")[0]
        if getattr(sys.modules[top], "__file__", None) is None:
            raise HarnessError(f"{entry.source}: {top} is a namespace package; a bundle carries a module or a package")
        top_file = Path(sys.modules[top].__file__)
        if top_file.name == "__init__.py":
            shutil.copytree(top_file.parent, target / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(top_file, target / top_file.name)
        entries.append({"source": entry.source, "kind": "module", "module": module.__name__})
        dist = _distribution(top)
        if dist is not None:
            harness = {"fewshot-ad-harness", "fewshot_ad_harness", *(name.lower() for name in pinned)}
            requirements += [r for r in dist.requires or [] if "extra ==" not in r
                             and re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() not in harness]
    return entries, requirements


def load_bundle_plugins(bundle_dir: Path, info: dict[str, Any]) -> None:
    """Import the plugins a bundle carries (before its variants are built); a method already registered in this
    process (the plugin imported from its own place) is left as it is."""
    plugins = info.get("plugins", [])
    if not plugins:
        return
    wanted = {parse_spec(spec)[0] for spec in [info["method"], *info.get("members", [])]}
    if wanted <= {entry.name for entry in list_methods()}:
        return  # registered in this process already (the plugin imported from its own place)
    sys.path.insert(0, str(Path(bundle_dir) / PLUGIN_DIR))
    for plugin in plugins:
        load_plugin(str(Path(bundle_dir) / plugin["path"]) if plugin["kind"] == "file" else plugin["module"])
