"""The periodic evaluation: the momentum encoder's K-means scored against ``gt_class``."""

import numpy as np
import torch

from wsi_ccrl.ccrl.model import CCRL
from wsi_ccrl.ccrl.monitor import evaluate
from wsi_ccrl.config import TrainConfig


def test_evaluate_scores_the_momentum_encoder_and_leaves_the_model_training():
    torch.manual_seed(0)
    model = CCRL(stem="imagenet", queue_size=8)
    crops = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat([0, 1], 10)
    row = evaluate(model, (crops, labels), TrainConfig(), torch.device("cpu"))
    assert set(row) == {"ami", "ari", "purity"} and 0.5 <= row["purity"] <= 1.0
    assert model.training and model.backbone_k.training
    assert evaluate(model, (crops, np.zeros(20, int)), TrainConfig(), torch.device("cpu")) == {}
