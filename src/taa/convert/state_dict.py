"""Checks shared by every converter: a missing, unexpected or mis-shaped key is an error
that lists all of them at once, never a silent partial load."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import torch
from torch import Tensor, nn


class ConversionError(ValueError):
    """A state dict does not match the model it should load into."""


def check_state_dict(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, Optional[torch.Size]], what: str
) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped key (None: any shape)."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(state_dict[key].shape)} != expected {tuple(expected[key])}"
        for key in set(expected) & set(state_dict)
        if expected[key] is not None and tuple(state_dict[key].shape) != tuple(expected[key])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {'; '.join(misshaped)}")
    if problems:
        raise ConversionError(f"{what}: " + " | ".join(problems))


def expected_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """The shape of every entry in ``model.state_dict()`` (tied weights appear under each name)."""
    return {key: value.shape for key, value in model.state_dict().items()}


def load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> nn.Module:
    """Check every key and shape, then load strictly."""
    check_state_dict(state_dict, expected_shapes(model), what)
    model.load_state_dict(state_dict, strict=True)
    return model
