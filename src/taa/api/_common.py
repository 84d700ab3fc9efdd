"""What the API's modules share: loading a folder, what a loaded model can do (from the
registry), a translation run's model and decoding settings, and the checks of what a
person types (text that is not text, sentences longer than the model reads)."""

from __future__ import annotations

import importlib
import os

from collections.abc import Callable, Sequence
from pathlib import Path

from taa import config as cfg
from taa import registry

PathLike = str | Path


# --------------------------------------------------------------------------------------
# Loading, and what a loaded model can do (from the registry)
# --------------------------------------------------------------------------------------


def device_of(device: str):
    """The torch device ``--device`` names (auto, cpu, cuda, cuda:N, mps): a GPU the machine
    lacks is one line (:func:`taa.torch.devices.resolve_device`), before anything loads."""
    from taa.torch.devices import resolve_device

    return resolve_device(device, "--device")


# What --framework names: torch, the reference, or a port: Keras 3 (taa.keras) or Flax NNX (taa.flax).
FRAMEWORKS = ("torch", "keras", "flax")


def check_framework(framework: str, dtype: str = "float32", device: str = "auto") -> None:
    """One line when a command cannot run on ``framework``: a name taa does not know, a port
    whose framework is not installed, or an option a port does not take (it runs in
    float32, where its framework puts it)."""
    import importlib.util

    if framework not in FRAMEWORKS:
        raise cfg.ConfigError(f"--framework={framework}: give one of {', '.join(FRAMEWORKS)}")
    if framework == "flax":
        missing = [name for name in ("jax", "flax") if importlib.util.find_spec(name) is None]
        if missing:
            raise cfg.ConfigError(f"--framework flax: {' and '.join(missing)} not installed (pip install 'taa[flax]')")
        if dtype != "float32":
            raise cfg.ConfigError(f"--dtype={dtype}: --framework flax runs in float32 only")
        if device != "auto":
            raise cfg.ConfigError(f"--device={device}: --framework flax runs on JAX's default device "
                                  "(leave --device at auto)")
        return
    if framework != "keras":
        return
    if importlib.util.find_spec("keras") is None:
        raise cfg.ConfigError("--framework keras: Keras is not installed (pip install 'taa[keras]')")
    try:  # Keras imports its backend (KERAS_BACKEND) as it starts: a missing or unknown one is one line
        import keras  # noqa: F401
    except (ImportError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise cfg.ConfigError(f"--framework keras: Keras cannot start its backend "
                              f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}): {first}") from None
    if dtype != "float32":
        raise cfg.ConfigError(f"--dtype={dtype}: --framework keras runs in float32 only")
    if device != "auto":
        raise cfg.ConfigError(f"--device={device}: --framework keras runs where its backend puts the model "
                              "(leave --device at auto)")


def load(checkpoint: PathLike, dtype: str = "float32", device: str = "auto", framework: str = "torch"):
    """``from_pretrained`` of any folder in ``framework`` (:data:`FRAMEWORKS`): torch's
    (``dtype``: ``bfloat16`` casts the weights; the model on ``device``, :func:`device_of`)
    or the Keras port's (:func:`taa.keras.from_pretrained`, :func:`check_framework`)."""
    check_framework(framework, dtype, device)
    if framework != "torch":
        return port_module(framework, "hub").from_pretrained(checkpoint)
    from taa.torch.hub import from_pretrained

    return from_pretrained(checkpoint, dtype=None if dtype == "float32" else dtype, device=device_of(device))


def port_module(framework: str, name: str):
    """A port's module, imported now: ``port_module("flax", "generate")`` is ``taa.flax.generate``."""
    return importlib.import_module(f"taa.{framework}.{name}")


def to_numpy(array, framework: str):
    """A port's array as numpy's (Keras's own conversion, which every backend's tensors take)."""
    import numpy as np

    if framework == "keras":
        from keras import ops

        return ops.convert_to_numpy(array)
    return np.asarray(array)


def tasks_of(pretrained) -> list[str]:
    """The tasks a loaded model serves: a training run's own task, else every task of the
    registry that trains its class (a Hugging Face GPT2LMHeadModel: ``language_model``)."""
    if pretrained.recipe is not None:
        return [pretrained.recipe.task]
    return [spec.name for spec in registry.tasks() if spec.architecture == pretrained.architecture]


def _hugging_face_tokenizer(pretrained, checkpoint: PathLike, needed_for: str):
    """The folder's ``tokenizers.Tokenizer`` (one that adds BERT's [CLS] and [SEP])."""
    tokenizer = pretrained.tokenizer
    if not hasattr(tokenizer, "encode_batch"):
        raise cfg.ConfigError(f"{checkpoint}: no Hugging Face tokenizer (tokenizer.json) that adds [CLS] and [SEP] "
                              f"({needed_for} needs one)")
    return tokenizer


