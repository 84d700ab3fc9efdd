"""Any Hugging Face model folder <-> taa: pick the family's converter from ``config.json``.

A folder's family is its ``model_type`` (``gpt2``, ``bert``, ``t5``), or, when a file
leaves that out, the family of the first class its ``architectures`` names; which family
has which names, and which converter module, is :mod:`taa.registry`'s to say. Each
converter module (``hf_gpt2``, ``hf_bert``, ``hf_t5``) has the same functions:
``config_from_hf``, ``config_to_hf``, ``state_dict_from_hf``, ``state_dict_to_hf``, and
for a whole folder ``read_hf_folder`` and ``to_hf``. This module only dispatches, and copies the
tokenizer files a folder carries. It works on arrays and builds no model: a framework
builds its model from what :func:`read_hf_folder` returns
(:func:`taa.torch.convert.hf.load_hf_folder` for torch).

    converted = read_hf_folder("gpt2-folder", framework="np")   # config, class, weights
    hf_config, weights = to_hf("GPT", config, state_dict)         # for GPT2LMHeadModel
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from taa import registry
from taa.config import ConfigError
from taa.convert.hf_folder import CONFIG_FILE, Converted, model_folder, read_config
from taa.convert.state_dict import ConversionError
from taa.folders import HF_TOKENIZER, SENTENCE_TRANSFORMERS_CONFIG

# The files of a Hugging Face (or sentence-transformers) tokenizer.
TOKENIZER_FILES = (
    HF_TOKENIZER, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    SENTENCE_TRANSFORMERS_CONFIG,
)


def _hf_architectures() -> dict[str, str]:
    """transformers class -> model_type, for config.json files without a model_type (from the registry)."""
    return {name: entry.hf_model_types[0] for entry in registry.families() for name in entry.hf_architectures}


def family(hf_config: Mapping[str, Any], where: str) -> str:
    """The Hugging Face ``model_type`` (``gpt2``, ``bert``, ``t5``) of a ``config.json`` mapping."""
    model_type = hf_config.get("model_type")
    if model_type is not None:
        try:
            registry.family_of_hf_model_type(model_type)
        except ConfigError as error:
            raise ConversionError(f"{where}: {error}") from None
        return model_type
    known = _hf_architectures()
    for name in hf_config.get("architectures") or []:
        if name in known:
            return known[name]
    raise ConversionError(
        f"{where}: no model_type, and architectures={hf_config.get('architectures')} names none of {', '.join(known)}"
    )


def converter(model_type: str) -> ModuleType:
    """The converter module of a Hugging Face ``model_type``'s family."""
    return importlib.import_module(registry.family_of_hf_model_type(model_type).hf_converter)


def folder_family(folder: str | Path) -> str:
    """The family of a Hugging Face (or sentence-transformers) model folder."""
    where = str(model_folder(folder) / CONFIG_FILE)
    return family(read_config(folder), where)


def read_hf_folder(folder: str | Path, framework: str = "np", architecture: Optional[str] = None) -> Converted:
    """A Hugging Face folder (config.json + model.safetensors) in taa's terms: our config,
    our class (``architecture`` asks for one, as ``BertModel`` for a classifier's backbone)
    and its weights as ``framework``'s arrays (safetensors' names: ``"np"``, ``"pt"``, ...).

    Every problem is one :class:`ConversionError` naming the folder or file: no folder,
    no config.json, an unsupported model_type, no safetensors weights (a folder with only
    a pickled ``pytorch_model.bin`` is refused, never unpickled), a missing, unexpected
    or mis-shaped key.
    """
    model_type = folder_family(folder)
    try:
        return converter(model_type).read_hf_folder(folder, framework, architecture)
    except ConfigError as error:  # a ConversionError too
        message = str(error)
        if message.startswith(str(folder)):  # names its file already (model.safetensors, ...)
            raise ConversionError(message) from None
        raise ConversionError(f"{model_folder(folder) / CONFIG_FILE}: {message}") from None  # a config.json value


def to_hf(architecture: str, config: Any, weights: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One of our models (class name, config, state dict) -> (``config.json`` dict, weights) for the
    transformers class of the same model (``GPT2LMHeadModel``, ``BertModel``, ..., ``T5ForConditionalGeneration``)."""
    convertible = {ours: entry for entry in registry.families() for ours in entry.hf_architectures.values()}
    if architecture not in convertible:
        raise ConversionError(
            f"{architecture} has no Hugging Face counterpart (taa converts {', '.join(convertible)})")
    return importlib.import_module(convertible[architecture].hf_converter).to_hf(architecture, config, weights)


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
