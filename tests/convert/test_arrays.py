"""The layout fixes on arrays: numpy stays numpy, torch stays torch (bfloat16 included)."""

from __future__ import annotations

import numpy as np
import pytest

from taa.convert.arrays import join_rows, same_values, split_rows


def test_split_and_join_rows_round_trip_on_numpy() -> None:
    fused = np.arange(24.0).reshape(6, 4)  # (3d, d): W^Q; W^K; W^V with d = 2
    queries, keys, values = split_rows(fused, 3)
    assert queries.shape == (2, 4) and np.array_equal(keys, fused[2:4])
    assert np.array_equal(join_rows([queries, keys, values]), fused)
    assert np.array_equal(join_rows(split_rows(np.arange(6.0), 3)), np.arange(6.0))  # biases (3d,)
    with pytest.raises(ValueError, match="7 rows do not split into 3 equal parts"):
        split_rows(np.zeros((7, 2)), 3)


def test_same_values_compares_shape_and_elements() -> None:
    a = np.ones((2, 3))
    assert same_values(a, a.copy())
    assert not same_values(a, np.ones((3, 2)))
    assert not same_values(a, a + 1)


def test_torch_tensors_stay_torch_tensors_in_bfloat16() -> None:
    torch = pytest.importorskip("torch")
    fused = torch.randn(6, 4).to(torch.bfloat16)
    parts = split_rows(fused.T.T, 3)
    joined = join_rows(parts)
    assert isinstance(joined, torch.Tensor) and joined.dtype == torch.bfloat16
    assert torch.equal(joined, fused)
    assert same_values(fused, fused.clone()) and not same_values(fused, fused + 1)
