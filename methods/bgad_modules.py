"""BGAD's parts: the 2-D sine-cosine positional encoding, a conditional normalizing flow per feature level (FrEIA),
the per-patch Gaussian log-likelihood, and the losses as small pure functions (maximum likelihood, the explicit
boundaries, the boundary-guided semi-push-pull loss), plus the learning-rate schedule.

Yao et al., CVPR 2023; official code github.com/xcyao00/BGAD (models/fc_flow.py, models/modules.py,
losses/losses.py, utils/utils.py); the specification: docs/REFERENCE.md, section "BGAD". The flows are built from
FrEIA (VLL-HD/FrEIA, https://github.com/vislearn/FrEIA), the normalizing-flow library CFlow-AD and BGAD's official
code build theirs on: a `SequenceINN` of `AllInOneBlock`s (affine coupling with soft clamping, a soft permutation, a
global affine scaling), each conditioned on the patch's positional encoding.

Departure from the official code, with its reason:
- The soft permutations are drawn from the cell's generator (FrEIA draws them from numpy's global RNG, left as it
  was): a fit is reproducible whatever ran before it. `methods/bgad.py` lists the method's other departures.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def positional_encoding_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Sine-cosine encoding of every grid position: [dim, height, width]. The first half of the channels encodes
    the column, the second half the row; within a half, even channels are sines and odd ones cosines of the
    position at frequencies 10000^(-2i/(dim/2)) (the Transformer's encoding, per axis, as CFlow-AD and BGAD)."""
    if dim % 4:
        raise ValueError(f"positional encoding needs a dimension divisible by 4, got {dim}")
    half = dim // 2
    frequencies = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))  # [half/2]
    columns = torch.arange(float(width)).unsqueeze(1) * frequencies  # [width, half/2]
    rows = torch.arange(float(height)).unsqueeze(1) * frequencies  # [height, half/2]
    encoding = torch.zeros(dim, height, width)
    encoding[0:half:2] = torch.sin(columns).T.unsqueeze(1).expand(-1, height, -1)
    encoding[1:half:2] = torch.cos(columns).T.unsqueeze(1).expand(-1, height, -1)
    encoding[half::2] = torch.sin(rows).T.unsqueeze(2).expand(-1, -1, width)
    encoding[half + 1::2] = torch.cos(rows).T.unsqueeze(2).expand(-1, -1, width)
    return encoding


def coupling_subnet(dims_in: int, dims_out: int) -> nn.Module:
    """The coupling blocks' subnetwork: Linear(d, 2d) -> ReLU -> Linear(2d, out) (official models/fc_flow.py)."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def random_rotation(size: int, generator: torch.Generator) -> torch.Tensor:
    """A rotation matrix [size,size] drawn uniformly from SO(size) (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


class ConditionalFlow(nn.Module):
    """A conditional normalizing flow on patch features [n,C] given conditions [n,P]: `coupling_layers`
    FrEIA AllInOneBlocks (soft permutation, SOFTPLUS global affine, clamp `clamp`). Returns z [n,C] and the
    log-determinant of the Jacobian dz/dx [n]."""

    def __init__(self, channels: int, condition_dim: int, coupling_layers: int, clamp: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        import FrEIA.framework as Ff  # here, not at import: FrEIA pulls in scipy.stats (~2.5 s of every run's start)
        import FrEIA.modules as Fm

        numpy_state = np.random.get_state()  # FrEIA draws its soft permutations from numpy's global RNG:
        try:  # leave that state as it was and replace the permutations with draws from `generator`
            self.inn = Ff.SequenceINN(channels)
            for _ in range(coupling_layers):
                self.inn.append(Fm.AllInOneBlock, cond=0, cond_shape=(condition_dim,),
                                subnet_constructor=coupling_subnet, affine_clamping=clamp,
                                global_affine_type="SOFTPLUS", permute_soft=True)
        finally:
            np.random.set_state(numpy_state)
        with torch.no_grad():
            for block in self.inn:
                rotation = random_rotation(channels, generator)
                block.w_perm.copy_(rotation)
                block.w_perm_inv.copy_(rotation.T)

    def forward(self, features: torch.Tensor, conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_jac_det = self.inn(features, c=[conditions])
        return z, log_jac_det


def gaussian_log_likelihood(z: torch.Tensor, log_jac_det: torch.Tensor) -> torch.Tensor:
    """log p(x) = log N(z; 0, I) + log|det dz/dx| per row of z [n,C]: [n] (change of variables)."""
    return -z.shape[1] * LOG_SQRT_2PI - 0.5 * z.pow(2).sum(dim=1) + log_jac_det


def flow_log_likelihood(flow: ConditionalFlow, features: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-likelihood log p(x) / C of patch features [n,C] under a flow: [n]."""
    z, log_jac_det = flow(features, conditions)
    return gaussian_log_likelihood(z, log_jac_det) / features.shape[1]


def ml_loss(log_likelihoods: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood loss of per-dimension log-likelihoods [n] of normal patches: mean(-log sigmoid(l))
    (official code; a smooth stand-in for -l that stops pulling once l is large)."""
    return -F.logsigmoid(log_likelihoods).mean()


def boundaries(normal: torch.Tensor, beta: float, tau: float, normalizer: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit boundaries from normal per-dimension log-likelihoods [n] (detached): b_n = the beta-quantile
    (the value at rank floor(n * beta) in ascending order) divided by `normalizer`, and b_a = b_n - tau."""
    ordered = torch.sort(normal.detach()).values
    b_n = ordered[min(int(len(ordered) * beta), len(ordered) - 1)] / normalizer
    return b_n, b_n - tau


def semi_push_pull_loss(log_likelihoods: torch.Tensor, anomalous: torch.Tensor, b_n: torch.Tensor,
                        b_a: torch.Tensor, normalizer: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The boundary-guided semi-push-pull loss on per-dimension log-likelihoods [n] scaled by 1/normalizer:
    (pull, push) = (mean of b_n - l over normal patches with l <= b_n, mean of l - b_a over anomalous patches with
    l >= b_a). Both are >= 0 and each is 0 when no patch is on the wrong side of its boundary."""
    scaled = log_likelihoods / normalizer
    normal, abnormal = scaled[~anomalous], scaled[anomalous]
    low = normal[normal <= b_n]
    high = abnormal[abnormal >= b_a]
    pull = (b_n - low).sum() / max(len(low), 1)
    push = (high - b_a).sum() / max(len(high), 1)
    return pull, push


def learning_rate(base: float, epoch: float, epochs: int, warmup_epochs: int, cosine: bool,
                  decay_rate: float = 0.1) -> float:
    """The official schedule at a (fractional) epoch: cosine from `base` down to base * decay_rate**3 over
    `epochs`; during the first `warmup_epochs` a linear ramp from base / 10 to the cosine's value there."""
    floor = base * decay_rate**3

    def cosine_at(t: float) -> float:
        return floor + (base - floor) * (1 + math.cos(math.pi * t / epochs)) / 2 if cosine else base

    if warmup_epochs and epoch < warmup_epochs:
        start, end = base / 10, cosine_at(warmup_epochs)
        return start + (end - start) * epoch / warmup_epochs
    return cosine_at(math.floor(epoch))
