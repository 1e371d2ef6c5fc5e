"""clip_logic: WinCLIP+ zero-/few-shot scoring plus a global and a component-level logical term.

Sources: Jeong et al., "WinCLIP: Zero-/Few-Shot Anomaly Classification and Segmentation", CVPR 2023 (no official
code; the CLIP part follows anomalib's implementation, github.com/open-edge-platform/anomalib,
`src/anomalib/models/image/winclip/`, without importing it; `methods/clip_towers.py` lists what it computes); the
component term follows ComAD (Liu et al., 2023; github.com/liutongkun/ComAD). docs/REFERENCE.md, section
"CLIP-based scoring (WinCLIP) and the component term".

What it computes: a local term (WinCLIP+ as anomalib: the mean of the zero-shot image score, softmax(cos / 0.07) of
the anomalous class, and the maximum of the few-shot map, the mean of the patch-level and each window scale's
harmonic map of (1 - cos)/2 to the nearest support entry), a global term (1 - the largest cosine of the image
embedding to the supports') and a component term (root mean square of the z-values of part statistics: area, area
where present, connected regions, mean colour of k-means parts of the support patch features with their colour).
Image score = z(local) + z(global) + z(components); the map is the local map. `paper` preset: open_clip
ViT-B-16-plus-240 (laion400m_e31) at 240 px with text; `offline`: no CLIP tower, the bundled Lite0's locally
aggregated levels 2+3, no text, no windows (`info()` says so: an offline row is never a CLIP result).

Departures from WinCLIP / ComAD, each with its reason:
- The image score is z(local) + z(global) + z(components), not WinCLIP+'s: the logical terms are the point.
- Each term standardised (ddof 0) by held-out normals, leave-one-out over supports (k = 1: 4 shifted, brightened
  views): the few-shot rule. Scale = max(std, `relative_floor` x |mean|): at k = 2 two values nearly coincide.
- Part statistics standardised by the supports' spread with per-kind floors: at k = 1 there is no spread.
- Parts fitted once on all supports and reused by the held-out terms: only statistics are held out.
- The local map is blurred (sigma `blur_sigma`) after upsampling (anomalib only upsamples): as every method here.
- Offline: the local term is the few-shot map's maximum (no text), the global embedding the mean local feature.
The offline `window_scales=()`, `part_colour_weight`, `relative_floor` and the floors were chosen on procedural
images rendered apart from the test set (indices >= 1000), never on a test set: see BENCHMARKS.md, section
"Method settings and measurements moved from the method docstrings".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from methods.backbones import BackboneName, FeatureLevels
from methods.base import FitContext, Prediction, Requirements, WeightFile
from methods.clip_towers import ClipTower, clip_model_names, harmonic_aggregation, multi_scale_harmonic
from methods.common import aggregate_local, flatten_patches, upsample_and_blur
from methods.options import NonNegativeFloat, OneOf, PositiveFloat, PositiveInt, Probability
from methods.registry import register
from methods.standardise import Standardiser

TERMS = ("local", "global", "components")
ClipModel = Annotated[str, OneOf(clip_model_names, "an open_clip model name (see open_clip.list_models())")]


@dataclass(frozen=True)
class ClipLogicConfig:
    clip_model: ClipModel | None = "ViT-B-16-plus-240"  # WinCLIP paper; None = no CLIP tower (offline)
    clip_pretrained: str = "laion400m_e31"  # WinCLIP paper
    backbone: BackboneName | None = None  # offline: bundled backbone for the few-shot and logical parts
    levels: FeatureLevels = (2, 3)  # offline backbone levels (PatchCore's official choice)
    patch_size: PositiveInt = 3  # offline local aggregation (PatchCore's official choice)
    window_scales: tuple[PositiveInt, ...] = (2, 3)  # WinCLIP: windows of 2x2 and 3x3 patches
    temperature: PositiveFloat = 0.07  # WinCLIP: softmax(cos / 0.07)
    num_parts: PositiveInt = 5  # docs/REFERENCE.md, "CLIP-based scoring (WinCLIP) and the component term": k ~ 5
    part_colour_weight: NonNegativeFloat = 1.0  # our choice: patch colour appended (x this) to the clustered features
    kmeans_iters: PositiveInt = 30  # our choice
    min_region: PositiveInt = 2  # our choice: smallest connected region (patches) that counts
    area_floor: PositiveFloat = 0.002  # our choice: 0.2 % of the image (about 2 patches of a 32x32 grid)
    count_floor: PositiveFloat = 0.5  # our choice: half a region
    colour_floor: PositiveFloat = 0.01  # our choice: colours in [0,1]
    relative_floor: NonNegativeFloat = 0.5  # our choice: a term's scale is at least half its held-out mean
    view_shift: Probability = 1 / 16  # our choice: k = 1 held-out views shifted by one 16-px patch at 256 px
    view_gain: Probability = 0.05  # our choice: k = 1 held-out views' brightness changed by +-5 %
    blur_sigma: NonNegativeFloat = 4.0  # as PatchCore / SimpleNet: Gaussian sigma 4 on the upsampled map


@dataclass
class Encoded:
    """Embeddings of b images: global [b,D], patches [b,C,h,w] and windows [b,D,nh,nw] (unit norm; with a CLIP
    tower C is the transformer width, the patches being ln_post tokens, and D the joint space, offline C = D),
    colours [b,3,h,w] (image pixels averaged to the patch grid), part features [b,C+3,h,w] (for k-means)."""

    global_: torch.Tensor
    patches: torch.Tensor
    windows: list[torch.Tensor]
    colours: torch.Tensor
    parts: torch.Tensor

    def select(self, rows: list[int]) -> "Encoded":
        """The embeddings of a subset of the images."""
        return Encoded(self.global_[rows], self.patches[rows], [w[rows] for w in self.windows], self.colours[rows],
                       self.parts[rows])


def _nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centroid (squared Euclidean, as one matrix product): [n]."""
    return ((centroids ** 2).sum(dim=1) - 2 * points @ centroids.T).argmin(dim=1)


