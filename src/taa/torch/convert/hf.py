"""Hugging Face folders <-> taa's torch models.

The key maps, layout fixes and config translation are framework-neutral
(:mod:`taa.convert.hf` and its per-family modules); this module adds what only torch can
do: build the model the folder describes (:func:`taa.torch.hub.build_model`), load the
converted weights into it, and write a model's state dict back as a folder.

bfloat16: the weights are read as torch tensors (safetensors' ``framework="pt"``) and pass
through the neutral maps as tensors: the maps only rename, transpose, slice and join, so
a bfloat16 checkpoint converts without a detour through numpy, which has no bfloat16. The
model is built in float32 and the weights are cast as they load; ``from_pretrained(DIR,
dtype="bfloat16")`` casts afterwards.

    model = load_hf_folder("gpt2-folder")          # GPT, BertModel, ..., T5ForConditionalGeneration
    save_hf_folder(model, "out")                   # the transformers class of the same model
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from safetensors.torch import save_file
from torch import nn

from taa.convert import hf
from taa.convert.hf_folder import WEIGHTS_FILE, write_config
from taa.folders import write_file_atomically
from taa.torch.convert.state_dict import load_checked
from taa.torch.hub import build_model


def load_hf_folder(folder: str | Path, architecture: Optional[str] = None) -> nn.Module:
    """A Hugging Face folder (config.json + model.safetensors) -> our model of its class, in eval mode.

    ``architecture`` asks for one of our classes (``BertModel`` for a classifier's backbone).
    Every problem is one :class:`~taa.convert.state_dict.ConversionError` naming the folder
    or file: no folder, no config.json, an unsupported model_type or option, no safetensors
    weights (a folder with only a pickled ``pytorch_model.bin`` is refused, never unpickled),
    a missing, unexpected or mis-shaped key.
    """
    converted = hf.read_hf_folder(folder, framework="pt", architecture=architecture)
    model = build_model(converted.config, converted.architecture, **converted.options)
    load_checked(model, converted.weights, f"{folder}: weights of {converted.architecture}")
    return model.eval()


def save_hf_folder(model: nn.Module, folder: str | Path) -> Path:
    """Write one of our models as a Hugging Face folder that transformers' class of the same
    model loads (``GPT2LMHeadModel``, ``BertModel``, ..., ``T5ForConditionalGeneration``)."""
    hf_config, weights = hf.to_hf(type(model).__name__, getattr(model, "config", None), model.state_dict())
    folder = write_config(folder, hf_config)
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in weights.items()}  # unshared copies
    # Atomically, with the umask's mode (safetensors alone writes 0600).
    write_file_atomically(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    return folder
