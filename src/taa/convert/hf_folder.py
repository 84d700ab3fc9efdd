"""Hugging Face model folders on disk: ``config.json`` + ``model.safetensors``, read and written.

Shared by the per-family converters (``hf_gpt2``, ``hf_bert``, ``hf_t5``). Weights are read
with safetensors only (a sharded ``model.safetensors.index.json`` is read too), as the arrays
of the framework that asks (``framework="pt"`` torch tensors, ``"np"`` numpy arrays, ``"flax"``
JAX arrays: safetensors' names); a folder with only ``pytorch_model.bin`` is refused, never
unpickled. numpy has no bfloat16, so a bfloat16 file is read with a framework's arrays.

A sentence-transformers folder lists its modules in ``modules.json``; the Hugging Face
model is the ``sentence_transformers.models.Transformer`` module's folder (the root
itself for all-MiniLM-L6-v2, ``0_Transformer/`` in older ones), and its
``sentence_bert_config.json`` gives the length the tokenizer truncates to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from taa.safetensors_file import check_finite, open_safetensors
from taa.convert.state_dict import ConversionError, check_state_dict
from taa.folders import HF_CONFIG, WEIGHTS, CheckpointError, hugging_face_folders, read_json

CONFIG_FILE = HF_CONFIG
WEIGHTS_FILE = WEIGHTS
WEIGHTS_INDEX_FILE = f"{WEIGHTS}.index.json"


@dataclass
class Converted:
    """A Hugging Face folder in taa's terms: the model to build and the weights to load into it."""

    config: Any  # GPTConfig, BertConfig, T5Config
    architecture: str  # our class: GPT, BertModel, ..., T5ForConditionalGeneration
    weights: dict[str, Any]  # our state-dict key -> array; tied weights appear under each name
    options: dict[str, Any] = field(default_factory=dict)  # for the class: pooler=False (a BertModel without one)


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except CheckpointError as error:  # missing, not UTF-8, not JSON: one line naming the file
        raise ConversionError(str(error)) from None


def model_folder(folder: str | Path) -> Path:
    """The folder that holds ``config.json``: ``folder`` itself, or a sentence-transformers
    folder's Transformer module."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: no such folder")
    for candidate in hugging_face_folders(folder):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ConversionError(f"{folder}: no {CONFIG_FILE} (not a Hugging Face model folder)")


def read_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder, as a dict."""
    path = model_folder(folder) / CONFIG_FILE
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return config


def weight_files(folder: str | Path) -> list[Path]:
    """The folder's ``model.safetensors``, or the shards its index names."""
    folder = model_folder(folder)
    if (folder / WEIGHTS_FILE).exists():  # (a folder of that name: open_safetensors says so)
        return [folder / WEIGHTS_FILE]
    if (folder / WEIGHTS_INDEX_FILE).is_file():
        index = _read_json(folder / WEIGHTS_INDEX_FILE)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
            raise ConversionError(f"{folder / WEIGHTS_INDEX_FILE}: no weight_map of tensor names to shard files")
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / "pytorch_model.bin").is_file():
        raise ConversionError(f"{folder}: only pytorch_model.bin; taa reads safetensors only ({WEIGHTS_FILE})")
    raise ConversionError(f"{folder}: no {WEIGHTS_FILE}")


def weights_misfit(folder: str | Path, error: Exception) -> ConversionError:
    """Weights that do not fit the model the folder's ``config.json`` describes (missing or
    unexpected keys, other shapes): one error naming the weights file(s) and the config."""
    folder = model_folder(folder)
    files = weight_files(folder)
    weights = str(files[0]) if len(files) == 1 else f"{folder} ({', '.join(path.name for path in files)})"
    return ConversionError(f"{weights} does not fit {folder / CONFIG_FILE}: {error}")


def read_weights(folder: str | Path, framework: str = "np",
                 unused: Optional[Callable[[str], bool]] = None) -> dict[str, Any]:
    """Every array of the folder's weights, as ``framework``'s arrays (safetensors' names:
    ``"np"``, ``"pt"``, ``"flax"``, ``"tf"``). Nothing is converted: a bfloat16 tensor stays
    bfloat16, so ``"np"`` refuses it.

    A weight holding nan or inf is one error naming its file and key
    (:func:`taa.safetensors_file.check_finite`). ``unused`` picks the keys a converter
    drops (old causal-mask buffers, a legacy tensor): no weights of the model, they are
    not checked, as a mask may hold -inf by design.
    """
    arrays: dict[str, Any] = {}
    for path in weight_files(folder):
        if not path.exists():
            raise ConversionError(f"{path}: no such file (named by {WEIGHTS_INDEX_FILE})")
        with open_safetensors(path, framework, ConversionError) as weights:  # damaged or foreign: one line
            for key in weights.keys():
                if framework == "np" and weights.get_slice(key).get_dtype() == "BF16":
                    raise ConversionError(
                        f"{path}: {key} is bfloat16, which numpy lacks; read it as a framework's arrays "
                        "(framework='pt' or 'flax')")
                arrays[key] = weights.get_tensor(key)
            used = {key: arrays[key] for key in weights.keys() if unused is None or not unused(key)}
        check_finite(used, path, ConversionError)
    return arrays


