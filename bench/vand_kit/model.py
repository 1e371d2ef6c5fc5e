"""A small VAND 2025 kit-format model (the layout of cvpr-vand/challenge `src/eval/submission/model.py`), written
for `bench/vs_vand_evaluator.py`: the same folder runs under the kit's official evaluator and under the harness
(`--methods vand:bench/vand_kit`).

It scores local colour structure: each image is pooled to a 32 x 32 grid of mean colours, every 3 x 3
neighbourhood of the grid is a 27-value descriptor, and a test descriptor's anomaly is its distance to the nearest
descriptor of the few-shot samples. The image score is the largest cell anomaly; the map is the cell anomalies
upsampled to the input size. No weights, no randomness, each image scored on its own.
"""
import torch
import torch.nn.functional as F
from anomalib.data import ImageBatch
from torch import nn

GRID = 32


def descriptors(images: torch.Tensor) -> torch.Tensor:
    """[b, GRID*GRID, 27]: the 3 x 3 neighbourhoods of each image's pooled colour grid."""
    cells = F.adaptive_avg_pool2d(images, GRID)
    return F.unfold(cells, kernel_size=3, padding=1).transpose(1, 2)


class Model(nn.Module):
    """Nearest-neighbour distance of pooled colour neighbourhoods to the few-shot samples'."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("memory", torch.zeros(1, 27))

    def setup(self, setup_data: dict) -> None:
        self.memory = descriptors(setup_data["few_shot_samples"]).reshape(-1, 27)

    def weights_url(self, category: str) -> None:
        return None

    def forward(self, image: torch.Tensor) -> ImageBatch:
        batch = image.shape[0]
        distances = torch.cdist(descriptors(image), self.memory[None].expand(batch, -1, -1)).min(dim=2).values
        cells = distances.view(batch, 1, GRID, GRID)
        anomaly_map = F.interpolate(cells, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return ImageBatch(image=image, pred_score=distances.max(dim=1).values, anomaly_map=anomaly_map)
