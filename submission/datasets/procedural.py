"""Deterministic procedural MVTec-LOCO-like dataset: the harness's default and test fixture.

Each category is a small synthetic inspection scene with a *logical* rule that only global context
reveals. Logical anomalies are assembled exclusively from parts (shapes and palette colours) that
also occur in normal images, so local patch statistics alone cannot see them.

Categories and their rules
--------------------------
``pill_tray``
    A tray holds exactly five capsules (cream or amber, free position and orientation).
    Logical: ``missing_pill`` (four pills; the mask is the tray interior and saturates at one
    pill's area in pixels, as LOCO does for missing objects) and ``extra_pill`` (six pills; the
    mask is the extra pill).
``cable_pair``
    Two cables run from a left to a right terminal block, crossing or not; the clips at both ends
    of a cable have the cable's colour, which varies per image among a palette of four.
    Logical: ``colour_mismatch`` (one clip takes another palette colour), ``swapped_clips`` (the
    right-hand clips exchange colours; one mask per clip) and ``missing_cable`` (the mask is the
    cable's expected path).
``part_slots``
    A 2x3 foam insert; every slot has a fixed part type (nut, washer, bolt, cap, bracket, block).
    Logical: ``swapped_parts`` (two parts exchange slots; one mask each), ``wrong_part`` (a slot
    holds a duplicate of another slot's part) and ``missing_part`` (an empty slot; the mask is the
    slot and saturates at one part's area in pixels).

Structural anomalies (every category): ``scratch`` (thin bright or dark line), ``hole`` (small dark
ellipse) and ``contamination`` (irregular tinted blob), one or two per image on parts or
background, each covering 0.25-2.8 % of the image, blended with soft edges at 20-60 grey levels
of contrast (comparable to normal variation, never saturated).

Normal variation: smooth low-amplitude background texture, jitter of part positions, sizes and
rotations, per-part brightness, global illumination gain / gradient / tint and sensor noise.

Every image comes from ``numpy.random.default_rng((seed, crc32(category), split, index))``, so files
do not change when the counts change, and the same config gives byte-identical files.

Two realisations: ``test`` and ``dev``
--------------------------------------
``ProceduralConfig.split`` picks one of two disjoint realisations of the same dataset (same categories,
counts, sizes and rules; different images):

``test`` (the default)
    The *reported* realisation: what ``make run`` and BENCHMARKS.md measure. It is never used to
    choose a setting. Its images, its `config_digest` and its cache folder name are those the
    generator had before the split existed (``split`` does not enter the digest when it is ``test``).
``dev``
    The realisation on which every setting is chosen (thresholds, option defaults, fusion weights).
    Each image comes from its own seed stream,
    ``default_rng((seed, crc32(category), split, index, DEV_STREAM))``, which no ``test`` image
    uses for any ``seed``: ``synth --seed 1`` does not reproduce the dev images. Cached as
    ``procedural-dev-<digest>``.

``python -m submission synth --split dev --out DIR`` writes the dev realisation; the runner reads it
only when asked (``python -m submission run --procedural-split dev``, or ``--data DIR``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

_GENERATOR_VERSION = 1  # bump when the drawing changes so cached copies are regenerated

RGB = tuple[int, int, int]
PALETTE: dict[str, RGB] = {
    "cream": (236, 230, 212), "amber": (214, 136, 48), "tray": (168, 174, 182),
    "terminal": (58, 60, 66), "red": (200, 48, 42), "blue": (46, 92, 204),
    "yellow": (226, 196, 46), "white": (226, 228, 222), "slot": (98, 100, 106),
    "steel": (186, 190, 196), "brass": (198, 160, 76), "green": (64, 150, 84),
}
CABLE_COLOURS = ("red", "blue", "yellow", "white")
CONTAMINANTS: tuple[RGB, ...] = ((122, 86, 52), (96, 116, 60), (170, 164, 148), (40, 34, 30))
SPLITS = {"train": 0, "validation": 1, "good": 2, "logical_anomalies": 3, "structural_anomalies": 4}
PROCEDURAL_SPLITS = ("test", "dev")  # realisations: test = reported, never used to choose; dev = for choosing
DEV_STREAM = 0x646576  # "dev": the last seed word of every dev image (test images have no fifth word)


@dataclass(frozen=True)
class ProceduralConfig:
    """Size and realisation of the procedural dataset; every field enters the cache key of
    `ensure_dataset` (`split` only when it is not the default `test`)."""

    image_size: int = 256
    n_train: int = 24  # train/good per category
    n_validation: int = 6  # validation/good
    n_test_good: int = 16
    n_test_logical: int = 16
    n_test_structural: int = 16
    seed: int = 0
    categories: tuple[str, ...] = ("pill_tray", "cable_pair", "part_slots")
    split: str = "test"  # realisation (PROCEDURAL_SPLITS): test = reported, dev = for choosing settings

    def __post_init__(self) -> None:
        if self.split not in PROCEDURAL_SPLITS:
            raise ValueError(f"split {self.split!r}: choose one of {', '.join(PROCEDURAL_SPLITS)}")


@dataclass(frozen=True)
class Part:
    """A drawable part. Positions and sizes are fractions of the image side, angles in radians."""

    kind: str  # semantic type: pill, clip, nut, ...
    shape: str  # ellipse | ring | capsule | box | triangle | hexagon | polyline
    colour: str  # key of PALETTE
    x: float = 0.5
    y: float = 0.5
    w: float = 0.1  # width (polyline: stroke width)
    h: float = 0.1
    angle: float = 0.0
    points: tuple[tuple[float, float], ...] = ()  # polyline vertices
    shadow: bool = True


@dataclass(frozen=True)
class DefectType:
    """A defect type. Logical ones edit a scene in place and return its mask regions."""

    name: str
    apply: Callable[[list[Part], np.random.Generator], list[list[Part]]] | None = None
    abs_area: float | None = None  # absolute sPRO threshold, as a fraction of the image area


@dataclass(frozen=True)
class CategorySpec:
    """How to draw one category: background colour, normal scene sampler, logical defects."""

    background: RGB
    scene: Callable[[np.random.Generator], list[Part]]
    logical: tuple[DefectType, ...]


@dataclass
class Sample:
    """One rendered image with one boolean mask per defect instance and the parts it shows."""

    image: np.ndarray  # (S, S, 3) uint8
    masks: list[tuple[str, np.ndarray]]  # (defect name, boolean mask) per defect instance
    parts: list[Part]


# ----------------------------------------------------------------------------------- drawing
def _distance(p: Part, size: int, shift: float = 0.0) -> tuple[tuple[slice, slice], np.ndarray]:
    """Signed distance in pixels (negative inside) to part `p`, over its bounding window."""
    if p.shape == "polyline":
        pts = np.asarray(p.points, dtype=np.float64) * size + shift
        pad = p.w * size / 2 + 4
        lo, hi = pts.min(0) - pad, pts.max(0) + pad
    else:
        c = np.array([p.x, p.y]) * size + shift
        pad = np.hypot(p.w, p.h) * size / 2 + 4
        lo, hi = c - pad, c + pad
    x0, y0 = np.clip(np.floor(lo), 0, size).astype(int)
    x1, y1 = np.clip(np.ceil(hi), 0, size).astype(int)
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    win = (slice(y0, y1), slice(x0, x1))
    if p.shape == "polyline":
        d = np.full(xs.shape, np.inf)
        for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
            ex, ey = bx - ax, by - ay
            t = np.clip(((xs - ax) * ex + (ys - ay) * ey) / max(ex * ex + ey * ey, 1e-9), 0, 1)
            d = np.minimum(d, np.hypot(xs - ax - t * ex, ys - ay - t * ey))
        return win, d - p.w * size / 2
    ca, sa = np.cos(p.angle), np.sin(p.angle)
    u = (xs - c[0]) * ca + (ys - c[1]) * sa
    v = (ys - c[1]) * ca - (xs - c[0]) * sa
    a, b = p.w * size / 2, p.h * size / 2
    if p.shape in ("ellipse", "ring"):
        d = (np.hypot(u / a, v / b) - 1) * min(a, b)
        return win, d if p.shape == "ellipse" else np.maximum(d, -d - 0.45 * min(a, b))
    if p.shape == "capsule":
        return win, np.hypot(np.maximum(np.abs(u) - (a - b), 0), v) - b
    if p.shape == "box":
        r = 0.25 * min(a, b)
        qx, qy = np.abs(u) - a + r, np.abs(v) - b + r
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return win, outside + np.minimum(np.maximum(qx, qy), 0) - r
    n = {"triangle": 3, "hexagon": 6}[p.shape]
    normals = 2 * np.pi * np.arange(n) / n + np.pi / 2
    d = np.max([u * np.cos(t) + v * np.sin(t) for t in normals], axis=0)
    return win, d - a * np.cos(np.pi / n)


def _alpha(d: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (0.5 exactly on the boundary)."""
    return np.clip(0.5 - d / soft, 0.0, 1.0)


