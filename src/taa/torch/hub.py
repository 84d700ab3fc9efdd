"""Loading a model from a folder: ``taa.torch.from_pretrained(DIR)``.

Three kinds of folder load, each with the tokenizer it carries:

1. a Hugging Face folder (``config.json`` + ``model.safetensors``, or a
   sentence-transformers folder): the family comes from ``config.json``'s
   ``model_type`` (``gpt2``, ``bert``, ``t5``; the key maps of :mod:`taa.convert.hf`, loaded
   by :mod:`taa.torch.convert.hf`), the class from its ``architectures``; the tokenizer is
   its ``tokenizer.json``;
2. a taa training run (``taa train --out DIR``): ``recipe.yaml`` + ``model.safetensors`` +
   ``tokenizer/``; the class follows the recipe's task (``language_model`` -> GPT,
   ``masked_lm`` -> BertForMaskedLM, ``classification`` -> BertForSequenceClassification,
   ``text_to_text`` -> T5, ``translation``/``copy`` -> Transformer);
3. a converted taa model (``taa convert --from-hf``, :func:`save_pretrained`):
   ``model.yaml`` (the class and the model section of a recipe) + ``model.safetensors``
   + ``tokenizer/`` (the Hugging Face tokenizer files, copied as they were).

The folder layout is :mod:`taa.folders`. Weights are read with safetensors only; a
folder with only pickled weights (``pytorch_model.bin``, ``*.pt``) is refused, never
unpickled. Weights load strictly (every key and shape must match, and floating-point
weights must be stored as floating-point numbers). Every problem is one
:class:`~taa.folders.CheckpointError` naming the folder or file (the Hugging Face
converters' :class:`~taa.convert.state_dict.ConversionError` is one): a weights file that
is empty, cut short, a pickle or anything else but safetensors
(:mod:`taa.safetensors_file`), a damaged ``recipe.yaml``, ``model.yaml`` or
``config.json``, a tokenizer folder that lost its files.

This is the one loader of taa runs: each task's ``load_<task>`` (``load_translator``, ...)
is ``from_pretrained(DIR, task=...)``.

The tokenizer is what the folder holds (:func:`taa.text.load_tokenizer`): a
``tokenizers.Tokenizer`` for Hugging Face files (BERT's adds [CLS]/[SEP] and truncates to
the model's positions, or to a sentence-transformers ``max_seq_length``), taa's
``CharTokenizer``/``SubwordTokenizer`` for taa runs, or None. :func:`taa.text.encode_text`
and :func:`taa.text.decode_tokens` treat them alike.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch import nn

from taa import config as cfg
from taa import folders, registry
from taa.convert.state_dict import ConversionError
from taa.folders import MODEL_FILE, MODEL_FORMAT, TOKENIZER, WEIGHTS, CheckpointError, write_file_atomically
from taa.text import is_taa_tokenizer, load_tokenizer
from taa.torch.training.checkpoint import load_weights, save_weights


def architectures() -> dict[str, type]:
    """Our model classes with a torch implementation, by name (from :mod:`taa.registry`)."""
    return {
        name: registry.implementation(name, "torch")
        for family in registry.families()
        for name, implementations in family.architectures.items()
        if "torch" in implementations
    }


def build_model(config: Any, architecture: Optional[str] = None, **options: Any) -> nn.Module:
    """A model of ``config``: the class ``architecture`` names, else its family's default
    (``GPTConfig`` -> GPT, ``BertConfig`` -> BertModel, ``T5Config`` -> T5, ``TransformerConfig``
    -> Transformer). ``options``: what the class takes beside the config (a BertModel's ``pooler``)."""
    family = registry.family_of_config(config)
    architecture = architecture or family.default_architecture
    classes = architectures()
    if architecture not in classes:
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(classes)}")
    owner = registry.family_of_architecture(architecture)
    if owner is not family:
        raise ConversionError(f"{architecture} needs a {owner.config.__name__}, got a {type(config).__name__}")
    taken = _options_taken(classes[architecture])
    unknown = sorted(set(options) - taken) if taken is not None else []
    if unknown:
        raise ConversionError(
            f"{architecture} takes no option {', '.join(unknown)} (it takes: {', '.join(sorted(taken)) or 'none'})")
    return classes[architecture](config, **options)


def _options_taken(cls: type) -> Optional[set[str]]:
    """The keyword options a model class takes after its config; None when it takes any (``**kwargs``)."""
    parameters = list(inspect.signature(cls).parameters.values())[1:]  # after the config
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in named}


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
        """Whether the model encodes a source and decodes from it (Transformer, T5)."""
        return registry.family_of_architecture(self.architecture).is_encoder_decoder


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _positions(config: Any) -> Optional[int]:
    """How far a Hugging Face tokenizer truncates for this model when nothing else says: the
    positions of a family whose input ends with its position table (BERT's); else no limit."""
    return config.max_length if registry.family_of_config(config).truncates_input else None


