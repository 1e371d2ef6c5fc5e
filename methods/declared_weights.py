"""The weight files a method declares (`methods.base.WeightFile`): searched, resolved and loaded by their kind,
a CNN backbone's way (`methods.backbones`) or a CLIP tower's (`methods.clip_towers`)."""
from __future__ import annotations

from pathlib import Path

from methods.backbones import load_backbone, resolve_weights, search_weights
from methods.base import WeightFile
from methods.clip_towers import create_clip_model, resolve_clip_weights, search_clip_weights
from methods.weight_files import WeightSearch


def search_weight_file(need: WeightFile, explicit: Path | None = None) -> WeightSearch:
    """Search a declared weight file in its kind's documented order (a backbone's or a CLIP tower's)."""
    if need.is_clip:
        return search_clip_weights(need.name, need.tag, explicit)
    return search_weights(need.name, explicit)


def resolve_weight_file(need: WeightFile, explicit: Path | None = None) -> Path:
    """The file of a declared weight, or `WeightsMissing` naming every place searched and how to supply it."""
    if need.is_clip:
        return resolve_clip_weights(need.name, need.tag, explicit)
    return resolve_weights(need.name, explicit)


def load_weight_file(need: WeightFile, path: Path) -> None:
    """Load a weight file into its network once (a corrupt or foreign file raises here, before any cell)."""
    if need.is_clip:
        create_clip_model(need.name, need.tag, path, pretrained=True)
    else:
        load_backbone(need.name, path)
