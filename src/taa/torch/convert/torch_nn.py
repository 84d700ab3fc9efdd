"""``torch.nn.Transformer`` <-> ``taa.torch.Transformer`` stacks.

torch.nn packs the query, key and value projections of each attention into one
``in_proj_weight`` (3d, d) and ``in_proj_bias`` (3d); taa keeps ``q_proj``, ``k_proj``
and ``v_proj`` apart. Everything else is a rename. torch.nn always ends each stack
with a norm (``encoder.norm``, ``decoder.norm``), so the taa side needs
``final_norm=True``. Only the encoder and decoder stacks are mapped: torch.nn.Transformer
has no embeddings or output projection.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from taa.convert.state_dict import check_state_dict

# torch.nn attention name -> taa attention name, per layer kind
_ATTENTIONS = {
    "encoder": {"self_attn": "self_attention"},
    "decoder": {"self_attn": "self_attention", "multihead_attn": "cross_attention"},
}
# torch.nn per-layer key template -> taa key template ("{}" is the attention's name)
_LAYER_KEYS = {
    "encoder": {
        "linear1.{p}": "feed_forward.w1.{p}",
        "linear2.{p}": "feed_forward.w2.{p}",
        "norm1.{p}": "self_attention_residual.norm.{p}",
        "norm2.{p}": "feed_forward_residual.norm.{p}",
    },
    "decoder": {
        "linear1.{p}": "feed_forward.w1.{p}",
        "linear2.{p}": "feed_forward.w2.{p}",
        "norm1.{p}": "self_attention_residual.norm.{p}",
        "norm2.{p}": "cross_attention_residual.norm.{p}",
        "norm3.{p}": "feed_forward_residual.norm.{p}",
    },
}


def _key_map(n_encoder_layers: int, n_decoder_layers: int) -> dict[str, str]:
    """Every one-to-one torch.nn key -> taa key (the packed projections are handled apart)."""
    mapping = {}
    for stack, n_layers in (("encoder", n_encoder_layers), ("decoder", n_decoder_layers)):
        for i in range(n_layers):
            ours, theirs = f"{stack}.layers.{i}.", f"{stack}.layers.{i}."
            for p in ("weight", "bias"):
                for their_key, our_key in _LAYER_KEYS[stack].items():
                    mapping[theirs + their_key.format(p=p)] = ours + our_key.format(p=p)
                for their_attn, our_attn in _ATTENTIONS[stack].items():
                    mapping[f"{theirs}{their_attn}.out_proj.{p}"] = f"{ours}{our_attn}.out_proj.{p}"
        for p in ("weight", "bias"):
            mapping[f"{stack}.norm.{p}"] = f"{stack}.final_norm.{p}"
    return mapping


def _packed_keys(n_encoder_layers: int, n_decoder_layers: int) -> dict[str, str]:
    """torch.nn packed projection prefix -> taa attention prefix."""
    packed = {}
    for stack, n_layers in (("encoder", n_encoder_layers), ("decoder", n_decoder_layers)):
        for i in range(n_layers):
            for their_attn, our_attn in _ATTENTIONS[stack].items():
                packed[f"{stack}.layers.{i}.{their_attn}."] = f"{stack}.layers.{i}.{our_attn}."
    return packed


def _expected_torch_nn_keys(n_encoder_layers: int, n_decoder_layers: int) -> set[str]:
    keys = set(_key_map(n_encoder_layers, n_decoder_layers))
    for prefix in _packed_keys(n_encoder_layers, n_decoder_layers):
        keys |= {prefix + "in_proj_weight", prefix + "in_proj_bias"}
    return keys


def from_torch_nn(state_dict: Mapping[str, Tensor], n_encoder_layers: int, n_decoder_layers: int) -> dict[str, Tensor]:
    """A ``torch.nn.Transformer`` state dict -> the ``encoder.*``/``decoder.*`` keys of ours."""
    expected = _expected_torch_nn_keys(n_encoder_layers, n_decoder_layers)
    check_state_dict(state_dict, dict.fromkeys(expected), "torch.nn.Transformer state dict")
    converted = {ours: state_dict[theirs] for theirs, ours in _key_map(n_encoder_layers, n_decoder_layers).items()}
    for theirs, ours in _packed_keys(n_encoder_layers, n_decoder_layers).items():
        for kind in ("weight", "bias"):
            q, k, v = state_dict[f"{theirs}in_proj_{kind}"].chunk(3, dim=0)  # rows: W^Q; W^K; W^V
            converted[f"{ours}q_proj.{kind}"] = q
            converted[f"{ours}k_proj.{kind}"] = k
            converted[f"{ours}v_proj.{kind}"] = v
    return converted


def to_torch_nn(state_dict: Mapping[str, Tensor], n_encoder_layers: int, n_decoder_layers: int) -> dict[str, Tensor]:
    """Our ``encoder.*``/``decoder.*`` keys -> a ``torch.nn.Transformer`` state dict.

    Other keys of ours (embeddings, output projection) are ignored: torch.nn has none.
    """
    needed = set(_key_map(n_encoder_layers, n_decoder_layers).values())
    for ours in _packed_keys(n_encoder_layers, n_decoder_layers).values():
        needed |= {f"{ours}{name}_proj.{kind}" for name in ("q", "k", "v") for kind in ("weight", "bias")}
    present = {key: value for key, value in state_dict.items() if key in needed}
    check_state_dict(present, dict.fromkeys(needed), "taa state dict for torch.nn.Transformer")
    converted = {theirs: state_dict[ours] for theirs, ours in _key_map(n_encoder_layers, n_decoder_layers).items()}
    for theirs, ours in _packed_keys(n_encoder_layers, n_decoder_layers).items():
        for kind in ("weight", "bias"):
            parts = [state_dict[f"{ours}{name}_proj.{kind}"] for name in ("q", "k", "v")]
            converted[f"{theirs}in_proj_{kind}"] = torch.cat(parts, dim=0)
    return converted
