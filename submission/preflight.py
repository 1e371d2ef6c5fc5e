"""The pre-flight: before any cell runs, check every variant and find its weights or say what is missing.

Each variant's options are checked against its config (`methods.registry`), the method is built once (its
constructor's checks), and each weight file found is loaded once into its network. A bad option, a corrupt
or unknown weights file, or two variants that would share a folder end the run here with one `HarnessError`
line; weights that are simply missing skip that variant (its rows get status=skipped)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from methods.base import MethodEntry, MethodVariant, Requirements, WeightFile
from methods.declared_weights import load_weight_file, resolve_weight_file
from methods.registry import MethodSpecError, build_config, list_methods
from methods.weight_files import WeightsInvalid, WeightsMissing, file_digest
from runfolder.schema import variant_dirname
from submission.errors import HarnessError


@dataclass
class Variant:
    """One method variant of the run: its spec, entry, config, and whether it can run."""

    spec: str
    entry: MethodEntry
    config: Any
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> sha256
    missing: list[str] = field(default_factory=list)  # one message per missing weight file

    @property
    def runnable(self) -> bool:
        return not self.missing

    @property
    def requirements(self) -> Requirements:
        """What the variant's config needs up front (its method's declaration)."""
        return self.entry.requirements(self.config)

    @property
    def method(self) -> MethodVariant:
        """What the cell fits: spec, entry and config."""
        return MethodVariant(self.spec, self.entry, self.config)


def default_specs() -> tuple[str, ...]:
    """Every registered method, members before methods that consume fitted members (fusion)."""
    entries = [e for e in list_methods() if e.in_default_run]
    return tuple(e.name for e in entries if not e.needs_fitted) + tuple(e.name for e in entries if e.needs_fitted)


def preflight(specs: tuple[str, ...], preset: str, weights: dict[str, Path], pretrained: bool = True) -> list[Variant]:
    """Variants in run order, each with its weight digests or the reasons it cannot run; `HarnessError` for a
    variant that can never run (bad option, constructor error, corrupt weights file, duplicate)."""
    variants = [_build(spec, preset) for spec in specs or default_specs()]
    _check_distinct(variants)
    for variant in variants:
        _find_weights(variant, weights, pretrained)
        variant.missing = [_with_fetch_hint(message, variant.spec, preset) for message in variant.missing]
        if reason := variant.requirements.unavailable:
            variant.missing.insert(0, f"cannot run here: {reason}")
    for variant in variants:
        if variant.entry.needs_fitted:
            _check_members(variant, variants)
    return sorted(variants, key=lambda v: v.entry.needs_fitted)


def _with_fetch_hint(message: str, spec: str, preset: str) -> str:
    """A missing-weights message with the command that downloads the file (not for the bundled Lite0, which
    comes with its package and has no download)."""
    if "bundled package" in message:
        return message
    methods = f" --methods {spec}" if ":" in spec else ""  # a variant's options may change what it needs
    return f"{message} With internet, download it with: python -m submission weights fetch --preset {preset}{methods}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _build(spec: str, preset: str) -> Variant:
    """The variant of a spec, its options checked and its method built once (constructor errors surface here)."""
    try:
        entry, config = build_config(spec, preset)
    except MethodSpecError as error:
        raise HarnessError(str(error)) from None
    try:
        method = entry.factory(config)
    except Exception as error:  # e.g. GCAD's strides, clip_logic's tower-or-backbone rule
        raise HarnessError(f"{spec!r} ({preset} preset): cannot be built: {_one_line(error)}") from None
    if broken := protocol_breaks(method):
        raise HarnessError(f"{spec!r} (from {entry.source}): breaks the method protocol: {broken}")
    return Variant(spec, entry, config)


def protocol_breaks(method: Any) -> str | None:
    """What a built method lacks of the `Method` protocol (a `name`, `fit`, `predict`, `info`), or None."""
    missing = [f"{name}()" for name in ("fit", "predict", "info") if not callable(getattr(method, name, None))]
    if not isinstance(getattr(method, "name", None), str):
        missing.insert(0, "a `name` string")
    return f"{type(method).__name__} has no {', '.join(missing)}" if missing else None


def _check_distinct(variants: list[Variant]) -> None:
    """No spec twice, no two specs with one folder name, no two specs for the same method and options."""
    for index, variant in enumerate(variants):
        for earlier in variants[:index]:
            if earlier.spec == variant.spec:
                raise HarnessError(f"--methods lists {variant.spec!r} twice")
            if variant_dirname(earlier.spec) == variant_dirname(variant.spec):
                raise HarnessError(f"--methods {earlier.spec!r} and {variant.spec!r} would share the folder "
                                   f"{variant_dirname(variant.spec)!r}; rename one")
            if earlier.entry is variant.entry and earlier.config == variant.config:
                raise HarnessError(f"--methods {earlier.spec!r} and {variant.spec!r} are the same variant "
                                   "(same method and options)")


def _find_weights(variant: Variant, weights: dict[str, Path], pretrained: bool) -> None:
    """Record each declared weight file's digest after loading it once, or why it is missing (the variant is
    skipped). Random weights (`pretrained=False`, tests) need no file: backbones are recorded as `random`."""
    try:
        needs = variant.requirements.weights
    except Exception as error:  # a plugin's `requires` (or a field the default reads) that fails
        raise HarnessError(f"{variant.spec!r} (from {variant.entry.source}): its weight requirements cannot be read "
                           f"({_one_line(error)}); declare them with register(..., requires=...)") from None
    for need in needs:
        if not pretrained:
            if not need.is_clip:
                variant.weights[need.name] = "random"
            continue
        if need.is_clip:
            _check_clip_tag(variant.spec, need)
        try:
            path = resolve_weight_file(need, weights.get(need.name))
        except WeightsInvalid as error:
            raise HarnessError(str(error)) from None
        except KeyError as error:  # a backbone name the harness does not know (a plugin's own network)
            raise HarnessError(f"{variant.spec!r} (from {variant.entry.source}): {_one_line(error)}; a method that "
                               "loads its own network declares its weight files with register(..., requires=...)"
                               ) from None
        except WeightsMissing as error:
            variant.missing.append(str(error))
            continue
        if not need.is_clip or need.name in weights:  # CLIP cache files are open_clip's, checked by hash
            _check_loadable(need, path)
        variant.weights[need.name] = file_digest(path)


def _check_clip_tag(spec: str, need: WeightFile) -> None:
    """A CLIP tag open_clip does not know for the model is an error (a typo would read as "weights missing")."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(need.name)
    if tags and need.tag not in tags:
        raise HarnessError(f"{spec!r}: CLIP tag {need.tag!r} is not a tag of {need.name}; expected one of "
                           f"{', '.join(tags)}")


