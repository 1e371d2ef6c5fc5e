"""anomalib's image models as harness methods, `--methods anomalib:<Model>[:key=value,...]`, through the plugin
door (the package's own entry point in `fewshot_ad_harness.methods`; it uses only the public method API).

Every image model of the pinned release (anomalib 2.7.0, the `anomalib` extra) is registered, so that
`python -m submission methods` lists each with what it needs. Two run here, both fitted on the k support images
directly, as anomalib fits them (its `training_step` on the support batch, then its `fit()`), with no Lightning
engine: `Patchcore` (a memory bank of patch features) and `Padim` (a Gaussian per patch position). The others are
listed with the reason they cannot run in a few-shot cell here (a training schedule of thousands of steps, weights
this harness cannot find, a video or text-model input); a run that names one gets a skipped row with that reason.

Presets: `paper` is the model's published configuration (its backbone and layers; the backbone's weights found
through the `weights` machinery, `weights fetch` gets them); `offline` swaps in the bundled ImageNet
EfficientNet-Lite0 (timm's `tf_efficientnet_lite0`) at the stride-8 and stride-16 stages (Padim: also the stride-4
one), so the model runs with no download. The backbone's weights are the harness's own load of that file, copied
into anomalib's feature extractor, and its normalisation is the backbone's (Lite0: mean = std = 0.5).

Departures from anomalib's own run, each with its reason: no Lightning engine, pre-processor or post-processor
(the harness feeds the support batch and reads raw scores; its metrics need no normalisation); at
`coreset_sampling_ratio=1.0` PatchCore's coreset pass is skipped, the memory bank being every patch as anomalib's
pass returns it, in another order (in the harness's environment its k-center greedy loop took memory growing with
the square of the patch count, 10.7 GB at 4096 patches; 2.7 GB in a bare anomalib venv, cause not found); PaDiM refuses k = 1 (one image gives no covariance: NaN scores).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from methods.backbones import BackboneName
from methods.base import Requirements, WeightFile
from methods.options import PositiveFraction, PositiveInt
from methods.registry import register

RELEASE = "2.7.0"  # the release the `anomalib` extra pins; the table below lists its image models
INSTALL = "pip install 'fewshot-ad-harness[anomalib]' (or pip install -e '.[anomalib]')"
LITE0_LEVELS = ("blocks.2", "blocks.4")  # timm's Lite0 stages at stride 8 and 16, like ResNet's layer2 and layer3


@dataclass(frozen=True)
class PatchcoreConfig:
    backbone: BackboneName = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    coreset_sampling_ratio: PositiveFraction = 0.1
    num_neighbors: PositiveInt = 9
    input_size: PositiveInt = 256  # anomalib's default pre-processor: resize to 256 x 256, no crop


@dataclass(frozen=True)
class PadimConfig:
    backbone: BackboneName = "resnet18"
    layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    n_features: PositiveInt = 100  # anomalib's count for resnet18 (448 channels); Lite0's 176 are cut to it too
    input_size: PositiveInt = 256


@dataclass(frozen=True)
class UnavailableConfig:
    reason: str = ""


NOT_HERE = {  # anomalib 2.7.0's other image models, and why a few-shot cell here cannot run them
    **dict.fromkeys(("Cfa", "Cflow", "Csflow", "Draem", "Dsr", "EfficientAd", "Fastflow", "Fre", "Ganomaly",
                     "Glass", "ReverseDistillation", "Stfpm", "Supersimplenet", "Uflow", "UniNet", "Patchflow",
                     "Dinomaly", "InpFormer", "CFM", "GeneralAD"),
                    "trains a network with its own schedule (hundreds to tens of thousands of steps); no few-shot "
                    "training adapter here yet"),
    **dict.fromkeys(("Dfkde", "Dfm"), "a statistics model on a deeper layer (layer3/layer4 of ResNet-50/18) than "
                    "the harness's backbones load; no adapter yet"),
    **dict.fromkeys(("AnomalyDINO", "FoundAD", "SuperADD", "Rad", "L2BT", "AnomalyVFM", "MHPatchcore"),
                    "needs a DINOv2 / foundation-model tower this harness cannot find or load; no adapter yet"),
    "WinClip": "a CLIP model (ViT-B-16-plus-240); the harness's own clip_logic covers CLIP scoring",
    "VlmAd": "asks a vision-language model service: not a local few-shot cell",
    "AiVad": "a video model (object tracks over frames), not an image model",
    "Fuvas": "a video model, not an image model",
}


def anomalib_missing() -> str | None:
    """Why anomalib's models cannot run in this environment (not installed, or another release), or None."""
    if importlib.util.find_spec("anomalib") is None:
        return f"anomalib is not installed: {INSTALL}"
    from importlib.metadata import version

    if (installed := version("anomalib")) != RELEASE:
        return f"anomalib {installed} is installed; these adapters are for {RELEASE}: {INSTALL}"
    return None


def _requires(config: Any) -> Requirements:
    return Requirements((WeightFile(config.backbone),), unavailable=anomalib_missing())


def _factory(model: str):
    def build(config: Any) -> Any:
        from anomalib_models.adapter import AnomalibMethod  # imports torchvision only; anomalib at fit

        return AnomalibMethod(model, config)
    return build


register("anomalib:Patchcore", config=PatchcoreConfig,
         presets={"paper": PatchcoreConfig(),
                  "offline": PatchcoreConfig(backbone="lite0", layers=LITE0_LEVELS)},
         summary="anomalib's PatchCore fitted on the support images (memory bank, coreset, nearest patches)",
         requires=_requires, cheap_fit=True, distance_scores=True, in_default_run=False)(_factory("Patchcore"))
register("anomalib:Padim", config=PadimConfig,
         presets={"paper": PadimConfig(),
                  "offline": PadimConfig(backbone="lite0", layers=("blocks.1", *LITE0_LEVELS))},
         summary="anomalib's PaDiM fitted on the support images (a Gaussian per patch position)",
         requires=_requires, cheap_fit=True, distance_scores=True, in_default_run=False)(_factory("Padim"))
for _model, _reason in sorted(NOT_HERE.items()):
    register(f"anomalib:{_model}", config=UnavailableConfig,
             presets={"paper": UnavailableConfig(_reason), "offline": UnavailableConfig(_reason)},
             summary=f"anomalib's {_model}", requires=lambda config: Requirements(unavailable=config.reason),
             in_default_run=False)(_factory(_model))
