"""Pixel AUROC, AUPRO and AU-sPRO from one sort of the normal pixels.

Each of these metrics is a sum over the anomalous pixels of a function of two counts per pixel: how many
normal pixels score below its score and how many tie with it. The normal pixels are sorted once (per group
of images, see below), the anomalous ones are sorted too so that a binary search of all of them walks the
sorted normals once, and every metric is then a few vector operations over the anomalous pixels:

- pixel AUROC (Mann-Whitney): sum(below + equal / 2) / (P * N), P anomalous and N normal pixels;
- (s)PRO vs FPR, integrated up to FPR = limit: walk the normals from the highest score down and let x be
  the number counted so far (FPR = x / N). A region pixel with `above` normals scoring higher and `equal`
  tied ones is counted from x = above + equal on, and inside its run of ties in proportion (the curve
  joins the two points of a run of tied normals with a straight line, as the trapezoidal curve of the
  previous implementation did). So its share of the area up to X = limit * N is
      0 if X <= above,  X - above - equal / 2 if X >= above + equal,  (X - above)^2 / (2 equal) between,
  and the normalised area is sum_r inc_r * share_r / (regions * N * limit), where the pixel of rank k
  (highest score first) in a region of saturation area s adds inc = min(1, k/s) - min(1, (k-1)/s) to its
  region's overlap (s = the region's area for AUPRO, i.e. 1 / area per pixel).

No loop over thresholds and the curve is never built (per region only a partition finds the pixels a
saturated region counts, the 8-connected labelling runs per image). The per-kind AU-sPRO subsets (all good images
plus the anomalies of one kind) reuse the same sort: images are grouped by the subsets they belong to, each
group's normals are sorted on their own, and a subset's counts are the sums over its groups.

On a CUDA device (`device=`) the sorts and binary searches run in torch there; on the CPU numpy's sort (a
SIMD sort, much faster than torch's on the CPU) does them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from metrics._inputs import _check_limit, _mask, _pairs

__all__ = ["PixelScores", "PixelTruth", "prepare_truth", "pixel_scores", "pixel_auroc", "aupro", "auspro"]

_EIGHT = np.ones((3, 3), dtype=bool)
_LOW32 = np.uint64(0xFFFFFFFF)
ALL = "all"


@dataclass(frozen=True)
class PixelScores:
    """Every pixel metric of a set of images. aupro: {fpr limit: value}; auspro: {subset name: {limit: value}}."""

    pixel_auroc: float | None
    aupro: dict[float, float | None] = field(default_factory=dict)
    auspro: dict[str, dict[float, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Image:
    """One image's ground truth: the union of its masks (None: no anomalous pixel) and its sPRO regions,
    each a boolean [H,W] mask with its saturation area."""

    union: np.ndarray | None
    regions: tuple[tuple[np.ndarray, float], ...] = ()


@dataclass(frozen=True)
class PixelTruth:
    """The ground-truth side of `pixel_scores`, prepared once (`prepare_truth`) and reused for any maps of the
    same shapes: each image's anomalous pixels, their 8-connected components (AUPRO) and, when the defects are
    given, the sPRO regions as positions among the image's anomalous pixels."""

    shapes: tuple[tuple[int, int], ...]  # (H, W) per image
    images: tuple[_Image, ...]
    n_anomalous: np.ndarray  # [n_images] anomalous pixels per image
    component: np.ndarray  # [P] 0-based component (over all images) of each anomalous pixel, (image, flat) order
    area: np.ndarray  # [C] pixels per component
    # per image, per sPRO region: (its pixels' positions among the image's anomalous pixels, None when the
    # region is the image's only one, i.e. all of them; saturation area); empty without defects
    regions: tuple[tuple[tuple[np.ndarray | None, float], ...], ...]
    with_regions: bool  # defects were given: AU-sPRO can be computed


@dataclass(frozen=True)
class _Ranked:
    """Every image's anomalous pixels ranked among the normal pixels of each group of images.

    Arrays over the anomalous pixels are in ascending score order ("sorted order"); `position` maps the
    anomalous pixels in (image, flat index) order to their sorted position."""

    n_normal: np.ndarray  # [G] normal pixels per group
    counted: np.ndarray  # [G, P] normals of group g scoring at most each anomalous score (non-decreasing)
    equal: np.ndarray  # [G, P] normals of group g tied with it
    position: np.ndarray  # [P]
    offsets: np.ndarray  # [n_images + 1] start of each image's anomalous pixels in (image, flat index) order


