"""Hugging Face folders <-> taa's Flax models.

The Flax twin of :mod:`taa.torch.convert.hf`. The key maps, layout fixes and config
translation are framework-neutral (:mod:`taa.convert.hf` and its per-family modules) and
give torch's state-dict names; the Flax models carry the same names and layouts
(:mod:`taa.flax.weights`), so this module only builds the model the folder describes
(:func:`taa.flax.hub.build_model`), loads the converted arrays into it, and writes a
model's weights back as a folder. The arrays are read as JAX's: a bfloat16 checkpoint
loads, widened to float32.

    model = load_hf_folder("gpt2-folder")          # GPT, BertModel, ..., T5ForConditionalGeneration
    save_hf_folder(model, "out")                   # the transformers class of the same model
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from taa.convert import hf
from taa.convert.hf_folder import WEIGHTS_FILE, write_config
from taa.flax.hub import build_model
from taa.flax.weights import load_state_dict, state_dict
from taa.folders import write_file_atomically


def load_hf_folder(folder: str | Path, architecture: Optional[str] = None) -> nnx.Module:
    """A Hugging Face folder (config.json + model.safetensors) -> our Flax model of its class.

    ``architecture`` asks for one of our classes (``BertModel`` for a classifier's backbone).
    Every problem is one :class:`~taa.convert.state_dict.ConversionError` naming the folder
    or file, as :func:`taa.torch.convert.hf.load_hf_folder` says it.
    """
    converted = hf.read_hf_folder(folder, framework="flax", architecture=architecture)
    model = build_model(converted.config, converted.architecture, **converted.options)
    return load_state_dict(model, converted.weights, f"{folder}: weights of {converted.architecture}")


def save_hf_folder(model: nnx.Module, folder: str | Path) -> Path:
    """Write one of our Flax models as a Hugging Face folder that transformers' class of the
    same model loads (``GPT2LMHeadModel``, ``BertModel``, ..., ``T5ForConditionalGeneration``)."""
    hf_config, weights = hf.to_hf(type(model).__name__, getattr(model, "config", None), state_dict(model))
    folder = write_config(folder, hf_config)
    arrays = {key: np.ascontiguousarray(value) for key, value in weights.items()}
    # Atomically, with the umask's mode (safetensors alone writes 0600); "pt": torch's layout.
    write_file_atomically(folder / WEIGHTS_FILE, lambda tmp: save_file(arrays, str(tmp), metadata={"format": "pt"}))
    return folder
