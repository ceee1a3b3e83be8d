"""The nucleus U-Net: shapes, stride, size, config round trip."""

from __future__ import annotations

import pytest
import torch

from wsi_ccrl.nuclei.net import NucleusUNet, build_net


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_output_shape_and_stride(stem_stride):
    net = NucleusUNet((8, 16, 32), stem_stride).eval()
    assert net.stride == 4 * stem_stride
    h, w = 3 * net.stride, 5 * net.stride  # any multiple of the stride, not only squares
    with torch.no_grad():
        y = net(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, h, w)  # maps at the input's resolution
    assert torch.isfinite(y).all()


def test_bad_stem_stride():
    with pytest.raises(ValueError, match="stem_stride"):
        NucleusUNet((8, 16), stem_stride=4)


def test_default_net_is_compact():
    net = NucleusUNet()
    n = sum(p.numel() for p in net.parameters())
    assert net.stride == 16
    assert 100_000 < n < 1_000_000


def test_build_net_from_config_matches_weights():
    net = NucleusUNet((8, 16))
    clone = build_net({"channels": [8, 16], "stem_stride": 2})
    clone.load_state_dict(net.state_dict())  # same architecture: strict load works
    with pytest.raises(RuntimeError):
        build_net({"channels": [8, 32], "stem_stride": 2}).load_state_dict(net.state_dict())


def test_gradients_reach_the_first_layer():
    net = NucleusUNet((8, 16))
    net(torch.rand(1, 3, 16, 16)).sum().backward()
    assert net.down[0][0].weight.grad.abs().sum() > 0