# ------------------------------------------------------------------ sorting and ranking
def _argsort(values: np.ndarray) -> np.ndarray:
    """An ascending order of a 1-D array (any order among ties). For float32, one value sort of packed
    (order-preserving key, index) uint64 pairs, about 3x faster than np.argsort."""
    if values.dtype == np.float32 and values.size < 2**32:
        bits = np.ascontiguousarray(values).view(np.uint32)
        key = bits ^ np.where(bits >> np.uint32(31) != 0, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
        packed = (key.astype(np.uint64) << np.uint64(32)) | np.arange(values.size, dtype=np.uint64)
        packed.sort()
        return (packed & _LOW32).astype(np.intp)
    return np.argsort(values)


def _use_torch(device: Any) -> bool:
    return device is not None and str(device) != "cpu"


def _count(normal: np.ndarray, ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort `normal` in place; for each of the ascending scores `ordered`, how many normals score at most it
    and how many tie with it. Searching ascending keys walks the sorted normals once (cache-friendly); the
    second search is only for the scores some normal ties with."""
    normal.sort()
    if normal.size == 0:
        return np.zeros(ordered.size, np.int64), np.zeros(ordered.size, np.int64)
    below = np.searchsorted(normal, ordered, side="left")
    tie = np.flatnonzero(normal[np.minimum(below, normal.size - 1)] == ordered)  # below = size: no tie
    equal = np.zeros_like(below)
    if tie.size:
        equal[tie] = np.searchsorted(normal, ordered[tie], side="right") - below[tie]
    return below + equal, equal


def _rank(normals: list[np.ndarray], values: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort each group's normal scores (in place) and the anomalous scores `values`. Returns (ascending order of
    values, counted [G,P], equal [G,P]): per group, the normals scoring at most / tied with each sorted score."""
    if _use_torch(device):
        return _rank_torch(normals, values, device)
    order = _argsort(values)
    ordered = values[order]
    counted = np.empty((len(normals), values.size), dtype=np.int64)
    equal = np.empty((len(normals), values.size), dtype=np.int64)
    for g, normal in enumerate(normals):
        counted[g], equal[g] = _count(normal, ordered)
    return order, counted, equal


def _rank_torch(normals: list[np.ndarray], values: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    ordered, order = torch.sort(torch.from_numpy(values).to(device))
    counted = np.empty((len(normals), values.size), dtype=np.int64)
    equal = np.empty((len(normals), values.size), dtype=np.int64)
    for g, normal in enumerate(normals):
        sorted_normal = torch.sort(torch.from_numpy(normal).to(device)).values
        lo = torch.searchsorted(sorted_normal, ordered)
        hi = torch.searchsorted(sorted_normal, ordered, right=True)
        counted[g] = hi.cpu().numpy()
        equal[g] = (hi - lo).cpu().numpy()
    return order.cpu().numpy(), counted, equal


def _rank_images(truth: PixelTruth, maps: list[np.ndarray], group_of_image: np.ndarray, n_groups: int,
                 device: Any) -> _Ranked:
    """Split every map into normal pixels (one buffer per group) and anomalous pixels (in image, flat-index
    order), and rank the latter."""
    images = truth.images
    dtype = np.result_type(*[m.dtype for m in maps])
    n_anomalous = truth.n_anomalous
    n_normal_image = np.array([m.size for m in maps], dtype=np.int64) - n_anomalous
    n_normal = np.bincount(group_of_image, weights=n_normal_image, minlength=n_groups).astype(np.int64)
    buffers = [np.empty(int(n), dtype=dtype) for n in n_normal]
    filled = np.zeros(n_groups, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_anomalous)]).astype(np.intp)
    values = np.empty(int(offsets[-1]), dtype=dtype)
    for i, (im, m, g) in enumerate(zip(images, maps, group_of_image)):
        m = m.astype(dtype, copy=False)  # a copy only where the maps' dtypes differ
        out = buffers[g][filled[g]:filled[g] + n_normal_image[i]]
        if im.union is None:
            out[...] = m.ravel()
        else:
            union = im.union.ravel()
            np.compress(union, m.ravel(), out=values[offsets[i]:offsets[i + 1]])
            np.compress(~union, m.ravel(), out=out)
        filled[g] += n_normal_image[i]
    order, counted, equal = _rank(buffers, values, device)
    del buffers
    position = np.empty(values.size, dtype=np.intp)
    position[order] = np.arange(values.size)
    return _Ranked(n_normal, counted, equal, position, offsets)


# ------------------------------------------------------------------ areas
def _shares(x: float, n: int, counted: np.ndarray, equal: np.ndarray) -> np.ndarray:
    """Area each pixel adds under its overlap curve up to x normals counted (see the module docstring), for
    pixels with fewer than x normals above them: counted / equal as in `_Ranked`, non-decreasing."""
    above = n - counted
    out = (x - 0.5 * equal) - above
    # Inside a run of tied normals (above < x < above + equal, i.e. below < n - x): a prefix, the pixels
    # tied with the normal at the limit.
    ramp = int(np.searchsorted(counted - equal, int(np.ceil(n - x)), side="left"))
    if ramp:
        out[:ramp] = (x - above[:ramp]) ** 2 / (2.0 * equal[:ramp])
    return out


def _subset_counts(ranked: _Ranked, groups: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Normal pixels of the given groups, and how many of them score at most / tie with each sorted pixel."""
    n = int(ranked.n_normal[groups].sum())
    if groups.size == 1:
        return n, ranked.counted[groups[0]], ranked.equal[groups[0]]
    return n, ranked.counted[groups].sum(axis=0), ranked.equal[groups].sum(axis=0)


def _areas(n: int, counted: np.ndarray, equal: np.ndarray, weights: np.ndarray, n_regions: int,
           limits: Sequence[float]) -> dict[float, float | None]:
    """Normalised area under mean-overlap vs FPR up to each limit; weights [P] (sorted order): what each
    pixel adds to its regions' overlaps (summed over regions)."""
    if n_regions == 0 or n == 0:
        return {lim: None for lim in limits}
    out = {}
    for lim in limits:
        x = lim * n
        # Only pixels with fewer than x normals above them add area: a suffix of the sorted order.
        start = int(np.searchsorted(counted, int(np.floor(n - x)), side="right"))
        shares = _shares(x, n, counted[start:], equal[start:])
        out[lim] = float(np.dot(shares, weights[start:]) / (n_regions * n * lim))
    return out


def _increments(pixels: np.ndarray, saturation: float) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of one region (distinct sorted positions) that add to its overlap, and what they add: the
    pixel of rank k (highest score first) adds min(1, k/s) - min(1, (k-1)/s), i.e. 1/s for the floor(s) best,
    the rest of 1 for the next one, 0 for the others."""
    a, k = pixels.size, int(np.floor(saturation))
    if k >= a:  # s = area: every pixel adds 1/area
        return pixels, np.full(a, 1.0 / saturation)
    part = np.partition(pixels, a - k - 1)  # part[a-k:]: the k best; part[a-k-1]: the next one
    rest = saturation - k
    if rest > 0:
        return part[a - k - 1:], np.concatenate([[rest / saturation], np.full(k, 1.0 / saturation)])
    return part[a - k:], np.full(k, 1.0 / saturation)


# ------------------------------------------------------------------ the one entry point
def _components(union: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component (1..n) of each anomalous pixel of a non-empty union, in flat-index order."""
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    crop = union[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # labelling only the bounding box is cheaper
    labels, n = ndimage.label(crop, structure=_EIGHT)
    return labels[crop], n


def _groups(n_images: int, subsets: Mapping[str, np.ndarray]) -> tuple[np.ndarray, int]:
    """Images with the same membership in every subset form one group: (group of each image, groups)."""
    if not subsets:
        return np.zeros(n_images, dtype=np.intp), 1
    membership = np.zeros((n_images, len(subsets)), dtype=bool)
    for j, index in enumerate(subsets.values()):
        membership[index, j] = True
    _, group_of_image = np.unique(membership, axis=0, return_inverse=True)
    group_of_image = group_of_image.ravel().astype(np.intp)
    return group_of_image, int(group_of_image.max()) + 1


def _aupro(truth: PixelTruth, ranked: _Ranked, limits: Sequence[float]) -> dict[float, float | None]:
    weights = np.zeros(ranked.position.size)
    if truth.area.size:
        weights[ranked.position] = 1.0 / truth.area[truth.component]
    n, counted, equal = _subset_counts(ranked, np.arange(ranked.n_normal.size))
    return _areas(n, counted, equal, weights, truth.area.size, limits)


def _auspro(truth: PixelTruth, ranked: _Ranked, group_of_image: np.ndarray, subsets: Mapping[str, np.ndarray],
            limits: Sequence[float]) -> dict[str, dict[float, float | None]]:
    images = truth.images
    positions, increments, image_of_region = [], [], []
    for i, regions in enumerate(truth.regions):
        here = ranked.position[ranked.offsets[i]:ranked.offsets[i + 1]]
        for rows, sat in regions:
            pixels = here if rows is None else here[rows]  # a lone mask is the union
            pixel, increment = _increments(pixels, sat)
            positions.append(pixel)
            increments.append(increment)
            image_of_region.append(i)
    region_image = np.asarray(image_of_region, dtype=np.intp)
    region_of_pair = np.repeat(np.arange(len(positions)), [p.size for p in positions])
    position = np.concatenate(positions) if positions else np.zeros(0, np.intp)
    increment = np.concatenate(increments) if increments else np.zeros(0)
    out: dict[str, dict[float, float | None]] = {}
    done: dict[tuple[int, ...], dict[float, float | None]] = {}
    for name, index in subsets.items():
        key = tuple(np.unique(index).tolist())
        if key not in done:
            in_subset = np.zeros(len(images), dtype=bool)
            in_subset[index] = True
            keep = in_subset[region_image[region_of_pair]]
            weights = np.bincount(position[keep], weights=increment[keep], minlength=ranked.position.size)
            n, counted, equal = _subset_counts(ranked, np.unique(group_of_image[index]))
            done[key] = _areas(n, counted, equal, weights, int(in_subset[region_image].sum()), limits)
        out[name] = dict(done[key])
    return out


def _evaluate(truth: PixelTruth, maps: list[np.ndarray], *, auroc: bool, pro_limits: Sequence[float],
              spro_limits: Sequence[float], subsets: Mapping[str, np.ndarray], device: Any) -> PixelScores:
    for i, (shape, m) in enumerate(zip(truth.shapes, maps)):
        if m.shape != shape:
            raise ValueError(f"gt_masks[{i}] has shape {shape} but maps[{i}] has shape {m.shape}; "
                             "resize the map to mask resolution first")
    group_of_image, n_groups = _groups(len(truth.images), subsets)
    ranked = _rank_images(truth, maps, group_of_image, n_groups, device)
    n_normal, n_anomalous = int(ranked.n_normal.sum()), int(ranked.offsets[-1])
    auroc_value = None
    if auroc and n_normal and n_anomalous:  # Mann-Whitney: sum of (below + equal / 2) over anomalous pixels
        auroc_value = float((ranked.counted.sum() - 0.5 * ranked.equal.sum()) / (n_anomalous * n_normal))
    pro = _aupro(truth, ranked, pro_limits) if pro_limits else {}
    spro = _auspro(truth, ranked, group_of_image, subsets, spro_limits) if spro_limits else {}
    return PixelScores(auroc_value, pro, spro)


def _prepared(images: list[_Image], shapes: Sequence[tuple[int, int]], with_regions: bool) -> PixelTruth:
    """A `PixelTruth` from each image's union and regions (checked already)."""
    component, area, regions = [], [], []
    for im in images:
        if im.union is not None:
            labels, n = _components(im.union)
            component.append(labels - 1 + len(area))
            area.extend(np.bincount(labels, minlength=n + 1)[1:].tolist())
        anomalous = np.flatnonzero(im.union) if len(im.regions) > 1 else None
        regions.append(tuple((None if anomalous is None else np.flatnonzero(nz.ravel()[anomalous]), sat)
                             for nz, sat in im.regions))
    n_anomalous = np.array([np.count_nonzero(im.union) if im.union is not None else 0 for im in images], dtype=np.int64)
    return PixelTruth(tuple(tuple(shape) for shape in shapes), tuple(images), n_anomalous,
                      np.concatenate(component) if component else np.zeros(0, np.intp),
                      np.asarray(area, dtype=np.float64), tuple(regions), with_regions)


# ------------------------------------------------------------------ public functions
def _union(nonzero: list[np.ndarray]) -> np.ndarray | None:
    nonzero = [nz for nz in nonzero if nz.any()]
    if not nonzero:
        return None
    union = nonzero[0]
    for nz in nonzero[1:]:
        union = union | nz
    return union


def _spro_regions(mask_list: Sequence[Any], shape: tuple[int, ...], i: int,
                  defects: Mapping[int, tuple[float, bool]]) -> list[tuple[np.ndarray, float]]:
    """(nonzero mask, saturation area) of each non-empty mask of image i, checked as `auspro` documents."""
    regions = []
    for j, k in enumerate(mask_list):
        k = _mask(k, shape, f"gt_masks[{i}][{j}]")
        nz = k != 0
        inside = k[nz]
        if inside.size == 0:
            continue  # an empty mask holds no region
        if inside.min() != inside.max():
            raise ValueError(f"gt_masks[{i}][{j}] holds several pixel values {np.unique(inside).tolist()}; "
                             "expected one defect type per mask")
        value = inside[0].item()
        if value not in defects:
            raise ValueError(f"gt_masks[{i}][{j}]: pixel value {value} is not in defects")
        threshold, relative = defects[value]
        area = float(inside.size)
        sat = min(threshold * area if relative else float(threshold), area)
        if sat <= 0:
            raise ValueError(f"defects[{value}] gives a non-positive saturation area {sat}")
        regions.append((nz, sat))
    return regions


def _subsets(subsets: Mapping[str, Sequence[int]] | None, n_images: int) -> dict[str, np.ndarray]:
    if subsets is None:
        return {ALL: np.arange(n_images)}
    out = {}
    for name, index in subsets.items():
        index = np.asarray(index, dtype=np.intp).ravel()
        if index.size and (index.min() < 0 or index.max() >= n_images):
            raise ValueError(f"subsets[{name!r}] holds an image index outside 0..{n_images - 1}")
        out[name] = index
    return out


def prepare_truth(gt_masks: Sequence[Sequence[Any]], shapes: Sequence[tuple[int, int]],
                  defects: Mapping[int, tuple[float, bool]] | None = None) -> PixelTruth:
    """The ground-truth side of `pixel_scores` (anomalous pixels, components, sPRO regions) of images whose masks
    are gt_masks[i] (a list of [H,W] masks, empty for a good image), prepared once for any maps of the images'
    shapes (`shapes[i]`: (H, W) of image i). Masks are checked as `auspro` documents when `defects` is given."""
    gt_masks = list(gt_masks)
    if len(shapes) != len(gt_masks):
        raise ValueError(f"gt_masks has {len(gt_masks)} images but shapes has {len(shapes)}")
    images = []
    for i, (mask_list, shape) in enumerate(zip(gt_masks, shapes)):
        if defects is not None:
            regions = _spro_regions(mask_list, tuple(shape), i, defects)
            images.append(_Image(_union([nz for nz, _ in regions]), tuple(regions)))
        else:
            nonzero = [_mask(k, tuple(shape), f"gt_masks[{i}][{j}]") != 0 for j, k in enumerate(mask_list)]
            images.append(_Image(_union(nonzero)))
    return _prepared(images, shapes, with_regions=defects is not None)


def pixel_scores(gt_masks: Sequence[Sequence[Any]] | PixelTruth, maps: Sequence[Any],
                 defects: Mapping[int, tuple[float, bool]] | None = None, *,
                 pro_limits: Sequence[float] = (0.3,), spro_limits: Sequence[float] = (0.05,),
                 subsets: Mapping[str, Sequence[int]] | None = None, device: Any = None) -> PixelScores:
    """Pixel AUROC, AUPRO and AU-sPRO of a set of images from one sort of their normal pixels.

    gt_masks[i]: list of [H,W] masks of image i (empty for a good image), as for `auspro`, or the masks prepared
    once by `prepare_truth` (then `defects` is the one given there); pixel AUROC and AUPRO (regions =
    8-connected components) use the union of an image's masks, as `pixel_auroc` and `aupro` would given that
    union. AU-sPRO is computed for every subset of image indices in `subsets` ({name: indices}; default {"all":
    every image}) and only when defects are given. `device`: a torch device for the sorts and searches (a CUDA
    device; None or "cpu" uses numpy). Equal to `pixel_auroc`, `aupro` and `auspro` on the same images."""
    pro_limits = [_check_limit(lim, "pro_limits") for lim in pro_limits]
    if isinstance(gt_masks, PixelTruth):
        truth = gt_masks
        pairs = _pairs(truth.images, maps, "gt_masks")
    else:
        pairs = _pairs(gt_masks, maps, "gt_masks")
        truth = prepare_truth([k for k, _ in pairs], [m.shape for _, m in pairs], defects)
    spro_limits = [_check_limit(lim, "spro_limits") for lim in spro_limits] if truth.with_regions else []
    return _evaluate(truth, [m for _, m in pairs], auroc=True, pro_limits=pro_limits, spro_limits=spro_limits,
                     subsets=_subsets(subsets, len(pairs)), device=device)


def _binary_images(masks: Sequence[Any], maps: Sequence[Any]) -> tuple[PixelTruth, list[np.ndarray]]:
    pairs = _pairs(masks, maps)
    images = [_Image(_union([_mask(k, m.shape, f"masks[{i}]") != 0])) for i, (k, m) in enumerate(pairs)]
    return _prepared(images, [m.shape for _, m in pairs], with_regions=False), [m for _, m in pairs]


def pixel_auroc(masks: Sequence[Any], maps: Sequence[Any], device: Any = None) -> float | None:
    """Pixel-level ROC AUC over all pooled pixels. masks [H,W] per image (nonzero =
    anomalous), maps float [H,W] of the same shape; None if one class."""
    truth, arrays = _binary_images(masks, maps)
    return _evaluate(truth, arrays, auroc=True, pro_limits=(), spro_limits=(),
                     subsets={ALL: np.arange(len(arrays))}, device=device).pixel_auroc


def aupro(masks: Sequence[Any], maps: Sequence[Any], fpr_limit: float = 0.3, device: Any = None) -> float | None:
    """Normalised area under the per-region-overlap (PRO) vs FPR curve up to fpr_limit
    (MVTec AD protocol; regions = 8-connected components). masks/maps [H,W] per image.
    None if there is no anomalous region or no normal pixel."""
    limit = _check_limit(fpr_limit, "fpr_limit")
    truth, arrays = _binary_images(masks, maps)
    return _evaluate(truth, arrays, auroc=False, pro_limits=(limit,), spro_limits=(),
                     subsets={ALL: np.arange(len(arrays))}, device=device).aupro[limit]


def auspro(gt_masks: Sequence[Sequence[Any]], maps: Sequence[Any],
           defects: Mapping[int, tuple[float, bool]],
           fpr_limits: Sequence[float] = (0.01, 0.05, 0.1, 0.3, 1.0), device: Any = None) -> dict[float, float | None]:
    """Normalised area under the saturated-PRO (sPRO) vs FPR curve (MVTec LOCO).

    gt_masks[i]: list of [H,W] masks of image i (empty for a good image); each mask's
    nonzero pixels form ONE region whose defect type is its pixel value, looked up in
    defects[value] = (saturation_threshold, relative).  maps[i]: [H,W] float.
    FPR uses the pixels normal in all of an image's masks.  Returns {limit: value};
    values None if there are no regions or no normal pixels."""
    limits = [_check_limit(lim, "fpr_limits") for lim in fpr_limits]
    pairs = _pairs(gt_masks, maps, "gt_masks")
    truth = prepare_truth([k for k, _ in pairs], [m.shape for _, m in pairs], defects)
    return _evaluate(truth, [m for _, m in pairs], auroc=False, pro_limits=(), spro_limits=limits,
                     subsets={ALL: np.arange(len(pairs))}, device=device).auspro[ALL]
