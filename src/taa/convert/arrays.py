"""The layout fixes every converter needs, on arrays of any framework.

A converter maps names to arrays (``{"h.0.attn.c_attn.weight": array}``) and never builds a
model, so the Keras and Flax ports reuse the same maps as the torch reference. Most fixes
need only what every array type has: ``.shape``, ``.T`` (2-D) and slicing. Joining and
comparing arrays are the two operations that differ by framework; they live here:

- torch tensors stay torch tensors (``torch.cat``, ``torch.equal``), so a bfloat16
  checkpoint passes through unchanged: numpy has no bfloat16. torch is never imported
  here, only used when the arrays already are torch tensors;
- anything else (numpy, JAX, TensorFlow arrays) goes through numpy.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Optional


def _torch_of(array: Any) -> Optional[ModuleType]:
    """The torch module when ``array`` is a torch tensor (torch is then already imported), else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(array, torch.Tensor) else None


def split_rows(array: Any, parts: int) -> list[Any]:
    """``parts`` equal blocks of rows: a fused (3d, d) q,k,v projection -> three (d, d) ones."""
    rows = array.shape[0]
    if rows % parts:
        raise ValueError(f"{rows} rows do not split into {parts} equal parts")
    size = rows // parts
    return [array[i * size:(i + 1) * size] for i in range(parts)]


def join_rows(arrays: Sequence[Any]) -> Any:
    """The arrays stacked along their first axis: three (d, d) projections -> one (3d, d)."""
    torch = _torch_of(arrays[0])
    if torch is not None:
        return torch.cat(list(arrays), dim=0)
    import numpy as np

    return np.concatenate([np.asarray(array) for array in arrays], axis=0)


def same_values(first: Any, second: Any) -> bool:
    """Whether two arrays have the same shape and every element equal (tied copies of a weight)."""
    if tuple(first.shape) != tuple(second.shape):
        return False
    torch = _torch_of(first)
    if torch is not None and _torch_of(second) is not None:
        return bool(torch.equal(first, second))
    import numpy as np

    return bool(np.array_equal(np.asarray(first), np.asarray(second)))


def zeros_like_rows(vector: Any, rows: int, first: Any = None) -> Any:
    """A (rows, d) array of zeros of ``vector``'s kind and dtype (d: its length), its first row
    ``first`` when given: a table a model never reads but for that row."""
    torch = _torch_of(vector)
    if torch is not None:
        table = torch.zeros(rows, vector.shape[0], dtype=vector.dtype)
    else:
        import numpy as np

        table = np.zeros((rows, vector.shape[0]), dtype=np.asarray(vector).dtype)
    if first is not None:
        table[0] = first if torch is not None else np.asarray(first)
    return table
