"""k-shot support sets by the VAND rule: `torch.manual_seed(seed); torch.randperm(n)[:k]` over sorted train/good."""
from __future__ import annotations

import torch

from submission.errors import HarnessError


def support_indices(pool_size: int, k: int, seed: int) -> list[int]:
    """Indices of the k support images; nested over k for one seed (k=1 is a prefix of k=8)."""
    if k < 1:
        raise HarnessError(f"--shots {k}: k must be at least 1")
    if k > pool_size:
        raise HarnessError(f"--shots {k}: larger than the support pool of {pool_size} images")
    torch.manual_seed(seed)
    return torch.randperm(pool_size)[:k].tolist()
