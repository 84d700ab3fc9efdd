"""Hugging Face BERT (``BertModel``, ``BertForMaskedLM``, ``BertForSequenceClassification``)
<-> taa's classes of the same names, on arrays of any framework.

BERT needs no layout fix: every array is a rename (linear weights are (out, in) on both sides). The
backbone's keys sit under ``bert.`` in the task models and bare in ``BertModel``
checkpoints (all-MiniLM-L6-v2 among them); both are read.

- ``BertForMaskedLM``: the decoder is tied to the word embeddings and its bias is
  ``cls.predictions.bias``; transformers saves neither ``cls.predictions.decoder.*``,
  and checkpoints that do are read without them. A pre-training checkpoint's pooler and
  next-sentence head (``bert.pooler.*``, ``cls.seq_relationship.*``) are dropped: the
  masked-LM model has neither.
- ``embeddings.position_ids`` (a buffer some checkpoints carry) is ignored, and the
  TensorFlow-era names ``LayerNorm.gamma``/``LayerNorm.beta`` read as ``weight``/``bias``.
- A ``BertModel`` checkpoint without a pooler loads into a ``BertModel`` without one.

Python API: :func:`config_from_hf`, :func:`config_to_hf`, :func:`state_dict_from_hf`,
:func:`state_dict_to_hf`; for a whole folder :func:`read_hf_folder` / :func:`to_hf` (what
:func:`taa.torch.convert.hf.load_hf_folder` and ``save_hf_folder`` call). The
folder's ``tokenizer.json`` (which adds [CLS]/[SEP]) opens with :func:`taa.text.load_tokenizer`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from taa import registry
from taa.config import BertConfig, ConfigError
from taa.convert.hf_folder import CONFIG_FILE, Converted, choose_architecture, config_error, hf_architecture
from taa.convert.hf_folder import model_folder, weights_misfit
from taa.convert.hf_folder import read_config, read_weights, split_backbone
from taa.convert.hf_folder import config_number, encoder_layer_problems, encoder_layer_shapes, expand_keys
from taa.convert.hf_folder import num_labels_from_hf
from taa.convert.state_dict import ConversionError, check_state_dict

ARCHITECTURES = dict(registry.family("bert").hf_architectures)  # transformers class -> ours (the same names)
PREFIX = "bert."  # the task models' name for their BertModel

# Hugging Face key (inside BertModel) -> ours (inside our BertModel); "{i}" layer, "{p}" weight or bias.
EMBEDDING_KEYS = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.embedding.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.{p}": "embeddings.norm.{p}",
}
LAYER_KEYS = {
    "encoder.layer.{i}.attention.self.query.{p}": "encoder.layers.{i}.self_attention.q_proj.{p}",
    "encoder.layer.{i}.attention.self.key.{p}": "encoder.layers.{i}.self_attention.k_proj.{p}",
    "encoder.layer.{i}.attention.self.value.{p}": "encoder.layers.{i}.self_attention.v_proj.{p}",
    "encoder.layer.{i}.attention.output.dense.{p}": "encoder.layers.{i}.self_attention.out_proj.{p}",
    "encoder.layer.{i}.attention.output.LayerNorm.{p}": "encoder.layers.{i}.self_attention_residual.norm.{p}",
    "encoder.layer.{i}.intermediate.dense.{p}": "encoder.layers.{i}.feed_forward.w1.{p}",
    "encoder.layer.{i}.output.dense.{p}": "encoder.layers.{i}.feed_forward.w2.{p}",
    "encoder.layer.{i}.output.LayerNorm.{p}": "encoder.layers.{i}.feed_forward_residual.norm.{p}",
}
POOLER_KEYS = {"pooler.dense.{p}": "pooler.dense.{p}"}
# Head keys (full Hugging Face names) -> ours (full names), per architecture.
HEAD_KEYS = {
    "BertModel": {},
    "BertForMaskedLM": {
        "cls.predictions.transform.dense.{p}": "mlm_head.transform.{p}",
        "cls.predictions.transform.LayerNorm.{p}": "mlm_head.norm.{p}",
        "cls.predictions.bias": "mlm_head.decoder.bias",
    },
    "BertForSequenceClassification": {"classifier.{p}": "classifier.{p}"},
}
TIED_MLM_DECODER = "mlm_head.decoder.weight"  # = the word embeddings
IGNORED = re.compile(r"(^|\.)embeddings\.position_ids$")
NOT_IN_MASKED_LM = re.compile(r"^(bert\.)?pooler\.|^cls\.seq_relationship\.|^cls\.predictions\.decoder\.")

# transformers' BertConfig defaults, for config.json files that leave fields out.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0, "classifier_dropout": None,
    "position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False,
}
ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


# --------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------


def config_from_hf(hf_config: Mapping[str, Any]) -> BertConfig:
    """A BERT ``config.json`` (as a dict) -> :class:`BertConfig`; unsupported options raise ConversionError."""
    hf = {**HF_DEFAULTS, **hf_config}
    problems = []
    if hf["position_embedding_type"] != "absolute":
        problems.append(f"position_embedding_type={hf['position_embedding_type']!r} (taa supports 'absolute')")
    for name in ("is_decoder", "add_cross_attention"):
        if hf[name]:
            problems.append(f"{name}=true (taa's BERT is an encoder)")
    if hf["hidden_act"] not in ACTIVATIONS_FROM_HF:
        problems.append(f"hidden_act={hf['hidden_act']!r} (taa supports {', '.join(ACTIVATIONS_FROM_HF)})")
    if problems:
        raise ConversionError(f"BERT config: unsupported {'; '.join(problems)}")
    pad_id = hf["pad_token_id"]
    return BertConfig(
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        dropout=config_number(hf, "hidden_dropout_prob"),
        attention_dropout=config_number(hf, "attention_probs_dropout_prob"),
        activation=ACTIVATIONS_FROM_HF[hf["hidden_act"]],
        norm_first=False,
        norm_eps=config_number(hf, "layer_norm_eps"),
        vocab_size=hf["vocab_size"],
        n_layers=hf["num_hidden_layers"],
        max_length=hf["max_position_embeddings"],
        type_vocab_size=hf["type_vocab_size"],
        pad_id=0 if pad_id is None else pad_id,
        num_labels=num_labels_from_hf(hf_config),
        classifier_dropout=None if hf["classifier_dropout"] is None else config_number(hf, "classifier_dropout"),
        feed_forward_dropout=0.0,
        init_std=config_number(hf, "initializer_range"),
    )


def config_to_hf(config: BertConfig, architecture: str = "BertModel") -> dict[str, Any]:
    """:class:`BertConfig` -> a BERT ``config.json`` dict; what BERT cannot express raises ConversionError."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    problems = ["norm_first=True (BERT is post-norm)"] if config.norm_first else []
    problems += encoder_layer_problems(config, "BERT", ACTIVATIONS_TO_HF)
    if architecture == "BertForSequenceClassification" and config.classifier_pooling != "cls":
        problems.append(f"classifier_pooling={config.classifier_pooling!r} (BertForSequenceClassification pools [CLS])")
    if problems:
        raise ConversionError(f"BertConfig cannot be written as BERT: {'; '.join(problems)}")
    hf = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": ACTIVATIONS_TO_HF[config.activation],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_length,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.init_std,
        "layer_norm_eps": config.norm_eps,
        "pad_token_id": config.pad_id,
        "classifier_dropout": config.classifier_dropout,
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    }
    # transformers counts labels from id2label; written for every architecture so num_labels round-trips
    hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
    hf["label2id"] = {f"LABEL_{i}": i for i in range(config.num_labels)}
    return hf


