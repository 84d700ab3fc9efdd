"""Model folders in and out, for every framework: what ``taa.torch.from_pretrained`` and
``taa.keras.from_pretrained`` share.

Three kinds of folder load (:mod:`taa.folders` tells them apart), each with the tokenizer it carries:

1. a Hugging Face folder (``config.json`` + ``model.safetensors``, or a
   sentence-transformers folder): the family comes from ``config.json``'s ``model_type``,
   the class from its ``architectures`` (the key maps of :mod:`taa.convert.hf`); the
   tokenizer is its ``tokenizer.json``;
2. a taa training run (``taa train --out DIR``): ``recipe.yaml`` + ``model.safetensors`` +
   ``tokenizer/``; the class is the one the recipe's task trains (:mod:`taa.registry`);
3. a converted taa model (``taa convert --from-hf``, ``save_pretrained``): ``model.yaml``
   (the class and the model section of a recipe) + ``model.safetensors`` + ``tokenizer/``.

This module holds everything about those folders that does not touch a tensor: which
class a folder builds (:func:`build_model`, the registry's class in a framework), the
record a load returns (:class:`Pretrained`), the tokenizer of each kind of folder,
``model.yaml`` and the tokenizer a converted folder carries. A framework adds two things,
both strict (every key and shape must match; one :class:`~taa.folders.CheckpointError`
names the folder or file):

- ``load_weights(folder, model)``: a taa folder's ``model.safetensors`` into a model;
- ``load_hf_folder(folder)``: a Hugging Face folder -> a model with its weights.

and :func:`load_folder` does the rest. Saving is :func:`save_model_folder`, given a
function that writes the weights file. Nothing here imports a framework: the classes are
imported by the registry when a model is built.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from taa import config as cfg
from taa import folders, registry
from taa.convert.state_dict import ConversionError
from taa.folders import MODEL_FILE, MODEL_FORMAT, TOKENIZER, WEIGHTS, CheckpointError, write_file_atomically
from taa.text import is_taa_tokenizer, load_tokenizer

LoadWeights = Callable[[Path, Any], Any]  # (folder, model) -> the model, its weights loaded
LoadHuggingFace = Callable[[Path], Any]  # a Hugging Face folder -> our model of its class, weights loaded


# --------------------------------------------------------------------------------------
# Which class a folder builds
# --------------------------------------------------------------------------------------


def architectures(framework: str = "torch") -> dict[str, type]:
    """Our model classes with an implementation in ``framework``, by name (from :mod:`taa.registry`)."""
    return {
        name: registry.implementation(name, framework)
        for family in registry.families()
        for name, implementations in family.architectures.items()
        if framework in implementations
    }


def build_model(framework: str, config: Any, architecture: Optional[str] = None,
                options: Optional[Mapping[str, Any]] = None) -> Any:
    """A ``framework`` model of ``config``: the class ``architecture`` names, else its family's
    default (``GPTConfig`` -> GPT, ``BertConfig`` -> BertModel, ...). ``options``: what the
    class takes beside the config (a BertModel's ``pooler``)."""
    options = dict(options or {})
    family = registry.family_of_config(config)
    architecture = architecture or family.default_architecture
    classes = architectures(framework)
    if architecture not in classes:
        if architecture in registry.architectures():
            raise ConversionError(f"{architecture} has no {framework} implementation")
        raise ConversionError(f"architecture={architecture!r} is not one of {', '.join(classes)}")
    owner = registry.family_of_architecture(architecture)
    if owner is not family:
        raise ConversionError(f"{architecture} needs a {owner.config.__name__}, got a {type(config).__name__}")
    taken = _options_taken(classes[architecture])
    unknown = sorted(set(options) - taken - ({"rngs"} & _parameter_names(classes[architecture])))
    if unknown:
        raise ConversionError(
            f"{architecture} takes no option {', '.join(unknown)} (it takes: {', '.join(sorted(taken)) or 'none'})")
    return classes[architecture](config, **options)


def _options_taken(cls: type) -> set[str]:
    """The named options a model class takes after its config (a BertModel's ``pooler``);
    ``**kwargs`` are no model options (a Keras model's ``name``, ``dtype``, ``trainable``),
    nor is a Flax model's ``rngs`` (its random streams, which every Flax class takes)."""
    return _parameter_names(cls) - {"rngs"}


def _parameter_names(cls: type) -> set[str]:
    """The names a class takes by keyword after its config."""
    # __init__'s own: a class whose metaclass builds it (a Flax module) shows (*args, **kwargs)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # after self and the config
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in named}


# --------------------------------------------------------------------------------------
# What a load returns
# --------------------------------------------------------------------------------------


@dataclass
class Pretrained:
    """What ``from_pretrained`` returns: ``model, tokenizer = from_pretrained(DIR)`` also works."""

    model: Any  # a torch nn.Module in eval mode, or a keras.Model
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