def _paint(canvas: np.ndarray, win: tuple[slice, slice], alpha: np.ndarray, colour) -> None:
    region = canvas[win]
    region += alpha[..., None] * (colour - region)


def _draw(canvas: np.ndarray, p: Part, rng: np.random.Generator) -> None:
    """Draw one part with a soft drop shadow and a bevel-like shading."""
    size = canvas.shape[0]
    if p.shadow:
        win, d = _distance(p, size, shift=0.012 * size)
        _paint(canvas, win, 0.4 * _alpha(d, 0.01 * size + 1), np.zeros(3))
    win, d = _distance(p, size)
    half = (p.w if p.shape == "polyline" else min(p.w, p.h)) * size / 2
    shade = 0.78 + 0.3 * np.clip(-d / min(0.6 * half, 0.03 * size), 0, 1)
    colour = np.array(PALETTE[p.colour], dtype=np.float64) * rng.uniform(0.95, 1.05)
    _paint(canvas, win, _alpha(d), shade[..., None] * colour)


def _mask(parts: list[Part], size: int) -> np.ndarray:
    """Union of the parts' interiors as a boolean (size, size) mask."""
    mask = np.zeros((size, size), dtype=bool)
    for p in parts:
        win, d = _distance(p, size)
        mask[win] |= d < 0
    return mask


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise (std ~0.6): a cells x cells Gaussian grid upsampled bicubically."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global illumination gain, gradient and tint, sensor noise; quantise to uint8."""
    g = np.linspace(-0.5, 0.5, canvas.shape[0])
    light = rng.uniform(0.93, 1.07) * (1 + rng.uniform(-0.08, 0.08) * g[None, :]
                                       + rng.uniform(-0.08, 0.08) * g[:, None])
    tint = 1 + rng.normal(0, 0.015, 3)
    img = canvas * light[..., None] * tint + rng.normal(0, 2.0, canvas.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- categories
def _j(rng: np.random.Generator, s: float) -> float:
    return float(rng.uniform(-s, s))


def _pick(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


N_PILLS = 5


def _add_pills(rng: np.random.Generator, tray: Part, pills: list[Part], n: int) -> list[Part]:
    """Place `n` more non-overlapping capsules inside the tray."""
    pills = list(pills)
    for _ in range(n):
        for _ in range(500):
            x, y = tray.x + rng.uniform(-0.285, 0.285), tray.y + rng.uniform(-0.205, 0.205)
            if all(np.hypot(x - q.x, y - q.y) >= 0.165 for q in pills):
                break
        w, h, angle = rng.uniform(0.14, 0.16), rng.uniform(0.065, 0.075), rng.uniform(0, np.pi)
        pills.append(Part("pill", "capsule", _pick(rng, ("cream", "amber")), x, y, w, h, angle))
    return pills


def _pill_scene(rng: np.random.Generator) -> list[Part]:
    tray = Part("tray", "box", "tray", 0.5 + _j(rng, 0.012), 0.5 + _j(rng, 0.012), 0.8, 0.64,
                _j(rng, 0.03))
    return [tray] + _add_pills(rng, tray, [], N_PILLS)


def _missing_pill(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    del parts[1 + int(rng.integers(len(parts) - 1))]
    tray = parts[0]
    return [[replace(tray, kind="region", w=tray.w - 0.03, h=tray.h - 0.03)]]


def _extra_pill(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    parts[1:] = _add_pills(rng, parts[0], parts[1:], 1)
    return [[parts[-1]]]


def _bezier(ctrl: np.ndarray, n: int = 20) -> tuple[tuple[float, float], ...]:
    t = np.linspace(0, 1, n)[:, None]
    pts = ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1]
           + 3 * (1 - t) * t ** 2 * ctrl[2] + t ** 3 * ctrl[3])
    return tuple((float(x), float(y)) for x, y in pts)


def _cable_scene(rng: np.random.Generator) -> list[Part]:
    dx, dy = _j(rng, 0.015), _j(rng, 0.015)
    xl, xr, rows = 0.12 + dx, 0.88 + dx, (0.32 + dy, 0.68 + dy)
    parts = [Part("terminal", "box", "terminal", x, 0.5 + dy, 0.1, 0.6, _j(rng, 0.02))
             for x in (xl, xr)]
    colours = [CABLE_COLOURS[i] for i in rng.permutation(len(CABLE_COLOURS))[:2]]
    cross = rng.random() < 0.5
    cables, clips = [], []
    for i, colour in enumerate(colours):
        yl, yr = rows[i] + _j(rng, 0.01), rows[1 - i if cross else i] + _j(rng, 0.01)
        ctrl = np.array([[xl, yl], [0.4 + _j(rng, 0.08), yl + _j(rng, 0.12)],
                         [0.6 + _j(rng, 0.08), yr + _j(rng, 0.12)], [xr, yr]])
        cables.append(Part("cable", "polyline", colour, 0.5, (yl + yr) / 2,
                           w=0.035 * rng.uniform(0.95, 1.05), points=_bezier(ctrl)))
        clips += [Part("clip", "box", colour, x, y, 0.09, 0.075, _j(rng, 0.05))
                  for x, y in ((xl, yl), (xr, yr))]
    return parts + [cables[k] for k in rng.permutation(2)] + clips


def _colour_mismatch(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    k = _pick(rng, tuple(i for i, p in enumerate(parts) if p.kind == "clip"))
    others = tuple(c for c in CABLE_COLOURS if c != parts[k].colour)
    parts[k] = replace(parts[k], colour=_pick(rng, others))
    return [[parts[k]]]


def _swapped_clips(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    a, b = (i for i, p in enumerate(parts) if p.kind == "clip" and p.x > 0.5)
    ca, cb = parts[a].colour, parts[b].colour
    parts[a], parts[b] = replace(parts[a], colour=cb), replace(parts[b], colour=ca)
    return [[parts[a]], [parts[b]]]


def _missing_cable(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    k = _pick(rng, tuple(i for i, p in enumerate(parts) if p.kind == "cable"))
    return [[parts.pop(k)]]


SLOTS = ((0.2, 0.3), (0.5, 0.3), (0.8, 0.3), (0.2, 0.7), (0.5, 0.7), (0.8, 0.7))
SLOT_PARTS = (  # kind, shape, colour, w, h, base angle; slot i always holds SLOT_PARTS[i]
    ("nut", "hexagon", "steel", 0.16, 0.16, 0.0), ("washer", "ring", "brass", 0.17, 0.17, 0.0),
    ("bolt", "capsule", "steel", 0.24, 0.07, np.pi / 2), ("cap", "ellipse", "red", 0.15, 0.15, 0.0),
    ("bracket", "triangle", "blue", 0.18, 0.18, 0.0), ("block", "box", "green", 0.17, 0.11, 0.0),
)


def _slot_scene(rng: np.random.Generator) -> list[Part]:
    dx, dy = _j(rng, 0.012), _j(rng, 0.012)
    slots = [Part("slot", "box", "slot", x + dx, y + dy, 0.26, 0.34, shadow=False)
             for x, y in SLOTS]
    parts = []
    for (x, y), (kind, shape, colour, w, h, angle) in zip(SLOTS, SLOT_PARTS):
        s = rng.uniform(0.95, 1.05)
        parts.append(Part(kind, shape, colour, x + dx + _j(rng, 0.02), y + dy + _j(rng, 0.025),
                          w * s, h * s, angle + _j(rng, 0.25)))
    return slots + parts


def _two_slots(rng: np.random.Generator) -> tuple[int, int]:
    a, b = rng.choice(len(SLOTS), 2, replace=False)
    return len(SLOTS) + int(a), len(SLOTS) + int(b)


def _swapped_parts(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    a, b = _two_slots(rng)
    pa, pb = parts[a], parts[b]
    parts[a], parts[b] = replace(pb, x=pa.x, y=pa.y), replace(pa, x=pb.x, y=pb.y)
    return [[parts[a]], [parts[b]]]


def _wrong_part(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    a, b = _two_slots(rng)
    parts[b] = replace(parts[a], x=parts[b].x, y=parts[b].y, angle=parts[a].angle + _j(rng, 0.25))
    return [[parts[b]]]


def _missing_part(parts: list[Part], rng: np.random.Generator) -> list[list[Part]]:
    _, b = _two_slots(rng)
    del parts[b]
    return [[parts[b - len(SLOTS)]]]


CATEGORIES: dict[str, CategorySpec] = {
    "pill_tray": CategorySpec((52, 62, 74), _pill_scene, (
        DefectType("missing_pill", _missing_pill, abs_area=0.0094),
        DefectType("extra_pill", _extra_pill))),
    "cable_pair": CategorySpec((38, 84, 58), _cable_scene, (
        DefectType("colour_mismatch", _colour_mismatch),
        DefectType("swapped_clips", _swapped_clips),
        DefectType("missing_cable", _missing_cable))),
    "part_slots": CategorySpec((66, 66, 70), _slot_scene, (
        DefectType("swapped_parts", _swapped_parts), DefectType("wrong_part", _wrong_part),
        DefectType("missing_part", _missing_part, abs_area=0.016))),
}
STRUCTURAL = (DefectType("scratch"), DefectType("hole"), DefectType("contamination"))


# ------------------------------------------------------------------------ structural defects
def _defect_shapes(name: str, cx: float, cy: float, rng: np.random.Generator) -> list[Part]:
    if name == "scratch":
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.25, 0.45)
        t = np.linspace(-0.5, 0.5, 6)
        off = (1 - 4 * t ** 2) * rng.uniform(-0.04, 0.04)
        xs = cx + t * length * np.cos(angle) - off * np.sin(angle)
        ys = cy + t * length * np.sin(angle) + off * np.cos(angle)
        return [Part("scratch", "polyline", "white", cx, cy, w=rng.uniform(0.009, 0.014),
                     points=tuple((float(x), float(y)) for x, y in zip(xs, ys)))]
    if name == "hole":
        return [Part("hole", "ellipse", "white", cx, cy, rng.uniform(0.055, 0.1),
                     rng.uniform(0.045, 0.08), rng.uniform(0, np.pi))]
    return [Part("blob", "ellipse", "white", cx + _j(rng, 0.03), cy + _j(rng, 0.03),
                 *rng.uniform(0.03, 0.1, 2), rng.uniform(0, np.pi))
            for _ in range(int(rng.integers(3, 6)))]


def _structural(canvas: np.ndarray, parts: list[Part], rng: np.random.Generator,
                name: str) -> np.ndarray:
    """Blend one structural defect into `canvas` in place; return its boolean mask.

    Shapes are resampled until the mask covers 0.25-2.8 % of the image (a safety margin inside
    the promised 0.2-3 %); the defect lands on a part or on the background with equal chance.
    """
    size = canvas.shape[0]
    soft = {"scratch": 1.2, "hole": 2.0, "contamination": 2.5}[name]
    for _ in range(100):
        if rng.random() < 0.5:
            p = parts[int(rng.integers(len(parts)))]
            cx, cy = np.clip([p.x + _j(rng, 0.04), p.y + _j(rng, 0.04)], 0.1, 0.9)
        else:
            cx, cy = rng.uniform(0.12, 0.88, 2)
        alpha = np.zeros((size, size))
        for s in _defect_shapes(name, float(cx), float(cy), rng):
            win, d = _distance(s, size)
            alpha[win] = np.maximum(alpha[win], _alpha(d, soft))
        mask = alpha > 0.5
        if 0.0025 <= mask.mean() <= 0.028:
            break
    if name == "scratch":
        canvas += (alpha * (1 if rng.random() < 0.7 else -1) * rng.uniform(30, 55))[..., None]
    elif name == "hole":
        canvas -= (alpha * rng.uniform(35, 60))[..., None]
    else:
        # the contaminant colour farthest from the surface, at an opacity giving a 25-50 level shift
        tints = np.array(CONTAMINANTS, dtype=np.float64)
        gap = np.abs(tints - canvas[mask].mean(axis=0)).max(axis=1)
        strength = min(rng.uniform(25, 50) / max(gap.max(), 1.0), 0.9)
        grain = 0.8 + 0.2 * np.clip(_smooth(rng, size, max(size // 10, 2)), -1, 1)
        canvas += (alpha * grain * strength)[..., None] * (tints[int(gap.argmax())] - canvas)
    return mask


# ---------------------------------------------------------------------------------- public
def render_sample(category: str, split: str, index: int,
                  config: ProceduralConfig = ProceduralConfig()) -> Sample:
    """Render image `index` of `split` (a key of SPLITS) for `category`, with its masks."""
    spec, size = CATEGORIES[category], config.image_size
    key = [config.seed, zlib.crc32(category.encode()), SPLITS[split], index]
    rng = np.random.default_rng(key if config.split == "test" else key + [DEV_STREAM])
    parts = spec.scene(rng)
    masks: list[tuple[str, np.ndarray]] = []
    if split == "logical_anomalies":
        defect = spec.logical[index % len(spec.logical)]
        masks = [(defect.name, _mask(region, size)) for region in defect.apply(parts, rng)]
    canvas = np.array(spec.background, dtype=np.float64) * (
        1 + 0.07 * _smooth(rng, size, 6) + 0.035 * _smooth(rng, size, 40))[..., None]
    for p in parts:
        _draw(canvas, p, rng)
    if split == "structural_anomalies":
        for _ in range(1 + int(rng.random() < 0.3)):
            name = _pick(rng, STRUCTURAL).name
            masks.append((name, _structural(canvas, parts, rng, name)))
    return Sample(_finish(canvas, rng), masks, parts)


def defects_config(category: str, image_size: int) -> list[dict]:
    """LOCO `defects_config.json` entries: logical, then structural types; values 255, 254, ..."""
    types = CATEGORIES[category].logical + STRUCTURAL
    return [{"defect_name": t.name, "pixel_value": 255 - i,
             "saturation_threshold": 1.0 if t.abs_area is None
             else round(t.abs_area * image_size ** 2),
             "relative_saturation": t.abs_area is None} for i, t in enumerate(types)]


def _save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)  # fast; noise barely compresses anyway


def generate(root: Path, config: ProceduralConfig = ProceduralConfig()) -> Path:
    """Write the dataset under root (one folder per category, MVTec LOCO layout); return root."""
    root = Path(root)
    unknown = set(config.categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {sorted(CATEGORIES)}")
    counts = {"train": config.n_train, "validation": config.n_validation,
              "good": config.n_test_good, "logical_anomalies": config.n_test_logical,
              "structural_anomalies": config.n_test_structural}
    for category in config.categories:
        table = defects_config(category, config.image_size)
        values = {e["defect_name"]: np.uint8(e["pixel_value"]) for e in table}
        for split, n in counts.items():
            sub = f"{split}/good" if split in ("train", "validation") else f"test/{split}"
            (root / category / sub).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sample = render_sample(category, split, i, config)
                _save(sample.image, root / category / sub / f"{i:03d}.png")
                for k, (name, mask) in enumerate(sample.masks):
                    gt = root / category / "ground_truth" / split / f"{i:03d}"
                    gt.mkdir(parents=True, exist_ok=True)
                    _save(mask.astype(np.uint8) * values[name], gt / f"{k:03d}.png")
        (root / category / "defects_config.json").write_text(json.dumps(table, indent=2) + "\n")
    return root


def config_digest(config: ProceduralConfig) -> str:
    """Short hash of the config and the generator version (the cache folder's suffix).

    `split` enters only when it is not `test`, so the reported realisation keeps the digest (and the
    cache folder) it had before the dev realisation existed."""
    fields = asdict(config)
    if fields["split"] == "test":
        del fields["split"]
    payload = json.dumps({"generator": _GENERATOR_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def folder_name(config: ProceduralConfig) -> str:
    """The cache folder's name: `procedural-<digest>` (test, as before the split existed) or
    `procedural-dev-<digest>`."""
    tag = "" if config.split == "test" else f"{config.split}-"
    return f"procedural-{tag}{config_digest(config)}"


def ensure_dataset(cache_dir: Path, config: ProceduralConfig = ProceduralConfig()) -> Path:
    """Return a cached copy for this config, generating it if absent.

    The folder is `cache_dir/<folder_name(config)>`; it is generated into a temporary sibling and
    renamed into place, so a crash never leaves a half-written dataset under the final name and a
    concurrent generator simply loses the race.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / folder_name(config)
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_dir))
    try:
        generate(tmp, config)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


DATA_CACHE = Path(os.environ.get("FEWSHOT_AD_CACHE", Path.home() / ".cache" / "fewshot_ad"))  # datasets, kept across runs


def embedded_dataset(split: str = "test") -> Path:
    """The embedded dataset's root in its realisation `split` (generated into `DATA_CACHE` on first use)."""
    return ensure_dataset(DATA_CACHE / "procedural", ProceduralConfig(split=split))
