"""Hugging Face model folders on disk: ``config.json`` + ``model.safetensors``, read and written.

Shared by the per-family converters (``hf_gpt2``, ``hf_bert``). Weights are read and
written with safetensors only (a sharded ``model.safetensors.index.json`` is read too);
a folder with only ``pytorch_model.bin`` is refused, never unpickled.

A sentence-transformers folder lists its modules in ``modules.json``; the Hugging Face
model is the ``sentence_transformers.models.Transformer`` module's folder (the root
itself for all-MiniLM-L6-v2, ``0_Transformer/`` in older ones), and its
``sentence_bert_config.json`` gives the length the tokenizer truncates to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from taa.convert.state_dict import ConversionError, check_state_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
SENTENCE_TRANSFORMERS_MODULES = "modules.json"
SENTENCE_TRANSFORMERS_CONFIG = "sentence_bert_config.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}, line {error.lineno}: {error.msg}") from None


def model_folder(folder: str | Path) -> Path:
    """The folder that holds ``config.json``: ``folder`` itself, or a sentence-transformers
    folder's Transformer module."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: no such folder")
    if (folder / CONFIG_FILE).is_file():
        return folder
    modules_file = folder / SENTENCE_TRANSFORMERS_MODULES
    if modules_file.is_file():
        for module in _read_json(modules_file):
            if str(module.get("type", "")).endswith("models.Transformer"):
                inner = folder / module.get("path", "")
                if (inner / CONFIG_FILE).is_file():
                    return inner
    raise ConversionError(f"{folder}: no {CONFIG_FILE} (not a Hugging Face model folder)")


def read_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder, as a dict."""
    path = model_folder(folder) / CONFIG_FILE
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return config


def read_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """Every tensor of the folder's ``model.safetensors`` (or of the shards its index names)."""
    folder = model_folder(folder)
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif (folder / WEIGHTS_INDEX_FILE).is_file():
        index = _read_json(folder / WEIGHTS_INDEX_FILE)
        files = [folder / name for name in sorted(set(index.get("weight_map", {}).values()))]
    elif (folder / "pytorch_model.bin").is_file():
        raise ConversionError(f"{folder}: only pytorch_model.bin; taa reads safetensors only (model.safetensors)")
    else:
        raise ConversionError(f"{folder}: no {WEIGHTS_FILE}")
    state_dict: dict[str, Tensor] = {}
    for path in files:
        if not path.is_file():
            raise ConversionError(f"{path}: no such file (named by {WEIGHTS_INDEX_FILE})")
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                state_dict[key] = weights.get_tensor(key)
    return state_dict


def write_folder(folder: str | Path, config: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (contiguous, unshared copies) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def split_backbone(
    state_dict: Mapping[str, Tensor],
    backbone_shapes: Mapping[str, Any],
    head_shapes: Mapping[str, Any],
    prefix: str,
    what: str,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Check a checkpoint key by key and shape by shape, then split it into backbone and head.

    Checkpoints name the backbone with ``prefix`` (``bert.``, ``transformer.``: saved from a
    model with a head) or without it (saved from the bare model); both are read. Every
    missing, unexpected and mis-shaped key is reported at once, named as the file names it.
    Returns (backbone tensors without the prefix, head tensors).
    """
    has_prefix = any(key.startswith(prefix) for key in state_dict)
    backbone_prefix = prefix if has_prefix else ""
    expected = {backbone_prefix + key: shape for key, shape in backbone_shapes.items()}
    expected.update(head_shapes)
    check_state_dict(state_dict, expected, what)
    backbone = {key: state_dict[backbone_prefix + key] for key in backbone_shapes}
    heads = {key: state_dict[key] for key in head_shapes}
    return backbone, heads


def load_tokenizer(folder: str | Path, max_length: Optional[int] = None):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer`` (None if it has none).

    Padding is switched off (callers pad per batch). Encodings are truncated to
    ``max_length``, else to a sentence-transformers folder's ``max_seq_length``, else not.
    """
    from tokenizers import Tokenizer

    folder = Path(folder)
    inner = model_folder(folder)
    path = next((f / TOKENIZER_FILE for f in (inner, folder) if (f / TOKENIZER_FILE).is_file()), None)
    if path is None:
        return None
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    if max_length is None:
        for candidate in (folder / SENTENCE_TRANSFORMERS_CONFIG, inner / SENTENCE_TRANSFORMERS_CONFIG):
            if candidate.is_file():
                max_length = _read_json(candidate).get("max_seq_length")
                break
    if max_length is not None:
        tokenizer.enable_truncation(max_length=int(max_length))
    else:
        tokenizer.no_truncation()
    return tokenizer


def architecture(config: Mapping[str, Any], known: Mapping[str, Any], where: str, default: str) -> str:
    """The first of ``config["architectures"]`` that ``known`` has (``default`` when none is named)."""
    names = config.get("architectures") or [default]
    for name in names:
        if name in known:
            return name
    raise ConversionError(f"{where}: architectures={names} has none of {', '.join(known)}")
