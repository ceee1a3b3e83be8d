"""The backbone's stems: how far each shrinks a 32 px crop before the residual stages."""

from __future__ import annotations

import pytest
import torch

from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.config import STEMS


@pytest.mark.parametrize(("stem", "side"), [("small", 4), ("imagenet", 1)])
def test_each_stem_gives_512_features_from_maps_of_its_size(stem, side):
    net = PreActResNet18(stem).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert net.forward_features(x).shape == (2, 512, side, side)  # layer4 is stride 8
        assert net(x).shape == (2, 512)


def test_every_configurable_stem_builds_and_an_unknown_one_is_refused():
    assert {PreActResNet18(s).stem_name for s in STEMS} == set(STEMS)
    with pytest.raises(ValueError, match="stem must be one of"):
        PreActResNet18("resnet50")
