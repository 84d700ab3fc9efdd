"""Checks shared by every converter: a missing, unexpected or mis-shaped key is an error
that lists all of them at once, never a silent partial load.

A state dict here is any mapping of names to arrays (torch tensors, numpy or JAX arrays):
only ``.shape`` is read. Loading the checked weights into a model is the framework's part
(:func:`taa.torch.convert.state_dict.load_checked` for torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from taa.folders import CheckpointError, weight_mismatches


class ConversionError(CheckpointError):
    """A model folder or state dict does not convert: an unsupported option, or weights that do
    not match the model they should load into. A :class:`~taa.folders.CheckpointError`, the one
    error every loader raises."""


def check_state_dict(
    state_dict: Mapping[str, Any], expected: Mapping[str, Optional[Sequence[int]]], what: str
) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped key (None: any shape)."""
    problems = weight_mismatches({key: value.shape for key, value in state_dict.items()}, expected)
    if problems:
        raise ConversionError(f"{what}: " + " | ".join(problems))