def _load_hugging_face(folder: Path) -> tuple[nn.Module, Any]:
    from taa.torch.convert.hf import load_hf_folder

    model = load_hf_folder(folder)
    positions = _positions(model.config)
    tokenizer = load_tokenizer(folder, positions=positions, required=False)
    if tokenizer is None and (folder / TOKENIZER).is_dir():  # a taa tokenizer kept by `taa convert --to-hf`
        tokenizer = load_tokenizer(folder / TOKENIZER, positions=positions)
    return model, tokenizer


def _kept_tokenizer(folder: Path) -> Optional[Path]:
    """The taa tokenizer (characters, taa's BPE) that ``taa convert --to-hf`` kept in a
    Hugging Face folder's ``tokenizer/``: transformers has no such tokenizer, so it travels
    beside the weights, and each conversion of the folder carries it on. None when the
    folder has Hugging Face tokenizer files, or no ``tokenizer/``."""
    from taa.convert.hf import tokenizer_files

    return folder / TOKENIZER if not tokenizer_files(folder) and (folder / TOKENIZER).is_dir() else None


def hf_tokenizer(folder: str | Path) -> list[str]:
    """What a Hugging Face folder's tokenizer is, as a conversion copies it: the names of its
    tokenizer files, or ``tokenizer/`` for a kept taa tokenizer; empty when it has none."""
    from taa.convert.hf import tokenizer_files

    folder = Path(folder)
    return [path.name for path in tokenizer_files(folder)] or ([f"{TOKENIZER}/"] if _kept_tokenizer(folder) else [])


def _copy_hf_tokenizer(source: Path, files_to: Path, kept_to: Path) -> list[str]:
    """Copy a Hugging Face folder's tokenizer: its tokenizer files into ``files_to``, or its
    kept taa tokenizer (:func:`_kept_tokenizer`) into ``kept_to``; returns what was copied."""
    from taa.convert.hf import copy_tokenizer_files

    kept = _kept_tokenizer(source)
    if kept is None:
        return copy_tokenizer_files(source, files_to)
    copy_tokenizer_folder(kept, kept_to)
    return [f"{TOKENIZER}/"]


def copy_tokenizer_folder(source: Path, target: Path) -> None:
    """Copy a tokenizer folder's files into ``target``, each folder and file with the mode
    the umask gives a new one, as every file taa writes (``shutil.copytree`` would copy the
    source's modes: a 0644 tokenizer beside 0600 weights under umask 077). A conversion
    writes into a staging folder (:func:`taa.folders.replace_folder`): a copy that fails
    midway leaves nothing."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")):  # a folder before what it holds
        copy = target / path.relative_to(source)
        if path.is_dir():
            copy.mkdir(exist_ok=True)
        else:
            shutil.copyfile(path, copy)  # a new file: 0666 & ~umask, whatever the source's mode


def _load_taa_run(folder: Path, task: Optional[str]) -> tuple[nn.Module, Any, cfg.RecipeConfig]:
    recipe = folders.load_recipe(folder)
    if task is not None and recipe.task != task:
        raise CheckpointError(f"{folder}: a {recipe.task!r} run, not a {task!r} one")
    model = load_weights(folder, build_model(recipe.model, registry.task(recipe.task).architecture))
    max_length = getattr(recipe.data, "max_length", None)  # classification truncates to it
    # A run saved with a tokenizer folder needs it whole: without it, text would be read as token ids.
    tokenizer = load_tokenizer(folder / TOKENIZER, max_length, positions=_positions(recipe.model),
                               required=task is not None or (folder / TOKENIZER).is_dir())
    return model, tokenizer, recipe


def _load_taa_model(folder: Path) -> tuple[nn.Module, Any]:
    config, architecture, options = folders.load_model_description(folder)
    try:
        model = build_model(config, architecture, **options)
    except ConversionError as error:  # a class or option that model.yaml should not name
        raise CheckpointError(f"{folder / MODEL_FILE}: {error}") from None
    model = load_weights(folder, model)
    return model, load_tokenizer(folder / TOKENIZER, positions=_positions(config),
                                 required=(folder / TOKENIZER).is_dir())


def from_pretrained(folder: str | Path, dtype: Optional[torch.dtype | str] = None, *,
                    task: Optional[str] = None, device: Optional[torch.device | str] = None) -> Pretrained:
    """Load the model (in eval mode) and tokenizer of a Hugging Face folder or a taa checkpoint folder.

    ``dtype`` (``torch.bfloat16`` or ``"bfloat16"``) casts the weights once after loading:
    on a CPU with bf16 units that halves the bytes each matrix product reads. ``task``
    (``"translation"``, ...) asks for a training run of that task, with its tokenizer.
    ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a torch device;
    None: the CPU) is where the model goes: the weights are read to the CPU, whatever device
    wrote them, then moved once. A GPU the machine lacks is a ConfigError before anything loads.
    Anything wrong with the folder is one :class:`~taa.folders.CheckpointError`.
    """
    from taa.torch.devices import resolve_device
    from taa.torch.generate import resolve_dtype

    if isinstance(device, str) or (isinstance(device, torch.device) and device.type in ("cuda", "mps")):
        device = resolve_device(str(device))  # a GPU this machine lacks: one line, before anything is read
    folder = Path(folder)
    kind = folders.folder_kind(folder)
    if task is not None and kind != folders.TAA_RUN:
        raise CheckpointError(f"{folder}: not a taa training run (no {folders.RECIPE}); a {task!r} run is needed")
    recipe = None
    if kind == folders.HUGGING_FACE:
        model, tokenizer = _load_hugging_face(folder)
    elif kind == folders.TAA_RUN:
        model, tokenizer, recipe = _load_taa_run(folder, task)
    else:
        model, tokenizer = _load_taa_model(folder)
    dtype = resolve_dtype(dtype)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return Pretrained(model.eval(), tokenizer, model.config, type(model).__name__, folder, kind, recipe)


def load_run(folder: str | Path, task: str) -> tuple[nn.Module, Any, cfg.RecipeConfig]:
    """A training run of ``task`` -> (model in eval mode, tokenizer, recipe): what each task
    module's ``load_<task>`` returns."""
    loaded = from_pretrained(folder, task=task)
    return loaded.model, loaded.tokenizer, loaded.recipe


