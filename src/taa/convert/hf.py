"""Any Hugging Face model folder <-> taa: pick the family's converter from ``config.json``.

A folder's family is its ``model_type`` (``gpt2``, ``bert``, ``t5``), or, when a file
leaves that out, the family of the first class its ``architectures`` names. Each family
has its own converter module with the same four functions (``hf_gpt2``, ``hf_bert``,
``hf_t5``): ``config_from_hf``, ``config_to_hf``, ``load_hf_folder``, ``save_hf_folder``.
This module only dispatches, and copies the tokenizer files a folder carries.

    model = load_hf_folder("gpt2-folder")          # GPT, BertModel, ..., T5ForConditionalGeneration
    save_hf_folder(model, "out")                   # the transformers class of the same model
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from taa.config import ConfigError
from taa.convert.hf_folder import model_folder, read_config
from taa.convert.state_dict import ConversionError

# model_type -> the converter module of that family
FAMILIES: dict[str, str] = {
    "gpt2": "taa.convert.hf_gpt2",
    "bert": "taa.convert.hf_bert",
    "t5": "taa.convert.hf_t5",
}
# transformers class -> model_type, for config.json files without a model_type
ARCHITECTURE_FAMILIES: dict[str, str] = {
    "GPT2LMHeadModel": "gpt2",
    "BertModel": "bert",
    "BertForMaskedLM": "bert",
    "BertForSequenceClassification": "bert",
    "T5ForConditionalGeneration": "t5",
}
# taa class name -> model_type (for saving one of our models)
TAA_CLASS_FAMILIES: dict[str, str] = {
    "GPT": "gpt2",
    "BertModel": "bert",
    "BertForMaskedLM": "bert",
    "BertForSequenceClassification": "bert",
    "T5ForConditionalGeneration": "t5",
}
# The files of a Hugging Face (or sentence-transformers) tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "sentence_bert_config.json",
)


def family(hf_config: Mapping[str, Any], where: str) -> str:
    """The converter family (``gpt2``, ``bert``, ``t5``) of a ``config.json`` mapping."""
    model_type = hf_config.get("model_type")
    if model_type is not None:
        if model_type not in FAMILIES:
            raise ConversionError(
                f"{where}: model_type={model_type!r} is not supported (taa converts {', '.join(FAMILIES)})"
            )
        return model_type
    for name in hf_config.get("architectures") or []:
        if name in ARCHITECTURE_FAMILIES:
            return ARCHITECTURE_FAMILIES[name]
    raise ConversionError(
        f"{where}: no model_type, and architectures={hf_config.get('architectures')} names none of "
        f"{', '.join(ARCHITECTURE_FAMILIES)}"
    )


def converter(model_type: str) -> ModuleType:
    """The converter module of a family."""
    return importlib.import_module(FAMILIES[model_type])


def folder_family(folder: str | Path) -> str:
    """The family of a Hugging Face (or sentence-transformers) model folder."""
    where = f"{model_folder(folder)}/config.json"
    return family(read_config(folder), where)


def load_hf_folder(folder: str | Path) -> nn.Module:
    """A Hugging Face folder (config.json + model.safetensors) -> our model of its class, in eval mode.

    Every problem is one :class:`ConversionError` naming the folder or file: no folder,
    no config.json, an unsupported model_type, no safetensors weights (a folder with only
    a pickled ``pytorch_model.bin`` is refused, never unpickled), a missing, unexpected
    or mis-shaped key.
    """
    model_type = folder_family(folder)
    try:
        return converter(model_type).load_hf_folder(folder)
    except ConfigError as error:
        raise ConversionError(f"{model_folder(folder)}/config.json: {error}") from None


def save_hf_folder(model: nn.Module, folder: str | Path) -> Path:
    """Write one of our models as a Hugging Face folder that transformers' class of the same
    model loads (``GPT2LMHeadModel``, ``BertModel``, ..., ``T5ForConditionalGeneration``)."""
    name = type(model).__name__
    if name not in TAA_CLASS_FAMILIES:
        raise ConversionError(f"{name} has no Hugging Face counterpart (taa converts {', '.join(TAA_CLASS_FAMILIES)})")
    converter(TAA_CLASS_FAMILIES[name]).save_hf_folder(model, folder)
    return Path(folder)


def tokenizer_files(folder: str | Path) -> list[Path]:
    """The Hugging Face tokenizer files of a folder (and of a sentence-transformers folder's model folder)."""
    folder = Path(folder)
    candidates = [folder]
    try:
        inner = model_folder(folder)
        if inner != folder:
            candidates.insert(0, inner)
    except ConversionError:
        pass
    found: dict[str, Path] = {}
    for directory in candidates:
        for name in TOKENIZER_FILES:
            if name not in found and (directory / name).is_file():
                found[name] = directory / name
    return list(found.values())


def copy_tokenizer_files(source: str | Path, destination: str | Path) -> list[str]:
    """Copy the tokenizer files of ``source`` into ``destination``; the names copied."""
    files = tokenizer_files(source)
    if files:
        Path(destination).mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, Path(destination) / path.name)
    return [path.name for path in files]
