"""Mixed precision on CUDA: skipped where there is no GPU (CI has none; run on a GPU machine)."""

import pytest
import torch

from carvana_seg.core.losses import BCEDiceLoss
from carvana_seg.models.unet import UNet
from carvana_seg.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_auto_precision_is_mixed_on_cuda_and_training_stays_finite(make_cfg):
    metrics = train(make_cfg("trainer.accelerator=gpu", "trainer.max_epochs=2", "data.num_workers=2"))
    assert metrics["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert 0.0 <= metrics["val/dice"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


def test_logits_are_half_precision_but_the_loss_is_fp32_under_autocast():
    net = UNet(base_channels=8, depth=3).cuda().to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 95, device="cuda").contiguous(memory_format=torch.channels_last)
    target = (torch.rand(2, 1, 64, 95, device="cuda") > 0.5).float()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = net(images)
        loss = BCEDiceLoss()(logits, target)
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 1, 64, 95)
    assert loss.dtype == torch.float32
    loss.backward()
