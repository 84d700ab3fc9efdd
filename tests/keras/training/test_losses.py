"""taa.keras.training.losses: the label-smoothed cross-entropy equals torch's."""

import keras
import numpy as np
import pytest
import torch

from taa.keras.training.losses import label_smoothed_cross_entropy
from taa.torch.training.losses import label_smoothed_cross_entropy as torch_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_equals_torch(smoothing, ignore_index):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
    targets = rng.integers(0, 11, (3, 5))
    targets[0, :2] = 0  # padding, when 0 is the ignored id
    loss, count = label_smoothed_cross_entropy(logits, targets.astype(np.int32), smoothing, ignore_index)
    expected, expected_count = torch_cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets), smoothing,
                                                   ignore_index)
    assert int(count) == int(expected_count) == int((targets != ignore_index).sum())
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)


def test_bfloat16_logits_give_a_float32_sum():
    logits = keras.ops.zeros((1, 2, 4), dtype="bfloat16")  # uniform: -log p = log 4 per token
    loss, count = label_smoothed_cross_entropy(logits, np.array([[1, 2]], dtype="int32"))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and int(count) == 2
    np.testing.assert_allclose(float(loss), 2 * np.log(4), rtol=1e-6)