# --------------------------------------------------------------------------------------
# Saving a converted model
# --------------------------------------------------------------------------------------


def save_pretrained(model: nn.Module, folder: str | Path, tokenizer_from: Optional[str | Path] = None) -> Path:
    """Write ``model`` as a taa model folder: ``model.safetensors`` (tied tensors once),
    ``model.yaml`` (its class and config) and, from ``tokenizer_from`` (a Hugging Face
    folder), the tokenizer files into ``tokenizer/`` (or the taa tokenizer ``taa convert
    --to-hf`` kept in its ``tokenizer/``, so that a round trip keeps it); a tokenizer that
    does not load is one error before anything is written."""
    folder = Path(folder)
    architecture = type(model).__name__
    if architecture not in architectures():
        raise ConversionError(f"{architecture} is not a taa model class ({', '.join(architectures())})")
    if tokenizer_from is not None:
        tokenizer_from = Path(tokenizer_from)
        kept = _kept_tokenizer(tokenizer_from)  # a damaged tokenizer file: one line naming it
        load_tokenizer(tokenizer_from, required=False) if kept is None else load_tokenizer(kept)
    folder.mkdir(parents=True, exist_ok=True)
    description: dict[str, Any] = {"format": MODEL_FORMAT, "architecture": architecture}
    description.update(getattr(model, "build_options", {}))  # the class's options beside its config
    description["model"] = cfg.model_config_to_dict(model.config)
    text = yaml.safe_dump(description, sort_keys=False)
    write_file_atomically(folder / MODEL_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    save_weights(model, folder / WEIGHTS)  # tied tensors once
    if tokenizer_from is not None:
        _copy_hf_tokenizer(tokenizer_from, folder / TOKENIZER, folder / TOKENIZER)
    return folder


def copy_tokenizer(pretrained: Pretrained, destination: str | Path) -> list[str]:
    """Copy a loaded folder's tokenizer next to a Hugging Face folder written at ``destination``:
    Hugging Face tokenizer files go to its root, a taa tokenizer (characters, taa's BPE)
    to ``destination/tokenizer/``. Returns what was copied."""
    from taa.convert.hf import copy_tokenizer_files, tokenizer_files

    destination = Path(destination)
    source = pretrained.folder
    if pretrained.source == folders.HUGGING_FACE:
        return _copy_hf_tokenizer(source, destination, destination / TOKENIZER)
    tokenizer_dir = source / TOKENIZER
    if not tokenizer_dir.is_dir():
        return []
    if is_taa_tokenizer(tokenizer_dir):
        copy_tokenizer_folder(tokenizer_dir, destination / TOKENIZER)
        return [f"{TOKENIZER}/"]
    return copy_tokenizer_files(tokenizer_dir, destination) if tokenizer_files(tokenizer_dir) else []


def vocab_size(pretrained: Pretrained) -> int:
    """The model's output vocabulary."""
    config = pretrained.config
    return getattr(config, "vocab_size", None) or getattr(config, "target_vocab_size")

