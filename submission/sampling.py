"""k-shot support sets by the VAND rule: `torch.manual_seed(seed); torch.randperm(n)[:k]` over sorted train/good."""
from __future__ import annotations

import torch

from submission.datasets.records import Category
from submission.errors import HarnessError


def support_indices(pool_size: int, k: int, seed: int) -> list[int]:
    """Indices of the k support images; nested over k for one seed (k=1 is a prefix of k=8)."""
    if k < 1:
        raise HarnessError(f"--shots {k}: k must be at least 1")
    if k > pool_size:
        raise HarnessError(f"--shots {k}: larger than the support pool of {pool_size} images")
    torch.manual_seed(seed)
    return torch.randperm(pool_size)[:k].tolist()


def support_names(category: Category, k: int, seed: int) -> list[str]:
    """File names of the support images of (category, k, seed), for the manifest."""
    try:
        indices = support_indices(len(category.train_good), k, seed)
    except HarnessError as error:
        raise HarnessError(f"{category.root}: {error}") from None
    return [category.train_good[i].name for i in indices]
