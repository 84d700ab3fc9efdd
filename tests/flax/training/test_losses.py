"""taa.flax.training.losses: the label-smoothed cross-entropy equals torch's."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from taa.flax.training.losses import label_smoothed_cross_entropy
from taa.torch.training.losses import label_smoothed_cross_entropy as torch_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_equals_torch(smoothing, ignore_index):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
    targets = rng.integers(0, 11, (3, 5))
    targets[0, :2] = 0  # padding, when 0 is the ignored id
    loss, count = label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), smoothing, ignore_index)
    expected, expected_count = torch_cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets), smoothing,
                                                   ignore_index)
    assert int(count) == int(expected_count) == int((targets != ignore_index).sum())
    np.testing.assert_allclose(float(loss), float(expected), atol=1e-5, rtol=0)


def test_bfloat16_logits_give_a_float32_sum():
    logits = jnp.zeros((1, 2, 4), jnp.bfloat16)  # uniform: -log p = log 4 per token
    loss, count = label_smoothed_cross_entropy(logits, jnp.array([[1, 2]]))
    assert loss.dtype == jnp.float32 and count.dtype == jnp.int32 and int(count) == 2
    np.testing.assert_allclose(float(loss), 2 * np.log(4), rtol=1e-6)