def kmeans(points: torch.Tensor, parts: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Centroids [parts,C] of points [n,C]: k-means++ seeding from `generator`, then Lloyd iterations."""
    parts = min(parts, len(points))
    first = int(torch.randint(len(points), (1,), generator=generator))
    centroids = points[first:first + 1]
    nearest = ((points - centroids) ** 2).sum(dim=1)
    for _ in range(parts - 1):
        weights = nearest.cpu().double()
        weights = weights if weights.sum() > 0 else torch.ones_like(weights)
        index = int(torch.multinomial(weights, 1, generator=generator))
        centroids = torch.cat([centroids, points[index:index + 1]])
        nearest = torch.minimum(nearest, ((points - points[index]) ** 2).sum(dim=1))
    for _ in range(iters):
        one_hot = F.one_hot(_nearest_centroid(points, centroids), parts).to(points.dtype)  # [n, parts]
        counts = one_hot.sum(dim=0).unsqueeze(1)
        updated = torch.where(counts > 0, one_hot.T @ points / counts.clamp_min(1), centroids)  # empty parts stay
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


def region_counts(assign: np.ndarray, parts: int, min_region: int) -> np.ndarray:
    """Connected regions (4-connected, as `ndimage.label`'s default) of at least `min_region` cells of each part in
    each image of a part assignment [b,h,w]: [b, parts], from one labelling of every (image, part) plane."""
    planes = assign[:, None] == np.arange(parts)[None, :, None, None]  # [b, parts, h, w]
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # no connection between planes
    labels, n = ndimage.label(planes.reshape(-1, *assign.shape[1:]), structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    plane_of_label = np.zeros(n + 1, dtype=np.int64)
    plane_of_label[labels.ravel()] = np.repeat(np.arange(labels.shape[0]), labels[0].size)
    kept = np.flatnonzero(sizes[1:] >= min_region) + 1
    return np.bincount(plane_of_label[kept], minlength=labels.shape[0]).reshape(len(assign), parts)


def part_statistics(patches: torch.Tensor, colours: torch.Tensor, centroids: torch.Tensor,
                    min_region: int) -> torch.Tensor:
    """Statistics of each image's parts (patches assigned to the nearest centroid): [b, 6*parts+1] =
    [area fraction | area fraction where present | connected regions of >= min_region patches |
    total regions over all parts | mean colour, part-major RGB]; NaN marks a statistic of an absent part."""
    b, _, h, w = patches.shape
    parts = len(centroids)
    assign = _nearest_centroid(flatten_patches(patches), centroids).view(b, h, w)
    one_hot = F.one_hot(assign, parts).permute(0, 3, 1, 2).to(colours.dtype)  # [b, parts, h, w]
    area = one_hot.sum(dim=(2, 3))
    colour = torch.einsum("bphw,bchw->bpc", one_hot, colours) / area.unsqueeze(2)  # NaN where area = 0
    regions = torch.from_numpy(region_counts(assign.cpu().numpy(), parts, min_region)).to(area.device, colours.dtype)
    fraction = area / (h * w)
    present = torch.where(area > 0, fraction, torch.full_like(fraction, float("nan")))
    return torch.cat([fraction, present, regions, regions.sum(dim=1, keepdim=True), colour.flatten(1)], dim=1)


def statistic_distance(stats: torch.Tensor, reference: torch.Tensor, floors: torch.Tensor) -> torch.Tensor:
    """Root mean square over statistics of (stat - reference mean) / max(reference std, floor): [b].
    Statistics absent (NaN) in an image or in every reference image do not count."""
    present = ~reference.isnan()
    filled = torch.where(present, reference, torch.zeros_like(reference))
    n = present.sum(dim=0).clamp_min(1)
    mean = filled.sum(dim=0) / n
    std = torch.sqrt((torch.where(present, reference - mean, torch.zeros_like(reference)) ** 2).sum(dim=0) / n)
    z = (stats - mean) / torch.maximum(std, floors)
    valid = present.any(dim=0) & ~z.isnan()
    z = torch.where(valid, z, torch.zeros_like(z))
    return torch.sqrt((z ** 2).sum(dim=1) / valid.sum(dim=1).clamp_min(1))


def nearest_cosine_distance(queries: torch.Tensor, memory: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(1 - max cosine similarity)/2 of each query location [b,C,h,w] to memory locations [m,C,...]: [b,h,w]."""
    b, _, h, w = queries.shape
    rows, bank = flatten_patches(queries), flatten_patches(memory)
    similarity = torch.cat([(rows[i:i + chunk] @ bank.T).max(dim=1).values for i in range(0, len(rows), chunk)])
    return ((1 - similarity) / 2).view(b, h, w)


def shifted_views(image: torch.Tensor, shift: int, gain: float = 0.0) -> torch.Tensor:
    """Four copies of one image [3,H,W] shifted by `shift` px left/right/up/down (edge pixels repeated),
    their brightness scaled by 1 - gain, 1 + gain, 1 + gain, 1 - gain: [4,3,H,W] in [0,1]."""
    padded = F.pad(image.unsqueeze(0), (shift, shift, shift, shift), mode="replicate")[0]
    height, width = image.shape[-2:]
    rows, cols = slice(shift, shift + height), slice(shift, shift + width)
    views = [padded[:, rows, :width], padded[:, rows, 2 * shift:],  # left, right
             padded[:, :height, cols], padded[:, 2 * shift:, cols]]  # up, down
    gains = torch.tensor([1 - gain, 1 + gain, 1 + gain, 1 - gain], device=image.device).view(4, 1, 1, 1)
    return (torch.stack(views) * gains).clamp(0, 1)


class ClipLogic:
    """WinCLIP+ local scores plus global and component-level logical terms, summed after standardisation."""

    name = "clip_logic"

    def __init__(self, config: ClipLogicConfig) -> None:
        if (config.clip_model is None) == (config.backbone is None):
            raise ValueError("clip_logic needs exactly one of clip_model (paper) and backbone (offline)")
        self.config = config
        self._context: FitContext | None = None
        self._tower: ClipTower | None = None
        self._text: torch.Tensor | None = None  # [2, D] normal / anomalous class embeddings
        self._support: Encoded | None = None
        self._support_digests: list[bytes] = []
        self._centroids: torch.Tensor | None = None
        self._support_stats: torch.Tensor | None = None
        self._floors: torch.Tensor | None = None
        self._term_stats: Standardiser | None = None  # of the terms on held-out normals
        self._held_out = ""

    # ------------------------------------------------------------------------------ embeddings
    def _encode(self, images: torch.Tensor, cache: bool = True) -> Encoded:
        """Embeddings of images [b,3,H,W] in [0,1] from the CLIP tower or the offline backbone."""
        config, features = self.config, self._context.features
        if self._tower is not None:
            global_, patches, *windows = self._tower.encode(images, config.window_scales)
        else:
            maps = (features.get if cache else features.compute)(config.backbone, images, config.levels)
            local = aggregate_local(maps, config.patch_size)  # [b, C, h, w]
            global_ = F.normalize(local.mean(dim=(2, 3)), dim=1)
            windows = [F.normalize(F.avg_pool2d(local, s, stride=1), dim=1) for s in config.window_scales]
            patches = F.normalize(local, dim=1)
        colours = F.adaptive_avg_pool2d(images.to(patches.device), patches.shape[-2:])
        parts = torch.cat([patches, config.part_colour_weight * colours], dim=1)  # [b, C + 3, h, w]
        return Encoded(global_, patches, list(windows), colours, parts)

    # ------------------------------------------------------------------------------ scoring parts
    def _few_shot_map(self, query: Encoded, memory: Encoded,
                      nearest: list[torch.Tensor] | None = None) -> torch.Tensor:
        """WinCLIP+ few-shot map [b,h,w]: mean of the patch map and each window scale's harmonic map. `nearest`:
        the nearest cosine distances to `memory` of the patch grid and each window scale, when known already."""
        scales = self.config.window_scales
        if nearest is None:
            nearest = [nearest_cosine_distance(q, m) for q, m in zip([query.patches, *query.windows],
                                                                      [memory.patches, *memory.windows])]
        maps = [nearest[0]] + [harmonic_aggregation(d, scale) for scale, d in zip(scales, nearest[1:])]
        return torch.stack(maps).mean(dim=0)

    def _nearest_to_supports(self, images: torch.Tensor, query: Encoded) -> list[torch.Tensor]:
        """Nearest cosine distances [b,h,w] of the test images' (`query`) patch grid and each window scale to the
        support set: the smallest over the support images of the distance to each one, kept in the run's content
        cache per (test image, support image) pair: the support sets are nested over k, so a seed's k = 1, 2, 4
        reuse its k = 8 pairs and only the pairs of new support images are computed."""
        store, tag = self._context.features.store, ("clip_logic_nearest", repr(self.config))

        def to_support(j: int) -> Callable[[list[int]], list[tuple[torch.Tensor, ...]]]:
            def compute(missing: list[int]) -> list[tuple[torch.Tensor, ...]]:
                rows, bank = query.select(missing), self._support.select([j])
                pairs = zip([rows.patches, *rows.windows], [bank.patches, *bank.windows])
                distances = [nearest_cosine_distance(q, m) for q, m in pairs]
                return [tuple(d[i].clone() for d in distances) for i in range(len(missing))]
            return compute

        digests = store.digests(images)
        per_support = [store.get_many([(*tag, test, support) for test in digests], to_support(j))
                       for j, support in enumerate(self._support_digests)]  # [support][image] -> one map per level
        # min over supports of (1 - cos) / 2 = (1 - the max cosine over the whole support set) / 2, exactly
        return [torch.stack([torch.stack([maps[level] for maps in rows]) for rows in per_support]).amin(dim=0)
                for level in range(1 + len(self.config.window_scales))]

    def _zero_shot(self, query: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-shot image score [b] (anomalous-class probability of the global embedding) and map [b,h,w]: the
        harmonic mean over the image score and each window scale's harmonically aggregated map (WinCLIP)."""
        def anomalous(embeddings: torch.Tensor) -> torch.Tensor:  # [..., D] -> [...]
            return torch.softmax(embeddings @ self._text.T / self.config.temperature, dim=-1)[..., 1]
        image = anomalous(query.global_)
        maps = [harmonic_aggregation(anomalous(w.permute(0, 2, 3, 1)), s)
                for s, w in zip(self.config.window_scales, query.windows)]
        return image, multi_scale_harmonic(image, maps, tuple(query.patches.shape[-2:]))

    def _terms(self, query: Encoded, memory: Encoded, reference_stats: torch.Tensor,
               nearest: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Raw terms [b,3] (local, global, components), the local map [b,h,w] and the named parts (`nearest`: as
        `_few_shot_map`)."""
        few_shot_map = self._few_shot_map(query, memory, nearest)
        parts = {"few_shot": few_shot_map.flatten(1).max(dim=1).values}
        local, local_map = parts["few_shot"], few_shot_map
        if self._text is not None:
            parts["zero_shot"], zero_shot_map = self._zero_shot(query)
            local, local_map = (parts["zero_shot"] + local) / 2, (zero_shot_map + few_shot_map) / 2
        parts["global"] = 1 - (query.global_ @ memory.global_.T).max(dim=1).values
        stats = part_statistics(query.parts, query.colours, self._centroids, self.config.min_region)
        parts["components"] = statistic_distance(stats, reference_stats, self._floors)
        return torch.stack([local, parts["global"], parts["components"]], dim=1), local_map, parts

    def _held_out_terms(self, support: torch.Tensor) -> torch.Tensor:
        """Terms [n,3] of held-out normals: leave-one-out over the supports, or shifted views when k = 1."""
        k = len(support)
        if k >= 2:
            self._held_out = "leave-one-out over the support images"
            rows = []
            for i in range(k):
                others = [j for j in range(k) if j != i]
                terms, _, _ = self._terms(self._support.select([i]), self._support.select(others),
                                          self._support_stats[others])
                rows.append(terms)
            return torch.cat(rows)
        shift = max(1, round(support.shape[-1] * self.config.view_shift))
        self._held_out = f"4 views of the one support: shift {shift} px, brightness x(1 +- {self.config.view_gain})"
        views = self._encode(shifted_views(support[0], shift, self.config.view_gain), cache=False)
        return self._terms(views, self._support, self._support_stats)[0]

    # ------------------------------------------------------------------------------ Method interface
    @torch.no_grad()  # nothing is trained
    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        config = self.config
        self._context = context
        if config.clip_model is not None:
            self._tower = context.features.clip_tower(config.clip_model, config.clip_pretrained)
            self._text = self._tower.class_embeddings(category)
        self._support = self._encode(support)
        self._support_digests = context.features.store.digests(support)
        self._centroids = kmeans(flatten_patches(self._support.parts), config.num_parts, config.kmeans_iters,
                                 context.generator)
        parts = len(self._centroids)
        self._floors = torch.tensor([config.area_floor] * 2 * parts + [config.count_floor] * (parts + 1)
                                    + [config.colour_floor] * 3 * parts, device=self._centroids.device)
        self._support_stats = part_statistics(self._support.parts, self._support.colours, self._centroids,
                                              config.min_region)
        held_out = self._held_out_terms(support)
        self._term_stats = Standardiser.fit(held_out, dim=0, relative_floor=config.relative_floor)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        query = self._encode(images)
        nearest = self._nearest_to_supports(images, query)
        terms, local_map, parts = self._terms(query, self._support, self._support_stats, nearest)
        z = self._term_stats(terms)
        maps = upsample_and_blur(local_map, images.shape[-2:], self.config.blur_sigma)
        extras = {**parts, **{f"z_{name}": z[:, i] for i, name in enumerate(TERMS)}}
        return Prediction(scores=z.sum(dim=1), maps=maps, extras=extras)

    def info(self) -> dict[str, Any]:
        config = self.config
        clip = config.clip_model is not None
        tower = (f"open_clip {config.clip_model} ({config.clip_pretrained})" if clip
                 else f"{config.backbone} (bundled backbone features; not a CLIP result)")
        pretrained = self._context.features.pretrained if self._context is not None else None
        return {
            **asdict(config), "tower": tower, "text_part": clip, "random_weights": pretrained is False,
            "windows": ("token windows re-encoded by the tower" if clip else "average-pooled local features")
            if config.window_scales else "none (patch level only)",
            "grid": list(self._support.patches.shape[-2:]) if self._support is not None else None,
            "parts": 0 if self._centroids is None else len(self._centroids), "held_out": self._held_out,
            "term_mean": None if self._term_stats is None else [round(float(v), 6) for v in self._term_stats.mean[0]],
            "term_scale": None if self._term_stats is None else [round(float(v), 6) for v in self._term_stats.scale[0]],
        }


@register(
    "clip_logic",
    config=ClipLogicConfig,
    presets={"paper": ClipLogicConfig(),
             "offline": ClipLogicConfig(clip_model=None, backbone="lite0", window_scales=())},
    summary="WinCLIP+ (CLIP zero-/few-shot) plus global and part-statistics logical terms (offline: Lite0, no text)",
    cheap_fit=True,
    requires=lambda config: Requirements(
        tuple(WeightFile(name) for name in filter(None, [config.backbone]))
        + ((WeightFile(config.clip_model, config.clip_pretrained),) if config.clip_model else ())),
)
def create_clip_logic(config: ClipLogicConfig) -> ClipLogic:
    return ClipLogic(config)
