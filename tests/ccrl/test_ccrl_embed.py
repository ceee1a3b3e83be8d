"""The crop-level forward pass: empty input, batching that does not change the features."""

import numpy as np
import torch

from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.ccrl.embed import embed_crops


def test_embed_crops_empty_and_batching():
    torch.manual_seed(0)
    backbone = PreActResNet18("small").eval()
    assert embed_crops(backbone, np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 512)
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        embed_crops(backbone, crops, batch_size=2), embed_crops(backbone, crops), atol=1e-4
    )