_LOADABLE: set[tuple[str, str, int, int]] = set()  # (network, path, size, mtime) loaded once in this process


def _check_loadable(need: WeightFile, path: Path) -> None:
    """Load a weight file into its network once, so a corrupt file stops the run before any cell."""
    stat = Path(path).stat()
    key = (need.name, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _LOADABLE:
        return
    try:
        load_weight_file(need, path)
    except WeightsInvalid as error:
        raise HarnessError(_one_line(error)) from None
    except Exception as error:
        raise HarnessError(f"--weights {need.name}={path}: not usable as {need.name} weights ({_one_line(error)})"
                           if need.is_clip else
                           f"{path}: not usable as {need.name!r} weights ({_one_line(error)})") from None
    _LOADABLE.add(key)


def members_of(consumer: Variant, variants: Sequence[Variant]) -> list[Variant]:
    """The variants a fusing variant combines, by its method's own rule (`MethodEntry.members`); `ValueError`
    when it cannot choose."""
    candidates = {v.spec: v for v in variants if not v.entry.needs_fitted}
    chosen = consumer.entry.members(consumer.config, [v.method for v in candidates.values()])
    return [candidates[v.spec] for v in chosen]


def _check_members(consumer: Variant, variants: list[Variant]) -> None:
    """A method that consumes fitted members (fusion) needs them in the run: a choice it cannot make among the
    run's variants is an error; when it cannot make it among those that can run (a member it names is skipped, or
    none is left), it is skipped too."""
    try:
        chosen = members_of(consumer, variants)
    except ValueError as error:
        raise HarnessError(f"{consumer.spec!r}: {error}") from None
    try:
        members_of(consumer, [v for v in variants if v.runnable])
    except ValueError as error:
        blocked = "; ".join(f"{v.spec}: {' '.join(v.missing)}" for v in chosen if not v.runnable)
        consumer.missing.append(f"member(s) it fuses cannot run: {blocked or error}")
