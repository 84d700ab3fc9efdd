import pytest
import torch
import torch.nn.functional as F

from taa.torch.training.losses import label_smoothed_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_matches_torch_cross_entropy(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    targets = torch.randint(1, 11, (3, 5))
    targets[0, 3:] = 0  # padding
    targets[2, 1:] = 0
    total, count = label_smoothed_cross_entropy(logits, targets, smoothing, ignore_index=0)
    expected = F.cross_entropy(
        logits.reshape(-1, 11), targets.reshape(-1), ignore_index=0, label_smoothing=smoothing, reduction="sum"
    )
    assert count.item() == int((targets != 0).sum())
    torch.testing.assert_close(total, expected, atol=1e-5, rtol=1e-6)


def test_padding_contributes_nothing():
    logits = torch.randn(1, 4, 7, requires_grad=True)
    targets = torch.tensor([[3, 4, 0, 0]])
    total, _ = label_smoothed_cross_entropy(logits, targets, 0.1, ignore_index=0)
    total.backward()
    assert logits.grad[0, 2:].abs().max() == 0
    assert logits.grad[0, :2].abs().max() > 0
