"""Hugging Face ``T5ForConditionalGeneration`` <-> taa's class of the same name, on arrays of any framework.

Both keep every projection as a linear weight of shape (out, in) and the relative bias as
an (buckets, heads) embedding, so the conversion is a rename; the layout fixes are all
about the shared embedding:

- Hugging Face's ``encoder.embed_tokens.weight`` and ``decoder.embed_tokens.weight`` are
  tied copies of ``shared.weight`` (v1.0's ``lm_head.weight`` too). A file may hold them or
  not; when it does they must equal ``shared.weight``. We write only ``shared.weight``
  (and ``lm_head.weight`` when untied), as ``save_pretrained`` does.
- Only block 0 of each stack has ``relative_attention_bias``; taa keeps it on the stack
  (``encoder.relative_bias``). Old checkpoints also carry an unused
  ``decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight``, which
  transformers ignores on load; so do we.
- transformers 5 ties T5's output layer to ``shared`` whenever a file has no separate,
  different ``lm_head.weight``, and says in ``scale_decoder_outputs`` whether the decoder
  output is multiplied by d_model**-0.5 (the old meaning of ``tie_word_embeddings``).
  Older configs only have ``tie_word_embeddings``. taa keeps both: ``tie_word_embeddings``
  (one matrix) and ``scale_decoder_outputs`` (None: same as tied).

Hugging Face key templates, per layer ``i`` (layer.0 self-attention, decoder layer.1
cross-attention, the last layer the feed-forward)::

    {stack}.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight    {stack}.layers.{i}.self_attention.{q,k,v,out}_proj.weight
    {stack}.block.{i}.layer.0.layer_norm.weight                  {stack}.layers.{i}.self_attention_residual.norm.weight
    decoder.block.{i}.layer.1.EncDecAttention.{q,k,v,o}.weight   decoder.layers.{i}.cross_attention.{..}_proj.weight
    {stack}.block.{i}.layer.{f}.DenseReluDense.wi.weight         {stack}.layers.{i}.feed_forward.w1.weight    (v1.0)
    {stack}.block.{i}.layer.{f}.DenseReluDense.wi_0.weight       {stack}.layers.{i}.feed_forward.w1.weight    (gated)
    {stack}.block.{i}.layer.{f}.DenseReluDense.wi_1.weight       {stack}.layers.{i}.feed_forward.gate.weight  (gated)
    {stack}.block.{i}.layer.{f}.DenseReluDense.wo.weight         {stack}.layers.{i}.feed_forward.w2.weight

Python API: :func:`config_from_hf`, :func:`config_to_hf`, :func:`state_dict_from_hf`,
:func:`state_dict_to_hf`; for a whole folder :func:`read_hf_folder` / :func:`to_hf` (what
:func:`taa.torch.convert.hf.load_hf_folder` and ``save_hf_folder`` call).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from taa import registry
from taa.config import ConfigError, T5Config
from taa.convert.arrays import same_values
from taa.convert.hf_folder import Converted, config_error, config_number, hf_architecture, model_folder, read_config
from taa.convert.hf_folder import read_weights, weights_misfit
from taa.convert.state_dict import ConversionError, check_state_dict

ARCHITECTURES = dict(registry.family("t5").hf_architectures)  # transformers class -> ours (the same name)

# Hugging Face feed_forward_proj <-> taa activation. HF's "gated-gelu" means the tanh GELU
# ("gelu_new"), plain "gelu" the exact one.
_FEED_FORWARD_FROM_HF = {
    "relu": "relu",
    "gated-gelu": "geglu",
    "gated-gelu_new": "geglu",
    "gated-silu": "swiglu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
}
_FEED_FORWARD_TO_HF = {"relu": "relu", "geglu": "gated-gelu", "swiglu": "gated-silu", "gelu": "gelu", "gelu_tanh": "gelu_new"}

_ATTENTION_PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
_TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")  # always equal to shared.weight
_IGNORED_ON_LOAD = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)  # unused, legacy


# --------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------


def config_from_hf(hf: Mapping[str, Any]) -> T5Config:
    """A Hugging Face T5 ``config.json`` mapping -> :class:`T5Config` (bad values name the field)."""
    model_type = hf.get("model_type", "t5")
    if model_type != "t5":
        raise ConversionError(f"config model_type={model_type!r} is not 't5'")
    feed_forward = hf.get("feed_forward_proj", "relu")
    if feed_forward not in _FEED_FORWARD_FROM_HF:
        raise ConversionError(
            f"config feed_forward_proj={feed_forward!r} is not one of {', '.join(map(repr, _FEED_FORWARD_FROM_HF))}"
        )
    eos = hf.get("eos_token_id", 1)
    if isinstance(eos, list):
        if len(eos) != 1:
            raise ConversionError(f"config eos_token_id={eos!r}: taa decodes with one end token")
        eos = eos[0]
    pad = hf.get("pad_token_id", 0)
    start = hf.get("decoder_start_token_id")
    n_layers = hf.get("num_layers", 6)
    dropout = config_number(hf, "dropout_rate", 0.1)
    tie = hf.get("tie_word_embeddings", True)
    scale = hf.get("scale_decoder_outputs")
    fields = dict(
        vocab_size=hf.get("vocab_size", 32128),
        d_model=hf.get("d_model", 512),
        d_kv=hf.get("d_kv", 64),
        d_ff=hf.get("d_ff", 2048),
        n_heads=hf.get("num_heads", 8),
        n_encoder_layers=n_layers,
        n_decoder_layers=hf.get("num_decoder_layers") or n_layers,
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout=dropout,
        attention_dropout=dropout,
        norm_eps=config_number(hf, "layer_norm_epsilon", 1e-6),
        activation=_FEED_FORWARD_FROM_HF[feed_forward],
        tie_word_embeddings=tie,
        scale_decoder_outputs=None if scale == tie else scale,  # None: scaled when tied
        max_length=hf.get("n_positions", 512),  # older T5 configs' n_positions (512): the decoding default
        pad_id=pad,
        eos_id=eos,
        decoder_start_id=pad if start is None else start,
    )
    try:
        return T5Config(**fields)
    except ConfigError as error:
        raise ConversionError(f"Hugging Face T5 config: {error}") from None


def config_to_hf(config: T5Config) -> dict[str, Any]:
    """:class:`T5Config` -> a Hugging Face ``config.json`` mapping for ``T5ForConditionalGeneration``.

    Hugging Face has one dropout rate; ``config.dropout`` is written. Choices it cannot
    express (LayerNorm, biases) are an error.
    """
    if config.norm != "rms" or config.bias:
        raise ConversionError(
            f"norm={config.norm!r}, bias={config.bias}: Hugging Face T5 has only norm='rms' and bias=false"
        )
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "is_encoder_decoder": True,
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.n_heads,
        "num_layers": config.n_encoder_layers,
        "num_decoder_layers": config.n_decoder_layers,
        "relative_attention_num_buckets": config.relative_buckets,
        "relative_attention_max_distance": config.relative_max_distance,
        "dropout_rate": config.dropout,
        "layer_norm_epsilon": config.norm_eps,
        "feed_forward_proj": _FEED_FORWARD_TO_HF[config.activation],
        "tie_word_embeddings": config.tie_word_embeddings,
        "scale_decoder_outputs": config.scale_output,
        "initializer_factor": 1.0,
        "n_positions": config.max_length,  # not read by transformers 5; the released configs carry it
        "pad_token_id": config.pad_id,
        "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.decoder_start_id,
        "use_cache": True,
    }


# --------------------------------------------------------------------------------------
# Key maps
# --------------------------------------------------------------------------------------


def _layer_keys(stack: str, i: int, gated: bool) -> dict[str, str]:
    """Hugging Face key -> taa key for layer ``i`` of ``stack`` ("encoder" or "decoder")."""
    theirs, ours = f"{stack}.block.{i}.layer.", f"{stack}.layers.{i}."
    attentions = [("0", "SelfAttention", "self_attention")]
    if stack == "decoder":
        attentions.append(("1", "EncDecAttention", "cross_attention"))
    mapping = {}
    for sub, their_name, our_name in attentions:
        for their_proj, our_proj in _ATTENTION_PROJECTIONS.items():
            mapping[f"{theirs}{sub}.{their_name}.{their_proj}.weight"] = f"{ours}{our_name}.{our_proj}.weight"
        mapping[f"{theirs}{sub}.layer_norm.weight"] = f"{ours}{our_name}_residual.norm.weight"
    ff = str(len(attentions))  # the feed-forward is the last sub-layer
    ffn_in = {"wi_0": "w1", "wi_1": "gate"} if gated else {"wi": "w1"}
    for their_proj, our_proj in {**ffn_in, "wo": "w2"}.items():
        mapping[f"{theirs}{ff}.DenseReluDense.{their_proj}.weight"] = f"{ours}feed_forward.{our_proj}.weight"
    mapping[f"{theirs}{ff}.layer_norm.weight"] = f"{ours}feed_forward_residual.norm.weight"
    return mapping


def key_map(config: T5Config) -> dict[str, str]:
    """Every Hugging Face key -> taa key (the tied copies of ``shared.weight`` left out)."""
    gated = config.activation in ("geglu", "swiglu")
    mapping = {"shared.weight": "shared.weight"}
    for stack, n_layers in (("encoder", config.n_encoder_layers), ("decoder", config.n_decoder_layers)):
        for i in range(n_layers):
            mapping.update(_layer_keys(stack, i, gated))
        mapping[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            f"{stack}.relative_bias.embedding.weight"
        )
        mapping[f"{stack}.final_layer_norm.weight"] = f"{stack}.final_norm.weight"
    if not config.tie_word_embeddings:
        mapping["lm_head.weight"] = "lm_head.weight"
    return mapping


def _hf_shape(key: str, config: T5Config) -> tuple[int, ...]:
    """The shape of Hugging Face key ``key`` (a key of :func:`key_map`) for ``config``."""
    d, inner, f = config.d_model, config.n_heads * config.d_kv, config.d_ff
    if key in ("shared.weight", "lm_head.weight"):
        return (config.vocab_size, d)
    if key.endswith("relative_attention_bias.weight"):
        return (config.relative_buckets, config.n_heads)
    if key.endswith((".q.weight", ".k.weight", ".v.weight")):
        return (inner, d)  # (out, in): n_heads heads of d_kv
    if key.endswith(".o.weight"):
        return (d, inner)
    if ".DenseReluDense.wi" in key:
        return (f, d)
    if key.endswith(".wo.weight"):
        return (d, f)
    return (d,)  # layer norms


def hf_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """Hugging Face key -> shape: what a checkpoint for ``config`` holds (the tied copies left out)."""
    return {key: _hf_shape(key, config) for key in key_map(config)}


def _taa_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """taa key -> shape: our state dict for ``config`` (a tied head under its own name too)."""
    shapes = {ours: _hf_shape(theirs, config) for theirs, ours in key_map(config).items()}
    shapes["lm_head.weight"] = (config.vocab_size, config.d_model)
    return shapes


def _raise_all(problems: list[str], check, what: str) -> None:
    """Run ``check`` (a check_state_dict call) and raise one error with its problems and ``problems``."""
    try:
        check()
    except ConversionError as error:
        problems = [str(error).removeprefix(f"{what}: "), *problems]
    if problems:
        raise ConversionError(f"{what}: " + " | ".join(problems))


def state_dict_from_hf(state_dict: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
    """A Hugging Face T5 state dict -> taa's, checking every key and shape first.

    Missing, unexpected and mis-shaped keys, and tied copies that differ from
    ``shared.weight``, are reported together in one :class:`ConversionError`.
    """
    what = "Hugging Face T5 state dict"
    mapping = key_map(config)
    expected = hf_shapes(config)
    copies = _TIED_COPIES + (("lm_head.weight",) if config.tie_word_embeddings else ())
    problems = []
    shared = state_dict.get("shared.weight")
    for key in copies:
        if key in state_dict and shared is not None and not same_values(state_dict[key], shared):
            hint = " (an untied head needs tie_word_embeddings=false)" if key == "lm_head.weight" else ""
            problems.append(f"{key} differs from shared.weight, of which it should be a tied copy{hint}")
    present = {k: v for k, v in state_dict.items() if k not in copies and k not in _IGNORED_ON_LOAD}
    _raise_all(problems, lambda: check_state_dict(present, expected, what), what)
    converted = {mine: state_dict[theirs] for theirs, mine in mapping.items()}
    if config.tie_word_embeddings:
        converted["lm_head.weight"] = converted["shared.weight"]  # the same parameter in taa's state dict
    return converted


def state_dict_to_hf(state_dict: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
    """taa's T5 state dict -> Hugging Face's, as ``save_pretrained`` writes it (no tied copies)."""
    mapping = key_map(config)
    check_state_dict(state_dict, _taa_shapes(config), "taa T5 state dict")
    if config.tie_word_embeddings and not same_values(state_dict["lm_head.weight"], state_dict["shared.weight"]):
        raise ConversionError("taa T5 state dict: lm_head.weight differs from shared.weight but the config ties them")
    return {theirs: state_dict[mine] for theirs, mine in mapping.items()}


# --------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------


def read_hf_folder(folder: str | Path, framework: str = "np", architecture: Optional[str] = None) -> Converted:
    """A Hugging Face T5 folder -> our T5's config and weights (``framework``'s arrays:
    safetensors' ``"np"``, ``"pt"``, ...).

    A separate ``lm_head.weight`` that differs from ``shared.weight`` means an untied
    head (v1.1); no such key means a tied one, whatever ``tie_word_embeddings`` says:
    transformers 5 does the same.
    """
    if architecture is not None:
        hf_architecture(ARCHITECTURES, architecture)  # only T5ForConditionalGeneration
    hf_config, folder = read_config(folder), model_folder(folder)
    try:
        config_from_hf(hf_config)  # a bad config is named before the weights are read
    except ConversionError as error:
        raise config_error(folder, error) from None
    weights = read_weights(folder, framework, unused=_IGNORED_ON_LOAD.__contains__)
    shared = weights.get("shared.weight")
    own_head = "lm_head.weight" in weights and (shared is None or not same_values(weights["lm_head.weight"], shared))
    # Before transformers 5, tie_word_embeddings also meant "scale the decoder output".
    scale = hf_config.get("scale_decoder_outputs", hf_config.get("tie_word_embeddings", True))
    config = config_from_hf({**hf_config, "tie_word_embeddings": not own_head, "scale_decoder_outputs": scale})
    try:
        ours = state_dict_from_hf(weights, config)
    except ConversionError as error:
        raise weights_misfit(folder, error) from None
    return Converted(config, ARCHITECTURES["T5ForConditionalGeneration"], ours)


def to_hf(architecture: str, config: T5Config, weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our T5 (class name, config, state dict) -> (``config.json`` dict, weights), as
    ``T5ForConditionalGeneration.save_pretrained`` writes them."""
    hf_architecture(ARCHITECTURES, architecture)
    return config_to_hf(config), state_dict_to_hf(weights, config)
