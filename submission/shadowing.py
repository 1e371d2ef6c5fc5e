"""The harness installs generic top-level names (`submission`, `methods`, `metrics`, `runfolder`, `leaderboard`).
`python -m` puts the working directory first on the import path, so an entrant's own `methods/` or `metrics.py`
there would be imported in place of ours and fail deep inside with a confusing error. `shadowed()` says so first,
in one line. Imports nothing of the harness (it runs before anything else)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGES = ("methods", "metrics", "runfolder", "leaderboard", "submission")


def _location(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return Path(spec.origin).resolve() if spec.origin else None


def shadowed(home: Path | None = None) -> str | None:
    """A one-line message when one of the harness's packages would be imported from somewhere other than beside
    `submission` (the harness's own folder), else None."""
    home = (home or Path(__file__).resolve().parent.parent).resolve()
    for name in PACKAGES:
        ours = home / name
        if not ours.is_dir():
            continue
        found = _location(name)
        if found is not None and found != ours:
            return (f"{found} shadows the harness's package {name!r} ({ours}): run from another directory, or "
                    f"rename your {found.name}")
    return None
