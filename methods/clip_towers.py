"""open_clip towers for `clip_logic`: offline weight lookup, WinCLIP prompts, and patch / window embeddings.

WinCLIP (Jeong et al., CVPR 2023) scores an image with a CLIP image tower and a prompt ensemble;
its window embeddings re-encode the class token together with only the patch tokens inside each
window (the other tokens are dropped from the sequence, which is what WinCLIP's token mask does).
The computation follows anomalib's WinCLIP (`src/anomalib/models/image/winclip/`; the paper has no
official code):
- a class's text embedding is the mean of its prompts' raw (unnormalised) projected text embeddings,
  then normalised: anomalib averages `clip.encode_text` outputs and normalises inside the cosine;
- the global and window embeddings are the class token after `ln_post` and `proj` (open_clip's pooled
  output); the patch embeddings (WinCLIP+'s patch-level memory) are open_clip's `output_tokens`, the
  patch tokens after `ln_post` without `proj` (transformer width, 896 for ViT-B-16-plus-240, not the
  640-dim joint space), as anomalib's `encode_image` returns them;
- window scores become patch scores by the harmonic mean over the covering windows
  (`harmonic_aggregation`), and the zero-shot map is the harmonic mean over the image score broadcast
  to the grid and each scale's patch map (`multi_scale_harmonic`).
Departures: our 21 templates keep each wording once (anomalib's list has "a jpeg corrupted photo of
the {}." twice and lacks "a cropped photo of a {}."); images are resized straight to the tower's size
(bicubic, antialiased; open_clip's transform resizes the short side then centre-crops, the same on
square inputs up to the resampling filter); scores are clamped at 1e-6 before a harmonic mean (anomalib
lets a zero score give 1/0 = inf and maps the result to 0): only scores below 1e-6 are affected, and such
a mean stays below (number of scores averaged) x 1e-6 either way.

Weights are searched in one documented order, stopping at the first hit; nothing is downloaded:
1. an explicit file (`--weights ViT-B-16-plus-240=PATH`): used, or an error if it is not a file;
2. the Hugging Face hub cache (open_clip's `hf_hub` id of the model/tag, safetensors then .bin);
3. open_clip's URL download cache (`~/.cache/clip/<file name of the release URL>`).
If none holds a file, `WeightsMissing` (from `methods.weight_files`) names each place searched and how
to supply the file. Loading never downloads; `fetch_clip_weights` does on request (`python -m submission
weights fetch`), with open_clip's own `download_pretrained` into the caches searched above. The
tokenizer is open_clip's bundled `SimpleTokenizer` (its BPE vocabulary ships in the wheel), so no hub
call is made, as open_clip issue #968 warns can otherwise happen.
Preprocessing (mean, std) comes from the pretrained tag's open_clip entry, never a default.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from methods.cache import ContentCache
from methods.common import Normalise, mixed_precision
from methods.weight_files import (LICENCES, WeightSearch, WeightsInvalid, WeightsMissing, check_published_digest,
                                  hub_cache_dir, hub_cache_file)

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")  # WinCLIP: 7 normal states
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")  # WinCLIP: 4 anomalous states
TEMPLATES = (  # WinCLIP-style templates (our wording of the paper's kind of list), 21 of them
    "a cropped photo of the {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
    "a close-up photo of the {}.", "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of the {}.", "a dark photo of a {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.", "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.",
    "a photo of a small {}.", "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)
OPEN_CLIP_URL_CACHE = Path("~/.cache/clip")  # open_clip's download_pretrained_from_url default
EXTRA_MODEL_CONFIGS: dict[str, dict] = {}  # name -> open_clip model config dict (tests register tiny models)


def natural_name(category: str) -> str:
    """The category's name as words: underscores become spaces (`pill_tray` -> `pill tray`)."""
    return category.replace("_", " ").strip()


def build_prompts(category: str) -> tuple[list[str], list[str]]:
    """Normal and anomalous prompts: every state x template with the category's natural name."""
    name = natural_name(category)
    def expand(states: tuple[str, ...]) -> list[str]:
        return [template.format(state.format(name)) for state in states for template in TEMPLATES]
    return expand(NORMAL_STATES), expand(ANOMALOUS_STATES)


@lru_cache(maxsize=None)
def _tokenizer(context_length: int) -> open_clip.SimpleTokenizer:
    return open_clip.SimpleTokenizer(context_length=context_length)  # bundled BPE vocabulary: no hub call


