"""What differs between two recipes, field by field: what ``taa train --resume`` compares.

A resumed run continues the saved one only if it trains the same way: a different
learning rate, batch size, seed, number of steps, optimizer, model or data makes another
run. :func:`recipe_differences` lists the fields that differ, by dotted name, leaving out
:data:`RESULT_NEUTRAL`; :func:`describe_differences` puts them on one line.
"""

from __future__ import annotations

import json
from typing import Any

from taa.config.recipe import RecipeConfig

# The fields that change neither the trained weights nor the final evaluation: the run's
# label and how often it reports and saves. Every other field counts.
RESULT_NEUTRAL = (
    "name",  # a label
    "train.threads",  # CPU threads: the same computation at another speed (float sums may round differently)
    "train.device",  # where it computes: the same computation (kernels may round differently); a state loads anywhere
    "train.parallel",  # ddp or fsdp: the same gradient, averaged whole or shard by shard
    "train.log_every",  # how often the loss is reported (the last interval's mean is final_train_loss)
    "train.checkpoint_every",  # how often a resumable state is saved
)

# What a field one recipe lacks shows as (another task's data section, another model family).
MISSING = "(none)"

# More differences than this are counted, not listed, to keep the message on one line.
SHOWN = 8


def recipe_differences(
    saved: RecipeConfig, current: RecipeConfig, ignore: tuple[str, ...] = RESULT_NEUTRAL
) -> list[tuple[str, Any, Any]]:
    """Every field whose value differs, as ``(dotted name, saved value, current value)`` in
    the recipe's order; fields named in ``ignore`` are left out. Both recipes are compared
    as they write to YAML (every field, presets expanded), so a preset spelt out and the
    preset itself are equal. A field one of them lacks has the value :data:`MISSING`."""
    before, after = _flat(saved.to_mapping()), _flat(current.to_mapping())
    names = list(before) + [name for name in after if name not in before]
    return [
        (name, before.get(name, MISSING), after.get(name, MISSING))
        for name in names
        if name not in ignore and before.get(name, MISSING) != after.get(name, MISSING)
    ]


def describe_differences(differences: list[tuple[str, Any, Any]]) -> str:
    """``train.lr 0.003 -> 0.01, train.batch_size 64 -> 32``: one line, the first
    :data:`SHOWN` differences and the number of the others."""
    shown = [f"{name} {_value(before)} -> {_value(after)}" for name, before, after in differences[:SHOWN]]
    rest = len(differences) - SHOWN
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def _flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1.0}}`` -> ``{"train.lr": 1.0}``; a list is one value."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flat(value, name))
        else:
            flat[name] = value
    return flat


def _value(value: Any) -> str:
    """A value as a recipe spells it: ``adam``, ``0.003``, ``null``, ``[1, 2]``, ``""``."""
    return value if isinstance(value, str) and value else json.dumps(value)
