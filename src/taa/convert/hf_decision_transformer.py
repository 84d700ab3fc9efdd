"""Hugging Face ``DecisionTransformerModel`` <-> taa's ``DecisionTransformer``, on arrays of any framework.

transformers' model is a GPT-2 (``encoder.``) without token input plus the embeddings and
heads of the paper. Its GPT-2 layers convert as GPT-2's do (:mod:`taa.convert.hf_gpt2`:
Conv1D weights transposed, the fused q, k, v split); around them:

- ``encoder.wte.weight`` is never read (inputs are embeddings): it is dropped, and written
  back as zeros;
- the GPT-2 is called with every position id 0, so row 0 of ``encoder.wpe.weight`` is
  added to every token: it becomes our ``position`` vector; the other rows are never read
  (written back as zeros);
- ``embed_ln`` is our ``embed_norm``; ``predict_action.0`` (a Linear, then an optional
  Tanh) is our ``predict_action``.

transformers knows continuous actions only: a discrete-action model (one-hot in, logits
out) converts when it has no tanh. Two keys of taa's own go into ``config.json`` beside
transformers' (which keeps unknown keys as attributes): ``discrete`` and ``context`` (the
steps the model reads), so that such a folder reads back as it was written; a folder
without them is continuous with a context of 20 steps (the paper's).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from taa import registry
from taa.config import ConfigError, DecisionTransformerConfig
from taa.convert import hf_gpt2
from taa.convert.arrays import zeros_like_rows
from taa.convert.hf_folder import CONFIG_FILE, Converted, choose_architecture, config_error, config_flag
from taa.convert.hf_folder import config_number, encoder_layer_problems, hf_architecture, model_folder
from taa.convert.hf_folder import read_config, read_weights, weights_misfit
from taa.convert.state_dict import ConversionError, check_state_dict

ARCHITECTURES = dict(registry.family("decision_transformer").hf_architectures)
GPT = "encoder."  # transformers' name for its GPT-2
OWN_KEYS = {  # theirs -> ours, outside the GPT-2; "{p}" weight or bias
    "embed_timestep.weight": "embed_timestep.weight",
    "embed_return.{p}": "embed_return.{p}",
    "embed_state.{p}": "embed_state.{p}",
    "embed_action.{p}": "embed_action.{p}",
    "embed_ln.{p}": "embed_norm.{p}",
    "predict_state.{p}": "predict_state.{p}",
    "predict_action.0.{p}": "predict_action.{p}",
    "predict_return.{p}": "predict_return.{p}",
}
POSITIONS, TOKENS = "encoder.wpe.weight", "encoder.wte.weight"
IGNORED_GPT = ("wte.weight", "wpe.weight")  # the GPT-2 map's embeddings: not used, or only row 0

HF_DEFAULTS: dict[str, Any] = {
    "state_dim": 17, "act_dim": 4, "hidden_size": 128, "max_ep_len": 4096, "action_tanh": True,
    "vocab_size": 1, "n_positions": 1024, "n_layer": 3, "n_head": 1, "n_inner": None,
    "activation_function": "relu", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
    "discrete": False, "context": 20,  # taa's own keys
}


def config_from_hf(hf_config: Mapping[str, Any]) -> DecisionTransformerConfig:
    """A DecisionTransformer ``config.json`` (as a dict) -> :class:`DecisionTransformerConfig`."""
    hf = {**HF_DEFAULTS, **hf_config}
    problems = hf_gpt2.layer_problems(hf)
    if problems:
        raise ConversionError(f"Decision Transformer config: unsupported {'; '.join(problems)}")
    if config_number(hf, "resid_pdrop") != config_number(hf, "embd_pdrop"):
        raise ConversionError(f"resid_pdrop={hf['resid_pdrop']} and embd_pdrop={hf['embd_pdrop']} differ "
                              f"(taa has one dropout for both)")
    d = hf["hidden_size"]
    return DecisionTransformerConfig(
        d_model=d, n_heads=hf["n_head"], d_ff=hf["n_inner"] or 4 * d,
        dropout=config_number(hf, "resid_pdrop"), attention_dropout=config_number(hf, "attn_pdrop"),
        activation=hf_gpt2.ACTIVATIONS_FROM_HF[hf["activation_function"]],
        norm_eps=config_number(hf, "layer_norm_epsilon"), n_layers=hf["n_layer"], state_dim=hf["state_dim"],
        act_dim=hf["act_dim"], max_ep_len=hf["max_ep_len"], action_tanh=config_flag(hf, "action_tanh"),
        discrete=config_flag(hf, "discrete"), context=hf["context"],
        init_std=config_number(hf, "initializer_range"),
    )


def config_to_hf(config: DecisionTransformerConfig,
                 architecture: str = "DecisionTransformerModel") -> dict[str, Any]:
    """:class:`DecisionTransformerConfig` -> a ``config.json`` dict; what transformers' model
    cannot express raises ConversionError."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    problems = [] if config.norm_first else ["norm_first=False (GPT-2 is pre-norm)"]
    problems += encoder_layer_problems(config, "GPT-2", hf_gpt2.ACTIVATIONS_TO_HF)
    if problems:
        raise ConversionError(f"DecisionTransformerConfig cannot be written for transformers: {'; '.join(problems)}")
    return {
        "architectures": ["DecisionTransformerModel"], "model_type": "decision_transformer",
        "state_dim": config.state_dim, "act_dim": config.act_dim, "hidden_size": config.d_model,
        "max_ep_len": config.max_ep_len, "action_tanh": config.action_tanh, "vocab_size": 1,
        "n_positions": 1024, "n_layer": config.n_layers, "n_head": config.n_heads, "n_inner": config.d_ff,
        "activation_function": hf_gpt2.ACTIVATIONS_TO_HF[config.activation], "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout, "attn_pdrop": config.attention_dropout,
        "layer_norm_epsilon": config.norm_eps, "initializer_range": config.init_std,
        "discrete": config.discrete, "context": config.context,
    }


