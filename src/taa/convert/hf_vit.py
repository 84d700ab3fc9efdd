"""Hugging Face ViT (``ViTModel``, ``ViTForImageClassification``) <-> taa's classes of the
same names, on arrays of any framework.

Every array is a rename: the patch projection is a convolution of the same layout
(d, c, p, p) on both sides, the class token (1, 1, d) and the position table (1, 1 + n, d)
keep their shapes, linear weights are (out, in) on both sides. Pre-norm layers:
``layernorm_before`` is the attention sub-layer's norm, ``layernorm_after`` the MLP's,
and the model's final ``layernorm`` is the encoder's final norm.

- ``ViTForImageClassification`` holds its backbone under ``vit.`` without a pooler;
  ``ViTModel`` checkpoints are bare and usually carry the pooler (read into a ``ViTModel``
  with one; a checkpoint without gives one without).
- A checkpoint of a masked-image-modelling ViT carries ``embeddings.mask_token``: taa has
  no such model, so it is refused (``use_mask_token``) rather than dropped silently.

Python API as the other families: :func:`config_from_hf`, :func:`config_to_hf`,
:func:`state_dict_from_hf`, :func:`state_dict_to_hf`, :func:`read_hf_folder`, :func:`to_hf`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from taa import registry
from taa.config import ConfigError, ViTConfig
from taa.convert.hf_folder import CONFIG_FILE, Converted, choose_architecture, config_error, config_number
from taa.convert.hf_folder import encoder_layer_problems, encoder_layer_shapes, expand_keys, hf_architecture
from taa.convert.hf_folder import model_folder
from taa.convert.hf_folder import num_labels_from_hf, read_config, read_weights, split_backbone, weights_misfit
from taa.convert.state_dict import ConversionError, check_state_dict

ARCHITECTURES = dict(registry.family("vit").hf_architectures)  # transformers class -> ours (the same names)
PREFIX = "vit."  # the classifier's name for its ViTModel

# Hugging Face key (inside ViTModel) -> ours (inside our ViTModel); "{i}" layer, "{p}" weight or bias.
EMBEDDING_KEYS = {
    "embeddings.cls_token": "embeddings.cls_token",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.patch_embeddings.projection.{p}": "embeddings.patch_embeddings.projection.{p}",
}
LAYER_KEYS = {
    "encoder.layer.{i}.layernorm_before.{p}": "encoder.layers.{i}.self_attention_residual.norm.{p}",
    "encoder.layer.{i}.attention.attention.query.{p}": "encoder.layers.{i}.self_attention.q_proj.{p}",
    "encoder.layer.{i}.attention.attention.key.{p}": "encoder.layers.{i}.self_attention.k_proj.{p}",
    "encoder.layer.{i}.attention.attention.value.{p}": "encoder.layers.{i}.self_attention.v_proj.{p}",
    "encoder.layer.{i}.attention.output.dense.{p}": "encoder.layers.{i}.self_attention.out_proj.{p}",
    "encoder.layer.{i}.layernorm_after.{p}": "encoder.layers.{i}.feed_forward_residual.norm.{p}",
    "encoder.layer.{i}.intermediate.dense.{p}": "encoder.layers.{i}.feed_forward.w1.{p}",
    "encoder.layer.{i}.output.dense.{p}": "encoder.layers.{i}.feed_forward.w2.{p}",
}
FINAL_KEYS = {"layernorm.{p}": "encoder.final_norm.{p}"}
POOLER_KEYS = {"pooler.dense.{p}": "pooler.dense.{p}"}
HEAD_KEYS = {"ViTModel": {}, "ViTForImageClassification": {"classifier.{p}": "classifier.{p}"}}

# transformers' ViTConfig defaults, for config.json files that leave fields out.
HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "image_size": 224, "patch_size": 16,
    "num_channels": 3, "qkv_bias": True, "encoder_stride": 16, "pooler_output_size": None, "pooler_act": "tanh",
}
ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


# --------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------


def _side(hf: Mapping[str, Any], name: str) -> int:
    """``image_size``/``patch_size``: an int, or a square [h, w] (taa's images are square)."""
    value = hf[name]
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConversionError(f"{name}={value!r} should be one integer (taa's ViT takes square images and patches)")
    return value


def config_from_hf(hf_config: Mapping[str, Any]) -> ViTConfig:
    """A ViT ``config.json`` (as a dict) -> :class:`ViTConfig`; unsupported options raise ConversionError."""
    hf = {**HF_DEFAULTS, **hf_config}
    problems = []
    if hf["qkv_bias"] is not True:
        problems.append("qkv_bias=false (taa's attention has biases on every projection)")
    if hf["hidden_act"] not in ACTIVATIONS_FROM_HF:
        problems.append(f"hidden_act={hf['hidden_act']!r} (taa supports {', '.join(ACTIVATIONS_FROM_HF)})")
    if hf.get("use_mask_token"):
        problems.append("use_mask_token=true (taa has no masked-image model)")
    if problems:
        raise ConversionError(f"ViT config: unsupported {'; '.join(problems)}")
    return ViTConfig(
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        dropout=config_number(hf, "hidden_dropout_prob"),
        attention_dropout=config_number(hf, "attention_probs_dropout_prob"),
        activation=ACTIVATIONS_FROM_HF[hf["hidden_act"]],
        norm_eps=config_number(hf, "layer_norm_eps"),
        n_layers=hf["num_hidden_layers"],
        image_size=_side(hf, "image_size"),
        patch_size=_side(hf, "patch_size"),
        num_channels=hf["num_channels"],
        num_labels=num_labels_from_hf(hf_config),
        init_std=config_number(hf, "initializer_range"),
    )


def config_to_hf(config: ViTConfig, architecture: str = "ViTModel") -> dict[str, Any]:
    """:class:`ViTConfig` -> a ViT ``config.json`` dict; what transformers' ViT cannot express
    raises ConversionError."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    problems = [] if config.norm_first else ["norm_first=False (ViT is pre-norm)"]
    problems += encoder_layer_problems(config, "ViT", ACTIVATIONS_TO_HF)
    if architecture == "ViTForImageClassification" and config.pooling != "cls":
        problems.append(f"pooling={config.pooling!r} (ViTForImageClassification reads the class token)")
    if config.patch_overlap:
        problems.append(f"patch_overlap={config.patch_overlap} (ViT's patches do not overlap)")
    if problems:
        raise ConversionError(f"ViTConfig cannot be written as ViT: {'; '.join(problems)}")
    names = [f"LABEL_{i}" for i in range(config.num_labels)]
    return {
        "architectures": [architecture],
        "model_type": "vit",
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": ACTIVATIONS_TO_HF[config.activation],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "initializer_range": config.init_std,
        "layer_norm_eps": config.norm_eps,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.num_channels,
        "qkv_bias": True,
        "encoder_stride": config.patch_size,
        # transformers counts labels from id2label; written for both classes so num_labels round-trips
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }


# --------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------


def backbone_key_map(n_layers: int, pooler: bool) -> dict[str, str]:
    """Hugging Face key (inside ViTModel) -> ours (inside our ViTModel)."""
    mapping = expand_keys(EMBEDDING_KEYS)
    mapping.update(expand_keys(LAYER_KEYS, n_layers))
    mapping.update(expand_keys(FINAL_KEYS))
    if pooler:
        mapping.update(expand_keys(POOLER_KEYS))
    return mapping


def hf_shapes(config: ViTConfig, architecture: str = "ViTModel",
              pooler: bool = True) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(ViTModel key -> shape, head key -> shape): what a checkpoint for ``config`` holds."""
    d, f, p, c = config.d_model, config.d_ff, config.patch_size, config.num_channels
    backbone: dict[str, tuple[int, ...]] = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.position_embeddings": (1, config.num_patches + 1, d),
        "embeddings.patch_embeddings.projection.weight": (d, c, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,), "layernorm.bias": (d,),
    }
    for i in range(config.n_layers):
        backbone.update(encoder_layer_shapes(
            f"encoder.layer.{i}.", d, f,
            ("attention.attention.query", "attention.attention.key", "attention.attention.value",
             "attention.output.dense"),
            ("layernorm_before", "layernorm_after")))
    if pooler:
        backbone.update({"pooler.dense.weight": (d, d), "pooler.dense.bias": (d,)})
    heads = {"classifier.weight": (config.num_labels, d), "classifier.bias": (config.num_labels,)} \
        if architecture == "ViTForImageClassification" else {}
    return backbone, heads