def _what(pretrained) -> str:
    """``a 'translation' run (a Transformer)`` or ``a GPT``: what a loaded folder holds."""
    if pretrained.recipe is not None:
        return f"a {pretrained.recipe.task!r} run (a {pretrained.architecture})"
    return f"a {pretrained.architecture}"


def _load_translator(checkpoint: PathLike, device: str = "auto", framework: str = "torch"):
    """A translation run's model (on ``device``), tokenizer and recipe, in ``framework``."""
    check_framework(framework, device=device)
    if framework != "torch":
        model, tokenizer, recipe = port_module(framework, "hub").load_run(checkpoint, "translation")
        _check_translation_tokenizer(tokenizer, checkpoint)
        return model, tokenizer, recipe
    from taa.tasks.translation import load_translator

    where = device_of(device)
    model, tokenizer, recipe = load_translator(checkpoint)
    _check_translation_tokenizer(tokenizer, checkpoint)
    return model.to(where), tokenizer, recipe


def _check_translation_tokenizer(tokenizer, checkpoint: PathLike) -> None:
    """A translation run's tokenizer is taa's BPE: a folder that lost its description would
    otherwise read its bare ``tokenizer.json`` as a Hugging Face tokenizer, and decode nonsense."""
    from taa.data.tokenizer import DESCRIPTION, SubwordTokenizer
    from taa.folders import TOKENIZER, CheckpointError

    if not isinstance(tokenizer, SubwordTokenizer):
        raise CheckpointError(f"{Path(checkpoint) / TOKENIZER}: no {DESCRIPTION} (a translation run's tokenizer)")


# --------------------------------------------------------------------------------------
# What a person types: text, and text longer than the model reads
# --------------------------------------------------------------------------------------

Notify = Callable[[str], None]


def _warn(line: str) -> None:
    """What an api function says about its input by default: a Python warning."""
    import warnings

    warnings.warn(line, stacklevel=3)


def _check_sentences(sentences: Sequence[str]) -> list[str]:
    """The sentences, each checked to be text a tokenizer reads (no NUL, no bytes that were
    not UTF-8) and not empty: else one line naming the sentence. An empty sentence (or one
    of spaces) is refused, as ``taa evaluate`` refuses an empty line: a model given nothing
    still answers something (a translation, a label, a vector), which would pass for one."""
    from taa.data.text import DataError, check_text

    for number, sentence in enumerate(sentences, start=1):
        check_text(sentence, f"sentence {number}")
        if not sentence.strip():
            raise DataError(f"sentence {number}: empty (nothing to read): leave it out")
    return list(sentences)


def _source_too_long(config, lengths: Sequence[int], where: Callable[[int], str]) -> None:
    """Refuse a source longer than an encoder-decoder's encoder reads (its position table:
    ``config.max_source_length``), naming the first: decoding a cut sentence would give
    a wrong translation, and the encoder cannot read past its table."""
    limit = getattr(config, "max_source_length", None)
    if limit is None:
        return
    for index, length in enumerate(lengths):
        if length > limit:
            raise cfg.ConfigError(f"{where(index)}: {length:,} tokens, more than the model reads "
                                  f"({limit} positions, model.max_length): split it")


def _warn_truncated(tokenizer, sentences: Sequence[str], notify: Notify, where: str = "") -> None:
    """One line when a Hugging Face tokenizer cuts sentences at its length (BERT's positions,
    a classifier's ``data.max_length``): how many, which (counted from 1), to how many
    tokens; ``where`` (a file) goes in front."""
    truncation = getattr(tokenizer, "truncation", None)
    if not truncation or not sentences:
        return
    cut = [number for number, encoding in enumerate(tokenizer.encode_batch(list(sentences)), start=1)
           if encoding.overflowing]
    if cut:
        shown = ", ".join(map(str, cut[:5])) + (", ..." if len(cut) > 5 else "")
        notify(f"{where}{len(cut)} sentence{'s' if len(cut) > 1 else ''} ({shown}) longer than the model reads: "
               f"cut to {truncation['max_length']} tokens")


def _decoding(checkpoint, **options):
    """The checkpoint's decoding settings (its recipe's, or a Hugging Face folder's), with
    the options given (None: not given) in their place."""
    from taa.decoding import decoding_defaults

    try:
        return decoding_defaults(checkpoint).replace(**options)
    except ValueError as error:  # the settings check themselves: one line naming the field
        raise cfg.ConfigError(str(error)) from None
