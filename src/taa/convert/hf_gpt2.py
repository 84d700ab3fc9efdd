"""Hugging Face ``GPT2LMHeadModel`` <-> taa's ``GPT``, on arrays of any framework.

Key map (Hugging Face names inside ``GPT2Model``; ``GPT2LMHeadModel`` puts them under
``transformer.``, the original OpenAI checkpoint does not) plus two layout fixes:

- GPT-2's ``Conv1D`` stores a linear map's weight as (in, out), the transpose of
  taa's (out, in) (``nn.Linear``'s layout): ``c_attn``, ``c_proj`` and ``c_fc`` weights are transposed;
- ``attn.c_attn`` is one fused projection whose outputs are [queries | keys | values]:
  it is split into ``q_proj``, ``k_proj``, ``v_proj`` (and joined back, :mod:`taa.convert.arrays`).

The output head ``lm_head.weight`` is tied to ``wte.weight``: transformers does not
save it, and a tied checkpoint that does is read without it. The causal-mask buffers
of older checkpoints (``h.{i}.attn.bias``, ``h.{i}.attn.masked_bias``) are ignored.

Python API: :func:`config_from_hf`, :func:`config_to_hf`, :func:`state_dict_from_hf`,
:func:`state_dict_to_hf`, and for a whole folder :func:`read_hf_folder` / :func:`to_hf` (what
:func:`taa.torch.convert.hf.load_hf_folder` and ``save_hf_folder`` call).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from taa import registry
from taa.config import ConfigError, GPTConfig
from taa.convert.arrays import join_rows, split_rows
from taa.convert.hf_folder import CONFIG_FILE, Converted, choose_architecture, config_error, hf_architecture
from taa.convert.hf_folder import model_folder, weights_misfit
from taa.convert.hf_folder import read_config, read_weights, split_backbone
from taa.convert.hf_folder import config_flag, config_number
from taa.convert.state_dict import ConversionError, check_state_dict

ARCHITECTURES = dict(registry.family("gpt").hf_architectures)  # transformers class -> ours
PREFIX = "transformer."  # GPT2LMHeadModel's name for its GPT2Model
HEAD = "lm_head.weight"

# Hugging Face key (inside GPT2Model) -> ours; "{i}" is the layer, "{p}" weight or bias.
EMBEDDING_KEYS = {
    "wte.weight": "token_embedding.weight",
    "wpe.weight": "position_embedding.embedding.weight",
    "ln_f.weight": "blocks.final_norm.weight",
    "ln_f.bias": "blocks.final_norm.bias",
}
LAYER_KEYS = {
    "h.{i}.ln_1.{p}": "blocks.layers.{i}.self_attention_residual.norm.{p}",
    "h.{i}.attn.c_proj.{p}": "blocks.layers.{i}.self_attention.out_proj.{p}",
    "h.{i}.ln_2.{p}": "blocks.layers.{i}.feed_forward_residual.norm.{p}",
    "h.{i}.mlp.c_fc.{p}": "blocks.layers.{i}.feed_forward.w1.{p}",
    "h.{i}.mlp.c_proj.{p}": "blocks.layers.{i}.feed_forward.w2.{p}",
}
FUSED_QKV = "h.{i}.attn.c_attn.{p}"  # -> blocks.layers.{i}.self_attention.{q,k,v}_proj.{p}
OUR_ATTENTION = "blocks.layers.{i}.self_attention.{name}_proj.{p}"
CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")  # stored (in, out): transposed
IGNORED = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")  # old causal-mask buffers

# transformers' GPT2Config defaults, for config.json files that leave fields out.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
    "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "bos_token_id": 50256, "eos_token_id": 50256,
    "pad_token_id": None, "tie_word_embeddings": True, "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
}
ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


# --------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------


def _token_id(value: Any, vocab_size: int) -> int | None:
    """A special-token id inside the vocabulary, else None (tiny configs keep GPT-2's 50256)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and 0 <= value < vocab_size else None


def layer_problems(hf: Mapping[str, Any]) -> list[str]:
    """What taa's GPT-2 layers cannot do of a config (its fields with transformers' defaults
    filled in): other attention scalings, cross-attention, an unknown activation."""
    unsupported = {
        "scale_attn_weights": (hf["scale_attn_weights"], True),
        "scale_attn_by_inverse_layer_idx": (hf["scale_attn_by_inverse_layer_idx"], False),
        "add_cross_attention": (hf["add_cross_attention"], False),
    }
    problems = [f"{name}={value} (taa supports {supported})" for name, (value, supported) in unsupported.items()
                if value != supported]
    if hf["activation_function"] not in ACTIVATIONS_FROM_HF:
        problems.append(f"activation_function={hf['activation_function']!r} (taa supports "
                        f"{', '.join(ACTIVATIONS_FROM_HF)})")
    return problems


def config_from_hf(hf_config: Mapping[str, Any]) -> GPTConfig:
    """A GPT-2 ``config.json`` (as a dict) -> :class:`GPTConfig`; unsupported options raise ConversionError."""
    hf = {**HF_DEFAULTS, **hf_config}
    problems = layer_problems(hf)
    if problems:
        raise ConversionError(f"GPT-2 config: unsupported {'; '.join(problems)}")
    vocab_size = hf["vocab_size"]
    return GPTConfig(
        d_model=hf["n_embd"],
        n_heads=hf["n_head"],
        d_ff=hf["n_inner"] if hf["n_inner"] is not None else 4 * hf["n_embd"],
        dropout=config_number(hf, "resid_pdrop"),  # taa uses one rate for residual and embedding dropout
        attention_dropout=config_number(hf, "attn_pdrop"),
        activation=ACTIVATIONS_FROM_HF[hf["activation_function"]],
        norm_first=True,
        norm_eps=config_number(hf, "layer_norm_epsilon"),
        vocab_size=vocab_size,
        n_layers=hf["n_layer"],
        max_length=hf["n_positions"],
        tie_output=config_flag(hf, "tie_word_embeddings"),
        feed_forward_dropout=0.0,
        init_std=config_number(hf, "initializer_range"),
        bos_id=_token_id(hf["bos_token_id"], vocab_size),
        eos_id=_token_id(hf["eos_token_id"], vocab_size),
        pad_id=_token_id(hf["pad_token_id"], vocab_size),
    )


def config_to_hf(config: GPTConfig, architecture: str = "GPT2LMHeadModel") -> dict[str, Any]:
    """:class:`GPTConfig` -> a GPT-2 ``config.json`` dict; what GPT-2 cannot express raises ConversionError."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    problems = []
    if not config.norm_first:
        problems.append("norm_first=False (GPT-2 is pre-norm)")
    if config.norm != "layer":
        problems.append(f"norm={config.norm!r} (GPT-2 uses LayerNorm)")
    if not config.bias:
        problems.append("bias=False (GPT-2 has biases)")
    if config.n_kv_heads not in (None, config.n_heads):
        problems.append(f"n_kv_heads={config.n_kv_heads} (GPT-2 has no grouped-query attention)")
    if config.positional != "learned":
        problems.append(f"positional={config.positional!r} (GPT-2 learns absolute positions)")
    if config.activation not in ACTIVATIONS_TO_HF:
        problems.append(f"activation={config.activation!r} (GPT-2 supports {', '.join(ACTIVATIONS_TO_HF)})")
    if problems:
        raise ConversionError(f"GPTConfig cannot be written as GPT-2: {'; '.join(problems)}")
    return {
        "architectures": [architecture],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_length,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        "activation_function": ACTIVATIONS_TO_HF[config.activation],
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention_dropout,
        "layer_norm_epsilon": config.norm_eps,
        "initializer_range": config.init_std,
        "bos_token_id": config.bos_id,
        "eos_token_id": config.eos_id,
        "pad_token_id": config.pad_id,
        "tie_word_embeddings": config.tie_output,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "use_cache": True,
    }


# --------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------


def key_map(n_layers: int) -> dict[str, str]:
    """Every one-to-one Hugging Face key (inside GPT2Model) -> our key; the fused q,k,v apart."""
    mapping = dict(EMBEDDING_KEYS)
    for i in range(n_layers):
        for p in ("weight", "bias"):
            for theirs, ours in LAYER_KEYS.items():
                mapping[theirs.format(i=i, p=p)] = ours.format(i=i, p=p)
    return mapping


def backbone_from_hf(backbone: Mapping[str, Any], n_layers: int, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """GPT2Model keys (no prefix) -> ours, Conv1D weights transposed, q,k,v split; the
    one-to-one keys in ``leave_out`` are not read."""
    converted = {}
    for theirs, ours in key_map(n_layers).items():
        if theirs not in leave_out:
            value = backbone[theirs]
            converted[ours] = value.T if CONV1D.search(theirs) else value
    for i in range(n_layers):
        for p in ("weight", "bias"):
            fused = backbone[FUSED_QKV.format(i=i, p=p)]
            fused = fused.T if p == "weight" else fused  # Conv1D (d, 3d) -> rows W^Q; W^K; W^V
            for name, part in zip(("q", "k", "v"), split_rows(fused, 3)):
                converted[OUR_ATTENTION.format(i=i, name=name, p=p)] = part
    return converted


def backbone_to_hf(state_dict: Mapping[str, Any], n_layers: int) -> dict[str, Any]:
    """Our keys -> GPT2Model keys (no prefix), Conv1D weights transposed, q,k,v fused."""
    converted = {}
    for theirs, ours in key_map(n_layers).items():
        value = state_dict[ours]
        converted[theirs] = value.T if CONV1D.search(theirs) else value
    for i in range(n_layers):
        for p in ("weight", "bias"):
            parts = [state_dict[OUR_ATTENTION.format(i=i, name=name, p=p)] for name in ("q", "k", "v")]
            fused = join_rows(parts)  # rows: W^Q; W^K; W^V, i.e. (3d, d) or (3d,)
            converted[FUSED_QKV.format(i=i, p=p)] = fused.T if p == "weight" else fused  # Conv1D: (d, 3d)
    return converted


def hf_shapes(config: GPTConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(GPT2Model key -> shape, head key -> shape): what a checkpoint for ``config`` holds."""
    d, f, v = config.d_model, config.d_ff, config.vocab_size
    backbone: dict[str, tuple[int, ...]] = {
        "wte.weight": (v, d), "wpe.weight": (config.max_length, d), "ln_f.weight": (d,), "ln_f.bias": (d,),
    }
    for i in range(config.n_layers):
        backbone.update({
            f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,),
            f"h.{i}.attn.c_attn.weight": (d, 3 * d), f"h.{i}.attn.c_attn.bias": (3 * d,),  # Conv1D: (in, out)
            f"h.{i}.attn.c_proj.weight": (d, d), f"h.{i}.attn.c_proj.bias": (d,),
            f"h.{i}.ln_2.weight": (d,), f"h.{i}.ln_2.bias": (d,),
            f"h.{i}.mlp.c_fc.weight": (d, f), f"h.{i}.mlp.c_fc.bias": (f,),
            f"h.{i}.mlp.c_proj.weight": (f, d), f"h.{i}.mlp.c_proj.bias": (d,),
        })
    heads = {} if config.tie_output else {HEAD: (v, d)}
    return backbone, heads


