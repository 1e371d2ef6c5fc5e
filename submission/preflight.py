"""The pre-flight: before any cell runs, find each method variant's weights or say what is missing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methods.backbones import WeightsMissing, file_digest, resolve_weights
from methods.registry import MethodEntry, MethodSpecError, build_config, list_methods
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


def default_specs() -> tuple[str, ...]:
    """Every registered method, members before methods that consume fitted members (fusion)."""
    entries = list_methods()
    return tuple(e.name for e in entries if not e.needs_fitted) + tuple(e.name for e in entries if e.needs_fitted)


def preflight(specs: tuple[str, ...], preset: str, weights: dict[str, Path], pretrained: bool = True) -> list[Variant]:
    """Variants in run order, each with its weight digests or the reasons it cannot run."""
    variants = []
    for spec in specs or default_specs():
        try:
            entry, config = build_config(spec, preset)
        except MethodSpecError as error:
            raise HarnessError(str(error)) from None
        variant = Variant(spec, entry, config)
        clip_model = getattr(config, "clip_model", None)  # clip_logic's open_clip tower (and its tokenizer)
        if clip_model and pretrained:
            from methods.clip_towers import resolve_clip_weights

            try:
                variant.weights[clip_model] = file_digest(resolve_clip_weights(clip_model, config.clip_pretrained,
                                                                               weights.get(clip_model)))
            except WeightsMissing as error:
                variant.missing.append(str(error))
        for backbone in entry.backbones(config):
            if not pretrained:
                variant.weights[backbone] = "random"
                continue
            try:
                variant.weights[backbone] = file_digest(resolve_weights(backbone, weights.get(backbone)))
            except WeightsMissing as error:
                variant.missing.append(str(error))
        variants.append(variant)
    if len({v.spec for v in variants}) != len(variants):
        raise HarnessError(f"--methods lists a variant twice: {' '.join(specs)}")
    for variant in variants:
        if variant.entry.needs_fitted:
            _check_members(variant, variants)
    return sorted(variants, key=lambda v: v.entry.needs_fitted)


def _check_members(consumer: Variant, variants: list[Variant]) -> None:
    """A method that consumes fitted members (fusion) needs them in the run; it is skipped when none can run."""
    members = [v for v in variants if not v.entry.needs_fitted]
    wanted = getattr(consumer.config, "members", ()) or ()
    for name in wanted:
        if not any(v.spec == name or v.entry.name == name for v in members):
            raise HarnessError(f"{consumer.spec!r}: member {name!r} is not in this run; add it to --methods "
                               f"(run has: {', '.join(v.spec for v in members) or 'no members'})")
    chosen = [v for v in members if not wanted or v.spec in wanted or v.entry.name in wanted]
    if not any(v.runnable for v in chosen):
        consumer.missing.append("no member of this fusion can run: " + "; ".join(m for v in chosen for m in v.missing))