# ------------------------------------------------------------------------------------------ weights
def clip_model_names() -> list[str]:
    """Every open_clip model name a config or `--weights` may use (open_clip's, plus test-registered ones)."""
    return sorted({*open_clip.list_models(), *EXTRA_MODEL_CONFIGS})


def _hub_cache_files(hf_hub: str) -> tuple[str, list[str]]:
    """open_clip's `hf_hub` entry 'org/repo/' or 'org/repo/file' -> repo id and candidate file names."""
    org, repo, *rest = hf_hub.split("/")
    filename = "/".join(rest)
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return f"{org}/{repo}", names


def search_clip_weights(model: str, tag: str, explicit: Path | None = None) -> WeightSearch:
    """Search an open_clip model/tag's weight file in the documented order; `WeightsInvalid` for an explicit path
    that is not a file (an explicit file is used or is an error: never a fallback to a cache)."""
    cfg = open_clip.get_pretrained_cfg(model, tag)
    url = cfg.get("url") or (f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else "")
    place = OPEN_CLIP_URL_CACHE.expanduser() / os.path.basename(cfg["url"]) if cfg.get("url") else None
    licence = LICENCES.get(model, f"see the provider of open_clip's {model} ({tag}) weights")
    search = dict(name=model, url=url, place=place, licence=licence)
    if explicit is not None:
        if Path(explicit).is_file():
            return WeightSearch(found=Path(explicit), searched=(), explicit=True, **search)
        raise WeightsInvalid(f"--weights {model}={explicit}: no such file")
    searched: list[str] = []
    if cfg.get("hf_hub"):
        repo_id, names = _hub_cache_files(cfg["hf_hub"])
        found = hub_cache_file(repo_id, tuple(names))
        if found is not None:
            return WeightSearch(found=found, searched=(), **search)
        searched.append(f"Hugging Face hub cache ({repo_id}: {' or '.join(names)} in {hub_cache_dir(repo_id)})")
    if place is not None:
        if place.is_file():
            return WeightSearch(found=place, searched=tuple(searched), **search)
        searched.append(f"open_clip download cache {place}")
    if not cfg:
        searched.append(f"open_clip knows no pretrained tag {tag!r} for {model!r}")
    return WeightSearch(found=None, searched=tuple(searched), **search)


def resolve_clip_weights(model: str, tag: str, explicit: Path | None = None) -> Path:
    """The weight file of an open_clip model/tag by the documented search order, or `WeightsMissing`."""
    search = search_clip_weights(model, tag, explicit)
    if search.found is None:
        raise WeightsMissing(
            f"CLIP tower {model!r} ({tag}): no weights found; searched {'; '.join(search.searched)}. "
            f"Provide them with --weights {model}=PATH, place them in the hub cache, or run with --preset offline."
        )
    return search.found


def fetch_clip_weights(model: str, tag: str) -> Path:
    """Download an open_clip model/tag's weights with open_clip's `download_pretrained` (the Hugging Face hub
    cache when the tag has a hub id, else `~/.cache/clip`: both searched by `resolve_clip_weights`); open_clip
    checks a release URL's SHA-256 prefix, and the file is checked against its published digest (a hub blob's
    etag) here too. Returns the file."""
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        raise WeightsMissing(f"open_clip knows no pretrained tag {tag!r} for {model!r}; nothing to download")
    try:
        target = download_pretrained(cfg)  # progress bars are huggingface_hub's / open_clip's own
    except RuntimeError as error:  # open_clip's own SHA-256 check of a release file failed
        raise WeightsInvalid(f"{model} ({tag}): {' '.join(str(error).split())[:300]}") from None
    except OSError as error:  # the hub or the release server could not be reached, or the file is not there
        raise WeightsMissing(f"{model} ({tag}): download failed: {' '.join(str(error).split())[:300]}") from None
    if not target or not Path(target).is_file():
        raise WeightsMissing(f"{model} ({tag}): open_clip's download wrote no file")
    check_published_digest(Path(target), model)
    return Path(target)