def state_dict_from_hf(state_dict: Mapping[str, Any], config: GPTConfig) -> dict[str, Any]:
    """A GPT-2 state dict (``transformer.``-prefixed or bare) -> ours.

    Every missing, unexpected and mis-shaped key is one :class:`ConversionError`.
    """
    state_dict = {key: value for key, value in state_dict.items() if not IGNORED.search(key)}
    if config.tie_output:
        state_dict.pop(HEAD, None)  # tied: the head is the token embedding
    backbone_shapes, head_shapes = hf_shapes(config)
    backbone, heads = split_backbone(state_dict, backbone_shapes, head_shapes, PREFIX, "GPT-2 weights")
    converted = backbone_from_hf(backbone, config.n_layers)
    converted["output_projection.weight"] = converted["token_embedding.weight"] if config.tie_output else heads[HEAD]
    return converted


def state_dict_to_hf(
    state_dict: Mapping[str, Any], config: GPTConfig, architecture: str = "GPT2LMHeadModel"
) -> dict[str, Any]:
    """Our state dict -> a ``GPT2LMHeadModel`` one (``lm_head.weight`` only when untied)."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    needed = set(key_map(config.n_layers).values()) | {"output_projection.weight"}
    needed |= {OUR_ATTENTION.format(i=i, name=name, p=p)
               for i in range(config.n_layers) for name in ("q", "k", "v") for p in ("weight", "bias")}
    check_state_dict(state_dict, dict.fromkeys(needed), "taa GPT weights")
    converted = {PREFIX + key: value for key, value in backbone_to_hf(state_dict, config.n_layers).items()}
    if not config.tie_output:
        converted[HEAD] = state_dict["output_projection.weight"]
    return converted


# --------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------


def read_hf_folder(folder: str | Path, framework: str = "np", architecture: Optional[str] = None) -> Converted:
    """A Hugging Face GPT-2 folder -> our GPT's config and weights (``framework``'s arrays:
    safetensors' ``"np"``, ``"pt"``, ...). ``architecture`` (our class, "GPT") checks what the
    caller expects; every error names the folder or file."""
    hf_config, folder = read_config(folder), model_folder(folder)
    choose_architecture(hf_config, ARCHITECTURES, str(folder / CONFIG_FILE), "GPT2LMHeadModel", architecture)
    try:
        config = config_from_hf(hf_config)
    except (ConfigError, ConversionError) as error:
        raise config_error(folder, error) from None
    weights = read_weights(folder, framework, unused=IGNORED.search)
    try:
        ours = state_dict_from_hf(weights, config)
    except ConversionError as error:
        raise weights_misfit(folder, error) from None
    return Converted(config, ARCHITECTURES["GPT2LMHeadModel"], ours)


def to_hf(architecture: str, config: GPTConfig, weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our GPT (class name, config, state dict) -> (``config.json`` dict, ``GPT2LMHeadModel`` weights)."""
    hf_class = hf_architecture(ARCHITECTURES, architecture)
    return config_to_hf(config, hf_class), state_dict_to_hf(weights, config, hf_class)
