"""Every network: output shape equals input shape (odd sizes too), finite, every parameter learns."""

import pytest
import torch

from carvana_seg.models.cnn import SimpleCNN
from carvana_seg.models.unet import UNet

NETWORKS = {
    "cnn": lambda: SimpleCNN(hidden_channels=4),
    "unet": lambda: UNet(base_channels=4, depth=4),
    "unet_transposed": lambda: UNet(base_channels=4, depth=3, bilinear=False),
    "unet_no_batchnorm": lambda: UNet(base_channels=4, depth=2, batch_norm=False),
}


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("size", [(32, 48), (37, 61), (40, 59)])
def test_logits_have_the_input_size(name, size):
    net = NETWORKS[name]().eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, *size))
    assert logits.shape == (2, 1, *size)
    assert torch.isfinite(logits).all()


def test_unet_at_half_carvana_resolution_959_wide():
    net = UNet(base_channels=2, depth=4).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 640, 959)).shape == (1, 1, 640, 959)


@pytest.mark.parametrize("name", NETWORKS)
def test_every_parameter_gets_a_gradient(name):
    net = NETWORKS[name]()
    net(torch.randn(2, 3, 24, 40)).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_unet_width_and_depth_come_from_the_arguments():
    small, wide = UNet(base_channels=4, depth=2), UNet(base_channels=8, depth=3)
    assert len(small.downs) == 2 and len(wide.downs) == 3
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in small.parameters())
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=0)


def test_out_bias_moves_every_logit_of_a_fresh_unet_by_that_much():
    x = torch.randn(2, 3, 24, 40)
    torch.manual_seed(0)
    plain = UNet(base_channels=4, depth=2).eval()
    torch.manual_seed(0)
    prior = UNet(base_channels=4, depth=2, out_bias=-1.35).eval()
    with torch.no_grad():
        assert torch.allclose(prior(x), plain(x) - 1.35, atol=1e-5)
