"""Typed configurations, named presets and their YAML/JSON round trip.

Every model, training run and task is described by a dataclass. Each dataclass checks
its own fields when it is made: a wrong type or a bad value raises :class:`ConfigError`
with the field's dotted name and the reason, e.g.
``model.d_model=500 is not divisible by model.n_heads=8``.

One module per concern:

- :mod:`~taa.config.coerce`: ConfigError, type checks, dict/YAML/JSON round trip, ``--set`` overrides;
- :mod:`~taa.config.models`: BlockConfig and the config of each model family;
- :mod:`~taa.config.presets`: the named presets (data) and :func:`preset`;
- :mod:`~taa.config.training`: TrainConfig;
- :mod:`~taa.config.tasks`: the data section of each task;
- :mod:`~taa.config.recipe`: RecipeConfig and the model section.

Which families and tasks exist is :mod:`taa.registry`'s to say; ``MODEL_TYPES`` and
``TASKS`` here are views of it. This package imports no framework.
"""

from __future__ import annotations

from typing import Any

from taa.config.coerce import (
    ConfigError,
    _check_types,
    _coerce,
    _require,
    dumps,
    from_dict,
    merge,
    parse_overrides,
    read_data,
    read_mapping,
    read_text,
    save,
    to_dict,
)
from taa.config.models import (
    T5_FEED_FORWARDS,
    Activation,
    AttentionImpl,
    BertConfig,
    BlockConfig,
    DecisionTransformerConfig,
    GPTConfig,
    NormKind,
    PositionalKind,
    T5Config,
    TransformerConfig,
    ViTConfig,
)
from taa.config.presets import PRESETS, preset
from taa.config.recipe import RecipeConfig, model_config_from_dict, model_config_to_dict, model_type
from taa.config.tasks import (
    POLICY_KINDS,
    ClassificationTaskConfig,
    CopyTaskConfig,
    ImageClassificationTaskConfig,
    LanguageModelTaskConfig,
    MaskedLMTaskConfig,
    OfflineRLTaskConfig,
    TextToTextTaskConfig,
    TranslationTaskConfig,
)
from taa.config.training import (
    DEFAULT_SELECT_METRIC,
    DEVICE_NAMES,
    MAX_THREADS,
    ParallelName,
    TrainConfig,
    check_device_name,
)

__all__ = [
    "POLICY_KINDS", "PRESETS", "T5_FEED_FORWARDS", "Activation", "AttentionImpl", "BertConfig", "BlockConfig", "DecisionTransformerConfig",
    "ClassificationTaskConfig", "ConfigError", "ImageClassificationTaskConfig", "OfflineRLTaskConfig", "CopyTaskConfig", "DEFAULT_SELECT_METRIC", "DEVICE_NAMES", "GPTConfig",
    "MAX_THREADS", "ParallelName", "check_device_name",
    "LanguageModelTaskConfig", "MaskedLMTaskConfig", "NormKind", "PositionalKind", "RecipeConfig", "T5Config", "TextToTextTaskConfig", "ViTConfig",
    "TrainConfig", "TransformerConfig", "TranslationTaskConfig", "dumps", "from_dict", "merge",
    "model_config_from_dict", "model_config_to_dict", "model_type", "parse_overrides", "preset",
    "read_data", "read_mapping", "read_text", "save", "to_dict",
]


def __getattr__(name: str) -> Any:
    """``MODEL_TYPES`` (family name -> config class) and ``TASKS`` (task -> data config class),
    read from the registry when asked, so a family or task registered later shows too."""
    from taa import registry

    if name == "MODEL_TYPES":
        return {family.name: family.config for family in registry.families()}
    if name == "TASKS":
        return {spec.name: spec.data_config for spec in registry.tasks()}
    raise AttributeError(f"module 'taa.config' has no attribute {name!r}")
