"""The pre-flight: before any cell runs, check every variant and find its weights or say what is missing.

Each variant's options are checked against its config (`methods.registry`), the method is built once (its
constructor's checks), and each weight file found is loaded once into its network. A bad option, a corrupt
or unknown weights file, or two variants that would share a folder end the run here with one `HarnessError`
line; weights that are simply missing skip that variant (its rows get status=skipped)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methods.backbones import WeightsInvalid, WeightsMissing, file_digest, load_backbone, resolve_weights
from methods.registry import MethodEntry, MethodSpecError, MethodVariant, build_config, list_methods
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
    def method(self) -> MethodVariant:
        """What the cell fits: spec, entry and config."""
        return MethodVariant(self.spec, self.entry, self.config)


def default_specs() -> tuple[str, ...]:
    """Every registered method, members before methods that consume fitted members (fusion)."""
    entries = list_methods()
    return tuple(e.name for e in entries if not e.needs_fitted) + tuple(e.name for e in entries if e.needs_fitted)


def preflight(specs: tuple[str, ...], preset: str, weights: dict[str, Path], pretrained: bool = True) -> list[Variant]:
    """Variants in run order, each with its weight digests or the reasons it cannot run; `HarnessError` for a
    variant that can never run (bad option, constructor error, corrupt weights file, duplicate)."""
    variants = [_build(spec, preset) for spec in specs or default_specs()]
    _check_distinct(variants)
    for variant in variants:
        _find_weights(variant, weights, pretrained)
        variant.missing = [_with_fetch_hint(message, variant.spec, preset) for message in variant.missing]
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
        entry.factory(config)
    except Exception as error:  # e.g. GCAD's strides, clip_logic's tower-or-backbone rule
        raise HarnessError(f"{spec!r} ({preset} preset): cannot be built: {_one_line(error)}") from None
    return Variant(spec, entry, config)


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
    """Record each weight file's digest after loading it once, or why it is missing (the variant is skipped)."""
    config = variant.config
    clip_model = getattr(config, "clip_model", None)  # clip_logic's open_clip tower (and its tokenizer)
    if clip_model and pretrained:
        import open_clip

        from methods.clip_towers import resolve_clip_weights

        tags = open_clip.list_pretrained_tags_by_model(clip_model)
        if tags and config.clip_pretrained not in tags:  # a typo would otherwise read as "weights missing"
            raise HarnessError(f"{variant.spec!r}: clip_pretrained={config.clip_pretrained!r} is not a tag of "
                               f"{clip_model}; expected one of {', '.join(tags)}")
        try:
            path = resolve_clip_weights(clip_model, config.clip_pretrained, weights.get(clip_model))
        except WeightsInvalid as error:
            raise HarnessError(str(error)) from None
        except WeightsMissing as error:
            variant.missing.append(str(error))
        else:
            if clip_model in weights:  # an explicit file is loaded here; cache files are open_clip's, checked by hash
                _check_clip_file(clip_model, config.clip_pretrained, path)
            variant.weights[clip_model] = file_digest(path)
    for backbone in variant.entry.backbones(config):
        if not pretrained:
            variant.weights[backbone] = "random"
            continue
        try:
            path = resolve_weights(backbone, weights.get(backbone))
        except WeightsInvalid as error:
            raise HarnessError(str(error)) from None
        except WeightsMissing as error:
            variant.missing.append(str(error))
            continue
        _check_backbone_file(backbone, path)
        variant.weights[backbone] = file_digest(path)


_LOADABLE: set[tuple[str, str, int, int]] = set()  # (network, path, size, mtime) loaded once in this process


def _file_key(name: str, path: Path) -> tuple[str, str, int, int]:
    stat = Path(path).stat()
    return name, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def _check_backbone_file(backbone: str, path: Path) -> None:
    """Load a backbone's weight file into its network once, so a corrupt file stops the run before any cell."""
    key = _file_key(backbone, path)
    if key in _LOADABLE:
        return
    try:
        load_backbone(backbone, path)
    except Exception as error:
        raise HarnessError(_one_line(error) if isinstance(error, WeightsInvalid) else
                           f"{path}: not usable as {backbone!r} weights ({_one_line(error)})") from None
    _LOADABLE.add(key)


def _check_clip_file(model: str, tag: str, path: Path) -> None:
    """Load an explicit CLIP weights file into its tower once (a few seconds for ViT-B-16-plus-240)."""
    from methods.clip_towers import create_clip_model

    key = _file_key(model, path)
    if key in _LOADABLE:
        return
    try:
        create_clip_model(model, tag, path, pretrained=True)
    except Exception as error:
        raise HarnessError(f"--weights {model}={path}: not usable as {model} weights ({_one_line(error)})") from None
    _LOADABLE.add(key)


def _check_members(consumer: Variant, variants: list[Variant]) -> None:
    """A method that consumes fitted members (fusion) needs them in the run; it is skipped when none can run, or
    when a member it names cannot (an unnamed-members fusion fuses whichever members run)."""
    members = [v for v in variants if not v.entry.needs_fitted]
    wanted = getattr(consumer.config, "members", ()) or ()
    for name in wanted:
        if not any(v.spec == name or v.entry.name == name for v in members):
            raise HarnessError(f"{consumer.spec!r}: member {name!r} is not in this run; add it to --methods "
                               f"(run has: {', '.join(v.spec for v in members) or 'no members'})")
    chosen = [v for v in members if not wanted or v.spec in wanted or v.entry.name in wanted]
    fusion_weights = getattr(consumer.config, "weights", ()) or ()
    if fusion_weights and len(fusion_weights) != len(chosen):
        raise HarnessError(f"{consumer.spec!r}: weights has {len(fusion_weights)} values for {len(chosen)} members "
                           f"({', '.join(v.spec for v in chosen) or 'none'})")
    if not any(v.runnable for v in chosen):
        consumer.missing.append("no member of this fusion can run: " + "; ".join(m for v in chosen for m in v.missing))
    elif wanted and not all(v.runnable for v in chosen):  # a named member that cannot run: the fusion cannot either
        blocked = [v for v in chosen if not v.runnable]
        consumer.missing.append("named member(s) cannot run: " + "; ".join(f"{v.spec}: {' '.join(v.missing)}"
                                                                             for v in blocked))
