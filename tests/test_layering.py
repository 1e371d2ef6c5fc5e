"""`submission` and `leaderboard` never import each other; the neutral packages import neither."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"submission": {"leaderboard"}, "leaderboard": {"submission"},
             "runfolder": {"submission", "leaderboard", "methods"}, "metrics": {"submission", "leaderboard", "methods"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names a module imports (anywhere in it, functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports(package):
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
                 for path in sorted((ROOT / package).rglob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}