def vocab_size(pretrained: Pretrained) -> int:
    """The model's output vocabulary."""
    config = pretrained.config
    return getattr(config, "vocab_size", None) or getattr(config, "target_vocab_size")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_folder(folder: str | Path, framework: str, *, load_weights: LoadWeights,
                load_hf_folder: LoadHuggingFace, task: Optional[str] = None) -> Pretrained:
    """The model and tokenizer of any of the three kinds of folder, the model a ``framework``
    class: ``load_weights`` and ``load_hf_folder`` are the framework's (see the module's
    notes). ``task`` (``"translation"``, ...) asks for a training run of that task, with its
    tokenizer. Anything wrong with the folder is one :class:`~taa.folders.CheckpointError`."""
    folder = Path(folder)
    kind = folders.folder_kind(folder)
    if task is not None and kind != folders.TAA_RUN:
        raise CheckpointError(f"{folder}: not a taa training run (no {folders.RECIPE}); a {task!r} run is needed")
    recipe = None
    if kind == folders.HUGGING_FACE:
        model = load_hf_folder(folder)
        tokenizer = _hugging_face_tokenizer(folder, model.config)
    elif kind == folders.TAA_RUN:
        recipe = folders.load_recipe(folder)
        if task is not None and recipe.task != task:
            raise CheckpointError(f"{folder}: a {recipe.task!r} run, not a {task!r} one")
        model = load_weights(folder, build_model(framework, recipe.model, registry.task(recipe.task).architecture))
        max_length = getattr(recipe.data, "max_length", None)  # classification truncates to it
        # A run saved with a tokenizer folder needs it whole: without it, text would be read as token ids.
        tokenizer = load_tokenizer(folder / TOKENIZER, max_length, positions=_positions(recipe.model),
                                   required=task is not None or (folder / TOKENIZER).is_dir())
    else:
        config, architecture, options = folders.load_model_description(folder)
        try:
            model = build_model(framework, config, architecture, options)
        except ConversionError as error:  # a class or option that model.yaml should not name
            raise CheckpointError(f"{folder / MODEL_FILE}: {error}") from None
        model = load_weights(folder, model)
        tokenizer = load_tokenizer(folder / TOKENIZER, positions=_positions(config),
                                   required=(folder / TOKENIZER).is_dir())
    return Pretrained(model, tokenizer, model.config, type(model).__name__, folder, kind, recipe)


def _positions(config: Any) -> Optional[int]:
    """How far a Hugging Face tokenizer truncates for this model when nothing else says: the
    positions of a family whose input ends with its position table (BERT's); else no limit."""
    return config.max_length if registry.family_of_config(config).truncates_input else None


def _hugging_face_tokenizer(folder: Path, config: Any) -> Any:
    """A Hugging Face folder's tokenizer, or the taa tokenizer ``taa convert --to-hf`` kept in its ``tokenizer/``."""
    positions = _positions(config)
    tokenizer = load_tokenizer(folder, positions=positions, required=False)
    if tokenizer is None and (folder / TOKENIZER).is_dir():
        tokenizer = load_tokenizer(folder / TOKENIZER, positions=positions)
    return tokenizer


# --------------------------------------------------------------------------------------
# Saving a converted model
# --------------------------------------------------------------------------------------


def save_model_folder(model: Any, folder: str | Path, framework: str, write_weights: Callable[[Path], None],
                      tokenizer_from: Optional[str | Path] = None) -> Path:
    """Write ``model`` (a ``framework`` model) as a taa model folder: ``model.yaml`` (its class,
    its build options and config), ``model.safetensors`` (``write_weights(path)`` writes it,
    tied tensors once) and, from ``tokenizer_from`` (a Hugging Face folder), the tokenizer
    files into ``tokenizer/`` (or the taa tokenizer ``taa convert --to-hf`` kept in its
    ``tokenizer/``, so that a round trip keeps it); a tokenizer that does not load is one
    error before anything is written."""
    folder = Path(folder)
    architecture = type(model).__name__
    classes = architectures(framework)
    if architecture not in classes:
        raise ConversionError(f"{architecture} is not a taa model class ({', '.join(classes)})")
    if tokenizer_from is not None:
        tokenizer_from = Path(tokenizer_from)
        kept = _kept_tokenizer(tokenizer_from)  # a damaged tokenizer file: one line naming it
        load_tokenizer(tokenizer_from, required=False) if kept is None else load_tokenizer(kept)
    folder.mkdir(parents=True, exist_ok=True)
    write_model_description(folder, architecture, model.config, getattr(model, "build_options", {}))
    write_weights(folder / WEIGHTS)
    if tokenizer_from is not None:
        _copy_hf_tokenizer(tokenizer_from, folder / TOKENIZER, folder / TOKENIZER)
    return folder


def write_model_description(folder: Path, architecture: str, config: Any, options: Mapping[str, Any]) -> None:
    """``model.yaml``: the format tag, the class, its options beside the config, the config."""
    description: dict[str, Any] = {"format": MODEL_FORMAT, "architecture": architecture}
    description.update(options)
    description["model"] = cfg.model_config_to_dict(config)
    text = yaml.safe_dump(description, sort_keys=False)
    write_file_atomically(Path(folder) / MODEL_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------------------
# The tokenizer a folder carries, copied
# --------------------------------------------------------------------------------------


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