def checkpoint_has_pooler(state_dict: Mapping[str, Any]) -> bool:
    return any(re.match(r"^(vit\.)?pooler\.", key) for key in state_dict)


def _our_backbone_prefix(architecture: str) -> str:
    return "" if architecture == "ViTModel" else PREFIX


def state_dict_from_hf(state_dict: Mapping[str, Any], config: ViTConfig, architecture: str = "ViTModel",
                       pooler: bool = True) -> dict[str, Any]:
    """A Hugging Face ViT state dict -> ours for ``architecture`` (``pooler``: ViTModel only).

    Every missing, unexpected and mis-shaped key is one :class:`ConversionError`.
    """
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    pooler = pooler and architecture == "ViTModel"
    backbone_shapes, head_shapes = hf_shapes(config, architecture, pooler)
    backbone, heads = split_backbone(state_dict, backbone_shapes, head_shapes, PREFIX, f"ViT weights ({architecture})")
    prefix = _our_backbone_prefix(architecture)
    converted = {prefix + ours: backbone[theirs] for theirs, ours in backbone_key_map(config.n_layers, pooler).items()}
    converted.update({ours: heads[theirs] for theirs, ours in expand_keys(HEAD_KEYS[architecture]).items()})
    return converted


def state_dict_to_hf(state_dict: Mapping[str, Any], config: ViTConfig,
                     architecture: str = "ViTModel") -> dict[str, Any]:
    """Our state dict -> a Hugging Face one for ``architecture``."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    prefix = _our_backbone_prefix(architecture)
    pooler = architecture == "ViTModel" and "pooler.dense.weight" in state_dict
    mapping = backbone_key_map(config.n_layers, pooler)
    needed = {prefix + ours for ours in mapping.values()} | set(expand_keys(HEAD_KEYS[architecture]).values())
    check_state_dict(state_dict, dict.fromkeys(needed), f"taa ViT weights ({architecture})")
    hf_prefix = "" if architecture == "ViTModel" else PREFIX
    converted = {hf_prefix + theirs: state_dict[prefix + ours] for theirs, ours in mapping.items()}
    converted.update({theirs: state_dict[ours] for theirs, ours in expand_keys(HEAD_KEYS[architecture]).items()})
    return converted


# --------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------


def read_hf_folder(folder: str | Path, framework: str = "np", architecture: Optional[str] = None) -> Converted:
    """A Hugging Face ViT folder -> our model's config, class and weights (``framework``'s
    arrays). The class follows ``config.json``'s ``architectures`` unless ``architecture``
    names one; a ``ViTModel`` checkpoint without a pooler gives a model without one.
    The class names of ``id2label`` stay in ``config.json``, where :func:`taa.tasks.image_classification.class_names`
    reads them."""
    hf_config, folder = read_config(folder), model_folder(folder)
    hf_class = choose_architecture(hf_config, ARCHITECTURES, str(folder / CONFIG_FILE), "ViTModel", architecture)
    try:
        config = config_from_hf(hf_config)
    except (ConfigError, ConversionError) as error:
        raise config_error(folder, error) from None
    weights = read_weights(folder, framework)
    pooler = hf_class == "ViTModel" and checkpoint_has_pooler(weights)
    try:
        ours = state_dict_from_hf(weights, config, hf_class, pooler)
    except ConversionError as error:
        raise weights_misfit(folder, error) from None
    options = {"pooler": False} if hf_class == "ViTModel" and not pooler else {}
    return Converted(config, ARCHITECTURES[hf_class], ours, options)


def to_hf(architecture: str, config: ViTConfig, weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One of our ViT models (class name, config, state dict) -> (``config.json`` dict, weights)
    for transformers' class of the same name."""
    hf_class = hf_architecture(ARCHITECTURES, architecture)
    return config_to_hf(config, hf_class), state_dict_to_hf(weights, config, hf_class)