def write_config(folder: str | Path, hf_config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` into ``folder`` (made if needed); the weights are the framework's to write."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(hf_config), indent=2, sort_keys=True) + "\n"
    (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
    return folder


def config_number(hf_config: Mapping[str, Any], name: str, default: Optional[float] = None) -> float:
    """``hf_config[name]`` (``default`` when it is absent) as a float; a value that is no
    number is one error naming the field."""
    value = hf_config[name] if default is None else hf_config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConversionError(f"{name}={value!r} should be a number")
    return float(value)


def config_flag(hf_config: Mapping[str, Any], name: str) -> bool:
    """``hf_config[name]``, which must be true or false."""
    value = hf_config[name]
    if not isinstance(value, bool):
        raise ConversionError(f"{name}={value!r} should be true or false")
    return value


def expand_keys(templates: Mapping[str, str], n_layers: int = 1) -> dict[str, str]:
    """Key templates (theirs -> ours) -> keys: "{i}" over the layers, "{p}" over weight and bias."""
    mapping = {}
    for theirs, ours in templates.items():
        for i in range(n_layers) if "{i}" in theirs else (0,):
            for p in ("weight", "bias") if "{p}" in theirs else ("",):
                mapping[theirs.format(i=i, p=p)] = ours.format(i=i, p=p)
    return mapping


def num_labels_from_hf(hf_config: Mapping[str, Any]) -> int:
    """transformers counts labels from ``id2label`` (``num_labels`` in older files); default 2."""
    if hf_config.get("id2label"):
        return len(hf_config["id2label"])
    labels = hf_config.get("num_labels", 2)
    if isinstance(labels, bool) or not isinstance(labels, int):
        raise ConversionError(f"num_labels={labels!r} should be an integer")
    return labels


def encoder_layer_problems(config: Any, family: str, activations_to_hf: Mapping[str, str]) -> list[str]:
    """What a BERT-style encoder layer of transformers (LayerNorm, biases, one key/value head per
    query head, an ungated activation of ``activations_to_hf``) cannot express of ``config``."""
    problems = []
    if config.norm != "layer":
        problems.append(f"norm={config.norm!r} ({family} uses LayerNorm)")
    if not config.bias:
        problems.append(f"bias=False ({family} has biases)")
    if config.n_kv_heads not in (None, config.n_heads):
        problems.append(f"n_kv_heads={config.n_kv_heads} ({family} has no grouped-query attention)")
    if config.activation not in activations_to_hf:
        problems.append(f"activation={config.activation!r} ({family} supports {', '.join(activations_to_hf)})")
    return problems


def encoder_layer_shapes(layer: str, d: int, f: int, projections: tuple[str, ...],
                         norms: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of one BERT-style transformers encoder layer (``layer``: its key prefix):
    the attention's ``projections`` (query, key, value, output: (d, d) and their biases),
    the intermediate (f, d) and output (d, f) dense layers, the two LayerNorms ``norms``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in projections:
        shapes.update({f"{layer}{name}.weight": (d, d), f"{layer}{name}.bias": (d,)})
    shapes.update({
        f"{layer}intermediate.dense.weight": (f, d), f"{layer}intermediate.dense.bias": (f,),
        f"{layer}output.dense.weight": (d, f), f"{layer}output.dense.bias": (d,),
    })
    for name in norms:
        shapes.update({f"{layer}{name}.weight": (d,), f"{layer}{name}.bias": (d,)})
    return shapes


def config_error(folder: str | Path, error: Exception) -> ConversionError:
    """``error`` about a folder's ``config.json``, named as the file."""
    return ConversionError(f"{Path(folder) / CONFIG_FILE}: {error}")


def split_backbone(
    state_dict: Mapping[str, Any],
    backbone_shapes: Mapping[str, Any],
    head_shapes: Mapping[str, Any],
    prefix: str,
    what: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a checkpoint key by key and shape by shape, then split it into backbone and head.

    Checkpoints name the backbone with ``prefix`` (``bert.``, ``transformer.``: saved from a
    model with a head) or without it (saved from the bare model); both are read. Every
    missing, unexpected and mis-shaped key is reported at once, named as the file names it.
    Returns (backbone arrays without the prefix, head arrays).
    """
    has_prefix = any(key.startswith(prefix) for key in state_dict)
    backbone_prefix = prefix if has_prefix else ""
    expected = {backbone_prefix + key: shape for key, shape in backbone_shapes.items()}
    expected.update(head_shapes)
    check_state_dict(state_dict, expected, what)
    backbone = {key: state_dict[backbone_prefix + key] for key in backbone_shapes}
    heads = {key: state_dict[key] for key in head_shapes}
    return backbone, heads


def choose_architecture(
    hf_config: Mapping[str, Any], known: Mapping[str, str], where: str, default: str, ours: Optional[str] = None
) -> str:
    """The transformers class to read a folder as (``known``: transformers class -> ours).

    The one whose taa class is ``ours`` when that is given; else the first of
    ``config.json``'s ``architectures`` that ``known`` has (``default`` when it names none).
    """
    if ours is not None:
        for theirs, mine in known.items():
            if mine == ours:
                return theirs
        raise ConversionError(f"architecture={ours!r} is not one of {', '.join(known.values())}")
    names = hf_config.get("architectures") or [default]
    if not isinstance(names, list):
        raise ConversionError(f"{where}: architectures={names!r} should be a list of class names")
    for name in names:
        if name in known:
            return name
    raise ConversionError(f"{where}: architectures={names} has none of {', '.join(known)}")


def hf_architecture(known: Mapping[str, str], ours: str) -> str:
    """The transformers class of our class ``ours`` (``known``: transformers class -> ours)."""
    return choose_architecture({}, known, "", "", ours)