def clip_preprocessing(model: str, tag: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std that come with the tag's weights (open_clip's pretrained entry, else the model config)."""
    cfg = open_clip.get_pretrained_cfg(model, tag) or EXTRA_MODEL_CONFIGS.get(model, {})
    if "mean" not in cfg:
        raise KeyError(f"no preprocessing known for CLIP tower {model!r} ({tag})")
    return tuple(cfg["mean"]), tuple(cfg["std"])


def create_clip_model(model: str, tag: str, weights: Path | None, pretrained: bool) -> nn.Module:
    """An open_clip CLIP model in eval mode: weights by the search order, or fixed random ones (seed 0)."""
    path = resolve_clip_weights(model, tag, weights) if pretrained else None  # fail before building
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random towers do not depend on (or consume) the cell's RNG state
        if model in EXTRA_MODEL_CONFIGS:
            clip = open_clip.CLIP(**{k: v for k, v in EXTRA_MODEL_CONFIGS[model].items() if k not in ("mean", "std")})
            if path is not None:
                open_clip.load_checkpoint(clip, str(path))
        else:  # a file path as `pretrained` loads that file; the tag's activation setting is kept
            quick_gelu = bool(open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False))
            clip = open_clip.create_model(model, pretrained=None if path is None else str(path),
                                          force_quick_gelu=quick_gelu, require_pretrained=path is not None)
    return clip.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------ towers
def window_indices(grid: tuple[int, int], scale: int) -> torch.Tensor:
    """Token indices of every `scale` x `scale` window (stride 1) on a patch grid: [nh*nw, scale*scale]."""
    h, w = grid
    index = torch.arange(h * w).view(1, 1, h, w).float()
    windows = F.unfold(index, kernel_size=scale)  # [1, scale*scale, nh*nw]
    return windows[0].t().long()


def harmonic_aggregation(window_scores: torch.Tensor, scale: int) -> torch.Tensor:
    """Window scores [b,nh,nw] (stride 1) -> patch scores [b,nh+scale-1,nw+scale-1]: the harmonic mean
    over the windows covering each patch (WinCLIP; anomalib's `harmonic_aggregation`)."""
    ones = torch.ones(1, 1, scale, scale, dtype=window_scores.dtype, device=window_scores.device)
    inverse = 1.0 / window_scores.clamp_min(1e-6).unsqueeze(1)
    covering = F.conv_transpose2d(torch.ones_like(inverse), ones)  # windows covering each patch
    return (covering / F.conv_transpose2d(inverse, ones)).squeeze(1)


def multi_scale_harmonic(image_scores: torch.Tensor, scale_maps: list[torch.Tensor],
                         grid: tuple[int, int]) -> torch.Tensor:
    """WinCLIP's zero-shot map [b,h,w]: the harmonic mean over the image score [b] broadcast to the grid (the
    full-image scale) and each window scale's patch map [b,h,w] (anomalib's `_compute_zero_shot_scores`:
    (scales + 1) / sum of the inverses). With no window scales it is the image score everywhere."""
    full = image_scores.view(-1, 1, 1).expand(-1, *grid)
    stacked = torch.stack([full, *scale_maps])  # [scales + 1, b, h, w]
    return len(stacked) / (1.0 / stacked.clamp_min(1e-6)).sum(dim=0)


class ClipTower(nn.Module):
    """A frozen open_clip model: normalised text, global, patch and window embeddings of images in [0,1]."""

    def __init__(self, clip: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], store: ContentCache,
                 name: str = "clip") -> None:
        super().__init__()
        self.clip = clip
        if getattr(clip.visual, "attn_pool", None) is not None or clip.visual.pool_type != "tok":
            raise ValueError("window embeddings need a ViT image tower pooled by its class token")
        if getattr(clip.visual, "final_ln_after_pool", False):  # its output tokens would skip ln_post
            raise ValueError("WinCLIP's patch memory needs a ViT tower that applies ln_post to every token")
        self.image_size = tuple(clip.visual.image_size)
        self.grid = tuple(clip.visual.grid_size)
        self.normalise = Normalise(mean, std)
        self.store, self.name = store, name  # encodings are kept in the run's content cache under `name`
        self.autocast_dtype: torch.dtype | None = None  # set by `build_tower` (FeatureCache's precision)
        self._text_cache: dict[str, torch.Tensor] = {}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [b,3,H,W] in [0,1] -> the tower's size (bicubic, antialiased) and normalisation."""
        resized = F.interpolate(images, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return self.normalise(resized.clamp(0, 1))

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings [n,D] (projected; unit norm unless `normalize=False`); sequences are cut after the
        longest prompt's end token (exact under the causal mask: no token attends to later ones)."""
        clip = self.clip
        if getattr(clip, "attn_mask", None) is None or clip.text_pool_type != "argmax":
            return clip.encode_text(tokens, normalize=normalize)
        length = int(tokens.argmax(dim=1).max()) + 1  # the end token has the highest id
        tokens = tokens[:, :length]
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
        x = x[torch.arange(len(tokens)), tokens.argmax(dim=1)]
        projection = clip.text_projection
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
        return F.normalize(x, dim=-1) if normalize else x

    def class_embeddings(self, category: str) -> torch.Tensor:
        """[2,D]: the normal and the anomalous class embedding, each the mean of its prompts' raw (unnormalised)
        text embeddings, then normalised (WinCLIP as anomalib computes it; cached)."""
        if category not in self._text_cache:
            self._text_cache[category] = self._class_embeddings(category)
        return self._text_cache[category]

    def _class_embeddings(self, category: str) -> torch.Tensor:
        tokenizer = _tokenizer(self.clip.context_length)
        device = self.normalise.mean.device
        rows = [F.normalize(self.encode_text(tokenizer(prompts).to(device), normalize=False).mean(dim=0), dim=0)
                for prompts in build_prompts(category)]
        return torch.stack(rows)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Input tokens [b,1+N,width]: class token then patch tokens, with position embeddings, ln_pre."""
        visual = self.clip.visual
        x = visual.conv1(pixels).flatten(2).transpose(1, 2)  # [b, N, width]
        cls = visual.class_embedding.view(1, 1, -1).expand(len(x), 1, -1)
        return visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class tokens [...,width] -> normalised joint-space embeddings [...,D]: ln_post, then proj."""
        visual = self.clip.visual
        return F.normalize(visual.ln_post(tokens) @ visual.proj, dim=-1)

    def _windows(self, tokens: torch.Tensor, scale: int, chunk: int = 2048) -> torch.Tensor:
        """Re-encode the class token with each window's patch tokens: [b,nh,nw,D]."""
        index = window_indices(self.grid, scale).to(tokens.device) + 1  # +1 skips the class token
        b, n_windows = len(tokens), len(index)
        sequences = torch.cat([tokens[:, :1].unsqueeze(1).expand(-1, n_windows, -1, -1), tokens[:, index]], dim=2)
        sequences = sequences.flatten(0, 1)  # [b*n_windows, 1+scale*scale, width]
        out = [self.clip.visual.transformer(sequences[i:i + chunk])[:, 0] for i in range(0, len(sequences), chunk)]
        nh, nw = self.grid[0] - scale + 1, self.grid[1] - scale + 1
        return self._project(torch.cat(out)).view(b, nh, nw, -1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, scales: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """Global [b,D] (class token, projected), patches [b,width,h,w] (open_clip's output tokens: after ln_post,
        not projected) and one window map [b,D,nh,nw] per scale (projected), all normalised; cached per image
        content in the run's content cache (test images recur across cells)."""
        keys = [(self.name, scales, digest) for digest in self.store.digests(images)]

        def compute(missing: list[int]) -> list[tuple[torch.Tensor, ...]]:
            with mixed_precision(images.device, self.autocast_dtype):  # see FeatureCache.autocast_dtype
                tokens = self._tokens(self.preprocess(images[missing]))
                out = self.clip.visual.transformer(tokens)  # [b, 1+N, width]
                global_ = self._project(out[:, 0]).float()  # [b, D]
                patch_tokens = self.clip.visual.ln_post(out[:, 1:])  # open_clip's output_tokens: [b, N, width]
                patches = F.normalize(patch_tokens.float(), dim=-1).transpose(1, 2).unflatten(2, self.grid)
                windows = [self._windows(tokens, s).permute(0, 3, 1, 2).float() for s in scales]
            return [tuple(t[row].clone() for t in (global_, patches, *windows)) for row in range(len(missing))]

        return tuple(torch.stack(parts) for parts in zip(*self.store.get_many(keys, compute)))


def build_tower(model: str, tag: str, weights: Path | None, pretrained: bool, device: torch.device,
                store: ContentCache, autocast_dtype: torch.dtype | None = None) -> ClipTower:
    """The tower of a model/tag on a device, its encodings kept in `store`. Built once per run by
    `FeatureCache.clip_tower` (methods reach it through `FitContext.features`)."""
    mean, std = clip_preprocessing(model, tag)
    clip = create_clip_model(model, tag, weights, pretrained)
    tower = ClipTower(clip, mean, std, store, name=f"clip:{model}:{tag}").to(device)
    tower.autocast_dtype = autocast_dtype
    return tower
