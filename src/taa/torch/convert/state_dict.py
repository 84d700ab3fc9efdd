"""Loading converted weights into a torch model: every key and shape checked first, so a
mismatch is one :class:`~taa.convert.state_dict.ConversionError` naming all of them, never a
silent partial load."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from taa.convert.state_dict import check_state_dict


def expected_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """The shape of every entry in ``model.state_dict()`` (tied weights appear under each name)."""
    return {key: value.shape for key, value in model.state_dict().items()}


def load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> nn.Module:
    """Check every key and shape, then load strictly (tensors of another dtype are cast)."""
    check_state_dict(state_dict, expected_shapes(model), what)
    model.load_state_dict(state_dict, strict=True)
    return model
