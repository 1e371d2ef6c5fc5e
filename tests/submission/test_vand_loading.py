"""The harness loads LOCO PNGs into the same pixels as the VAND evaluator (anomalib's MVTecLOCODataset reads
RGB floats in [0,1] and applies torchvision.transforms.v2.Resize((256, 256))), so a bundle scores a test image
the same way in the harness and in the kit; and the entry point answers batches as the evaluator sends them."""
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from methods.features import FeatureCache
from methods.cell import CellSetting, fit_method
from methods.registry import build_variant
from submission.datasets.images import load_image
from submission.vand_model import ImageBatch

LOCO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mvtec_loco" / "juice_bottle"


def _evaluator_pixels(path: Path) -> torch.Tensor:
    """The evaluator's loading: PIL RGB -> float [0,1] tensor -> v2.Resize((256, 256)) (bilinear, antialiased)."""
    image = TF.to_dtype(TF.to_image(Image.open(path).convert("RGB")), torch.float32, scale=True)
    return v2.Resize((256, 256))(image)


@pytest.mark.skipif(not LOCO.is_dir(), reason="the real LOCO category is not beside the checkout")
def test_real_loco_images_load_to_the_evaluators_pixels_and_scores():
    paths = [sorted((LOCO / "test" / kind).glob("*.png"))[0] for kind in ("good", "logical_anomalies")]
    support_path = sorted((LOCO / "train" / "good").glob("*.png"))[0]
    ours = torch.stack([load_image(p, 256)[0] for p in paths])
    theirs = torch.stack([_evaluator_pixels(p) for p in paths])
    assert ours.shape == theirs.shape == (2, 3, 256, 256)
    assert float((ours - theirs).abs().max()) < 1e-5  # float rounding only (measured 3e-7)
    setting = CellSetting("juice_bottle", 42, torch.device("cpu"), FeatureCache(torch.device("cpu")))
    method = fit_method(build_variant("patchcore"), load_image(support_path, 256)[0][None], setting).method
    with torch.no_grad():
        difference = (method.predict(ours).scores - method.predict(theirs).scores).abs()
    assert float(difference.max()) < 1e-4


def test_minimal_image_batch_answers_membership_like_the_evaluator_asks():
    batch = ImageBatch(pred_score=torch.zeros(2))
    assert "pred_score" in batch and "anomaly_map" not in batch
    assert "anomaly_map" in ImageBatch(pred_score=torch.zeros(2), anomaly_map=torch.zeros(2, 4, 4))
