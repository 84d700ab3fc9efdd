"""Loading a Flax model from a folder: ``taa.flax.from_pretrained(DIR)``.

The Flax twin of :mod:`taa.torch.hub`: the same three kinds of folder (a Hugging Face
folder, a taa training run, a converted taa model), the same tokenizers, the same
:class:`~taa.hub.Pretrained` record, with an ``nnx.Module`` in ``.model`` (the registry's
class in framework ``"flax"``), in eval mode and called with the same arguments as the
torch model. Everything that does not touch an array is :mod:`taa.hub`'s; this module
reads and writes the weights.

The weights are torch's state dict, name for name and layout for layout
(:mod:`taa.flax.weights`), so a folder written by ``taa.torch.save_pretrained`` or a torch
training run loads here, and a folder :func:`save_pretrained` writes loads in torch.
Hugging Face folders go through the same framework-neutral key maps
(:mod:`taa.convert.hf`, loaded by :mod:`taa.flax.convert.hf`).

Loading is strict, as torch's: every key and shape must match (a tied weight may be
stored once, under either name), floating-point weights must be stored as floating-point
numbers and hold no nan or inf. The arrays are read as JAX's, so bfloat16 and float16
files load too (widened to the model's float32). Every problem is one
:class:`~taa.folders.CheckpointError` naming the folder or file.

    loaded = taa.flax.from_pretrained("all-MiniLM-L6-v2")     # .model: a Flax BertModel
    taa.flax.save_pretrained(loaded.model, "out", tokenizer_from="all-MiniLM-L6-v2")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from taa import config as cfg
from taa import folders, hub
from taa.flax.weights import load_state_dict, parameters, state_dict, tied_weights
from taa.folders import write_file_atomically
from taa.hub import Pretrained, copy_tokenizer, hf_tokenizer, vocab_size
from taa.safetensors_file import check_floating, read_tensors, tensor_dtypes

__all__ = [
    "Pretrained", "architectures", "build_model", "copy_tokenizer", "from_pretrained", "hf_tokenizer",
    "load_run", "load_weights", "save_pretrained", "save_weights", "vocab_size",
]

FRAMEWORK = "flax"


def architectures() -> dict[str, type]:
    """Our model classes with a Flax implementation, by name (from :mod:`taa.registry`)."""
    return hub.architectures(FRAMEWORK)


def build_model(config: Any, architecture: Optional[str] = None, **options: Any) -> nnx.Module:
    """A Flax model of ``config``, freshly initialised (its parameters are made as it is
    built): the class ``architecture`` names, else its family's default. ``options``: what
    the class takes beside the config (a BertModel's ``pooler``; ``rngs``: the random
    streams, seed 0 when left out)."""
    return hub.build_model(FRAMEWORK, config, architecture, options)


# --------------------------------------------------------------------------------------
# Weights: model.safetensors under torch's names
# --------------------------------------------------------------------------------------


def load_weights(folder: str | Path, model: nnx.Module) -> nnx.Module:
    """Load a taa folder's ``model.safetensors`` into ``model`` strictly (pickled weights are
    refused): every key, shape and kind of number checked, one error naming them all."""
    path = folders.weights_file(folder)
    architecture = type(model).__name__
    kinds = tensor_dtypes(path)  # the header alone: a damaged or foreign file is one line
    floating = {name: np.issubdtype(param[...].dtype, np.floating) for name, param in parameters(model).items()}
    floating.update({alias: floating[source] for alias, source in tied_weights(model).items() if source in floating})
    check_floating(kinds, floating, f"{path}: weights of {architecture}")
    arrays = read_tensors(path, "flax")  # a weight holding nan or inf: one line naming it
    return load_state_dict(model, arrays, f"{path}: weights do not fit {architecture}")


def save_weights(model: nnx.Module, path: str | Path) -> None:
    """The model's weights under torch's names, a tied weight once (under its source's name),
    written atomically: ``taa.torch`` loads the file as it loads its own."""
    arrays = state_dict(model)
    for alias in tied_weights(model):
        arrays.pop(alias, None)
    arrays = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
    write_file_atomically(Path(path), lambda tmp: save_file(arrays, str(tmp)))


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _load_hugging_face(folder: Path) -> nnx.Module:
    from taa.flax.convert.hf import load_hf_folder

    return load_hf_folder(folder)


def from_pretrained(folder: str | Path, *, task: Optional[str] = None) -> Pretrained:
    """Load the Flax model (in eval mode) and the tokenizer of a Hugging Face folder or a taa
    checkpoint folder.

    ``task`` (``"translation"``, ...) asks for a training run of that task, with its
    tokenizer. The weights are float32 (bfloat16 and float16 files are widened); the model
    lives on JAX's default device. Anything wrong with the folder is one
    :class:`~taa.folders.CheckpointError`.
    """
    loaded = hub.load_folder(folder, FRAMEWORK, load_weights=load_weights, load_hf_folder=_load_hugging_face,
                             task=task)
    loaded.model.eval()
    return loaded


def load_run(folder: str | Path, task: str) -> tuple[nnx.Module, Any, cfg.RecipeConfig]:
    """A training run of ``task`` -> (model, tokenizer, recipe), as :func:`taa.torch.hub.load_run`."""
    loaded = from_pretrained(folder, task=task)
    return loaded.model, loaded.tokenizer, loaded.recipe


# --------------------------------------------------------------------------------------
# Saving a converted model
# --------------------------------------------------------------------------------------


def save_pretrained(model: nnx.Module, folder: str | Path, tokenizer_from: Optional[str | Path] = None) -> Path:
    """Write ``model`` as a taa model folder that ``taa.torch.from_pretrained`` loads too:
    ``model.safetensors`` (torch's names, tied tensors once), ``model.yaml`` (its class and
    config) and, from ``tokenizer_from`` (a Hugging Face folder), its tokenizer into
    ``tokenizer/``; a tokenizer that does not load is one error before anything is written
    (:func:`taa.hub.save_model_folder`)."""
    return hub.save_model_folder(model, folder, FRAMEWORK, lambda path: save_weights(model, path), tokenizer_from)
