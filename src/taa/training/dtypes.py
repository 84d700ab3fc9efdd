"""The number formats a model can compute in, by name.

- ``float32``: the reference; every parity test runs in it.
- ``bfloat16`` (Kalamkar et al. 2019): float32's exponent range with an 8-bit mantissa.
  Training autocasts matrix products to it (mixed precision: the weights and their updates
  stay float32); a loaded model can also be cast to it once, which halves the bytes each
  matrix product reads.

Recipes, the command line and the Python API name them as strings; each framework maps
a name to its own type (``taa.torch.generate.resolve_dtype`` for torch).
"""

from __future__ import annotations

import typing

from taa.config.training import DtypeName

DTYPES: tuple[str, ...] = typing.get_args(DtypeName)  # the names taa accepts (the recipe's train.dtype), the default first
FLOAT32, BFLOAT16 = DTYPES
DEFAULT_DTYPE = FLOAT32


def check_dtype(name: str) -> str:
    """``name`` if it is one of :data:`DTYPES`, else a ValueError listing them."""
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {', '.join(DTYPES)}")
    return name
