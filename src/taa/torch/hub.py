"""Loading a model from a folder: ``taa.torch.from_pretrained(DIR)``.

Three kinds of folder load, each with the tokenizer it carries:

1. a Hugging Face folder (``config.json`` + ``model.safetensors``, or a
   sentence-transformers folder): the family comes from ``config.json``'s
   ``model_type`` (``gpt2``, ``bert``, ``t5``; :mod:`taa.convert.hf`), the class from its
   ``architectures``; the tokenizer is its ``tokenizer.json``;
2. a taa training run (``taa train --out DIR``): ``recipe.yaml`` + ``model.safetensors`` +
   ``tokenizer/``; the class follows the recipe's task (``language_model`` -> GPT,
   ``masked_lm`` -> BertForMaskedLM, ``classification`` -> BertForSequenceClassification,
   ``text_to_text`` -> T5, ``translation``/``copy`` -> Transformer);
3. a converted taa model (``taa convert --from-hf``, :func:`save_pretrained`):
   ``model.yaml`` (the class and the model section of a recipe) + ``model.safetensors``
   + ``tokenizer/`` (the Hugging Face tokenizer files, copied as they were).

Weights are read with safetensors only; a folder with only pickled weights
(``pytorch_model.bin``, ``*.pt``) is refused, never unpickled. Every problem is one
:class:`~taa.convert.state_dict.ConversionError` naming the folder or file.

The tokenizer is what the folder holds: a ``tokenizers.Tokenizer`` for Hugging Face
files (BERT's adds [CLS]/[SEP] and truncates to the model's positions, or to a
sentence-transformers ``max_seq_length``), taa's ``CharTokenizer``/``SubwordTokenizer``
for taa runs, or None. :func:`encode_text` and :func:`decode_tokens` treat them alike.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch import nn

from taa import config as cfg
from taa.convert.state_dict import ConversionError

WEIGHTS = "model.safetensors"
RECIPE = "recipe.yaml"  # a training run (taa.torch.training.checkpoint)
MODEL_FILE = "model.yaml"  # a converted model
MODEL_FORMAT = "taa.model/1"
TOKENIZER = "tokenizer"  # the tokenizer folder of taa checkpoints
HF_CONFIG = "config.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.bin")

# The class of a training run's model, by its recipe's task.
TASK_ARCHITECTURES = {
    "language_model": "GPT",
    "masked_lm": "BertForMaskedLM",
    "classification": "BertForSequenceClassification",
    "text_to_text": "T5ForConditionalGeneration",
    "translation": "Transformer",
    "copy": "Transformer",
}
# ... and by its model type when the task is another one.
TYPE_ARCHITECTURES = {"gpt": "GPT", "bert": "BertModel", "t5": "T5ForConditionalGeneration", "transformer": "Transformer"}


def architectures() -> dict[str, type]:
    """Our model classes by name."""
    from taa.torch.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
    from taa.torch.models.gpt import GPT
    from taa.torch.models.t5 import T5ForConditionalGeneration
    from taa.torch.models.transformer import Transformer

    classes = [GPT, BertModel, BertForMaskedLM, BertForSequenceClassification, T5ForConditionalGeneration, Transformer]
    return {cls.__name__: cls for cls in classes}


def build_model(config: Any, architecture: Optional[str] = None, **options: Any) -> nn.Module:
    """A model of ``config``: the class ``architecture`` names, else the one its type implies
    (``GPTConfig`` -> GPT, ``BertConfig`` -> BertModel, ``T5Config`` -> T5, ``TransformerConfig``
    -> Transformer). ``options``: ``pooler=False`` for a BertModel without one."""
    architecture = architecture or TYPE_ARCHITECTURES[cfg.model_type(config)]
    classes = architectures()
    if architecture not in classes:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(classes)}")
    cls = classes[architecture]
    expected = {"GPT": cfg.GPTConfig, "T5ForConditionalGeneration": cfg.T5Config, "Transformer": cfg.TransformerConfig}
    expected_config = expected.get(architecture, cfg.BertConfig)
    if type(config) is not expected_config:
        raise ConversionError(f"{architecture} needs a {expected_config.__name__}, got a {type(config).__name__}")
    return cls(config, **options)


@dataclass
class Pretrained:
    """What :func:`from_pretrained` returns: ``model, tokenizer = from_pretrained(DIR)`` also works."""

    model: nn.Module  # in eval mode
    tokenizer: Any  # tokenizers.Tokenizer, CharTokenizer, SubwordTokenizer, or None
    config: Any  # the model's config (GPTConfig, BertConfig, T5Config, TransformerConfig)
    architecture: str  # our class name: GPT, BertModel, ..., T5ForConditionalGeneration, Transformer
    folder: Path
    source: str  # "hugging_face", "taa_run" or "taa_model"
    recipe: Optional[cfg.RecipeConfig] = None  # a training run's recipe

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.tokenizer))

    @property
    def is_encoder_decoder(self) -> bool:
        return self.architecture in ("T5ForConditionalGeneration", "Transformer")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def folder_kind(folder: Path) -> str:
    """``taa_run``, ``taa_model`` or ``hugging_face``; a one-line error for anything else."""
    if not folder.exists():
        raise ConversionError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ConversionError(f"{folder}: not a folder (give the folder that holds the model)")
    if (folder / RECIPE).is_file():
        return "taa_run"
    if (folder / MODEL_FILE).is_file():
        return "taa_model"
    if (folder / HF_CONFIG).is_file() or (folder / "modules.json").is_file():
        return "hugging_face"
    raise ConversionError(
        f"{folder}: neither a taa checkpoint ({RECIPE} or {MODEL_FILE}) nor a Hugging Face folder ({HF_CONFIG})"
    )


def _check_weights_file(folder: Path) -> Path:
    path = folder / WEIGHTS
    if path.is_file():
        return path
    pickled = sorted({p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern)})
    if pickled:
        raise ConversionError(f"{folder}: only pickled weights ({', '.join(pickled)}); taa reads safetensors only ({WEIGHTS})")
    raise ConversionError(f"{path}: no such file (the model's weights)")


def _load_weights(model: nn.Module, folder: Path) -> nn.Module:
    from safetensors.torch import load_model

    path = _check_weights_file(folder)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as error:  # a truncated or foreign file, mis-shaped tensors
        message = " ".join(str(error).split())[:400]
        raise ConversionError(f"{path}: cannot be read into {type(model).__name__}: {message}") from None
    if missing or unexpected:
        parts = [f"missing keys: {', '.join(sorted(missing))}" if missing else "",
                 f"unexpected keys: {', '.join(sorted(unexpected))}" if unexpected else ""]
        raise ConversionError(f"{path}: weights do not fit {type(model).__name__}: {' | '.join(p for p in parts if p)}")
    return model


def _load_hugging_face(folder: Path) -> tuple[nn.Module, Any]:
    from taa.convert import hf, hf_bert, hf_folder

    model = hf.load_hf_folder(folder)
    if hf.folder_family(folder) == "bert":
        tokenizer = hf_bert.load_tokenizer(folder)
    else:
        tokenizer = hf_folder.load_tokenizer(folder)
    if tokenizer is None and (folder / TOKENIZER).is_dir():  # a taa tokenizer kept by `taa convert --to-hf`
        tokenizer = load_tokenizer_folder(folder / TOKENIZER, model.config)
    return model, tokenizer


def _load_taa_run(folder: Path) -> tuple[nn.Module, Any, cfg.RecipeConfig]:
    try:
        recipe = cfg.RecipeConfig.from_dict(cfg.read_mapping(folder / RECIPE))
    except cfg.ConfigError as error:
        raise ConversionError(f"{folder / RECIPE}: {error}") from None
    architecture = TASK_ARCHITECTURES.get(recipe.task) or TYPE_ARCHITECTURES[cfg.model_type(recipe.model)]
    model = _load_weights(build_model(recipe.model, architecture), folder)
    max_length = getattr(recipe.data, "max_length", None)  # classification truncates to it
    tokenizer = load_tokenizer_folder(folder / TOKENIZER, recipe.model, max_length)
    return model, tokenizer, recipe


def _load_taa_model(folder: Path) -> tuple[nn.Module, Any]:
    path = folder / MODEL_FILE
    try:
        description = cfg.read_mapping(path)
        if description.get("format") != MODEL_FORMAT:
            raise cfg.ConfigError(f"format={description.get('format')!r}, expected {MODEL_FORMAT!r}")
        config = cfg.model_config_from_dict(dict(description.get("model") or {}))
    except cfg.ConfigError as error:
        raise ConversionError(f"{path}: {error}") from None
    options = {"pooler": bool(description["pooler"])} if "pooler" in description else {}
    model = _load_weights(build_model(config, description.get("architecture"), **options), folder)
    return model, load_tokenizer_folder(folder / TOKENIZER, config)


def from_pretrained(folder: str | Path, dtype: Optional[torch.dtype | str] = None) -> Pretrained:
    """Load the model (in eval mode) and tokenizer of a Hugging Face folder or a taa checkpoint folder.

    ``dtype`` (``torch.bfloat16`` or ``"bfloat16"``) casts the weights once after loading:
    on a CPU with bf16 units that halves the bytes each matrix product reads.
    """
    from taa.torch.generate import resolve_dtype

    folder = Path(folder)
    kind = folder_kind(folder)
    recipe = None
    if kind == "hugging_face":
        model, tokenizer = _load_hugging_face(folder)
    elif kind == "taa_run":
        model, tokenizer, recipe = _load_taa_run(folder)
    else:
        model, tokenizer = _load_taa_model(folder)
    dtype = resolve_dtype(dtype)
    if dtype is not None:
        model = model.to(dtype)
    return Pretrained(model.eval(), tokenizer, model.config, type(model).__name__, folder, kind, recipe)


# --------------------------------------------------------------------------------------
# Saving a converted model
# --------------------------------------------------------------------------------------


def save_pretrained(model: nn.Module, folder: str | Path, tokenizer_from: Optional[str | Path] = None) -> Path:
    """Write ``model`` as a taa model folder: ``model.safetensors`` (tied tensors once),
    ``model.yaml`` (its class and config) and, from ``tokenizer_from`` (a Hugging Face
    folder), the tokenizer files into ``tokenizer/``."""
    from safetensors.torch import save_model

    from taa.convert.hf import copy_tokenizer_files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    architecture = type(model).__name__
    if architecture not in architectures():
        raise ConversionError(f"{architecture} is not a taa model class ({', '.join(architectures())})")
    description: dict[str, Any] = {"format": MODEL_FORMAT, "architecture": architecture}
    if architecture == "BertModel":
        description["pooler"] = model.pooler is not None
    description["model"] = cfg.model_config_to_dict(model.config)
    (folder / MODEL_FILE).write_text(yaml.safe_dump(description, sort_keys=False), encoding="utf-8")
    save_model(model, str(folder / WEIGHTS))
    if tokenizer_from is not None:
        copy_tokenizer_files(tokenizer_from, folder / TOKENIZER)
    return folder


def copy_tokenizer(pretrained: Pretrained, destination: str | Path) -> list[str]:
    """Copy a loaded folder's tokenizer next to a Hugging Face folder written at ``destination``:
    Hugging Face tokenizer files go to its root, a taa tokenizer (characters, taa's BPE)
    to ``destination/tokenizer/``. Returns what was copied."""
    from taa.convert.hf import copy_tokenizer_files, tokenizer_files

    destination = Path(destination)
    source = pretrained.folder
    if pretrained.source == "hugging_face":
        copied = copy_tokenizer_files(source, destination)
        if not copied and (source / TOKENIZER).is_dir():
            shutil.copytree(source / TOKENIZER, destination / TOKENIZER, dirs_exist_ok=True)
            copied = [f"{TOKENIZER}/"]
        return copied
    tokenizer_dir = source / TOKENIZER
    if not tokenizer_dir.is_dir():
        return []
    if _is_taa_tokenizer(tokenizer_dir):
        shutil.copytree(tokenizer_dir, destination / TOKENIZER, dirs_exist_ok=True)
        return [f"{TOKENIZER}/"]
    return copy_tokenizer_files(tokenizer_dir, destination) if tokenizer_files(tokenizer_dir) else []


# --------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------


def _is_taa_tokenizer(directory: Path) -> bool:
    from taa.data.tokenizer import CHAR_DESCRIPTION, DESCRIPTION

    return (directory / CHAR_DESCRIPTION).is_file() or (directory / DESCRIPTION).is_file()


def load_tokenizer_folder(directory: Path, model_config: Any = None, max_length: Optional[int] = None):
    """The tokenizer saved in ``directory`` (taa's own, or a Hugging Face ``tokenizer.json``); None if none.

    A Hugging Face tokenizer truncates to ``max_length``, else to a sentence-transformers
    ``max_seq_length``, else, for BERT, to the model's positions.
    """
    from tokenizers import Tokenizer

    from taa.data import DataError
    from taa.data.tokenizer import load_tokenizer

    if not directory.is_dir():
        return None
    if _is_taa_tokenizer(directory):
        try:
            return load_tokenizer(directory)
        except DataError as error:
            raise ConversionError(str(error)) from None
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:
        raise ConversionError(f"{path}: not a tokenizers file ({' '.join(str(error).split())[:200]})") from None
    tokenizer.no_padding()
    sentence_config = directory / "sentence_bert_config.json"
    if max_length is None and sentence_config.is_file():
        max_length = json.loads(sentence_config.read_text(encoding="utf-8")).get("max_seq_length")
    if max_length is None and isinstance(model_config, cfg.BertConfig):
        max_length = model_config.max_length
    if max_length is not None:
        tokenizer.enable_truncation(max_length=int(max_length))
    return tokenizer


def encode_text(tokenizer, text: str, *, source: bool = False) -> list[int]:
    """Token ids of ``text``: a decoder-only prompt as it is, or (``source=True``) an
    encoder-decoder's source with what the tokenizer adds to one (T5's and taa's ``</s>``)."""
    from taa.data.tokenizer import SubwordTokenizer

    if isinstance(tokenizer, SubwordTokenizer):
        return tokenizer.encode_source(text) if source else tokenizer.encode(text)
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        return tokenizer.encode(text, add_special_tokens=source).ids
    return tokenizer.encode(text)  # CharTokenizer


def decode_tokens(tokenizer, ids: Sequence[int], *, target: bool = False) -> str:
    """Text of generated ids, special tokens left out (``target=True``: an encoder-decoder's
    output, which taa's BPE cuts at ``</s>``)."""
    from taa.data.tokenizer import SubwordTokenizer

    ids = [int(i) for i in ids]
    if isinstance(tokenizer, SubwordTokenizer):
        return tokenizer.decode_target(ids) if target else tokenizer.decode(ids)
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.decode(ids, skip_special_tokens=True)
    return tokenizer.decode(ids)


def vocab_size(pretrained: Pretrained) -> int:
    """The model's output vocabulary."""
    config = pretrained.config
    return getattr(config, "vocab_size", None) or getattr(config, "target_vocab_size")

