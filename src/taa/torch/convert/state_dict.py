"""Loading converted weights into a torch model: every key, shape and kind of number checked
first, so a mismatch is one :class:`~taa.convert.state_dict.ConversionError` naming all of
them, never a silent partial load or integers cast into floating-point weights."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from taa.safetensors_file import check_floating
from taa.convert.state_dict import ConversionError, check_state_dict


def expected_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """The shape of every entry in ``model.state_dict()`` (tied weights appear under each name)."""
    return {key: value.shape for key, value in model.state_dict().items()}


def floating_kinds(tensors: Mapping[str, Tensor]) -> dict[str, tuple[str, bool]]:
    """Each tensor's dtype name and whether it is floating-point (for :func:`check_floating`)."""
    return {key: (str(value.dtype).removeprefix("torch."), value.is_floating_point()) for key, value in tensors.items()}


def load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> nn.Module:
    """Check every key, shape and kind of number, then load strictly (floating-point tensors
    of another width are cast)."""
    check_state_dict(state_dict, expected_shapes(model), what)
    expected = {key: value.is_floating_point() for key, value in model.state_dict().items()}
    check_floating(floating_kinds(state_dict), expected, what, ConversionError)
    model.load_state_dict(state_dict, strict=True)
    return model