# --------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------


def backbone_key_map(n_layers: int, pooler: bool = True) -> dict[str, str]:
    """Hugging Face key (inside BertModel) -> ours (inside our BertModel)."""
    mapping = expand_keys(EMBEDDING_KEYS)
    mapping.update(expand_keys(LAYER_KEYS, n_layers))
    if pooler:
        mapping.update(expand_keys(POOLER_KEYS))
    return mapping


def _our_backbone_prefix(architecture: str) -> str:
    return "" if architecture == "BertModel" else "bert."


def _has_pooler(architecture: str) -> bool:
    return architecture != "BertForMaskedLM"  # transformers builds the masked-LM model without one


def hf_shapes(
    config: BertConfig, architecture: str = "BertModel", pooler: bool = True
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(BertModel key -> shape, head key -> shape): what a checkpoint for ``config`` holds."""
    d, f, v = config.d_model, config.d_ff, config.vocab_size
    backbone: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (v, d),
        "embeddings.position_embeddings.weight": (config.max_length, d),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, d),
        "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(config.n_layers):
        backbone.update(encoder_layer_shapes(
            f"encoder.layer.{i}.", d, f,
            ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
            ("attention.output.LayerNorm", "output.LayerNorm")))
    if pooler:
        backbone.update({"pooler.dense.weight": (d, d), "pooler.dense.bias": (d,)})
    heads: dict[str, tuple[int, ...]] = {}
    if architecture == "BertForMaskedLM":
        heads = {
            "cls.predictions.transform.dense.weight": (d, d), "cls.predictions.transform.dense.bias": (d,),
            "cls.predictions.transform.LayerNorm.weight": (d,), "cls.predictions.transform.LayerNorm.bias": (d,),
            "cls.predictions.bias": (v,),
        }
    elif architecture == "BertForSequenceClassification":
        heads = {"classifier.weight": (config.num_labels, d), "classifier.bias": (config.num_labels,)}
    return backbone, heads


def _rename_tensorflow_norms(key: str) -> str:
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def checkpoint_has_pooler(state_dict: Mapping[str, Any]) -> bool:
    return any(re.match(r"^(bert\.)?pooler\.", key) for key in state_dict)


def state_dict_from_hf(
    state_dict: Mapping[str, Any], config: BertConfig, architecture: str = "BertModel", pooler: bool = True
) -> dict[str, Any]:
    """A Hugging Face BERT state dict -> ours for ``architecture`` (``pooler``: BertModel only).

    Every missing, unexpected and mis-shaped key is one :class:`ConversionError`.
    """
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    pooler = pooler if architecture == "BertModel" else _has_pooler(architecture)
    state_dict = {_rename_tensorflow_norms(k): v for k, v in state_dict.items() if not IGNORED.search(k)}
    if architecture == "BertForMaskedLM":
        state_dict = {k: v for k, v in state_dict.items() if not NOT_IN_MASKED_LM.search(k)}
    backbone_shapes, head_shapes = hf_shapes(config, architecture, pooler)
    backbone, heads = split_backbone(state_dict, backbone_shapes, head_shapes, PREFIX, f"BERT weights ({architecture})")
    prefix = _our_backbone_prefix(architecture)
    converted = {prefix + ours: backbone[theirs] for theirs, ours in backbone_key_map(config.n_layers, pooler).items()}
    converted.update({ours: heads[theirs] for theirs, ours in expand_keys(HEAD_KEYS[architecture]).items()})
    if architecture == "BertForMaskedLM":
        converted[TIED_MLM_DECODER] = converted["bert.embeddings.word_embeddings.weight"]
    return converted


def state_dict_to_hf(
    state_dict: Mapping[str, Any], config: BertConfig, architecture: str = "BertModel"
) -> dict[str, Any]:
    """Our state dict -> a Hugging Face one for ``architecture`` (tied decoder left out, as transformers does)."""
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    prefix = _our_backbone_prefix(architecture)
    # a BertModel may have been built without a pooler; the task models' pooler is fixed
    pooler = "pooler.dense.weight" in state_dict if architecture == "BertModel" else _has_pooler(architecture)
    needed = {prefix + ours for ours in backbone_key_map(config.n_layers, pooler).values()}
    needed |= set(expand_keys(HEAD_KEYS[architecture]).values())
    if architecture == "BertForMaskedLM":
        needed.add(TIED_MLM_DECODER)
    check_state_dict(state_dict, dict.fromkeys(needed), f"taa BERT weights ({architecture})")
    hf_prefix = "" if architecture == "BertModel" else PREFIX
    converted = {
        hf_prefix + theirs: state_dict[prefix + ours]
        for theirs, ours in backbone_key_map(config.n_layers, pooler).items()
    }
    converted.update({theirs: state_dict[ours] for theirs, ours in expand_keys(HEAD_KEYS[architecture]).items()})
    return converted


# --------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------


def read_hf_folder(folder: str | Path, framework: str = "np", architecture: Optional[str] = None) -> Converted:
    """A Hugging Face or sentence-transformers BERT folder -> our model's config, class and
    weights (``framework``'s arrays: safetensors' ``"np"``, ``"pt"``, ...).

    The class follows ``config.json``'s ``architectures`` (BertModel, BertForMaskedLM,
    BertForSequenceClassification), unless ``architecture`` names one. A ``BertModel``
    checkpoint without a pooler gives a ``BertModel`` without one (``options["pooler"]``).
    """
    hf_config, folder = read_config(folder), model_folder(folder)
    hf_class = choose_architecture(hf_config, ARCHITECTURES, str(folder / CONFIG_FILE), "BertModel", architecture)
    try:
        config = config_from_hf(hf_config)
    except (ConfigError, ConversionError) as error:
        raise config_error(folder, error) from None
    weights = read_weights(folder, framework, unused=IGNORED.search)
    pooler = hf_class != "BertModel" or checkpoint_has_pooler(weights)
    try:
        ours = state_dict_from_hf(weights, config, hf_class, pooler)
    except ConversionError as error:
        raise weights_misfit(folder, error) from None
    options = {} if pooler else {"pooler": False}
    return Converted(config, ARCHITECTURES[hf_class], ours, options)


def to_hf(architecture: str, config: BertConfig, weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One of our BERT models (class name, config, state dict) -> (``config.json`` dict, weights)
    for transformers' class of the same name."""
    hf_class = hf_architecture(ARCHITECTURES, architecture)
    return config_to_hf(config, hf_class), state_dict_to_hf(weights, config, hf_class)
