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

What does not touch a tensor (which class a folder builds, the :class:`Pretrained` record,
the tokenizers, ``model.yaml``) is framework-neutral and lives in :mod:`taa.hub`; this
module adds torch's weights, dtype and device (:mod:`taa.keras.hub` is its Keras twin).
This is the one loader of taa runs: each task's ``load_<task>`` (``load_translator``, ...)
is ``from_pretrained(DIR, task=...)``.

The tokenizer is what the folder holds (:func:`taa.text.load_tokenizer`): a
``tokenizers.Tokenizer`` for Hugging Face files (BERT's adds [CLS]/[SEP] and truncates to
the model's positions, or to a sentence-transformers ``max_seq_length``), taa's
``CharTokenizer``/``SubwordTokenizer`` for taa runs, or None. :func:`taa.text.encode_text`
and :func:`taa.text.decode_tokens` treat them alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from taa import config as cfg
from taa import hub
from taa.hub import Pretrained, copy_tokenizer, copy_tokenizer_folder, hf_tokenizer, vocab_size
from taa.torch.training.checkpoint import load_weights, save_weights

__all__ = [
    "Pretrained", "architectures", "build_model", "copy_tokenizer", "copy_tokenizer_folder", "from_pretrained",
    "hf_tokenizer", "load_run", "save_pretrained", "vocab_size",
]

FRAMEWORK = "torch"


def architectures() -> dict[str, type]:
    """Our model classes with a torch implementation, by name (from :mod:`taa.registry`)."""
    return hub.architectures(FRAMEWORK)


def build_model(config: Any, architecture: Optional[str] = None, **options: Any) -> nn.Module:
    """A model of ``config``: the class ``architecture`` names, else its family's default
    (``GPTConfig`` -> GPT, ``BertConfig`` -> BertModel, ``T5Config`` -> T5, ``TransformerConfig``
    -> Transformer). ``options``: what the class takes beside the config (a BertModel's ``pooler``)."""
    return hub.build_model(FRAMEWORK, config, architecture, options)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _load_hugging_face(folder: Path) -> nn.Module:
    from taa.torch.convert.hf import load_hf_folder

    return load_hf_folder(folder)


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
    loaded = hub.load_folder(folder, FRAMEWORK, load_weights=load_weights, load_hf_folder=_load_hugging_face,
                             task=task)
    model = loaded.model
    dtype = resolve_dtype(dtype)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    loaded.model = model.eval()
    return loaded


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
    does not load is one error before anything is written (:func:`taa.hub.save_model_folder`)."""
    return hub.save_model_folder(model, folder, FRAMEWORK, lambda path: save_weights(model, path), tokenizer_from)