def _own_keys() -> dict[str, str]:
    return {theirs.format(p=p): ours.format(p=p) for theirs, ours in OWN_KEYS.items()
            for p in (("weight", "bias") if "{p}" in theirs else ("",))}


def _gpt_keys(n_layers: int) -> dict[str, str]:
    """GPT-2's one-to-one keys (inside its GPT2Model) -> ours, the unused embeddings left out."""
    return {theirs: ours for theirs, ours in hf_gpt2.key_map(n_layers).items() if theirs not in IGNORED_GPT}


def hf_shapes(config: DecisionTransformerConfig) -> dict[str, tuple[int, ...]]:
    d, s, a = config.d_model, config.state_dim, config.act_dim
    gpt_config = _as_gpt(config)
    backbone, _ = hf_gpt2.hf_shapes(gpt_config)
    shapes = {GPT + key: shape for key, shape in backbone.items()}
    shapes.update({
        "embed_timestep.weight": (config.max_ep_len, d), "embed_return.weight": (d, 1), "embed_return.bias": (d,),
        "embed_state.weight": (d, s), "embed_state.bias": (d,), "embed_action.weight": (d, a),
        "embed_action.bias": (d,), "embed_ln.weight": (d,), "embed_ln.bias": (d,),
        "predict_state.weight": (s, d), "predict_state.bias": (s,), "predict_action.0.weight": (a, d),
        "predict_action.0.bias": (a,), "predict_return.weight": (1, d), "predict_return.bias": (1,),
    })
    shapes[TOKENS] = None  # never read: any vocabulary
    shapes[POSITIONS] = None  # row 0 read: any number of positions
    return shapes


def _as_gpt(config: DecisionTransformerConfig):
    """The GPT config whose layers ours are (for the GPT-2 maps' shapes)."""
    from taa.config import GPTConfig

    return GPTConfig(d_model=config.d_model, n_heads=config.n_heads, d_ff=config.d_ff, n_layers=config.n_layers,
                     vocab_size=1, max_length=1, activation=config.activation, norm_eps=config.norm_eps)


def state_dict_from_hf(state_dict: Mapping[str, Any], config: DecisionTransformerConfig) -> dict[str, Any]:
    """A ``DecisionTransformerModel`` state dict -> ours; every bad key is one ConversionError."""
    check_state_dict(state_dict, hf_shapes(config), "Decision Transformer weights")
    gpt = {key[len(GPT):]: value for key, value in state_dict.items() if key.startswith(GPT)}
    converted = hf_gpt2.backbone_from_hf(gpt, config.n_layers, leave_out=IGNORED_GPT)
    converted.update({ours: state_dict[theirs] for theirs, ours in _own_keys().items()})
    converted["position"] = state_dict[POSITIONS][0]
    return converted


def state_dict_to_hf(state_dict: Mapping[str, Any], config: DecisionTransformerConfig) -> dict[str, Any]:
    """Our state dict -> a ``DecisionTransformerModel`` one (the unused GPT-2 embeddings as zeros)."""
    layers = {hf_gpt2.OUR_ATTENTION.format(i=i, name=name, p=p)
              for i in range(config.n_layers) for name in ("q", "k", "v") for p in ("weight", "bias")}
    needed = set(_own_keys().values()) | set(_gpt_keys(config.n_layers).values()) | layers | {"position"}
    check_state_dict(state_dict, dict.fromkeys(needed), "taa Decision Transformer weights")
    position = state_dict["position"]
    stand_in = {"token_embedding.weight": zeros_like_rows(position, 1),
                "position_embedding.embedding.weight": zeros_like_rows(position, 1024, first=position)}
    gpt = hf_gpt2.backbone_to_hf({**state_dict, **stand_in}, config.n_layers)
    converted = {GPT + key: value for key, value in gpt.items()}
    converted.update({theirs: state_dict[ours] for theirs, ours in _own_keys().items()})
    return converted


def read_hf_folder(folder: str | Path, framework: str = "np", architecture: Optional[str] = None) -> Converted:
    """A Hugging Face Decision Transformer folder -> our model's config and weights."""
    hf_config, folder = read_config(folder), model_folder(folder)
    hf_class = choose_architecture(hf_config, ARCHITECTURES, str(folder / CONFIG_FILE), "DecisionTransformerModel",
                                   architecture)
    try:
        config = config_from_hf(hf_config)
    except (ConfigError, ConversionError) as error:
        raise config_error(folder, error) from None
    try:
        ours = state_dict_from_hf(read_weights(folder, framework), config)
    except ConversionError as error:
        raise weights_misfit(folder, error) from None
    return Converted(config, ARCHITECTURES[hf_class], ours)


def to_hf(architecture: str, config: DecisionTransformerConfig,
          weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our Decision Transformer (class name, config, state dict) -> (``config.json`` dict, weights)."""
    hf_architecture(ARCHITECTURES, architecture)
    return config_to_hf(config), state_dict_to_hf(weights, config)
