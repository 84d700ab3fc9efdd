"""Loading a Keras model from a folder: ``taa.keras.from_pretrained(DIR)``.

The Keras twin of :mod:`taa.torch.hub`: the same three kinds of folder (a Hugging Face
folder, a taa training run, a converted taa model), the same tokenizers, the same
:class:`~taa.hub.Pretrained` record, with a ``keras.Model`` in ``.model`` (the registry's
class in framework ``"keras"``). Everything that does not touch a tensor is
:mod:`taa.hub`'s; this module reads and writes the weights.

The weights are torch's state dict, name for name and layout for layout
(:mod:`taa.keras.weights`), so a folder written by ``taa.torch.save_pretrained`` or a
training run loads here, and a folder :func:`save_pretrained` writes loads in torch.
Hugging Face folders go through the same framework-neutral key maps
(:mod:`taa.convert.hf`, loaded by :mod:`taa.keras.convert.hf`).

Loading is strict, as torch's: every key and shape must match (a tied weight may be
stored once, under either name), floating-point weights must be stored as floating-point
numbers and hold no nan or inf. Weights are read as numpy arrays: a bfloat16 file, which
numpy cannot hold, is refused in one line. Every problem is one
:class:`~taa.folders.CheckpointError` naming the folder or file.

    loaded = taa.keras.from_pretrained("all-MiniLM-L6-v2")    # .model: a keras BertModel
    taa.keras.save_pretrained(loaded.model, "out", tokenizer_from="all-MiniLM-L6-v2")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import keras
from safetensors.numpy import save_file

from taa import config as cfg
from taa import folders, hub
from taa.folders import CheckpointError, write_file_atomically
from taa.hub import Pretrained, copy_tokenizer, hf_tokenizer, vocab_size
from taa.keras.weights import ensure_built, load_state_dict, state_dict, tied_weights, variables
from taa.safetensors_file import check_floating, read_tensors, tensor_dtypes

__all__ = [
    "Pretrained", "architectures", "build_model", "copy_tokenizer", "from_pretrained", "hf_tokenizer",
    "load_run", "load_weights", "save_pretrained", "save_weights", "vocab_size",
]

FRAMEWORK = "keras"


def architectures() -> dict[str, type]:
    """Our model classes with a Keras implementation, by name (from :mod:`taa.registry`)."""
    return hub.architectures(FRAMEWORK)


def build_model(config: Any, architecture: Optional[str] = None, **options: Any) -> keras.Model:
    """A built Keras model of ``config`` (its variables made: :func:`~taa.keras.weights.ensure_built`):
    the class ``architecture`` names, else its family's default. ``options``: what the class
    takes beside the config (a BertModel's ``pooler``)."""
    return ensure_built(hub.build_model(FRAMEWORK, config, architecture, options))


# --------------------------------------------------------------------------------------
# Weights: model.safetensors under torch's names
# --------------------------------------------------------------------------------------


def load_weights(folder: str | Path, model: keras.Model) -> keras.Model:
    """Load a taa folder's ``model.safetensors`` into ``model`` strictly (pickled weights are
    refused): every key, shape and kind of number checked, one error naming them all."""
    path = folders.weights_file(folder)
    architecture = type(model).__name__
    kinds = tensor_dtypes(path)  # the header alone: a damaged or foreign file is one line
    bfloat16 = sorted(key for key, (dtype, _) in kinds.items() if dtype == "BF16")
    if bfloat16:
        raise CheckpointError(f"{path}: {bfloat16[0]} is bfloat16, which the Keras port cannot read "
                              f"(numpy has no bfloat16): save the weights in float32")
    ensure_built(model)
    floating = {name: "float" in str(variable.dtype) for name, (variable, _) in variables(model).items()}
    floating.update({alias: floating[source] for alias, source in tied_weights(model).items()})
    check_floating(kinds, floating, f"{path}: weights of {architecture}")
    arrays = read_tensors(path, "np")  # a weight holding nan or inf: one line naming it
    return load_state_dict(model, arrays, f"{path}: weights do not fit {architecture}")


def save_weights(model: keras.Model, path: str | Path) -> None:
    """The model's weights under torch's names, a tied weight once (under its source's name),
    written atomically: ``taa.torch`` loads the file as it loads its own."""
    ensure_built(model)
    arrays = state_dict(model)
    for alias in tied_weights(model):
        arrays.pop(alias, None)
    write_file_atomically(Path(path), lambda tmp: save_file(arrays, str(tmp)))


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _load_hugging_face(folder: Path) -> keras.Model:
    from taa.keras.convert.hf import load_hf_folder

    return load_hf_folder(folder)


def from_pretrained(folder: str | Path, *, task: Optional[str] = None) -> Pretrained:
    """Load the Keras model and the tokenizer of a Hugging Face folder or a taa checkpoint folder.

    ``task`` (``"translation"``, ...) asks for a training run of that task, with its
    tokenizer. The weights are float32 (float16 files are widened); the model runs where
    the Keras backend puts it. Anything wrong with the folder is one
    :class:`~taa.folders.CheckpointError`.
    """
    return hub.load_folder(folder, FRAMEWORK, load_weights=load_weights, load_hf_folder=_load_hugging_face,
                           task=task)


def load_run(folder: str | Path, task: str) -> tuple[keras.Model, Any, cfg.RecipeConfig]:
    """A training run of ``task`` -> (model, tokenizer, recipe), as :func:`taa.torch.hub.load_run`."""
    loaded = from_pretrained(folder, task=task)
    return loaded.model, loaded.tokenizer, loaded.recipe


# --------------------------------------------------------------------------------------
# Saving a converted model
# --------------------------------------------------------------------------------------


def save_pretrained(model: keras.Model, folder: str | Path, tokenizer_from: Optional[str | Path] = None) -> Path:
    """Write ``model`` as a taa model folder that ``taa.torch.from_pretrained`` loads too:
    ``model.safetensors`` (torch's names, tied tensors once), ``model.yaml`` (its class and
    config) and, from ``tokenizer_from`` (a Hugging Face folder), its tokenizer into
    ``tokenizer/``; a tokenizer that does not load is one error before anything is written
    (:func:`taa.hub.save_model_folder`)."""
    return hub.save_model_folder(model, folder, FRAMEWORK, lambda path: save_weights(model, path), tokenizer_from)
